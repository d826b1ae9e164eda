//! `[[sources]]` read from Kafka: a gateway's own log topic (Kong's `kafka-log`, APISIX's
//! `kafka-logger`, a log shipper's) turned into contract events on Tripline's topics.
//!
//! Each source is a consumer in its own group (`<kafka.ingest_group_id>.source.<name>`), so
//! several ingest processes share a source's partitions as they share the event topics. Records
//! are read in batches, each mapped exactly as the collector maps a posted item (the same
//! redaction, mapping and validation), the resulting events and dead letters are produced with
//! `acks=all`, and only then are the batch's offsets committed: a crash re-reads at most the
//! last batch, whose copies ingest drops by `event_id`. While Kafka does not take a batch it is
//! retried with backoff and nothing is committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{IngestConfig, KafkaConfig, SourceConfig, SourceFormat};
use tripline_core::event::EventKind;
use tripline_core::secret::Fingerprinter;
use tripline_core::time::now_ms;
use tripline_ingest::process::Source;

use crate::batch::{Limits, Prepared, RecordFormat};
use crate::mapping::Mapping;
use crate::{metrics, Outlet};

/// Most records in one batch, and how long a batch waits to fill.
const BATCH_RECORDS: usize = 500;
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// How long librdkafka tries to deliver a batch before the reader backs off and sends it again
/// (its own default is five minutes: an outage would be retried that rarely).
const PRODUCE_TIMEOUT_MS: u64 = 30_000;

/// The format of a source's records, owning its mapping.
#[derive(Debug, Clone)]
pub enum OwnedFormat {
    Events,
    LiteLlm,
    Kong,
    Mapping(Mapping),
}

impl OwnedFormat {
    pub fn of(source: &SourceConfig) -> OwnedFormat {
        match source.format {
            SourceFormat::Events => OwnedFormat::Events,
            SourceFormat::Litellm => OwnedFormat::LiteLlm,
            SourceFormat::Kong => OwnedFormat::Kong,
            SourceFormat::Mapping => OwnedFormat::Mapping(Mapping::new(source)),
        }
    }

    pub fn as_record_format(&self) -> RecordFormat<'_> {
        match self {
            OwnedFormat::Events => RecordFormat::Events(EventKind::Gateway),
            OwnedFormat::LiteLlm => RecordFormat::LiteLlm,
            OwnedFormat::Kong => RecordFormat::Kong,
            OwnedFormat::Mapping(m) => RecordFormat::Mapping(m),
        }
    }
}

/// One source's reader.
pub struct SourceReader {
    name: String,
    topic: String,
    format: OwnedFormat,
    consumer: StreamConsumer,
    outlet: Arc<Outlet>,
    fingerprinter: Fingerprinter,
    limits: Limits,
}

impl SourceReader {
    /// A reader for each source with a `kafka_topic`, subscribed.
    pub fn all(
        sources: &[SourceConfig],
        kafka: &KafkaConfig,
        ingest: &IngestConfig,
        fingerprinter: &Fingerprinter,
        env: impl Fn(&str) -> Option<String> + Copy,
    ) -> Result<Vec<SourceReader>, crate::CollectorError> {
        let mut readers = Vec::new();
        let outlet = Arc::new(Outlet::new(kafka, PRODUCE_TIMEOUT_MS, env)?);
        for source in sources {
            let Some(topic) = &source.kafka_topic else {
                continue;
            };
            let group = format!("{}.source.{}", kafka.ingest_group_id, source.name);
            let consumer: StreamConsumer =
                tripline_kafka::consumer_config(kafka, &group, env)?.create()?;
            consumer.subscribe(&[topic.as_str()])?;
            readers.push(SourceReader {
                name: source.name.clone(),
                topic: topic.clone(),
                format: OwnedFormat::of(source),
                consumer,
                outlet: outlet.clone(),
                fingerprinter: fingerprinter.clone(),
                limits: Limits::new(kafka, ingest, BATCH_RECORDS),
            });
        }
        Ok(readers)
    }

    /// Reads, maps, forwards and commits until `shutdown`; a batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(source = %self.name, topic = %self.topic, "reading source");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let mut batch = match first {
                Ok(message) => vec![message.detach()],
                Err(err) => {
                    warn!(source = %self.name, %err, "source: kafka read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH_RECORDS {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(message)) => batch.push(message.detach()),
                    Ok(Err(err)) => {
                        warn!(source = %self.name, %err, "source: kafka read failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut prepared = Prepared::new(&self.limits);
            let now = now_ms();
            for message in &batch {
                let origin = Source {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                prepared.take(
                    self.format.as_record_format(),
                    message.payload().unwrap_or_default(),
                    origin,
                    &self.fingerprinter,
                    &self.limits,
                    now,
                );
            }
            if !self.forward(&prepared, &shutdown).await {
                break;
            }
            self.count(&prepared);
            let mut offsets = BTreeMap::new();
            for message in &batch {
                let next = offsets.entry(message.partition()).or_insert(0);
                *next = (*next).max(message.offset() + 1);
            }
            let mut list = TopicPartitionList::new();
            for (partition, next) in offsets {
                let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
            }
            if let Err(err) = self.consumer.commit(&list, CommitMode::Async) {
                // The next commit covers these offsets; a crash before it re-reads them.
                warn!(source = %self.name, %err, "source: commit failed");
            }
        }
        tripline_kafka::close_consumer(self.consumer, Duration::from_secs(5)).await;
        info!(source = %self.name, "source reader stopped");
    }

    /// Produces the batch's records until Kafka takes them all; `false` at shutdown.
    async fn forward(&self, prepared: &Prepared, shutdown: &CancellationToken) -> bool {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.outlet.produce(&prepared.records).await {
                Ok(()) => return true,
                Err(err) => {
                    ::metrics::counter!(metrics::KAFKA_FAILURES).increment(1);
                    warn!(source = %self.name, %err, retry_in_ms = pause.as_millis() as u64, "source: kafka did not take the batch; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    fn count(&self, prepared: &Prepared) {
        let label = format!("source:{}", self.name);
        for (outcome, n) in [
            ("accepted", prepared.accepted),
            ("rejected", prepared.rejected.len()),
            ("ignored", prepared.ignored),
        ] {
            ::metrics::counter!(metrics::EVENTS, "endpoint" => label.clone(), "source" => self.name.clone(), "outcome" => outcome)
                .increment(n as u64);
        }
    }
}
