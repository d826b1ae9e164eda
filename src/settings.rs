//! Loading the config file: parse, validate, apply environment overrides, and resolve the
//! secrets and paths it names. Problems are printed with the file name and their place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tripline_core::config::Config;

/// A validated config and the directory its relative paths are relative to.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub base_dir: PathBuf,
}

/// Loads `path`, or the defaults when no file is given.
pub fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    let (mut config, base_dir) = match path {
        None => (Config::default(), std::env::current_dir()?),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let config = Config::from_toml(&text).map_err(|errors| {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect();
                anyhow::anyhow!(
                    "{} problem(s) in the config:\n{}",
                    errors.len(),
                    lines.join("\n")
                )
            })?;
            let base = path
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."));
            (config, base)
        }
    };
    config.apply_env_overrides(|var| std::env::var(var).ok());
    // Overrides are checked like the file, so a bad environment variable is caught too.
    let errors = config.validate("");
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!(
            "config invalid after environment overrides:\n{}",
            lines.join("\n")
        );
    }
    Ok(Loaded { config, base_dir })
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

    /// The HMAC key for API-key fingerprints, from its file or environment variable.
    pub fn fingerprint_secret(&self) -> anyhow::Result<Vec<u8>> {
        let secrets = &self.config.secrets;
        if let Some(file) = &secrets.fingerprint_secret_file {
            let path = self.resolve(file);
            let secret = std::fs::read(&path).with_context(|| {
                format!(
                    "secrets.fingerprint_secret_file: cannot read {}",
                    path.display()
                )
            })?;
            return Ok(trim_ascii(secret));
        }
        match std::env::var(&secrets.fingerprint_secret_env) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().as_bytes().to_vec()),
            _ => bail!(
                "the fingerprint secret is missing: set the environment variable {} \
                 (e.g. `export {}=$(openssl rand -hex 32)`) or secrets.fingerprint_secret_file",
                secrets.fingerprint_secret_env,
                secrets.fingerprint_secret_env
            ),
        }
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
