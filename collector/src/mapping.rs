//! Any JSON log → a contract-v1 event, by a `[[sources]]` field mapping: each contract field
//! taken from a path in the record (a JSON Pointer or a dotted path, the first present of
//! several), or a constant, with durations converted to milliseconds and times from Unix
//! seconds, milliseconds, microseconds, nanoseconds or RFC 3339.
//!
//! Only the mapped paths are read into the event; nothing else of the record is kept. A string
//! `-` (what Envoy and nginx print for a value they do not have) counts as absent. Numbers
//! written as strings (`"200"`, `"0.0021"`) are read as numbers where the contract wants one.
//! A record without `event_id` mapped gets `<source>-` and 32 hex digits of SHA-256 over the
//! record: the same record sent again keeps its id, so ingest drops the copy.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use tripline_core::config::{
    DurationUnit, FieldSpec, MappedKind, SourceConfig, TimeFormat, DURATION_FIELDS,
};
use tripline_core::event::{EventKind, Reject, RejectReason};

/// A source's mapping, ready to apply.
#[derive(Debug, Clone)]
pub struct Mapping {
    source: String,
    kind: MappedKind,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    paths: Vec<Path>,
    constant: Option<Value>,
    unit: Option<DurationUnit>,
    time: Option<TimeFormat>,
}

#[derive(Debug, Clone)]
enum Path {
    Pointer(String),
    Dotted(Vec<String>),
}

impl Path {
    fn parse(path: &str) -> Path {
        if path.starts_with('/') {
            Path::Pointer(path.to_owned())
        } else {
            Path::Dotted(path.split('.').map(str::to_owned).collect())
        }
    }

    fn find<'v>(&self, record: &'v Value) -> Option<&'v Value> {
        match self {
            Path::Pointer(p) => record.pointer(p),
            Path::Dotted(parts) => parts.iter().try_fold(record, |v, part| match v {
                Value::Object(m) => m.get(part),
                Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }),
        }
    }
}

/// Fields the contract wants as integers, and as decimals.
const INTEGER_FIELDS: &[&str] = &[
    "status",
    "prompt_tokens",
    "completion_tokens",
    "attempt",
    "latency_ms",
    "retry_after_ms",
];
const DECIMAL_FIELDS: &[&str] = &["cost_usd"];

impl Mapping {
    /// From a validated `format = "mapping"` source (`Config::validate` has checked its fields).
    pub fn new(source: &SourceConfig) -> Mapping {
        let fields = source
            .fields
            .iter()
            .map(|(name, spec): (&String, &FieldSpec)| {
                let rule = spec.rule();
                Field {
                    name: name.clone(),
                    paths: rule
                        .path
                        .iter()
                        .flat_map(|p| p.paths())
                        .map(Path::parse)
                        .collect(),
                    constant: rule.value,
                    unit: rule.unit,
                    time: rule.time,
                }
            })
            .collect();
        Mapping {
            source: source.name.clone(),
            kind: source.kind,
            fields,
        }
    }

    /// The kind of event each record becomes.
    pub fn kind(&self) -> EventKind {
        match self.kind {
            MappedKind::GatewayRequest => EventKind::Gateway,
            MappedKind::ProviderAttempt => EventKind::Provider,
        }
    }

    /// Maps one record (its raw JSON, already redacted) to contract-v1 JSON, not validated yet.
    pub fn map(&self, raw: &[u8]) -> Result<Vec<u8>, Reject> {
        let record: Value = serde_json::from_slice(raw)
            .map_err(|err| Reject::new(RejectReason::InvalidJson, format!("not JSON: {err}")))?;
        if !record.is_object() {
            return Err(Reject::new(
                RejectReason::WrongType,
                format!("a {} record is a JSON object", self.source),
            ));
        }
        let mut event = Map::new();
        for field in &self.fields {
            let found = field
                .paths
                .iter()
                .filter_map(|p| p.find(&record))
                .find(|v| !is_absent(v))
                .or(field.constant.as_ref());
            let Some(value) = found else { continue };
            if let Some(value) = field.convert(value)? {
                event.insert(field.name.clone(), value);
            }
        }
        if !event.contains_key("event_id") {
            let digest = Sha256::digest(raw);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            event.insert(
                "event_id".into(),
                Value::String(format!("{}-{hex}", self.source)),
            );
        }
        Ok(serde_json::to_vec(&event).expect("a JSON map serializes"))
    }
}

impl Field {
    /// The value as the contract wants it; `None` to leave the field out.
    fn convert(&self, value: &Value) -> Result<Option<Value>, Reject> {
        let name = self.name.as_str();
        if name == "ts" {
            return self.time(value).map(Some);
        }
        if DURATION_FIELDS.contains(&name) {
            let Some(n) = number(value) else {
                return Ok(Some(value.clone()));
            };
            let ms = n * self.unit.unwrap_or(DurationUnit::Ms).to_ms();
            return Ok(Some(Value::from(ms.round() as i64)));
        }
        if INTEGER_FIELDS.contains(&name) {
            return Ok(Some(match number(value) {
                Some(n) if n.fract() == 0.0 => Value::from(n as i64),
                // Not an integer: the contract's decoder says so, with the field.
                _ => value.clone(),
            }));
        }
        if DECIMAL_FIELDS.contains(&name) {
            return Ok(Some(
                number(value)
                    .and_then(Number::from_f64)
                    .map_or_else(|| value.clone(), Value::Number),
            ));
        }
        if name == "stream" {
            return Ok(Some(match value {
                Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
                other => other.clone(),
            }));
        }
        // Text: numbers (a numeric id, a status class) as their digits.
        Ok(Some(match value {
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            other => other.clone(),
        }))
    }

    /// `ts` in milliseconds, or an RFC 3339 string (which the contract reads).
    fn time(&self, value: &Value) -> Result<Value, Reject> {
        let format = self.time.unwrap_or(match value {
            Value::String(s) if number(value).is_none() && !s.is_empty() => TimeFormat::Rfc3339,
            _ => TimeFormat::UnixMs,
        });
        let per_ms = match format {
            TimeFormat::Rfc3339 => {
                return match value {
                    Value::String(_) => Ok(value.clone()),
                    _ => Err(Reject::new(
                        RejectReason::WrongType,
                        format!("ts: {value} is not an RFC 3339 time"),
                    )),
                };
            }
            TimeFormat::UnixS => 1e3,
            TimeFormat::UnixMs => 1.0,
            TimeFormat::UnixUs => 1e-3,
            TimeFormat::UnixNs => 1e-6,
        };
        match number(value) {
            Some(n) => Ok(Value::from((n * per_ms).round() as i64)),
            None => Err(Reject::new(
                RejectReason::WrongType,
                format!("ts: {value} is not a Unix time ({format:?})"),
            )),
        }
    }
}

fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty() || s.trim() == "-",
        _ => false,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
