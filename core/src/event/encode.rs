//! Contract-v1 JSON, written next to its decoder so that a field is added in one place: the
//! collector writes back the events it accepted ([`gateway`], [`provider`]) and the simulator
//! writes its own ([`GatewayWire`], [`ProviderWire`] from borrowed parts, one allocation an
//! event). Only contract fields are written (an event's unknown fields, which could carry
//! anything, are never forwarded), and empty optional fields are left out, as real gateways do:
//! the decoder reads an absent field as empty.

use serde::Serialize;

use super::{GatewayRequest, ProviderAttempt, CONTRACT_VERSION};

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A gateway request as written to `tripline.gateway.requests` (`ts` in epoch milliseconds).
#[derive(Debug, Serialize)]
pub struct GatewayWire<'a> {
    pub schema_version: u32,
    pub event_id: &'a str,
    pub ts: i64,
    pub api_key_id: &'a str,
    pub model: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "is_empty")]
    pub key_hint: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub project: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub team: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub user: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub provider: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub error_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub latency_ms: u32,
    #[serde(skip_serializing_if = "is_empty")]
    pub client_ip: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub client_country: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub gateway_region: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub user_agent: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub idempotency_key: &'a str,
    pub attempt: u16,
    #[serde(skip_serializing_if = "is_false")]
    pub stream: bool,
}

/// A provider attempt as written to `tripline.provider.attempts`.
#[derive(Debug, Serialize)]
pub struct ProviderWire<'a> {
    pub schema_version: u32,
    pub event_id: &'a str,
    pub ts: i64,
    pub request_id: &'a str,
    pub api_key_id: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub attempt: u16,
    pub status: u16,
    #[serde(skip_serializing_if = "is_empty")]
    pub provider_region: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub error_type: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub latency_ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_after_ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl GatewayWire<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers, booleans and floats serialize")
    }
}

impl ProviderWire<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers, booleans and floats serialize")
    }
}

/// Contract-v1 JSON of a decoded gateway request.
pub fn gateway(e: &GatewayRequest) -> Vec<u8> {
    let client_ip = e.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    GatewayWire {
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
        client_ip: &client_ip,
        client_country: &e.client_country,
        gateway_region: &e.gateway_region,
        user_agent: &e.user_agent,
        request_id: &e.request_id,
        idempotency_key: &e.idempotency_key,
        attempt: e.attempt,
        stream: e.stream,
    }
    .to_json()
}

/// Contract-v1 JSON of a decoded provider attempt.
pub fn provider(e: &ProviderAttempt) -> Vec<u8> {
    ProviderWire {
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
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_gateway, decode_provider, ValidationRules};

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
