//! The HTTP collector: gateways that do not write to Kafka post their logs here.
//!
//! - `POST /v1/logs/litellm`: LiteLLM's `generic_api` callback (`json_array`, `ndjson` or
//!   `single`), each StandardLoggingPayload mapped to contract v1, prompts dropped on receipt;
//! - `POST /v1/logs/kong`: Kong Gateway's `http-log` entries of AI routes ([`kong`]), each a
//!   gateway request and its tries provider attempts;
//! - `POST /v1/traces`: OTLP/HTTP trace exports (protobuf or JSON), each GenAI inference span
//!   a gateway request ([`otlp`]), other spans ignored and counted;
//! - `POST /v1/events`: contract-v1 events as a JSON array, NDJSON or one object.
//!
//! All take a bearer token per source, gzip, and size limits. Every item is validated with the
//! contract's rules; refused ones go to the dead-letter topic (the same envelope as ingest) and
//! do not hold back their neighbours. A 2xx means every accepted event and every dead letter
//! was acknowledged by Kafka with `acks=all`; when Kafka cannot take them in time the answer is
//! 503 with `Retry-After`, so the gateway sends the batch again (ingest drops the duplicates
//! that a partly written batch leaves, by `event_id`).

mod answer;
pub mod batch;
pub mod body;
mod draft;
pub mod kong;
pub mod litellm;
pub mod mapping;
pub mod metrics;
pub mod otlp;
mod request;
pub mod sources;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Semaphore;
use tripline_core::auth::{self, TokenDigest};
use tripline_core::config::{CollectorConfig, IngestConfig, KafkaConfig, OtlpConfig, SourceConfig};
use tripline_core::secret::Fingerprinter;

use crate::batch::{Destination, Endpoint, Limits, Record};
use crate::request::{events, handle, kong_logs, litellm_logs, traces, Params};
use crate::sources::OwnedFormat;

/// Shortest bearer token accepted: a guessable token would let anyone write events.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(
        "collector.token_env: environment variable {var} (token of source {name:?}) is not set"
    )]
    MissingToken { name: String, var: String },
    #[error("collector.token_env: the token of source {name:?} (in {var}) is {len} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 24`)")]
    ShortToken {
        name: String,
        var: String,
        len: usize,
    },
    #[error(transparent)]
    Kafka(#[from] tripline_kafka::KafkaSetupError),
    #[error("kafka producer: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
}

/// A door requests come in by: a built-in endpoint, or a `[[sources]]` entry's `http_path`.
#[derive(Clone)]
enum Door {
    Endpoint(Endpoint),
    Source(Arc<SourceDoor>),
}

struct SourceDoor {
    /// `source:<name>`, the metrics label.
    label: String,
    path: String,
    /// `http:<path>`, the dead letters' `source_topic`.
    source_topic: String,
    format: OwnedFormat,
}

impl Door {
    fn label(&self) -> &str {
        match self {
            Door::Endpoint(e) => e.label(),
            Door::Source(d) => &d.label,
        }
    }

    fn path(&self) -> &str {
        match self {
            Door::Endpoint(e) => e.path(),
            Door::Source(d) => &d.path,
        }
    }

    /// Whether `?kind=` means something here: contract events' default kind.
    fn takes_kind(&self) -> bool {
        match self {
            Door::Endpoint(e) => *e == Endpoint::Events,
            Door::Source(d) => matches!(d.format, OwnedFormat::Events),
        }
    }
}

/// The collector's shared state; cheap to clone.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

/// Where records go: Tripline's event topics and its dead-letter topic, through a producer
/// that waits for every in-sync replica.
pub struct Outlet {
    producer: FutureProducer,
    gateway_topic: String,
    provider_topic: String,
    dlq_topic: String,
}

impl Outlet {
    /// With librdkafka giving up on a record after `timeout_ms`.
    pub fn new(
        kafka: &KafkaConfig,
        timeout_ms: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Outlet, CollectorError> {
        let mut producer = tripline_kafka::producer_config(kafka, &env)?;
        producer.set("message.timeout.ms", timeout_ms.to_string());
        Ok(Outlet {
            producer: producer.create()?,
            gateway_topic: kafka.gateway_topic.clone(),
            provider_topic: kafka.provider_topic.clone(),
            dlq_topic: kafka.dlq_topic.clone(),
        })
    }

    /// Produces every record, then waits for every acknowledgement. Any failure fails the
    /// whole batch: the caller sends it again (duplicates are dropped by ingest).
    pub async fn produce(&self, records: &[Record]) -> Result<(), String> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let topic = match record.destination {
                Destination::Gateway => &self.gateway_topic,
                Destination::Provider => &self.provider_topic,
                Destination::DeadLetters => &self.dlq_topic,
            };
            let kafka_record = FutureRecord::to(topic)
                .key(record.key.as_str())
                .payload(record.payload.as_slice());
            deliveries.push(
                tripline_kafka::enqueue(&self.producer, kafka_record)
                    .await
                    .map_err(|err| err.to_string())?,
            );
        }
        let mut first_error = None;
        for delivery in deliveries {
            if let Err(err) = tripline_kafka::delivered(delivery.await) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

struct Inner {
    outlet: Outlet,
    fingerprinter: Fingerprinter,
    /// (source name, SHA-256 of its token).
    tokens: Vec<(String, TokenDigest)>,
    limits: Limits,
    otlp: OtlpConfig,
    /// The `[[sources]]` served on their own paths.
    doors: Vec<Arc<SourceDoor>>,
    max_body_bytes: usize,
    produce_timeout: Duration,
    retry_after_s: u32,
    slots: Semaphore,
}

impl Collector {
    /// Builds the collector, or `None` when no source is configured (the endpoints are off).
    /// Tokens are read through `env` (the process environment in production).
    pub fn new(
        config: &CollectorConfig,
        sources: &[SourceConfig],
        kafka: &KafkaConfig,
        ingest: &IngestConfig,
        fingerprinter: Fingerprinter,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Collector>, CollectorError> {
        if config.token_env.is_empty() {
            return Ok(None);
        }
        let mut tokens = Vec::with_capacity(config.token_env.len());
        for (source, var) in &config.token_env {
            let token = env(var)
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| CollectorError::MissingToken {
                    name: source.clone(),
                    var: var.clone(),
                })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(CollectorError::ShortToken {
                    name: source.clone(),
                    var: var.clone(),
                    len: token.len(),
                });
            }
            tokens.push((source.clone(), TokenDigest::of(&token)));
        }
        // Past this, librdkafka gives up on a record and the request is answered 503.
        let outlet = Outlet::new(kafka, config.produce_timeout_ms, &env)?;
        crate::metrics::describe();
        Ok(Some(Collector {
            inner: Arc::new(Inner {
                outlet,
                fingerprinter,
                tokens,
                limits: Limits::new(kafka, ingest, config.max_batch_events),
                otlp: config.otlp.clone(),
                doors: sources
                    .iter()
                    .filter_map(|source| {
                        let path = source.http_path.clone()?;
                        Some(Arc::new(SourceDoor {
                            label: format!("source:{}", source.name),
                            source_topic: format!("http:{path}"),
                            path,
                            format: OwnedFormat::of(source),
                        }))
                    })
                    .collect(),
                max_body_bytes: config.max_body_bytes,
                produce_timeout: Duration::from_millis(config.produce_timeout_ms),
                retry_after_s: config.retry_after_s,
                slots: Semaphore::new(config.max_concurrent_batches),
            }),
        }))
    }

    /// `POST /v1/events`, `POST /v1/logs/litellm`, `POST /v1/logs/kong` and `POST /v1/traces`,
    /// to merge into the server's router.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route(Endpoint::Events.path(), post(events))
            .route(Endpoint::LiteLlm.path(), post(litellm_logs))
            .route(Endpoint::Otlp.path(), post(traces))
            .route(Endpoint::Kong.path(), post(kong_logs));
        for door in &self.inner.doors {
            let door = Door::Source(door.clone());
            router = router.route(
                door.path().to_owned().as_str(),
                post(
                    move |state: State<Collector>,
                          params: Query<Params>,
                          headers: HeaderMap,
                          body: Body| {
                        handle(door.clone(), state, params, headers, body)
                    },
                ),
            );
        }
        router.with_state(self.clone())
    }

    /// The source whose token the request carries.
    fn authenticate(&self, headers: &HeaderMap) -> Option<&str> {
        authenticate(&self.inner.tokens, headers)
    }
}

/// Finds the source of a `Bearer` token (see [`tripline_core::auth`]: any case of the scheme,
/// SHA-256 digests compared in constant time).
fn authenticate<'a>(tokens: &'a [(String, TokenDigest)], headers: &HeaderMap) -> Option<&'a str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::authenticate(value, tokens.iter().map(|(source, d)| (source.as_str(), d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn fingerprinter() -> Fingerprinter {
        Fingerprinter::new(b"0123456789abcdef-test").unwrap()
    }

    fn config(sources: &[(&str, &str)]) -> CollectorConfig {
        CollectorConfig {
            token_env: sources
                .iter()
                .map(|(s, v)| (s.to_string(), v.to_string()))
                .collect(),
            ..CollectorConfig::default()
        }
    }

    fn build(
        config: &CollectorConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, String> {
        Collector::new(
            config,
            &[],
            &KafkaConfig::default(),
            &IngestConfig::default(),
            fingerprinter(),
            env,
        )
        .map(|c| c.is_some())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn no_source_means_no_endpoints() {
        assert_eq!(build(&config(&[]), |_| None), Ok(false));
    }

    #[test]
    fn tokens_must_be_set_and_long_enough() {
        let sources = config(&[("litellm", "TOKEN_VAR")]);
        let err = build(&sources, |_| None).unwrap_err();
        assert!(
            err.contains("TOKEN_VAR") && err.contains("not set"),
            "{err}"
        );
        let err = build(&sources, |_| Some("  ".into())).unwrap_err();
        assert!(err.contains("not set"), "{err}");
        let err = build(&sources, |_| Some("short-token".into())).unwrap_err();
        assert!(err.contains("11 characters"), "{err}");
    }

    #[test]
    fn bearer_tokens_map_to_their_source() {
        let tokens = vec![
            (
                "litellm".to_owned(),
                TokenDigest::of("token-of-litellm-0123"),
            ),
            ("other".to_owned(), TokenDigest::of("token-of-other-456789")),
        ];
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            authenticate(&tokens, &headers).map(str::to_owned)
        };
        assert_eq!(
            check("Bearer token-of-litellm-0123").as_deref(),
            Some("litellm")
        );
        assert_eq!(
            check("bearer  token-of-other-456789 ").as_deref(),
            Some("other")
        );
        assert_eq!(check("Bearer token-of-other-45678"), None);
        assert_eq!(check("Basic token-of-other-456789"), None);
        assert_eq!(check("token-of-other-456789"), None);
        assert_eq!(authenticate(&tokens, &HeaderMap::new()), None);
    }
}
