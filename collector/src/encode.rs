//! Accepted events, written back as contract-v1 JSON: what the collector puts on Kafka is exactly
//! what ingest reads from any other producer. Only contract fields survive (an event's unknown
//! fields, which could carry anything, are not forwarded); empty optional fields are left out.

use serde::Serialize;
use tripline_core::event::{GatewayRequest, ProviderAttempt, CONTRACT_VERSION};

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct GatewayWire<'a> {
    schema_version: u32,
    event_id: &'a str,
    ts: i64,
    api_key_id: &'a str,
    model: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "is_empty")]
    key_hint: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    project: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    team: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    provider: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    error_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "is_zero")]
    latency_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    client_country: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    gateway_region: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    user_agent: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    request_id: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    idempotency_key: &'a str,
    attempt: u16,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
}

#[derive(Serialize)]
struct ProviderWire<'a> {
    schema_version: u32,
    event_id: &'a str,
    ts: i64,
    request_id: &'a str,
    api_key_id: &'a str,
    provider: &'a str,
    model: &'a str,
    attempt: u16,
    status: u16,
    #[serde(skip_serializing_if = "is_empty")]
    provider_region: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    error_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    latency_ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    retry_after_ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
}

/// Contract-v1 JSON of a validated gateway request (`ts` in epoch milliseconds).
pub fn gateway(e: &GatewayRequest) -> Vec<u8> {
    let wire = GatewayWire {
        schema_version: CONTRACT_VERSION,
        event_id: &e.event_id,
        ts: e.ts_ms,
        api_key_id: &e.api_key_id,
        model: &e.model,
        status: e.status,
        key_hint: &e.key_hint,
        project: &e.project,
        team: &e.team,
        user: &e.user,
        provider: &e.provider,
        error_type: &e.error_type,
        prompt_tokens: e.prompt_tokens,
        completion_tokens: e.completion_tokens,
        cost_usd: e.cost_usd,
        latency_ms: e.latency_ms,
        client_ip: e.client_ip.map(|ip| ip.to_string()),
        client_country: &e.client_country,
        gateway_region: &e.gateway_region,
        user_agent: &e.user_agent,
        request_id: &e.request_id,
        idempotency_key: &e.idempotency_key,
        attempt: e.attempt,
        stream: e.stream,
    };
    serde_json::to_vec(&wire).expect("plain struct serializes")
}

/// Contract-v1 JSON of a validated provider attempt.
pub fn provider(e: &ProviderAttempt) -> Vec<u8> {
    let wire = ProviderWire {
        schema_version: CONTRACT_VERSION,
        event_id: &e.event_id,
        ts: e.ts_ms,
        request_id: &e.request_id,
        api_key_id: &e.api_key_id,
        provider: &e.provider,
        model: &e.model,
        attempt: e.attempt,
        status: e.status,
        provider_region: &e.provider_region,
        error_type: &e.error_type,
        latency_ms: e.latency_ms,
        retry_after_ms: e.retry_after_ms,
        prompt_tokens: e.prompt_tokens,
        completion_tokens: e.completion_tokens,
        cost_usd: e.cost_usd,
    };
    serde_json::to_vec(&wire).expect("plain struct serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::event::{decode_gateway, decode_provider, ValidationRules};

    const RULES: ValidationRules = ValidationRules {
        now_ms: 1_800_000_000_000,
        max_future_skew_ms: 0,
    };

    #[test]
    fn gateway_round_trips_through_the_decoder() {
        let raw = br#"{"event_id":"e1","ts":"2026-11-26T10:00:00.123Z","api_key_id":"k","model":"gpt-4o-mini","status":429,
            "key_hint":"sk-...9f2c","project":"p","team":"t","user":"u","provider":"openai","error_type":"rate_limit",
            "prompt_tokens":12,"completion_tokens":3,"cost_usd":0.000123456789,"latency_ms":950,"client_ip":"2001:db8::1",
            "client_country":"de","gateway_region":"eu","user_agent":"ua","request_id":"r","idempotency_key":"i",
            "attempt":2,"stream":true,"unknown":"dropped"}"#;
        let event = decode_gateway(raw, &RULES).unwrap();
        let out = gateway(&event);
        assert!(!String::from_utf8_lossy(&out).contains("dropped"));
        assert_eq!(decode_gateway(&out, &RULES).unwrap(), event);
    }

    #[test]
    fn minimal_events_stay_minimal() {
        let raw =
            br#"{"event_id":"e1","ts":1795687200000,"api_key_id":"k","model":"m","status":200}"#;
        let event = decode_gateway(raw, &RULES).unwrap();
        let out = String::from_utf8(gateway(&event)).unwrap();
        assert_eq!(
            out,
            r#"{"schema_version":1,"event_id":"e1","ts":1795687200000,"api_key_id":"k","model":"m","status":200,"attempt":1}"#
        );
    }

    #[test]
    fn provider_round_trips_through_the_decoder() {
        let raw = br#"{"event_id":"a1","ts":1795687200900,"request_id":"r","api_key_id":"k","provider":"openai",
            "model":"gpt-4o","attempt":3,"status":503,"provider_region":"eastus","error_type":"overloaded",
            "latency_ms":20,"retry_after_ms":1000,"prompt_tokens":1,"completion_tokens":2,"cost_usd":0.5}"#;
        let event = decode_provider(raw, &RULES).unwrap();
        assert_eq!(decode_provider(&provider(&event), &RULES).unwrap(), event);
    }
}
