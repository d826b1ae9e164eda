//! `[collector]`: the HTTP endpoints that take gateway logs straight in (LiteLLM's `generic_api`
//! callback, OpenTelemetry GenAI spans and contract-v1 batches) and hand them to Kafka.

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
    /// Where `POST /v1/traces` finds what GenAI spans do not standardise.
    pub otlp: OtlpConfig,
}

/// `[collector.otlp]`: the span or resource attributes (the span's win) that say who made an
/// inference call. The GenAI conventions name the model, tokens and errors, but not the key, the
/// caller's address or the cost, and every instrumentation and gateway spells those its own way.
/// Each list is tried in order; the first attribute present is used.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The key's identity. Its value is fingerprinted like any raw key, never stored as sent.
    /// `service.name` last: an application instrumented with the OpenTelemetry SDK and nothing
    /// else is then watched as one key.
    pub key_attributes: Vec<String>,
    /// The end user.
    pub user_attributes: Vec<String>,
    /// The caller's IP address (what cross_region and leaked_key judge).
    pub client_address_attributes: Vec<String>,
    pub user_agent_attributes: Vec<String>,
    pub project_attributes: Vec<String>,
    pub team_attributes: Vec<String>,
    /// The call's cost in USD; without one, the price table prices the tokens.
    pub cost_attributes: Vec<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Self {
            key_attributes: names(&[
                "tripline.api_key",
                "metadata.user_api_key_hash",
                "service.name",
            ]),
            user_attributes: names(&["user.id", "enduser.id", "metadata.user_api_key_end_user_id"]),
            client_address_attributes: names(&["client.address", "metadata.requester_ip_address"]),
            user_agent_attributes: names(&["user_agent.original", "metadata.user_agent"]),
            project_attributes: names(&["metadata.user_api_key_project_id"]),
            team_attributes: names(&["metadata.user_api_key_team_id"]),
            cost_attributes: names(&["gen_ai.usage.cost", "gen_ai.cost.total_cost"]),
        }
    }
}

impl OtlpConfig {
    /// Each list with its config name.
    pub fn lists(&self) -> [(&'static str, &[String]); 7] {
        [
            ("key_attributes", &self.key_attributes),
            ("user_attributes", &self.user_attributes),
            ("client_address_attributes", &self.client_address_attributes),
            ("user_agent_attributes", &self.user_agent_attributes),
            ("project_attributes", &self.project_attributes),
            ("team_attributes", &self.team_attributes),
            ("cost_attributes", &self.cost_attributes),
        ]
    }
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
            otlp: OtlpConfig::default(),
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
    check(
        !c.otlp.key_attributes.is_empty(),
        "collector.otlp.key_attributes",
        "is empty: spans would have no key".to_owned(),
        "e.g. [\"tripline.api_key\", \"service.name\"]",
    );
    for (list, names) in c.otlp.lists() {
        for name in names {
            check(
                !name.trim().is_empty() && name.len() <= 256,
                &format!("collector.otlp.{list}"),
                format!("{name:?} is not an attribute name"),
                "a span or resource attribute, e.g. \"enduser.id\"",
            );
        }
    }
}

/// Source names become metrics labels: short and plain.
pub(super) fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}
