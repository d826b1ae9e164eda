//! One Kafka message as ingest sees it: redact → decode → validate → (refused) dead letter.
//! Whatever the bytes: no panic, no raw key-shaped secret past redaction, and a dead letter that
//! is valid JSON within the broker's size limit (the message that once held its partition).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tripline_core::event::{self, EventKind, ValidationRules};
use tripline_core::secret::Fingerprinter;
use tripline_ingest::dlq::{envelope_limit, DeadLetter};
use tripline_ingest::process::Source;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let fingerprinter = Fingerprinter::new(b"fuzzing-fingerprint-secret").unwrap();
    let redacted = fingerprinter.redact(data);
    // Redaction is a fixed point: a second pass finds nothing more to replace.
    assert_eq!(fingerprinter.redact(&redacted).as_ref(), redacted.as_ref());
    let rules = ValidationRules {
        now_ms: 1_795_687_200_000,
        max_future_skew_ms: 300_000,
    };
    for kind in [EventKind::Gateway, EventKind::Provider] {
        if let Err(reject) = event::decode(kind, &redacted, &rules) {
            let source = Source {
                topic: "fuzz",
                partition: 0,
                offset: 0,
            };
            let letter = DeadLetter::new(&redacted, reject, source, rules.now_ms);
            let limit = envelope_limit(LIMIT);
            let json = letter.to_json(limit);
            assert!(json.len() <= limit, "{} > {limit}", json.len());
            serde_json::from_slice::<serde_json::Value>(&json).expect("a dead letter is JSON");
        }
    }
});
