//! The TOML configuration: serde structs with named defaults, validated once into checked values.
//!
//! Secrets never live in the file: it names the environment variable or file that holds them.
//! Every error says where it is (`line:column` and the dotted key) and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

mod alerting;
mod detect;
pub use alerting::*;
pub use detect::*;

mod collector;
pub use collector::{CollectorConfig, OtlpConfig};
mod sources;
pub use sources::*;

mod diagnose;
pub use diagnose::quote_key;
use diagnose::Source;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub enrich: EnrichConfig,
    #[serde(default)]
    pub collector: CollectorConfig,
    /// `[[sources]]`: logs read from Kafka topics or extra HTTP paths, by format or mapping.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub alerting: AlertingConfig,
}

/// The HTTP server for `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    pub ingest_group_id: String,
    pub gateway_topic: String,
    pub provider_topic: String,
    pub dlq_topic: String,
    pub alerts_topic: String,
    /// How long the broker may hold a fetch. Keep it low on tansu, which always waits this long.
    pub fetch_wait_max_ms: u32,
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// The largest message the brokers take (their `message.max.bytes`; Kafka's default is about
    /// 1 MB). Tripline's producers never write more: dead letters are cut to fit.
    pub max_message_bytes: usize,
    /// Extra librdkafka properties (e.g. `security.protocol`). Secrets go in `secret_properties_env`.
    pub properties: BTreeMap<String, String>,
    /// librdkafka property name → environment variable holding its value (e.g. `sasl.password`).
    pub secret_properties_env: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            ingest_group_id: "tripline-ingest".into(),
            gateway_topic: "tripline.gateway.requests".into(),
            provider_topic: "tripline.provider.attempts".into(),
            dlq_topic: "tripline.dlq".into(),
            alerts_topic: "tripline.alerts".into(),
            fetch_wait_max_ms: 10,
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 1_000,
            max_message_bytes: 1_000_000,
            properties: BTreeMap::new(),
            secret_properties_env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    /// Environment variable holding the password; unset or empty means no password.
    pub password_env: String,
    /// `lz4` saves bandwidth to a remote server; `none` saves CPU when it is on the same host.
    pub compression: String,
    /// The ClickHouse cluster (a `remote_servers` name) whose nodes hold the schema: replicated
    /// tables on every shard behind `Distributed` tables of the usual names, all created
    /// `ON CLUSTER`. Empty (the default): one server, plain tables.
    pub cluster: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "tripline".into(),
            user: "default".into(),
            password_env: "TRIPLINE_CLICKHOUSE_PASSWORD".into(),
            compression: "lz4".into(),
            cluster: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A batch is inserted when it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or when its oldest message is this old.
    pub batch_max_age_ms: u64,
    /// Larger messages go to the dead-letter topic as `oversize`.
    pub max_message_bytes: usize,
    /// Events stamped further than this in the future are refused as clock bugs.
    pub max_future_skew_ms: i64,
    /// Duplicates of an event (same `event_id`) are dropped within this window of event time.
    pub dedup_window_s: u64,
    /// At most this many remembered event ids (about 16 bytes each); past it the oldest go first.
    pub dedup_max_entries: usize,
    /// First and largest pause between retries of a failed ClickHouse insert.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_max_rows: 50_000,
            batch_max_age_ms: 1_000,
            max_message_bytes: 64 * 1024,
            max_future_skew_ms: 300_000,
            dedup_window_s: 3_600,
            dedup_max_entries: 4_000_000,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Environment variable holding the HMAC key used to fingerprint raw API keys.
    pub fingerprint_secret_env: String,
    /// Alternatively, a file holding it (wins over the environment variable when set).
    pub fingerprint_secret_file: Option<String>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            fingerprint_secret_env: "TRIPLINE_FINGERPRINT_SECRET".into(),
            fingerprint_secret_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// MaxMind-format country database; relative paths are relative to the config file.
    pub country_db: Option<String>,
    /// MaxMind-format ASN database.
    pub asn_db: Option<String>,
    /// A price table in the format of `data/prices/prices.json`; the built-in one when unset.
    pub prices: Option<String>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            country_db: Some("data/geo/country.mmdb".into()),
            asn_db: Some("data/geo/asn.mmdb".into()),
            prices: None,
        }
    }
}

/// A configuration problem: where it is, what is wrong, and how to fix it.
///
/// Displayed as `file:line:column: key: message` and, on the next line, `  hint: …`. The place
/// is the file and position when the key is written in the file, or the environment variable
/// when the value came from one ([`ENV_OVERRIDES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file, as the loader names it (set by [`ConfigError::in_file`]).
    pub file: Option<String>,
    /// The environment variable the bad value came from, when it did not come from the file.
    pub env: Option<String>,
    /// 1-based line and column (in characters) of the value, or of the key for an unknown key,
    /// or of the table's header for something missing from it.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key, e.g. `ingest.batch_max_rows` or `alerting.receivers[1].url`.
    pub key: String,
    pub message: String,
    /// How to fix it: the valid range or choices, the default, or a close spelling.
    pub hint: String,
}

impl ConfigError {
    /// A problem with `key` found outside the file's checks (a secret that cannot be read, a
    /// database file that is missing), placed where `key` is written in `text`.
    pub fn at(text: &str, key: &str, message: impl Into<String>, hint: &str) -> Self {
        Source::new(text).error(key, message.into(), hint)
    }

    /// Names the file the error is in, for its place.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// `file:line:column`, `file`, `environment variable X`, or nothing known.
    pub fn place(&self) -> String {
        if let Some(var) = &self.env {
            return format!("environment variable {var}");
        }
        let mut place = self.file.clone().unwrap_or_default();
        if let (Some(line), Some(column)) = (self.line, self.column) {
            if !place.is_empty() {
                place.push(':');
            }
            place.push_str(&format!("{line}:{column}"));
        }
        place
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self.place();
        if !place.is_empty() {
            write!(f, "{place}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}\n  hint: {}", self.message, self.hint)
    }
}

impl std::error::Error for ConfigError {}

/// Environment variables that override the file, for endpoints that differ per deployment.
pub const ENV_OVERRIDES: [(&str, &str); 6] = [
    ("TRIPLINE_KAFKA_BROKERS", "kafka.brokers"),
    ("TRIPLINE_CLICKHOUSE_URL", "clickhouse.url"),
    ("TRIPLINE_CLICKHOUSE_DATABASE", "clickhouse.database"),
    ("TRIPLINE_CLICKHOUSE_CLUSTER", "clickhouse.cluster"),
    ("TRIPLINE_CLICKHOUSE_USER", "clickhouse.user"),
    ("TRIPLINE_LISTEN", "server.listen"),
];

impl Config {
    /// Parses and validates a config file's text. Every problem found is returned, each with
    /// its place and a hint.
    pub fn from_toml(text: &str) -> Result<Config, Vec<ConfigError>> {
        Self::load(text, |_| None)
    }

    /// Parses `text` (empty: all defaults), applies [`ENV_OVERRIDES`] through `env` (the
    /// process environment in production) and validates the result. A bad value that came
    /// from an environment variable is reported with that variable as its place.
    pub fn load(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        diagnose::parse(text, |config, source| {
            let applied = config.apply_env_overrides(&env);
            let mut errors = config.validate_in(source);
            for error in &mut errors {
                if let Some((var, _)) = applied.iter().find(|(_, key)| *key == error.key) {
                    error.env = Some((*var).to_owned());
                    error.line = None;
                    error.column = None;
                    error.hint = format!(
                        "{}; {var} overrides {} from the file: fix or unset it",
                        error.hint, error.key
                    );
                }
            }
            errors
        })
    }

    /// Applies [`ENV_OVERRIDES`] through `lookup` (the process environment in production), and
    /// returns the (variable, key) pairs it applied.
    pub fn apply_env_overrides(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Vec<(&'static str, &'static str)> {
        let mut applied = Vec::new();
        for (var, key) in ENV_OVERRIDES {
            let Some(value) = lookup(var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match var {
                "TRIPLINE_KAFKA_BROKERS" => self.kafka.brokers = value,
                "TRIPLINE_CLICKHOUSE_URL" => self.clickhouse.url = value,
                "TRIPLINE_CLICKHOUSE_DATABASE" => self.clickhouse.database = value,
                "TRIPLINE_CLICKHOUSE_CLUSTER" => self.clickhouse.cluster = value,
                "TRIPLINE_CLICKHOUSE_USER" => self.clickhouse.user = value,
                "TRIPLINE_LISTEN" => self.server.listen = value,
                _ => unreachable!("every override is matched"),
            }
            applied.push((var, key));
        }
        applied
    }

    /// Checks values that parse but make no sense, locating each key in `text` (the file the
    /// config came from; empty when none).
    pub fn validate(&self, text: &str) -> Vec<ConfigError> {
        self.validate_in(&Source::new(text))
    }

    fn validate_in(&self, source: &Source) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: String, hint: &str| {
            if !ok {
                errors.push(source.error(key, message, hint));
            }
        };

        let listen = &self.server.listen;
        check(
            listen.parse::<SocketAddr>().is_ok(),
            "server.listen",
            format!("{listen:?} is not a socket address"),
            "an IP address and port, e.g. \"127.0.0.1:9898\" (\"0.0.0.0:9898\" for every interface)",
        );

        let k = &self.kafka;
        check(
            !k.brokers.trim().is_empty(),
            "kafka.brokers",
            "is empty".into(),
            "a comma-separated host:port list, e.g. \"kafka-1:9092,kafka-2:9092\"",
        );
        check(
            !k.ingest_group_id.trim().is_empty(),
            "kafka.ingest_group_id",
            "is empty".into(),
            "the consumer group every ingest process shares",
        );
        for (key, topic) in [
            ("kafka.gateway_topic", &k.gateway_topic),
            ("kafka.provider_topic", &k.provider_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
        ] {
            check(
                is_topic_name(topic),
                key,
                format!("{topic:?} is not a valid topic name"),
                "letters, digits, '.', '_' and '-', at most 249 characters",
            );
        }
        let topics = [
            ("kafka.gateway_topic", &k.gateway_topic),
            ("kafka.provider_topic", &k.provider_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
        ];
        for (i, (key, topic)) in topics.iter().enumerate() {
            if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t == topic) {
                check(
                    false,
                    key,
                    format!("{topic:?} is also {other}"),
                    "the four topics must be distinct: give this one its own name",
                );
            }
        }
        check(
            (1..=5_000).contains(&k.fetch_wait_max_ms),
            "kafka.fetch_wait_max_ms",
            format!("must be between 1 and 5000 (got {})", k.fetch_wait_max_ms),
            "10 keeps latency low on tansu; 100-500 suits Apache Kafka",
        );
        check(
            k.heartbeat_interval_ms > 0
                && u64::from(k.heartbeat_interval_ms) * 3 <= u64::from(k.session_timeout_ms),
            "kafka.heartbeat_interval_ms",
            format!(
                "must be positive and at most a third of session_timeout_ms (got {} with session_timeout_ms {})",
                k.heartbeat_interval_ms, k.session_timeout_ms
            ),
            "lower it, or raise kafka.session_timeout_ms to at least three times it",
        );
        check(
            (16 * 1024..=64 * 1024 * 1024).contains(&k.max_message_bytes),
            "kafka.max_message_bytes",
            format!(
                "must be between 16384 and 67108864 (got {})",
                k.max_message_bytes
            ),
            "the brokers' message.max.bytes; 1000000 suits Kafka's default",
        );
        for (table, map) in [
            ("kafka.properties", &k.properties),
            ("kafka.secret_properties_env", &k.secret_properties_env),
        ] {
            for property in map.keys() {
                check(
                    !MANAGED_KAFKA_PROPERTIES.contains(&property.as_str()),
                    &format!("{table}.{}", quote_key(property)),
                    format!("{property:?} is set by Tripline itself"),
                    match property.as_str() {
                        "bootstrap.servers" => "use kafka.brokers instead",
                        "group.id" => "use kafka.ingest_group_id instead",
                        "message.max.bytes" => "use kafka.max_message_bytes instead",
                        _ => "remove it: Tripline sets it to keep its delivery guarantees",
                    },
                );
            }
        }
        for (property, var) in &k.secret_properties_env {
            check(
                !var.trim().is_empty(),
                &format!("kafka.secret_properties_env.{}", quote_key(property)),
                "names no environment variable".into(),
                "e.g. \"sasl.password\" = \"TRIPLINE_KAFKA_PASSWORD\"",
            );
        }

        let c = &self.clickhouse;
        check(
            c.url.starts_with("http://") || c.url.starts_with("https://"),
            "clickhouse.url",
            format!("{:?} is not an http(s) URL", c.url),
            "ClickHouse's HTTP interface (port 8123 by default), e.g. \"http://127.0.0.1:8123\"",
        );
        check(
            is_identifier(&c.database),
            "clickhouse.database",
            format!("{:?} is not a plain identifier", c.database),
            "letters, digits and '_', not starting with a digit",
        );
        check(
            c.cluster.is_empty() || is_identifier(&c.cluster),
            "clickhouse.cluster",
            format!("{:?} is not a plain identifier", c.cluster),
            "the name of a cluster in the servers' remote_servers, e.g. \"tripline\"",
        );
        check(
            matches!(c.compression.as_str(), "lz4" | "none"),
            "clickhouse.compression",
            format!("{:?} is not a supported compression", c.compression),
            "\"lz4\" or \"none\"",
        );

        let i = &self.ingest;
        check(
            (1..=1_000_000).contains(&i.batch_max_rows),
            "ingest.batch_max_rows",
            format!("must be between 1 and 1000000 (got {})", i.batch_max_rows),
            "rows per ClickHouse insert: fewer means more, smaller inserts",
        );
        check(
            (10..=60_000).contains(&i.batch_max_age_ms),
            "ingest.batch_max_age_ms",
            format!("must be between 10 and 60000 (got {})", i.batch_max_age_ms),
            "how long a batch may fill before it is inserted, in milliseconds",
        );
        check(
            (256..=16 * 1024 * 1024).contains(&i.max_message_bytes),
            "ingest.max_message_bytes",
            format!(
                "must be between 256 and 16777216 (got {})",
                i.max_message_bytes
            ),
            "larger messages are dead-lettered as oversize",
        );
        check(
            i.max_future_skew_ms >= 0,
            "ingest.max_future_skew_ms",
            format!("must not be negative (got {})", i.max_future_skew_ms),
            "0 refuses any event stamped in the future",
        );
        check(
            (60..=7 * 86_400).contains(&i.dedup_window_s),
            "ingest.dedup_window_s",
            format!("must be between 60 and 604800 (got {})", i.dedup_window_s),
            "seconds of event time within which a repeated event_id is dropped",
        );
        check(
            i.dedup_max_entries >= 1_000,
            "ingest.dedup_max_entries",
            format!("must be at least 1000 (got {})", i.dedup_max_entries),
            "about 16 bytes of memory per entry",
        );
        check(
            i.retry_initial_ms > 0 && i.retry_initial_ms <= i.retry_max_ms,
            "ingest.retry_initial_ms",
            format!(
                "must be positive and at most retry_max_ms (got {} with retry_max_ms {})",
                i.retry_initial_ms, i.retry_max_ms
            ),
            "lower it, or raise ingest.retry_max_ms",
        );

        for (key, message, hint) in self.detect.problems() {
            check(false, &key, message, &hint);
        }

        let s = &self.secrets;
        check(
            !s.fingerprint_secret_env.is_empty() || s.fingerprint_secret_file.is_some(),
            "secrets.fingerprint_secret_env",
            "no source for the fingerprint secret".into(),
            "name an environment variable (default \"TRIPLINE_FINGERPRINT_SECRET\") or set secrets.fingerprint_secret_file",
        );
        collector::validate(&self.collector, &mut check);
        let k = &self.kafka;
        let own_topics = [
            k.gateway_topic.as_str(),
            k.provider_topic.as_str(),
            k.dlq_topic.as_str(),
            k.alerts_topic.as_str(),
        ];
        sources::validate(
            &self.sources,
            &self.collector.token_env,
            &own_topics,
            &mut check,
        );
        errors.extend(self.alerting.problems_in(source));
        errors
    }
}

/// librdkafka properties Tripline sets itself; overriding them would break delivery guarantees.
const MANAGED_KAFKA_PROPERTIES: [&str; 7] = [
    "bootstrap.servers",
    "message.max.bytes",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
];

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests;
