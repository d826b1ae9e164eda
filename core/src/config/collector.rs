//! `[collector]`: the HTTP endpoints that take gateway logs straight in (LiteLLM's `generic_api`
//! callback and contract-v1 batches) and hand them to Kafka.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Source name → environment variable holding that source's bearer token. The endpoints
    /// are served only when at least one source is configured.
    pub token_env: BTreeMap<String, String>,
    /// Largest request body, after gzip decoding; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most events (lines or array elements) in one request; more get 413.
    pub max_batch_events: usize,
    /// Requests being processed at once; more wait for a slot. Each slot holds a body and its
    /// records: a few times `max_body_bytes` at worst.
    pub max_concurrent_batches: usize,
    /// How long Kafka has to acknowledge a batch before the request is answered 503.
    pub produce_timeout_ms: u64,
    /// `Retry-After` sent with a 503.
    pub retry_after_s: u32,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            token_env: BTreeMap::new(),
            max_body_bytes: 32 * 1024 * 1024,
            max_batch_events: 10_000,
            max_concurrent_batches: 16,
            produce_timeout_ms: 10_000,
            retry_after_s: 5,
        }
    }
}

/// Checks the section through the caller's `check(ok, key, message, hint)`.
pub(super) fn validate(c: &CollectorConfig, check: &mut dyn FnMut(bool, &str, String, &str)) {
    for (source, var) in &c.token_env {
        let key = format!("collector.token_env.{}", super::quote_key(source));
        check(
            is_source_name(source),
            &key,
            format!("{source:?} is not a valid source name"),
            "lowercase letters, digits, '_' and '-', at most 64 characters (it labels metrics)",
        );
        check(
            !var.trim().is_empty(),
            &key,
            format!("source {source:?} names no environment variable"),
            "e.g. litellm = \"TRIPLINE_COLLECTOR_TOKEN_LITELLM\"",
        );
    }
    check(
        (1024..=256 * 1024 * 1024).contains(&c.max_body_bytes),
        "collector.max_body_bytes",
        format!(
            "must be between 1024 and 268435456 (got {})",
            c.max_body_bytes
        ),
        "bytes of one request after gzip decoding; LiteLLM payloads carry prompts, so keep room",
    );
    check(
        (1..=1_000_000).contains(&c.max_batch_events),
        "collector.max_batch_events",
        format!("must be between 1 and 1000000 (got {})", c.max_batch_events),
        "events (lines or array elements) in one request",
    );
    check(
        (1..=1024).contains(&c.max_concurrent_batches),
        "collector.max_concurrent_batches",
        format!(
            "must be between 1 and 1024 (got {})",
            c.max_concurrent_batches
        ),
        "requests processed at once; each may hold a few times max_body_bytes",
    );
    check(
        (100..=300_000).contains(&c.produce_timeout_ms),
        "collector.produce_timeout_ms",
        format!(
            "must be between 100 and 300000 (got {})",
            c.produce_timeout_ms
        ),
        "milliseconds Kafka has to acknowledge a batch before the answer is 503",
    );
    check(
        (1..=3600).contains(&c.retry_after_s),
        "collector.retry_after_s",
        format!("must be between 1 and 3600 (got {})", c.retry_after_s),
        "the Retry-After seconds sent with a 503",
    );
}

/// Source names become metrics labels: short and plain.
fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}
