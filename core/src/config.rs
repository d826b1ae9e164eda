//! The TOML configuration: serde structs with named defaults, validated once into checked values.
//!
//! Secrets never live in the file: it names the environment variable or file that holds them.
//! Every error says where it is (`line:column` and the dotted key) and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

mod alerting;
mod detect;
pub use alerting::*;
pub use detect::*;

mod collector;
pub use collector::CollectorConfig;

#[derive(Debug, Clone, Deserialize, Default)]
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
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub alerting: AlertingConfig,
}

/// The HTTP server for `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
            properties: BTreeMap::new(),
            secret_properties_env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    /// Environment variable holding the password; unset or empty means no password.
    pub password_env: String,
    /// `lz4` saves bandwidth to a remote server; `none` saves CPU when it is on the same host.
    pub compression: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "tripline".into(),
            user: "default".into(),
            password_env: "TRIPLINE_CLICKHOUSE_PASSWORD".into(),
            compression: "lz4".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

/// A configuration problem, with its place in the file when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// 1-based line and column.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key, e.g. `ingest.batch_max_rows`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Environment variables that override the file, for endpoints that differ per deployment.
pub const ENV_OVERRIDES: [(&str, &str); 5] = [
    ("TRIPLINE_KAFKA_BROKERS", "kafka.brokers"),
    ("TRIPLINE_CLICKHOUSE_URL", "clickhouse.url"),
    ("TRIPLINE_CLICKHOUSE_DATABASE", "clickhouse.database"),
    ("TRIPLINE_CLICKHOUSE_USER", "clickhouse.user"),
    ("TRIPLINE_LISTEN", "server.listen"),
];

impl Config {
    /// Parses and validates a config file's text. All validation errors are returned together.
    pub fn from_toml(text: &str) -> Result<Config, Vec<ConfigError>> {
        let config: Config = toml::from_str(text).map_err(|err| vec![parse_error(text, &err)])?;
        let errors = config.validate(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Applies [`ENV_OVERRIDES`] through `lookup` (the process environment in production).
    pub fn apply_env_overrides(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for (var, _) in ENV_OVERRIDES {
            let Some(value) = lookup(var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match var {
                "TRIPLINE_KAFKA_BROKERS" => self.kafka.brokers = value,
                "TRIPLINE_CLICKHOUSE_URL" => self.clickhouse.url = value,
                "TRIPLINE_CLICKHOUSE_DATABASE" => self.clickhouse.database = value,
                "TRIPLINE_CLICKHOUSE_USER" => self.clickhouse.user = value,
                "TRIPLINE_LISTEN" => self.server.listen = value,
                _ => unreachable!("every override is matched"),
            }
        }
    }

    /// Checks values that parse but make no sense. `text` is used to find each key's line.
    pub fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: String, hint: &str| {
            if !ok {
                let (line, column) = locate_key(text, key).unzip();
                errors.push(ConfigError {
                    line,
                    column,
                    key: key.to_owned(),
                    message,
                    hint: (!hint.is_empty()).then(|| hint.to_owned()),
                });
            }
        };

        let listen = &self.server.listen;
        check(
            listen.parse::<SocketAddr>().is_ok(),
            "server.listen",
            format!("{listen:?} is not a socket address"),
            "use host:port, e.g. \"127.0.0.1:9898\"",
        );

        let k = &self.kafka;
        check(
            !k.brokers.trim().is_empty(),
            "kafka.brokers",
            "is empty".into(),
            "a comma-separated host:port list",
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
        check(
            k.gateway_topic != k.provider_topic && k.dlq_topic != k.gateway_topic,
            "kafka.dlq_topic",
            "topics must be distinct".into(),
            "",
        );
        check(
            (1..=5_000).contains(&k.fetch_wait_max_ms),
            "kafka.fetch_wait_max_ms",
            format!("must be between 1 and 5000 (got {})", k.fetch_wait_max_ms),
            "10 keeps latency low on tansu; 100-500 suits Apache Kafka",
        );
        check(
            k.heartbeat_interval_ms > 0 && k.heartbeat_interval_ms * 3 <= k.session_timeout_ms,
            "kafka.heartbeat_interval_ms",
            format!(
                "must be positive and at most a third of session_timeout_ms ({})",
                k.session_timeout_ms
            ),
            "",
        );
        for key in k.properties.keys().chain(k.secret_properties_env.keys()) {
            check(
                !MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()),
                "kafka.properties",
                format!("{key:?} is set by Tripline itself"),
                "use the matching kafka.* setting instead",
            );
        }

        let c = &self.clickhouse;
        check(
            c.url.starts_with("http://") || c.url.starts_with("https://"),
            "clickhouse.url",
            format!("{:?} is not an http(s) URL", c.url),
            "ClickHouse's HTTP interface, e.g. \"http://127.0.0.1:8123\"",
        );
        check(
            is_identifier(&c.database),
            "clickhouse.database",
            format!("{:?} is not a plain identifier", c.database),
            "letters, digits and '_', not starting with a digit",
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
            "",
        );
        check(
            (10..=60_000).contains(&i.batch_max_age_ms),
            "ingest.batch_max_age_ms",
            format!("must be between 10 and 60000 (got {})", i.batch_max_age_ms),
            "",
        );
        check(
            (256..=16 * 1024 * 1024).contains(&i.max_message_bytes),
            "ingest.max_message_bytes",
            format!(
                "must be between 256 and 16777216 (got {})",
                i.max_message_bytes
            ),
            "",
        );
        check(
            i.max_future_skew_ms >= 0,
            "ingest.max_future_skew_ms",
            format!("must not be negative (got {})", i.max_future_skew_ms),
            "",
        );
        check(
            (60..=7 * 86_400).contains(&i.dedup_window_s),
            "ingest.dedup_window_s",
            format!("must be between 60 and 604800 (got {})", i.dedup_window_s),
            "",
        );
        check(
            i.dedup_max_entries >= 1_000,
            "ingest.dedup_max_entries",
            format!("must be at least 1000 (got {})", i.dedup_max_entries),
            "",
        );
        check(
            i.retry_initial_ms > 0 && i.retry_initial_ms <= i.retry_max_ms,
            "ingest.retry_initial_ms",
            format!(
                "must be positive and at most retry_max_ms ({})",
                i.retry_max_ms
            ),
            "",
        );

        for (key, message, hint) in self.detect.problems() {
            check(false, &key, message, hint);
        }

        let s = &self.secrets;
        check(
            !s.fingerprint_secret_env.is_empty() || s.fingerprint_secret_file.is_some(),
            "secrets.fingerprint_secret_env",
            "no source for the fingerprint secret".into(),
            "name an environment variable or set fingerprint_secret_file",
        );
        collector::validate(&self.collector, &mut check);
        // `[alerting]` locates its own keys: they live in nested arrays of tables.
        errors.extend(self.alerting.problems(text));
        errors
    }
}

/// librdkafka properties Tripline sets itself; overriding them would break delivery guarantees.
const MANAGED_KAFKA_PROPERTIES: [&str; 6] = [
    "bootstrap.servers",
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

fn parse_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, column) = err.span().map(|span| line_column(text, span.start)).unzip();
    let message = err.message().to_owned();
    let hint = if message.contains("unknown field") {
        Some("check the spelling against tripline.example.toml".to_owned())
    } else {
        None
    };
    ConfigError {
        line,
        column,
        key: String::new(),
        message,
        hint,
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Finds the line and column of `section.key = …` in the file, for errors found after parsing.
fn locate_key(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut in_section = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            in_section = header.trim_end_matches(']').trim() == section;
            continue;
        }
        let Some((name, _)) = trimmed.split_once('=') else {
            continue;
        };
        if in_section && name.trim() == key {
            let column = line.len() - line.trim_start().len() + 1;
            return Some((index + 1, column));
        }
    }
    None
}

#[cfg(test)]
mod tests;
