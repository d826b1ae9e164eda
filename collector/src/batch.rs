//! One request body in, Kafka records out: redact, split, map (LiteLLM), validate with the
//! contract's rules, re-encode, and dead-letter what is refused. Pure CPU work, no IO, so the
//! whole path is unit-tested here; the caller produces the records and answers.

use std::borrow::Cow;

use serde::Deserialize;
use tripline_core::event::{self, EventKind, Reject, RejectReason, ValidationRules};
use tripline_core::secret::Fingerprinter;
use tripline_ingest::dlq::DeadLetter;
use tripline_ingest::process::Source;

use crate::body::{self, BodyError};
use crate::otlp::{self, Format};
use crate::{encode, kong, litellm};
use tripline_core::config::OtlpConfig;

/// The doors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/events`: contract-v1 events.
    Events,
    /// `POST /v1/logs/litellm`: LiteLLM StandardLoggingPayloads.
    LiteLlm,
    /// `POST /v1/traces`: OTLP/HTTP trace exports holding GenAI spans.
    Otlp,
    /// `POST /v1/logs/kong`: Kong Gateway log entries (`http-log`) of AI routes.
    Kong,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Events => "/v1/events",
            Endpoint::LiteLlm => "/v1/logs/litellm",
            Endpoint::Otlp => "/v1/traces",
            Endpoint::Kong => "/v1/logs/kong",
        }
    }

    /// `source_topic` of this endpoint's dead letters.
    pub fn source_topic(self) -> &'static str {
        match self {
            Endpoint::Events => "http:/v1/events",
            Endpoint::LiteLlm => "http:/v1/logs/litellm",
            Endpoint::Otlp => "http:/v1/traces",
            Endpoint::Kong => "http:/v1/logs/kong",
        }
    }

    /// Short metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Events => "events",
            Endpoint::LiteLlm => "litellm",
            Endpoint::Otlp => "otlp",
            Endpoint::Kong => "kong",
        }
    }
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Gateway,
    Provider,
    DeadLetters,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub destination: Destination,
    pub key: String,
    pub payload: Vec<u8>,
}

/// An item of the batch that was refused, for the response.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Prepared {
    /// Accepted events and dead letters, in batch order.
    pub records: Vec<Record>,
    /// Items accepted (a LiteLLM payload is one item, even when it yields an attempt too).
    pub accepted: usize,
    /// Events among `records` (gateway requests and provider attempts).
    pub events: usize,
    pub rejected: Vec<Rejected>,
    /// Spans that are not inference calls (OTLP only): not events, not refused.
    pub ignored: usize,
    /// The body could not be split into items at all (answered 400, dead-lettered whole).
    pub malformed: bool,
    /// The largest dead-letter envelope the broker takes ([`Limits::max_dead_letter_bytes`]).
    dead_letter_limit: usize,
}

/// Why a body was refused before any item was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    Body(BodyError),
    TooManyEvents { count: usize, max: usize },
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Body(err) => err.fmt(f),
            Self::TooManyEvents { count, max } => {
                write!(f, "batch holds {count} events (max {max}); split it")
            }
        }
    }
}

/// Limits and rules applied to every batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_events: usize,
    /// Per event, as in Kafka ingest (`ingest.max_message_bytes`).
    pub max_message_bytes: usize,
    /// The largest dead-letter envelope the broker takes (from `kafka.max_message_bytes`).
    pub max_dead_letter_bytes: usize,
    pub max_future_skew_ms: i64,
}

/// Turns one decoded body into records. `default_kind` applies to `/v1/events` items that do
/// not say their `kind`.
pub fn prepare(
    endpoint: Endpoint,
    default_kind: EventKind,
    body: &[u8],
    fingerprinter: &Fingerprinter,
    limits: &Limits,
    now_ms: i64,
) -> Result<Prepared, PrepareError> {
    // Split on the raw bytes (a newline or bracket is never part of a secret), then redact each
    // item before anything reads it, exactly as ingest does per Kafka message: nothing below,
    // not even a dead letter, may see a raw secret.
    let mut out = Prepared {
        dead_letter_limit: limits.max_dead_letter_bytes,
        ..Prepared::default()
    };
    let items = match body::split(body) {
        Ok(items) => items,
        Err(BodyError::Malformed(detail)) => {
            let reject = Reject::new(RejectReason::InvalidJson, detail);
            let payload = match endpoint {
                Endpoint::Events => fingerprinter.redact(body),
                Endpoint::LiteLlm | Endpoint::Otlp | Endpoint::Kong => Cow::Borrowed(&b""[..]),
            };
            out.dead_letter(endpoint, 0, &payload, body.len(), reject, now_ms);
            out.malformed = true;
            return Ok(out);
        }
        Err(other) => return Err(PrepareError::Body(other)),
    };
    if items.len() > limits.max_batch_events {
        return Err(PrepareError::TooManyEvents {
            count: items.len(),
            max: limits.max_batch_events,
        });
    }
    let rules = ValidationRules {
        now_ms,
        max_future_skew_ms: limits.max_future_skew_ms,
    };
    out.records.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let item = fingerprinter.redact(item);
        let item = item.as_ref();
        match endpoint {
            Endpoint::Events => {
                let admitted = item_kind(item, default_kind)
                    .and_then(|kind| admit(kind, item, limits, &rules));
                match admitted {
                    Ok(record) => out.accept(vec![record]),
                    Err(reject) => {
                        out.dead_letter(endpoint, index, item, item.len(), reject, now_ms)
                    }
                }
            }
            Endpoint::Otlp => unreachable!("OTLP bodies go through prepare_otlp"),
            Endpoint::LiteLlm | Endpoint::Kong => {
                let mapped = match endpoint {
                    Endpoint::LiteLlm => litellm::map(item)
                        .map(|m| Some((m.gateway, m.provider.into_iter().collect()))),
                    _ => kong::map(item).map(|m| m.map(|m| (m.gateway, m.attempts))),
                };
                match mapped {
                    Ok(Some((gateway, attempts))) => out.admit_mapped(
                        endpoint,
                        index,
                        gateway,
                        attempts,
                        fingerprinter,
                        limits,
                        &rules,
                    ),
                    Ok(None) => out.ignored += 1,
                    Err(reject) => {
                        out.dead_letter(endpoint, index, b"", item.len(), reject, now_ms)
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Turns one decoded OTLP/HTTP trace export into records: each inference span a gateway
/// request (mapped, then redacted and validated like any event), the other spans counted as
/// ignored. A body that does not decode is dead-lettered whole, without its bytes (spans can
/// carry prompts), and answered 400.
pub fn prepare_otlp(
    format: Format,
    body: &[u8],
    config: &OtlpConfig,
    fingerprinter: &Fingerprinter,
    limits: &Limits,
    now_ms: i64,
) -> Result<Prepared, PrepareError> {
    let mut out = Prepared {
        dead_letter_limit: limits.max_dead_letter_bytes,
        ..Prepared::default()
    };
    let request = match otlp::decode(format, body) {
        Ok(request) => request,
        Err(detail) => {
            let reason = match format {
                Format::Protobuf => RejectReason::InvalidProtobuf,
                Format::Json => RejectReason::InvalidJson,
            };
            let reject = Reject::new(reason, detail);
            out.dead_letter(Endpoint::Otlp, 0, b"", body.len(), reject, now_ms);
            out.malformed = true;
            return Ok(out);
        }
    };
    let count = otlp::spans(&request).count();
    if count > limits.max_batch_events {
        return Err(PrepareError::TooManyEvents {
            count,
            max: limits.max_batch_events,
        });
    }
    let rules = ValidationRules {
        now_ms,
        max_future_skew_ms: limits.max_future_skew_ms,
    };
    for (index, (resource, span)) in otlp::spans(&request).enumerate() {
        match otlp::map(resource, span, config) {
            otlp::Mapped::Ignored => out.ignored += 1,
            otlp::Mapped::Refused(reject) => {
                out.dead_letter(Endpoint::Otlp, index, b"", 0, reject, now_ms)
            }
            otlp::Mapped::Inference(event) => {
                let event = fingerprinter.redact(&event);
                match admit(EventKind::Gateway, &event, limits, &rules) {
                    Ok(record) => out.accept(vec![record]),
                    Err(reject) => {
                        out.dead_letter(Endpoint::Otlp, index, &event, event.len(), reject, now_ms)
                    }
                }
            }
        }
    }
    Ok(out)
}

impl Prepared {
    /// Admits a mapped item (a gateway request and its provider attempts) whole, or
    /// dead-letters it as mapped, with the first refusal's reason. The mapped events carry no
    /// prompt: they are what a dead letter may show.
    #[allow(clippy::too_many_arguments)]
    fn admit_mapped(
        &mut self,
        endpoint: Endpoint,
        index: usize,
        gateway: Vec<u8>,
        attempts: Vec<Vec<u8>>,
        fingerprinter: &Fingerprinter,
        limits: &Limits,
        rules: &ValidationRules,
    ) {
        let mut records = Vec::with_capacity(1 + attempts.len());
        let events = std::iter::once((EventKind::Gateway, gateway))
            .chain(attempts.into_iter().map(|a| (EventKind::Provider, a)));
        for (kind, event) in events {
            let event = fingerprinter.redact(&event).into_owned();
            match admit(kind, &event, limits, rules) {
                Ok(record) => records.push(record),
                Err(reject) => {
                    let len = event.len();
                    return self.dead_letter(endpoint, index, &event, len, reject, rules.now_ms);
                }
            }
        }
        self.accept(records);
    }

    fn accept(&mut self, records: Vec<Record>) {
        self.accepted += 1;
        self.events += records.len();
        self.records.extend(records);
    }

    /// Records a refused item. For LiteLLM, `payload` is the mapped event, or nothing when the
    /// payload could not be read: the raw payload holds the prompt, which is never forwarded.
    /// `original_len` is the size of what was received (then `payload_truncated` is true).
    fn dead_letter(
        &mut self,
        endpoint: Endpoint,
        index: usize,
        payload: &[u8],
        original_len: usize,
        reject: Reject,
        now_ms: i64,
    ) {
        self.rejected.push(Rejected {
            index,
            reason: reject.reason.as_str(),
            detail: reject.detail.clone(),
        });
        let source = Source {
            topic: endpoint.source_topic(),
            partition: -1,
            offset: index as i64,
        };
        let mut letter = DeadLetter::new(payload, reject, source, now_ms);
        letter.payload_bytes = letter.payload_bytes.max(original_len);
        self.records.push(Record {
            destination: Destination::DeadLetters,
            key: letter.key(),
            payload: letter.to_json(self.dead_letter_limit),
        });
    }
}

/// Validates one contract event exactly as Kafka ingest does and re-encodes it.
fn admit(
    kind: EventKind,
    raw: &[u8],
    limits: &Limits,
    rules: &ValidationRules,
) -> Result<Record, Reject> {
    if raw.len() > limits.max_message_bytes {
        return Err(Reject::new(
            RejectReason::Oversize,
            format!(
                "event is {} bytes (max {})",
                raw.len(),
                limits.max_message_bytes
            ),
        ));
    }
    Ok(match event::decode(kind, raw, rules)? {
        event::Event::Gateway(e) => Record {
            destination: Destination::Gateway,
            payload: encode::gateway(&e),
            key: e.api_key_id,
        },
        event::Event::Provider(e) => Record {
            destination: Destination::Provider,
            payload: encode::provider(&e),
            key: e.api_key_id,
        },
    })
}

/// The `kind` an item states, if any: `gateway_request` (the default) or `provider_attempt`.
fn item_kind(item: &[u8], default: EventKind) -> Result<EventKind, Reject> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        kind: Option<Cow<'a, str>>,
    }
    // Most events do not say: skip the extra parse unless the word is there at all.
    if !item.windows(6).any(|w| w == b"\"kind\"") {
        return Ok(default);
    }
    match serde_json::from_slice::<Probe<'_>>(item) {
        // Not an object, or bad JSON: the decoder says why, precisely.
        Err(_) => Ok(default),
        Ok(Probe { kind: None }) => Ok(default),
        Ok(Probe { kind: Some(kind) }) => parse_kind(&kind).ok_or_else(|| {
            Reject::new(
                RejectReason::InvalidValue,
                format!("`kind` {kind:?} is neither \"gateway_request\" nor \"provider_attempt\""),
            )
        }),
    }
}

/// `gateway_request`/`gateway` or `provider_attempt`/`provider`.
pub fn parse_kind(kind: &str) -> Option<EventKind> {
    match kind {
        "gateway_request" | "gateway" => Some(EventKind::Gateway),
        "provider_attempt" | "provider" => Some(EventKind::Provider),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
