//! `[[sources]]`: more doors by configuration. Each source reads one log format from a Kafka
//! topic Tripline subscribes to, or from an HTTP path of the collector, or both: Kong's log
//! entries (what `kafka-log` writes), LiteLLM's payloads, contract-v1 events, or any JSON log
//! through a field `mapping`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Labels its metrics and dead letters; an HTTP source's bearer token is the one named
    /// `collector.token_env.<name>`.
    pub name: String,
    /// What each record (a Kafka message, or an item of a posted batch) is.
    pub format: SourceFormat,
    /// Read records from this topic (on `kafka.brokers`), in the consumer group
    /// `<kafka.ingest_group_id>.source.<name>`.
    #[serde(default)]
    pub kafka_topic: Option<String>,
    /// Take records on `POST <http_path>` (a path under `/v1/logs/`).
    #[serde(default)]
    pub http_path: Option<String>,
    /// `mapping` only: what each record becomes.
    #[serde(default)]
    pub kind: MappedKind,
    /// `mapping` only: contract field → where its value is in the record.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Contract-v1 events.
    Events,
    /// LiteLLM's StandardLoggingPayload.
    Litellm,
    /// Kong Gateway's log entry of an AI route.
    Kong,
    /// Any JSON object, through `fields`.
    Mapping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedKind {
    #[default]
    GatewayRequest,
    ProviderAttempt,
}

/// Where a field's value is: a path (`"/usage/prompt_tokens"` as a JSON Pointer, or the dotted
/// `"usage.prompt_tokens"`), or a table saying more.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Path(String),
    Rule(FieldRule),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Where the value is; the first of several present wins.
    #[serde(default)]
    pub path: Option<PathList>,
    /// A constant, where the log does not say (`provider = { value = "openai" }`), or what is
    /// used when the path is absent.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// A duration's unit (`latency_ms`, `retry_after_ms`): converted to milliseconds.
    #[serde(default)]
    pub unit: Option<DurationUnit>,
    /// `ts` only: how the time is written.
    #[serde(default)]
    pub time: Option<TimeFormat>,
}

/// One path, or several tried in order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PathList {
    One(String),
    Many(Vec<String>),
}

impl PathList {
    pub fn paths(&self) -> Vec<&str> {
        match self {
            PathList::One(p) => vec![p.as_str()],
            PathList::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurationUnit {
    Ns,
    Us,
    Ms,
    S,
}

impl DurationUnit {
    /// Milliseconds per unit.
    pub fn to_ms(self) -> f64 {
        match self {
            DurationUnit::Ns => 1e-6,
            DurationUnit::Us => 1e-3,
            DurationUnit::Ms => 1.0,
            DurationUnit::S => 1e3,
        }
    }
}

/// How a time is written: Unix time in a unit (a number, or digits in a string), or RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    UnixS,
    UnixMs,
    UnixUs,
    UnixNs,
    Rfc3339,
}

impl FieldSpec {
    pub fn rule(&self) -> FieldRule {
        match self {
            FieldSpec::Path(p) => FieldRule {
                path: Some(PathList::One(p.clone())),
                value: None,
                unit: None,
                time: None,
            },
            FieldSpec::Rule(r) => r.clone(),
        }
    }
}

/// Contract fields a mapping may fill, per kind, and the ones it must.
pub const GATEWAY_FIELDS: &[&str] = &[
    "event_id",
    "ts",
    "api_key_id",
    "api_key",
    "model",
    "status",
    "key_hint",
    "project",
    "team",
    "user",
    "provider",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "client_ip",
    "client_country",
    "gateway_region",
    "user_agent",
    "request_id",
    "idempotency_key",
    "attempt",
    "stream",
];
pub const PROVIDER_FIELDS: &[&str] = &[
    "event_id",
    "ts",
    "request_id",
    "api_key_id",
    "api_key",
    "provider",
    "model",
    "attempt",
    "status",
    "provider_region",
    "error_type",
    "latency_ms",
    "retry_after_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
];
/// Durations, which take a `unit`.
pub const DURATION_FIELDS: &[&str] = &["latency_ms", "retry_after_ms"];

impl MappedKind {
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            MappedKind::GatewayRequest => GATEWAY_FIELDS,
            MappedKind::ProviderAttempt => PROVIDER_FIELDS,
        }
    }

    /// Fields without which no event can be made (`api_key_id` or `api_key`, checked apart;
    /// `event_id` is derived from the record when not mapped).
    pub fn required(self) -> &'static [&'static str] {
        match self {
            MappedKind::GatewayRequest => &["ts", "model", "status"],
            MappedKind::ProviderAttempt => &["ts", "request_id", "provider", "status"],
        }
    }
}

/// Whether `path` is a JSON Pointer (`/a/b`, `~0`/`~1` escapes) or a dotted path (`a.b.0`).
pub fn is_valid_path(path: &str) -> bool {
    if let Some(pointer) = path.strip_prefix('/') {
        // `~` only as `~0` or `~1`.
        let bytes = pointer.as_bytes();
        return bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b != b'~' || matches!(bytes.get(i + 1), Some(b'0' | b'1')));
    }
    !path.is_empty() && path.split('.').all(|s| !s.is_empty())
}

/// Checks the sources through the caller's `check(ok, key, message, hint)`. `token_env` is the
/// collector's (an HTTP source needs a token), `own_topics` Tripline's own topics (a source
/// reading one of them would loop).
pub(super) fn validate(
    sources: &[SourceConfig],
    token_env: &BTreeMap<String, String>,
    own_topics: &[&str],
    check: &mut dyn FnMut(bool, &str, String, &str),
) {
    let mut names = Vec::new();
    let mut paths = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let at = |key: &str| format!("sources[{i}].{key}");
        check(
            super::collector::is_source_name(&s.name) && !names.contains(&s.name.as_str()),
            &at("name"),
            format!("{:?} is not a valid, unique source name", s.name),
            "lowercase letters, digits, '_' and '-', at most 64 characters, one per source",
        );
        names.push(&s.name);
        check(
            s.kafka_topic.is_some() || s.http_path.is_some(),
            &at("name"),
            format!("source {:?} has neither kafka_topic nor http_path", s.name),
            "set kafka_topic = \"<topic>\" to read a topic, http_path = \"/v1/logs/<name>\" to take posts",
        );
        if let Some(topic) = &s.kafka_topic {
            check(
                super::is_topic_name(topic) && !own_topics.contains(&topic.as_str()),
                &at("kafka_topic"),
                format!("{topic:?} is not a topic a source can read"),
                "a topic name (letters, digits, '.', '_', '-'), not one of Tripline's own topics",
            );
        }
        if let Some(path) = &s.http_path {
            let built_in = ["/v1/logs/litellm", "/v1/logs/kong"];
            let ok = path.strip_prefix("/v1/logs/").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            }) && !built_in.contains(&path.as_str())
                && !paths.contains(&path.as_str());
            check(
                ok,
                &at("http_path"),
                format!("{path:?} is not a free collector path"),
                "/v1/logs/<letters, digits, '-', '_'>, not /v1/logs/litellm or /v1/logs/kong, one per source",
            );
            paths.push(path);
            check(
                token_env.contains_key(&s.name),
                &at("http_path"),
                format!("source {:?} takes posts but has no token", s.name),
                &format!(
                    "add {} = \"<environment variable>\" under [collector.token_env]",
                    s.name
                ),
            );
        }
        validate_fields(s, &at, check);
    }
}

fn validate_fields(
    s: &SourceConfig,
    at: &dyn Fn(&str) -> String,
    check: &mut dyn FnMut(bool, &str, String, &str),
) {
    if s.format != SourceFormat::Mapping {
        check(
            s.fields.is_empty(),
            &at("fields"),
            format!(
                "format {:?} has its own mapping; fields are for format = \"mapping\"",
                s.format
            ),
            "remove [sources.fields], or set format = \"mapping\"",
        );
        return;
    }
    let allowed = s.kind.fields();
    for (field, spec) in &s.fields {
        let key = at(&format!("fields.{}", super::quote_key(field)));
        if !allowed.contains(&field.as_str()) {
            check(
                false,
                &key,
                format!("{field:?} is not a field of a {:?} event", s.kind),
                &format!("one of: {}", allowed.join(", ")),
            );
            continue;
        }
        let rule = spec.rule();
        check(
            rule.path.is_some() || rule.value.is_some(),
            &key,
            format!("{field} has neither a path nor a value"),
            "path = \"/where/in/the/record\", or value = <a constant>",
        );
        for path in rule.path.iter().flat_map(PathList::paths) {
            check(
                is_valid_path(path),
                &key,
                format!("{path:?} is not a path"),
                "a JSON Pointer (\"/usage/prompt_tokens\", ~1 for '/') or a dotted path (\"usage.prompt_tokens\")",
            );
        }
        check(
            rule.unit.is_none() || DURATION_FIELDS.contains(&field.as_str()),
            &key,
            format!("{field} is no duration: it takes no unit"),
            "unit is for latency_ms and retry_after_ms",
        );
        check(
            rule.time.is_none() || field == "ts",
            &key,
            format!("{field} is no time: it takes no time format"),
            "time is for ts",
        );
    }
    for field in s.kind.required() {
        check(
            s.fields.contains_key(*field),
            &at("fields"),
            format!(
                "the mapping gives no {field}: every {:?} event needs one",
                s.kind
            ),
            &format!("add {field} = \"<path>\" (or {field} = {{ value = ... }})"),
        );
    }
    check(
        s.fields.contains_key("api_key_id") || s.fields.contains_key("api_key"),
        &at("fields"),
        "the mapping gives no key: neither api_key_id nor api_key".to_owned(),
        "api_key_id for an id, api_key for a raw key (fingerprinted)",
    );
}
