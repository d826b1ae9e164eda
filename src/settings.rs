//! Loading the config file: parse, apply environment overrides, validate, and resolve the
//! secrets and paths it names. Every problem is reported as `file:line:column: key: message`
//! with a `hint:` line (see [`ConfigError`]); the same text is what `check-config` prints and
//! what a live reload logs when it refuses a file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tripline_core::config::{Config, ConfigError};

/// A validated config, the directory its relative paths are relative to, and the text it was
/// read from (to place problems found later, such as a missing secret).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub base_dir: PathBuf,
    /// The file as named on the command line, and its text; `None` without a file.
    source: Option<(String, String)>,
}

/// Loads `path`, or the defaults when no file is given; environment overrides are applied
/// either way. `Err` lists every problem found.
pub fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    let env = |var: &str| std::env::var(var).ok();
    let Some(path) = path else {
        let config = Config::load("", env).map_err(|errors| invalid("the config", errors))?;
        return Ok(Loaded {
            config,
            base_dir: std::env::current_dir()?,
            source: None,
        });
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("{name}: cannot read the config file (check the path given to --config or TRIPLINE_CONFIG)")
    })?;
    let config = Config::load(&text, env).map_err(|errors| {
        let errors = errors
            .into_iter()
            .map(|e| e.in_file(name.clone()))
            .collect();
        invalid(&name, errors)
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        config,
        base_dir,
        source: Some((name, text)),
    })
}

/// One error listing every problem, in the order found.
fn invalid(name: &str, errors: Vec<ConfigError>) -> anyhow::Error {
    let count = match errors.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("{name} is invalid ({count}):\n{}", lines.join("\n"))
}

impl Loaded {
    /// A path from the config, relative to the config file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// A problem with `key` found after loading, placed where `key` is in the file.
    pub fn problem(&self, key: &str, message: impl Into<String>, hint: &str) -> ConfigError {
        match &self.source {
            Some((name, text)) => ConfigError::at(text, key, message, hint).in_file(name.clone()),
            None => ConfigError::at("", key, message, hint),
        }
    }

    /// The HMAC key for API-key fingerprints, from its file or environment variable, checked
    /// for length.
    pub fn fingerprint_secret(&self) -> anyhow::Result<Vec<u8>> {
        let secrets = &self.config.secrets;
        let (secret, key, source) = if let Some(file) = &secrets.fingerprint_secret_file {
            let path = self.resolve(file);
            let secret = std::fs::read(&path).map_err(|err| {
                self.problem(
                    "secrets.fingerprint_secret_file",
                    format!("cannot read {}: {err}", path.display()),
                    "a file holding at least 16 random bytes, e.g. made with \
                     `openssl rand -hex 32 > FILE`; relative paths are relative to the config file",
                )
            })?;
            (
                trim_ascii(secret),
                "secrets.fingerprint_secret_file",
                path.display().to_string(),
            )
        } else {
            let var = &secrets.fingerprint_secret_env;
            match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => (
                    value.trim().as_bytes().to_vec(),
                    "secrets.fingerprint_secret_env",
                    format!("environment variable {var}"),
                ),
                _ => {
                    return Err(self
                        .problem(
                            "secrets.fingerprint_secret_env",
                            format!("the fingerprint secret is missing: {var} is not set"),
                            &format!(
                                "`export {var}=$(openssl rand -hex 32)` (keep it: a new secret \
                                 gives every key a new fingerprint), or set \
                                 secrets.fingerprint_secret_file"
                            ),
                        )
                        .into())
                }
            }
        };
        if let Err(err) = tripline_core::secret::Fingerprinter::new(&secret) {
            return Err(self
                .problem(
                    key,
                    format!("{err} (from {source})"),
                    "use at least 16 random bytes, e.g. `openssl rand -hex 32`",
                )
                .into());
        }
        Ok(secret)
    }

    /// The ClickHouse password, when its environment variable is set.
    pub fn clickhouse_password(&self) -> Option<String> {
        std::env::var(&self.config.clickhouse.password_env)
            .ok()
            .filter(|p| !p.is_empty())
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        tripline_store::client(
            &self.config.clickhouse,
            self.clickhouse_password().as_deref(),
        )
    }

    /// What `check-config` can tell about the environment this process runs in: secrets that
    /// are not set, files that are missing. Warnings, not errors: the same file is often checked
    /// on one machine and run on another.
    pub fn environment_problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let config = &self.config;
        if let Err(err) = self.fingerprint_secret() {
            match err.downcast::<ConfigError>() {
                Ok(problem) => out.push(problem),
                Err(err) => out.push(self.problem("secrets", format!("{err:#}"), "")),
            }
        }
        for (key, db) in [
            ("enrich.country_db", &config.enrich.country_db),
            ("enrich.asn_db", &config.enrich.asn_db),
        ] {
            if let Some(db) = db {
                let path = self.resolve(db);
                if !path.exists() {
                    out.push(self.problem(
                        key,
                        format!("{} does not exist: ingest will not start", path.display()),
                        "a MaxMind-format (.mmdb) database; relative paths are relative to the \
                         config file (the shipped ones are in data/geo/)",
                    ));
                }
            }
        }
        if let Some(prices) = &config.enrich.prices {
            let path = self.resolve(prices);
            let problem = match std::fs::read_to_string(&path) {
                Err(err) => Some(format!("cannot read {}: {err}", path.display())),
                Ok(text) => tripline_core::price::PriceTable::from_json(&text)
                    .err()
                    .map(|err| format!("{} is not a price table: {err}", path.display())),
            };
            if let Some(problem) = problem {
                out.push(self.problem(
                    "enrich.prices",
                    problem,
                    "a table in the format of data/prices/prices.json; leave the key out for the \
                     built-in one",
                ));
            }
        }
        for (source, var) in &config.collector.token_env {
            let key = format!(
                "collector.token_env.{}",
                tripline_core::config::quote_key(source)
            );
            match std::env::var(var).map(|t| t.trim().len()) {
                Err(_) | Ok(0) => out.push(self.problem(
                    &key,
                    format!("{var} (the token of source {source:?}) is not set: ingest will not start"),
                    &format!("`export {var}=$(openssl rand -hex 24)` and give the same token to the gateway"),
                )),
                Ok(len) if len < 16 => out.push(self.problem(
                    &key,
                    format!("the token in {var} is {len} characters: ingest will not start"),
                    "use at least 16 characters, e.g. `openssl rand -hex 24`",
                )),
                Ok(_) => {}
            }
        }
        for (property, var) in &config.kafka.secret_properties_env {
            if std::env::var(var).is_err() {
                out.push(self.problem(
                    &format!(
                        "kafka.secret_properties_env.{}",
                        tripline_core::config::quote_key(property)
                    ),
                    format!("{var} (for {property}) is not set: no Kafka client will start"),
                    &format!("export {var} before starting tripline"),
                ));
            }
        }
        out
    }
}

fn trim_ascii(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

/// Kafka settings with fresh topics (and consumer group) named `{prefix}.{stamp}.*`, created
/// on the broker: how `bench` and `evaluate` run without touching production topics.
pub async fn scratch_topics(
    kafka: &tripline_core::config::KafkaConfig,
    prefix: &str,
    stamp: u64,
) -> anyhow::Result<tripline_core::config::KafkaConfig> {
    let mut kafka = kafka.clone();
    kafka.gateway_topic = format!("{prefix}.{stamp}.gateway");
    kafka.provider_topic = format!("{prefix}.{stamp}.provider");
    kafka.dlq_topic = format!("{prefix}.{stamp}.dlq");
    kafka.ingest_group_id = format!("{prefix}-{stamp}");
    let topics = [
        &kafka.gateway_topic,
        &kafka.provider_topic,
        &kafka.dlq_topic,
    ];
    let topics: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
    tripline_kafka::ensure_topics(&kafka, tripline_kafka::process_env, &topics, 4).await?;
    Ok(kafka)
}
