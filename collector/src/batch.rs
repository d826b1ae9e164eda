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
use crate::mapping::Mapping;
use crate::otlp::{self, Format};
use crate::{kong, litellm};
use tripline_core::config::{IngestConfig, KafkaConfig, OtlpConfig};
use tripline_core::event::encode;

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

impl Limits {
    /// Ingest's per-event limits, the broker's envelope limit, and `max_batch_events`.
    pub fn new(kafka: &KafkaConfig, ingest: &IngestConfig, max_batch_events: usize) -> Limits {
        Limits {
            max_batch_events,
            max_message_bytes: ingest.max_message_bytes,
            max_dead_letter_bytes: tripline_ingest::dlq::envelope_limit(kafka.max_message_bytes),
            max_future_skew_ms: ingest.max_future_skew_ms,
        }
    }
}

/// What each record of a door is.
#[derive(Debug, Clone, Copy)]
pub enum RecordFormat<'a> {
    /// Contract-v1 events; those that do not say their `kind` are of this one.
    Events(EventKind),
    LiteLlm,
    Kong,
    Mapping(&'a Mapping),
}

impl RecordFormat<'_> {
    /// Whether a record that cannot be read may go to the dead-letter topic as received: a
    /// contract event may; a gateway's log may hold the prompt, so it goes without its bytes.
    fn keeps_unreadable(&self) -> bool {
        matches!(self, RecordFormat::Events(_))
    }
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
    let format = match endpoint {
        Endpoint::Events => RecordFormat::Events(default_kind),
        Endpoint::LiteLlm => RecordFormat::LiteLlm,
        Endpoint::Kong => RecordFormat::Kong,
        Endpoint::Otlp => unreachable!("OTLP bodies go through prepare_otlp"),
    };
    prepare_body(
        format,
        endpoint.source_topic(),
        body,
        fingerprinter,
        limits,
        now_ms,
    )
}

/// Turns one decoded body of `format` records into records; dead letters name `source_topic`
/// and each item's index.
pub fn prepare_body(
    format: RecordFormat<'_>,
    source_topic: &str,
    body: &[u8],
    fingerprinter: &Fingerprinter,
    limits: &Limits,
    now_ms: i64,
) -> Result<Prepared, PrepareError> {
    // Split on the raw bytes (a newline or bracket is never part of a secret), then redact each
    // item before anything reads it, exactly as ingest does per Kafka message: nothing below,
    // not even a dead letter, may see a raw secret.
    let mut out = Prepared::new(limits);
    let items = match body::split(body) {
        Ok(items) => items,
        Err(BodyError::Malformed(detail)) => {
            let reject = Reject::new(RejectReason::InvalidJson, detail);
            let payload = if format.keeps_unreadable() {
                fingerprinter.redact(body)
            } else {
                Cow::Borrowed(&b""[..])
            };
            let origin = Source {
                topic: source_topic,
                partition: -1,
                offset: 0,
            };
            out.dead_letter(origin, &payload, body.len(), reject, now_ms);
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
    out.records.reserve(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let origin = Source {
            topic: source_topic,
            partition: -1,
            offset: index as i64,
        };
        out.take(format, item, origin, fingerprinter, limits, now_ms);
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
    let mut out = Prepared::new(limits);
    let origin = |index: usize| Source {
        topic: Endpoint::Otlp.source_topic(),
        partition: -1,
        offset: index as i64,
    };
    let request = match otlp::decode(format, body) {
        Ok(request) => request,
        Err(detail) => {
            let reason = match format {
                Format::Protobuf => RejectReason::InvalidProtobuf,
                Format::Json => RejectReason::InvalidJson,
            };
            let reject = Reject::new(reason, detail);
            out.dead_letter(origin(0), b"", body.len(), reject, now_ms);
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
            otlp::Mapped::Refused(reject) => out.dead_letter(origin(index), b"", 0, reject, now_ms),
            otlp::Mapped::Inference(event) => {
                let event = fingerprinter.redact(&event);
                match admit(EventKind::Gateway, &event, limits, &rules) {
                    Ok(record) => out.accept(vec![record]),
                    Err(reject) => {
                        out.dead_letter(origin(index), &event, event.len(), reject, now_ms)
                    }
                }
            }
        }
    }
    Ok(out)
}

impl Prepared {
    pub fn new(limits: &Limits) -> Prepared {
        Prepared {
            dead_letter_limit: limits.max_dead_letter_bytes,
            ..Prepared::default()
        }
    }

    /// One record from `origin`: redacted before anything reads it, mapped, validated, and
    /// accepted (its events), ignored (no LLM call) or dead-lettered with its reason.
    pub fn take(
        &mut self,
        format: RecordFormat<'_>,
        raw: &[u8],
        origin: Source<'_>,
        fingerprinter: &Fingerprinter,
        limits: &Limits,
        now_ms: i64,
    ) {
        let rules = ValidationRules {
            now_ms,
            max_future_skew_ms: limits.max_future_skew_ms,
        };
        let item = fingerprinter.redact(raw);
        let item = item.as_ref();
        let mapped = match format {
            RecordFormat::Events(default_kind) => {
                match item_kind(item, default_kind)
                    .and_then(|kind| admit(kind, item, limits, &rules))
                {
                    Ok(record) => self.accept(vec![record]),
                    Err(reject) => self.dead_letter(origin, item, item.len(), reject, now_ms),
                }
                return;
            }
            RecordFormat::LiteLlm => {
                litellm::map(item).map(|m| Some((m.gateway, m.provider.into_iter().collect())))
            }
            RecordFormat::Kong => kong::map(item).map(|m| m.map(|m| (m.gateway, m.attempts))),
            RecordFormat::Mapping(mapping) => {
                // One event of the mapping's kind: no attempts to add.
                let event = match mapping.map(item) {
                    Ok(event) => fingerprinter.redact(&event).into_owned(),
                    Err(reject) => {
                        return self.dead_letter(origin, b"", item.len(), reject, now_ms)
                    }
                };
                match admit(mapping.kind(), &event, limits, &rules) {
                    Ok(record) => self.accept(vec![record]),
                    Err(reject) => self.dead_letter(origin, &event, event.len(), reject, now_ms),
                }
                return;
            }
        };
        match mapped {
            Ok(Some((gateway, attempts))) => {
                self.admit_mapped(origin, gateway, attempts, fingerprinter, limits, &rules)
            }
            Ok(None) => self.ignored += 1,
            Err(reject) => self.dead_letter(origin, b"", item.len(), reject, now_ms),
        }
    }

    /// Admits a mapped item (a gateway request and its provider attempts) whole, or
    /// dead-letters it as mapped, with the first refusal's reason. The mapped events carry no
    /// prompt: they are what a dead letter may show.
    fn admit_mapped(
        &mut self,
        origin: Source<'_>,
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
                    return self.dead_letter(origin, &event, len, reject, rules.now_ms);
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

    /// Records a refused item. For a gateway's log, `payload` is the mapped event, or nothing
    /// when the record could not be read: the raw record may hold the prompt, which is never
    /// forwarded. `original_len` is the size of what was received (then `payload_truncated`
    /// is true). The answer's index is the item's place in its batch (`origin.offset`).
    fn dead_letter(
        &mut self,
        origin: Source<'_>,
        payload: &[u8],
        original_len: usize,
        reject: Reject,
        now_ms: i64,
    ) {
        self.rejected.push(Rejected {
            index: usize::try_from(origin.offset).unwrap_or(0),
            reason: reject.reason.as_str(),
            detail: reject.detail.clone(),
        });
        let mut letter = DeadLetter::new(payload, reject, origin, now_ms);
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
