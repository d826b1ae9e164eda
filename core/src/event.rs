//! Event contract v1: gateway requests and provider attempts, decoded and validated.
//!
//! Decoding borrows from the message bytes and allocates only for the fields that are kept.
//! Every rejection carries a bounded [`RejectReason`] (a metrics label) and a human detail.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::time::parse_rfc3339_ms;

/// The contract version this build understands; events may state it in `schema_version`.
pub const CONTRACT_VERSION: u32 = 1;

/// Limits on values, chosen so that anything past them is a bug upstream, not traffic.
pub mod limits {
    pub const MAX_ID_LEN: usize = 256;
    pub const MAX_TEXT_LEN: usize = 512;
    pub const MAX_TOKENS: i64 = 100_000_000;
    pub const MAX_COST_USD: f64 = 1_000_000.0;
    pub const MAX_LATENCY_MS: i64 = 86_400_000;
    pub const MAX_ATTEMPT: i64 = 1_000;
    /// 2000-01-01T00:00:00Z: older timestamps are clock bugs, not late events.
    pub const MIN_TS_MS: i64 = 946_684_800_000;
}

/// Why an event was refused. Bounded: used as a metrics label and in DLQ records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Oversize,
    InvalidJson,
    /// An OTLP protobuf body that does not decode.
    InvalidProtobuf,
    MissingField,
    WrongType,
    InvalidValue,
    FutureTimestamp,
    UnsupportedVersion,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        Self::Oversize,
        Self::InvalidJson,
        Self::InvalidProtobuf,
        Self::MissingField,
        Self::WrongType,
        Self::InvalidValue,
        Self::FutureTimestamp,
        Self::UnsupportedVersion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::InvalidJson => "invalid_json",
            Self::InvalidProtobuf => "invalid_protobuf",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::FutureTimestamp => "future_timestamp",
            Self::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused event: the reason class and a detail naming the field and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// One request as the gateway answered it (topic `tripline.gateway.requests`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayRequest {
    pub event_id: String,
    pub ts_ms: i64,
    pub api_key_id: String,
    pub model: String,
    pub status: u16,
    pub key_hint: String,
    pub project: String,
    pub team: String,
    pub user: String,
    pub provider: String,
    pub error_type: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: Option<f64>,
    pub latency_ms: u32,
    pub client_ip: Option<IpAddr>,
    pub client_country: String,
    pub gateway_region: String,
    pub user_agent: String,
    pub request_id: String,
    pub idempotency_key: String,
    pub attempt: u16,
    pub stream: bool,
}

/// One upstream attempt made by the gateway (topic `tripline.provider.attempts`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderAttempt {
    pub event_id: String,
    pub ts_ms: i64,
    pub request_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub attempt: u16,
    pub status: u16,
    pub provider_region: String,
    pub error_type: String,
    pub latency_ms: u32,
    pub retry_after_ms: u32,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: Option<f64>,
}

/// Either kind of contract event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Gateway(GatewayRequest),
    Provider(ProviderAttempt),
}

impl Event {
    pub fn event_id(&self) -> &str {
        match self {
            Event::Gateway(e) => &e.event_id,
            Event::Provider(e) => &e.event_id,
        }
    }

    pub fn ts_ms(&self) -> i64 {
        match self {
            Event::Gateway(e) => e.ts_ms,
            Event::Provider(e) => e.ts_ms,
        }
    }
}

/// Which contract a message claims to follow (decided by its topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Gateway,
    Provider,
}

/// Validation settings that depend on the deployment.
#[derive(Debug, Clone, Copy)]
pub struct ValidationRules {
    /// Current time, in epoch milliseconds.
    pub now_ms: i64,
    /// How far in the future a `ts` may be before it is refused as a clock bug.
    pub max_future_skew_ms: i64,
}

/// Decodes and validates one message of the given kind. `raw` must already be redacted.
pub fn decode(kind: EventKind, raw: &[u8], rules: &ValidationRules) -> Result<Event, Reject> {
    match kind {
        EventKind::Gateway => decode_gateway(raw, rules).map(Event::Gateway),
        EventKind::Provider => decode_provider(raw, rules).map(Event::Provider),
    }
}

pub fn decode_gateway(raw: &[u8], rules: &ValidationRules) -> Result<GatewayRequest, Reject> {
    let w: WireGateway<'_> = parse_json(raw)?;
    check_version(w.schema_version)?;
    let api_key_id = key_id(w.api_key_id, w.api_key)?;
    Ok(GatewayRequest {
        event_id: id_field("event_id", required(w.event_id, "event_id")?)?,
        ts_ms: timestamp(required(w.ts, "ts")?, rules)?,
        api_key_id: id_field("api_key_id", api_key_id)?,
        model: id_field("model", required(w.model, "model")?)?,
        status: status(required(w.status, "status")?)?,
        key_hint: text(w.key_hint),
        project: text(w.project),
        team: text(w.team),
        user: text(w.user),
        provider: text(w.provider),
        error_type: text(w.error_type),
        prompt_tokens: tokens("prompt_tokens", w.prompt_tokens)?,
        completion_tokens: tokens("completion_tokens", w.completion_tokens)?,
        cost_usd: cost(w.cost_usd)?,
        latency_ms: latency("latency_ms", w.latency_ms)?,
        client_ip: client_ip(w.client_ip)?,
        client_country: country(w.client_country)?,
        gateway_region: text(w.gateway_region),
        user_agent: text(w.user_agent),
        request_id: text(w.request_id),
        idempotency_key: text(w.idempotency_key),
        attempt: attempt(w.attempt)?,
        stream: w.stream.unwrap_or(false),
    })
}

pub fn decode_provider(raw: &[u8], rules: &ValidationRules) -> Result<ProviderAttempt, Reject> {
    let w: WireProvider<'_> = parse_json(raw)?;
    check_version(w.schema_version)?;
    let api_key_id = key_id(w.api_key_id, w.api_key)?;
    Ok(ProviderAttempt {
        event_id: id_field("event_id", required(w.event_id, "event_id")?)?,
        ts_ms: timestamp(required(w.ts, "ts")?, rules)?,
        request_id: id_field("request_id", required(w.request_id, "request_id")?)?,
        api_key_id: id_field("api_key_id", api_key_id)?,
        provider: id_field("provider", required(w.provider, "provider")?)?,
        model: id_field("model", required(w.model, "model")?)?,
        attempt: attempt(Some(required(w.attempt, "attempt")?))?,
        status: status(required(w.status, "status")?)?,
        provider_region: text(w.provider_region),
        error_type: text(w.error_type),
        latency_ms: latency("latency_ms", w.latency_ms)?,
        retry_after_ms: latency("retry_after_ms", w.retry_after_ms)?,
        prompt_tokens: tokens("prompt_tokens", w.prompt_tokens)?,
        completion_tokens: tokens("completion_tokens", w.completion_tokens)?,
        cost_usd: cost(w.cost_usd)?,
    })
}

#[derive(Deserialize)]
struct WireGateway<'a> {
    schema_version: Option<u32>,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<WireTs<'a>>,
    #[serde(borrow)]
    api_key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    status: Option<i64>,
    #[serde(borrow)]
    key_hint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    project: Option<Cow<'a, str>>,
    #[serde(borrow)]
    team: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_type: Option<Cow<'a, str>>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cost_usd: Option<f64>,
    latency_ms: Option<i64>,
    #[serde(borrow)]
    client_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    gateway_region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
    attempt: Option<i64>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct WireProvider<'a> {
    schema_version: Option<u32>,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<WireTs<'a>>,
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    api_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    attempt: Option<i64>,
    status: Option<i64>,
    #[serde(borrow)]
    provider_region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_type: Option<Cow<'a, str>>,
    latency_ms: Option<i64>,
    retry_after_ms: Option<i64>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cost_usd: Option<f64>,
}

/// `ts` as sent: RFC 3339 text or epoch milliseconds.
enum WireTs<'a> {
    Millis(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for WireTs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl<'de> Visitor<'de> for TsVisitor {
            type Value = WireTs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 string or epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(WireTs::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(WireTs::Millis)
                    .map_err(|_| E::custom("epoch milliseconds out of range"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(WireTs::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireTs::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(TsVisitor)
    }
}

fn parse_json<'a, T: Deserialize<'a>>(raw: &'a [u8]) -> Result<T, Reject> {
    serde_json::from_slice(raw).map_err(|err| {
        let reason = match err.classify() {
            serde_json::error::Category::Data => RejectReason::WrongType,
            _ => RejectReason::InvalidJson,
        };
        Reject::new(reason, err.to_string())
    })
}

/// The key's id: `api_key_id`, or else the fingerprint that redaction put in place of a raw
/// `api_key`.
fn key_id<'a>(
    id: Option<Cow<'a, str>>,
    fingerprint: Option<Cow<'a, str>>,
) -> Result<Cow<'a, str>, Reject> {
    id.or(fingerprint).ok_or_else(|| missing("api_key_id"))
}

fn check_version(version: Option<u32>) -> Result<(), Reject> {
    match version {
        None | Some(CONTRACT_VERSION) => Ok(()),
        Some(v) => Err(Reject::new(
            RejectReason::UnsupportedVersion,
            format!("schema_version {v} is not supported (this build reads {CONTRACT_VERSION})"),
        )),
    }
}

fn missing(field: &str) -> Reject {
    Reject::new(
        RejectReason::MissingField,
        format!("missing required field `{field}`"),
    )
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Reject> {
    value.ok_or_else(|| missing(field))
}

fn invalid(field: &str, detail: impl fmt::Display) -> Reject {
    Reject::new(RejectReason::InvalidValue, format!("`{field}` {detail}"))
}

fn id_field(field: &str, value: Cow<'_, str>) -> Result<String, Reject> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(missing(field));
    }
    if trimmed.len() > limits::MAX_ID_LEN {
        return Err(invalid(
            field,
            format_args!(
                "is {} bytes long (max {})",
                trimmed.len(),
                limits::MAX_ID_LEN
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Optional free text: kept, trimmed and cut at a char boundary rather than refused.
fn text(value: Option<Cow<'_, str>>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    let value = value.trim();
    if value.len() <= limits::MAX_TEXT_LEN {
        return value.to_owned();
    }
    let mut end = limits::MAX_TEXT_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

fn timestamp(ts: WireTs<'_>, rules: &ValidationRules) -> Result<i64, Reject> {
    let ms = match ts {
        WireTs::Millis(ms) => ms,
        WireTs::Text(text) => parse_rfc3339_ms(&text)
            .ok_or_else(|| invalid("ts", format_args!("{text:?} is not RFC 3339")))?,
    };
    if ms < limits::MIN_TS_MS {
        return Err(invalid("ts", format_args!("{ms} is before the year 2000")));
    }
    if ms > rules.now_ms + rules.max_future_skew_ms {
        return Err(Reject::new(
            RejectReason::FutureTimestamp,
            format!(
                "`ts` is {} ms in the future (max skew {} ms)",
                ms - rules.now_ms,
                rules.max_future_skew_ms
            ),
        ));
    }
    Ok(ms)
}

fn status(value: i64) -> Result<u16, Reject> {
    if (100..=599).contains(&value) {
        Ok(value as u16)
    } else {
        Err(invalid(
            "status",
            format_args!("{value} is not an HTTP status"),
        ))
    }
}

fn tokens(field: &str, value: Option<i64>) -> Result<u32, Reject> {
    match value {
        None => Ok(0),
        Some(v) if (0..=limits::MAX_TOKENS).contains(&v) => Ok(v as u32),
        Some(v) => Err(invalid(
            field,
            format_args!("{v} is outside 0..={}", limits::MAX_TOKENS),
        )),
    }
}

fn latency(field: &str, value: Option<i64>) -> Result<u32, Reject> {
    match value {
        None => Ok(0),
        Some(v) if (0..=limits::MAX_LATENCY_MS).contains(&v) => Ok(v as u32),
        Some(v) => Err(invalid(
            field,
            format_args!("{v} is outside 0..={}", limits::MAX_LATENCY_MS),
        )),
    }
}

fn cost(value: Option<f64>) -> Result<Option<f64>, Reject> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=limits::MAX_COST_USD).contains(&v) => Ok(Some(v)),
        Some(v) => Err(invalid(
            "cost_usd",
            format_args!("{v} is outside 0..={}", limits::MAX_COST_USD),
        )),
    }
}

fn attempt(value: Option<i64>) -> Result<u16, Reject> {
    match value {
        None => Ok(1),
        Some(v) if (1..=limits::MAX_ATTEMPT).contains(&v) => Ok(v as u16),
        Some(v) => Err(invalid(
            "attempt",
            format_args!("{v} is outside 1..={}", limits::MAX_ATTEMPT),
        )),
    }
}

fn client_ip(value: Option<Cow<'_, str>>) -> Result<Option<IpAddr>, Reject> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<IpAddr>()
            .map(Some)
            .map_err(|_| invalid("client_ip", format_args!("{text:?} is not an IP address"))),
    }
}

fn country(value: Option<Cow<'_, str>>) -> Result<String, Reject> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(code) if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(code.to_ascii_uppercase())
        }
        Some(code) => Err(invalid(
            "client_country",
            format_args!("{code:?} is not an ISO 3166-1 alpha-2 code"),
        )),
    }
}

mod digest;
pub mod encode;

#[cfg(test)]
mod tests;
