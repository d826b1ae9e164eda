//! Contract-v1 events as a mapping (LiteLLM, OTLP, Kong) writes them, before redaction and
//! validation: optional fields left out when absent, so the contract's decoder says precisely
//! what is missing.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Default)]
pub(crate) struct GatewayDraft {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_key_id: Option<String>,
    /// A raw key or any identity to be fingerprinted: redaction replaces it before decoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<bool>,
}

/// A provider attempt: the gateway's try of one upstream call.
#[derive(Serialize)]
pub(crate) struct ProviderDraft<'a> {
    pub(crate) event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ts: Option<i64>,
    pub(crate) request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_key_id: Option<String>,
    pub(crate) provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    pub(crate) attempt: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prompt_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_usd: Option<f64>,
}

/// A JSON scalar of whatever type a gateway used (LiteLLM's `error_code` is a string in some
/// versions and a number in others, Kong's `upstream_status` a string); objects and arrays
/// where a scalar was expected read as absent.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Other(IgnoredAny),
}

impl Scalar {
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Scalar::Str(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Scalar::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(n) => Some(*n as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn flag(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

pub(crate) fn text(value: &Option<Scalar>) -> Option<String> {
    value.as_ref().and_then(Scalar::text)
}

pub(crate) fn number(value: &Option<Scalar>) -> Option<f64> {
    value.as_ref().and_then(Scalar::number)
}
