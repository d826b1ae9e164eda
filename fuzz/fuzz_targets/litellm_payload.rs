//! One LiteLLM StandardLoggingPayload as the collector maps it: whatever the bytes, no panic,
//! and what the mapper writes is JSON that the contract decoder reads or refuses with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tripline_core::event::{decode_gateway, decode_provider, ValidationRules};

fuzz_target!(|data: &[u8]| {
    let Ok(mapped) = tripline_collector::litellm::map(data) else {
        return;
    };
    let rules = ValidationRules {
        now_ms: 1_795_687_200_000,
        max_future_skew_ms: 300_000,
    };
    serde_json::from_slice::<serde_json::Value>(&mapped.gateway).expect("mapped event is JSON");
    let _ = decode_gateway(&mapped.gateway, &rules);
    if let Some(attempt) = &mapped.provider {
        serde_json::from_slice::<serde_json::Value>(attempt).expect("mapped attempt is JSON");
        let _ = decode_provider(attempt, &rules);
    }
});
