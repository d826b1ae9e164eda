//! Kafka plumbing shared by every role: client settings derived from the config (with secrets
//! from the environment), topic creation, and a consumer close that cannot hang shutdown.

pub mod membership;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::warn;
use tripline_core::config::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka.secret_properties_env: environment variable {var} (for {property}) is not set")]
    MissingSecret { property: String, var: String },
    #[error("kafka client could not be created: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic} could not be created: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Settings every client shares: brokers, the operator's extra properties and secrets.
pub fn base_config(
    kafka: &KafkaConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("message.max.bytes", kafka.max_message_bytes.to_string());
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    for (property, var) in &kafka.secret_properties_env {
        let value = env(var).ok_or_else(|| KafkaSetupError::MissingSecret {
            property: property.clone(),
            var: var.clone(),
        })?;
        config.set(property, value);
    }
    Ok(config)
}

/// A consumer-group member that commits only what the caller says is safely stored.
pub fn consumer_config(
    kafka: &KafkaConfig,
    group_id: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = base_config(kafka, env)?;
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            kafka.heartbeat_interval_ms.to_string(),
        )
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        // Measured here: 10 ms instead of librdkafka's 1 s default triples throughput.
        .set("fetch.queue.backoff.ms", "10")
        // Bounds what librdkafka prefetches while we are paused on a slow ClickHouse.
        .set("queued.max.messages.kbytes", "32768");
    Ok(config)
}

/// A producer that reports success only once every in-sync replica has the message.
pub fn producer_config(
    kafka: &KafkaConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = base_config(kafka, env)?;
    config
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    Ok(config)
}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    env: impl Fn(&str) -> Option<String>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    create_topics(kafka, env, topics, partitions, &[]).await
}

/// Creates one-partition changelog topics that do not exist yet: compacted, so that Kafka
/// keeps the last record of every key, and as large a record as `kafka.max_message_bytes`.
pub async fn ensure_changelog_topics(
    kafka: &KafkaConfig,
    env: impl Fn(&str) -> Option<String>,
    topics: &[&str],
) -> Result<(), KafkaSetupError> {
    let max_bytes = kafka.max_message_bytes.to_string();
    let configs = [
        ("cleanup.policy", "compact"),
        ("max.message.bytes", max_bytes.as_str()),
    ];
    create_topics(kafka, env, topics, 1, &configs).await
}

async fn create_topics(
    kafka: &KafkaConfig,
    env: impl Fn(&str) -> Option<String>,
    topics: &[&str],
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = base_config(kafka, env)?.create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            configs.iter().fold(
                NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
                |t, (key, value)| t.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Leaves the group and drops the consumer off the async runtime, giving up after `timeout`.
///
/// Dropping a `StreamConsumer` can block indefinitely (rust-rdkafka #509); shutdown must not.
pub async fn close_consumer<C>(consumer: StreamConsumer<C>, timeout: Duration)
where
    C: ConsumerContext + 'static,
{
    let closing = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    });
    if tokio::time::timeout(timeout, closing).await.is_err() {
        warn!(
            ?timeout,
            "kafka consumer did not close in time; leaving it behind"
        );
    }
}

/// The process environment as a lookup function.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Latest known high watermark per partition, from fetch responses (not ListOffsets, which
/// tansu answers wrongly).
pub fn fetch_high_watermarks<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    partitions: impl IntoIterator<Item = (String, i32)>,
) -> HashMap<(String, i32), i64> {
    partitions
        .into_iter()
        .filter_map(|(topic, partition)| {
            let high = cached_high_watermark(consumer, &topic, partition)?;
            Some(((topic, partition), high))
        })
        .collect()
}

/// librdkafka's cached high watermark, updated by every fetch response (no broker round trip).
fn cached_high_watermark<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a valid C
    // string for the duration of the call, and librdkafka only writes the two out-parameters.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Puts a record on the producer's queue and returns the future of its acknowledgement.
///
/// Unlike `FutureProducer::send`, this does not wait for the acknowledgement before returning,
/// so many records can be in flight at once; a full queue is waited out, never dropped.
pub async fn enqueue<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// Whether an acknowledgement future ended in success.
pub fn delivered<E>(
    outcome: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Result<(), String> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, _))) => Err(err.to_string()),
        Err(_) => Err("producer dropped before acknowledging".into()),
    }
}

/// Why a record was not acknowledged, and whether sending it again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// The broker refuses this record as it is (too large, malformed): retrying it can only
    /// fail again, so the caller must change or drop it rather than hold its partition.
    Permanent(String),
    /// The broker is down, slow or electing a leader: the same record may succeed later.
    Transient(String),
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Permanent(err) => write!(f, "{err} (permanent)"),
            Self::Transient(err) => f.write_str(err),
        }
    }
}

impl From<rdkafka::error::KafkaError> for ProduceError {
    fn from(err: rdkafka::error::KafkaError) -> Self {
        let permanent = matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::MessageBatchTooLarge
                    | RDKafkaErrorCode::InvalidArgument
            )
        );
        if permanent {
            Self::Permanent(err.to_string())
        } else {
            Self::Transient(err.to_string())
        }
    }
}

/// Enqueues a record and waits for its acknowledgement, telling permanent refusals apart.
pub async fn produce<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> Result<(), ProduceError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    produce_at(producer, record).await.map(|_| ())
}

/// Like [`produce`]; returns the offset the record was stored at.
pub async fn produce_at<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> Result<i64, ProduceError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    match enqueue(producer, record).await?.await {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((err, _))) => Err(err.into()),
        Err(_) => Err(ProduceError::Transient(
            "producer dropped before acknowledging".into(),
        )),
    }
}
