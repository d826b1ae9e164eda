//! The generic webhook: a documented JSON payload (Alertmanager v4-like), signed as
//! [Standard Webhooks](https://www.standardwebhooks.com/).
//!
//! # Payload
//!
//! ```json
//! {
//!   "version": "4",
//!   "status": "firing",
//!   "receiver": "ops-webhook",
//!   "group_key": "{}:{detector=\"spend_spike\"}",
//!   "group_labels": {"detector": "spend_spike"},
//!   "common_labels": {"api_key_id": "key-7", "detector": "spend_spike", "project": "search"},
//!   "common_annotations": {"summary": "…", "description": "…"},
//!   "notification_reason": "new",
//!   "external_url": "https://tripline.example.com",
//!   "truncated_alerts": 0,
//!   "alerts": [{
//!     "status": "firing",
//!     "labels": {"api_key_id": "key-7", "detector": "spend_spike", "project": "search"},
//!     "annotations": {"summary": "…", "description": "…"},
//!     "starts_at": "2026-11-26T10:05:02.000Z",
//!     "ends_at": null,
//!     "fingerprint": "5f0c…",
//!     "severity": "critical",
//!     "observed": 42.1, "expected": 3.2, "upper": 9.0, "score": 0.999,
//!     "window_start": "2026-11-26T10:00:00.000Z", "window_end": "2026-11-26T10:05:00.000Z",
//!     "evidence": {"top_ips": [{"value": "203.0.113.7", "count": 1200}], "countries": […],
//!                  "asns": […], "models": […], "user_agents": […], "request_ids": […],
//!                  "facts": {…}}
//!   }]
//! }
//! ```
//!
//! `status` is `firing` or `resolved`; `notification_reason` is `new`, `changed`, `repeat` or
//! `resolved`; `ends_at` is `null` while firing; `truncated_alerts` counts the alerts left out
//! by the receiver's `max_alerts`; the evidence lists are omitted when empty.
//!
//! # Signature
//!
//! Every request carries `webhook-id` (the same on every retry of one notification: use it to
//! drop duplicates), `webhook-timestamp` (unix seconds of this attempt) and, when the receiver
//! has a secret, `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//! A secret written `whsec_<base64>` (the Standard Webhooks form, which their libraries accept)
//! is base64-decoded to get the key; any other string is used as the key byte for byte (raw
//! secret). Either way the key must be at least 16 bytes. Verify in Python (standard library
//! only; `body` is the raw request body, before any JSON parsing):
//!
//! ```python
//! import base64, hashlib, hmac, time
//!
//! def verify(secret: str, headers, body: bytes, tolerance_s: int = 300) -> bool:
//!     key = (base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_")
//!            else secret.encode())
//!     msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
//!     if abs(time.time() - int(ts)) > tolerance_s:
//!         return False  # too old or from the future: a replay
//!     signed = f"{msg_id}.{ts}.".encode() + body
//!     expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
//!     return any(hmac.compare_digest(sig[3:], expected)
//!                for sig in headers["webhook-signature"].split() if sig.startswith("v1,"))
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tripline_core::alert::{Alert, AlertStatus, Evidence, Severity};
use tripline_core::time::format_ms;

use super::http::HttpRequest;
use super::Message;

pub const PAYLOAD_VERSION: &str = "4";
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
const SECRET_PREFIX: &str = "whsec_";
const MIN_SECRET_BYTES: usize = 16;

/// The webhook body. `Deserialize` too, for consumers written in Rust and for tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub version: String,
    pub status: AlertStatus,
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub notification_reason: String,
    pub external_url: Option<String>,
    pub truncated_alerts: usize,
    pub alerts: Vec<PayloadAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadAlert {
    pub status: AlertStatus,
    /// The alert's labels; always `detector`, and `api_key_id` when the finding is about a key.
    pub labels: BTreeMap<String, String>,
    pub annotations: Annotations,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub fingerprint: String,
    pub severity: Severity,
    pub observed: f64,
    pub expected: f64,
    pub upper: f64,
    pub score: f64,
    pub window_start: String,
    pub window_end: String,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotations {
    pub summary: String,
    pub description: String,
}

impl PayloadAlert {
    pub fn from_alert(a: &Alert) -> Self {
        let mut labels = a.labels.clone();
        labels
            .entry("detector".to_owned())
            .or_insert_with(|| a.detector.clone());
        PayloadAlert {
            status: a.status,
            labels,
            annotations: Annotations {
                summary: a.summary.clone(),
                description: a.description.clone(),
            },
            starts_at: format_ms(a.starts_at),
            ends_at: a.ends_at.map(format_ms),
            fingerprint: a.fingerprint.clone(),
            severity: a.severity,
            observed: a.observed,
            expected: a.expected,
            upper: a.upper,
            score: a.score,
            window_start: format_ms(a.window_start),
            window_end: format_ms(a.window_end),
            evidence: a.evidence.clone(),
        }
    }
}

/// The payload of `msg`, with at most `max_alerts` alerts (0 = all), firing ones first.
pub fn payload(msg: &Message, max_alerts: usize) -> Payload {
    let mut alerts: Vec<&Alert> = msg.alerts.iter().collect();
    // Stable: within a status the grouping stage's order is kept.
    alerts.sort_by_key(|a| a.status != AlertStatus::Firing);
    let keep = if max_alerts == 0 {
        alerts.len()
    } else {
        max_alerts.min(alerts.len())
    };
    Payload {
        version: PAYLOAD_VERSION.to_owned(),
        status: msg.status,
        receiver: msg.receiver.clone(),
        group_key: msg.group_key.clone(),
        group_labels: msg.group_labels.clone(),
        common_labels: msg.common_labels.clone(),
        common_annotations: msg.common_annotations(),
        notification_reason: msg.reason.clone(),
        external_url: msg.external_url.clone(),
        truncated_alerts: alerts.len() - keep,
        alerts: alerts[..keep]
            .iter()
            .map(|a| PayloadAlert::from_alert(a))
            .collect(),
    }
}

/// The JSON body of `msg` (compact, deterministic: maps are sorted).
pub fn body(msg: &Message, max_alerts: usize) -> Vec<u8> {
    serde_json::to_vec(&payload(msg, max_alerts)).expect("the payload is always serializable")
}

/// A signing key. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret after `whsec_` is not valid base64")]
    NotBase64,
    #[error("webhook secret is {0} bytes, at least 16 are required (e.g. `whsec_` + base64 of 32 random bytes)")]
    TooShort(usize),
}

impl WebhookSecret {
    /// `whsec_<base64>` is decoded; anything else is taken as raw bytes. At least 16 bytes.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let secret = secret.trim();
        let key = match secret.strip_prefix(SECRET_PREFIX) {
            Some(b64) => BASE64.decode(b64).map_err(|_| SecretError::NotBase64)?,
            None => secret.as_bytes().to_vec(),
        };
        if key.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The Standard Webhooks headers for one attempt, plus `content-type`. Without a secret the
/// signature header is left out (id and timestamp still let the receiver drop duplicates).
pub fn headers(
    secret: Option<&WebhookSecret>,
    id: &str,
    now: SystemTime,
    body: &[u8],
) -> Vec<(String, String)> {
    let ts = unix_seconds(now);
    let mut h = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (HEADER_ID.to_owned(), id.to_owned()),
        (HEADER_TIMESTAMP.to_owned(), ts.to_string()),
    ];
    if let Some(secret) = secret {
        h.push((HEADER_SIGNATURE.to_owned(), sign(secret, id, ts, body)));
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid webhook-timestamp {0:?}")]
    InvalidTimestamp(String),
    #[error("webhook-timestamp {timestamp} is more than {tolerance_s}s from now ({now})")]
    TimestampOutOfTolerance {
        timestamp: i64,
        now: i64,
        tolerance_s: u64,
    },
    #[error("no webhook-signature matches")]
    NoMatchingSignature,
}

/// Checks a request as a receiver would: the timestamp is within `tolerance` of `now` (either
/// side), and one of the space-separated `v1,` signatures matches (compared in constant time).
/// `headers` are the request's headers, names in any case.
pub fn verify<K, V>(
    secret: &WebhookSecret,
    headers: impl IntoIterator<Item = (K, V)>,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let (mut id, mut ts, mut sigs) = (None, None, None);
    for (name, value) in headers {
        let name = name.as_ref();
        let value = value.as_ref().to_owned();
        if name.eq_ignore_ascii_case(HEADER_ID) {
            id = Some(value);
        } else if name.eq_ignore_ascii_case(HEADER_TIMESTAMP) {
            ts = Some(value);
        } else if name.eq_ignore_ascii_case(HEADER_SIGNATURE) {
            sigs = Some(value);
        }
    }
    let id = id.ok_or(VerifyError::MissingHeader(HEADER_ID))?;
    let ts = ts.ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let sigs = sigs.ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
    let timestamp: i64 = ts
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp(ts.clone()))?;
    let now = unix_seconds(now);
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::TimestampOutOfTolerance {
            timestamp,
            now,
            tolerance_s: tolerance.as_secs(),
        });
    }
    let mac = secret.mac(&id, timestamp, body);
    let matched = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// A webhook receiver, built by the integration from the config (the secret comes from the
/// environment, parsed with [`WebhookSecret::parse`]).
#[derive(Clone)]
pub struct WebhookReceiver {
    pub url: String,
    pub secret: Option<WebhookSecret>,
    /// At most this many alerts per request (0 = all); the rest are counted in
    /// `truncated_alerts`.
    pub max_alerts: usize,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A webhook URL may carry a token in its query string.
        f.debug_struct("WebhookReceiver")
            .field("url", &"<redacted>")
            .field("signed", &self.secret.is_some())
            .field("max_alerts", &self.max_alerts)
            .finish()
    }
}

impl WebhookReceiver {
    /// The request for one attempt at `now`. `id` is the notification's
    /// [`super::notification_id`]: the same on every retry, while timestamp and signature
    /// are fresh.
    pub fn request(&self, msg: &Message, id: &str, now: SystemTime) -> HttpRequest {
        let body = body(msg, self.max_alerts);
        HttpRequest {
            url: self.url.clone(),
            headers: headers(self.secret.as_ref(), id, now, &body),
            body,
        }
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
