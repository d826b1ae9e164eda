//! The JSON bodies of contract v1 (README, "Event contract v1"; schema/*.v1.json).
//!
//! Serialised from borrowed structs so that one event costs one allocation for its bytes. Optional
//! fields are left out rather than sent as `null`, as real gateways do.

use serde::Serialize;
use tripline_core::event::CONTRACT_VERSION;

/// A gateway request event (topic `tripline.gateway.requests`).
#[derive(Debug, Serialize)]
pub(crate) struct GatewayPayload<'a> {
    pub schema_version: u32,
    pub event_id: &'a str,
    /// Epoch milliseconds at which the request reached the gateway.
    pub ts: i64,
    pub api_key_id: &'a str,
    pub key_hint: &'a str,
    /// Absent when the gateway could not resolve the key (a 401 for an unknown key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub provider: &'a str,
    pub model: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    pub latency_ms: u32,
    pub client_ip: &'a str,
    pub client_country: &'a str,
    pub gateway_region: &'a str,
    pub user_agent: &'a str,
    pub request_id: &'a str,
    pub idempotency_key: &'a str,
    pub attempt: u16,
    pub stream: bool,
}

/// A provider attempt event (topic `tripline.provider.attempts`).
#[derive(Debug, Serialize)]
pub(crate) struct ProviderPayload<'a> {
    pub schema_version: u32,
    pub event_id: &'a str,
    /// Epoch milliseconds at which the attempt finished.
    pub ts: i64,
    pub request_id: &'a str,
    pub api_key_id: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// The gateway's attempt number for this request (its own retries), 1 = first.
    pub attempt: u16,
    pub status: u16,
    pub provider_region: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<&'a str>,
    pub latency_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// The version every payload states.
pub(crate) const SCHEMA_VERSION: u32 = CONTRACT_VERSION;

/// Serialises a payload. The structs hold only strings, integers, booleans and finite floats,
/// which `serde_json` always encodes, so there is no error to hand back.
pub(crate) fn to_json<T: Serialize>(payload: &T) -> Vec<u8> {
    serde_json::to_vec(payload).unwrap_or_default()
}
