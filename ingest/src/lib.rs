//! Ingest: reads contract-v1 events from Kafka, validates, fingerprints secrets, enriches
//! (country, ASN, cost), drops duplicates, and batch-inserts into ClickHouse. Refused messages
//! go to the dead-letter topic with a reason. Offsets are committed only after a batch is stored,
//! so delivery is at-least-once, and the duplicate filter makes redeliveries invisible.

pub mod batch;
pub mod dedup;
pub mod dlq;
pub mod enrich;
pub mod metrics;
pub mod process;
mod warmup;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tripline_core::time::now_ms;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{IngestConfig, KafkaConfig};
use tripline_core::event::EventKind;

use crate::batch::Batch;
use crate::process::{Processor, Source};
use crate::writer::{Health, Writer};

pub use writer::Health as IngestHealth;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Kafka(#[from] tripline_kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("cannot refill the duplicate filter from clickhouse: {0}")]
    Warmup(#[from] clickhouse::error::Error),
}

/// Everything ingest needs, built by the binary from the config.
pub struct Ingest {
    pub kafka: KafkaConfig,
    pub settings: IngestConfig,
    pub clickhouse: clickhouse::Client,
    pub processor: Processor,
    pub health: Arc<Health>,
}

/// Logs rebalances and asks the loop to refill the duplicate filter afterwards, so that
/// partitions taken over from another worker are deduplicated against what it stored.
pub struct IngestContext {
    rebalanced: AtomicBool,
}

impl ClientContext for IngestContext {}

impl ConsumerContext for IngestContext {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(partitions = partitions.count(), "partitions assigned");
                self.rebalanced.store(true, Ordering::Release);
            }
            Rebalance::Revoke(partitions) => {
                info!(partitions = partitions.count(), "partitions revoked");
            }
            Rebalance::Error(err) => warn!(%err, "rebalance failed"),
        }
    }
}

impl Ingest {
    /// Runs until `shutdown`, then stores and commits what it has read.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        crate::metrics::describe();
        let env = tripline_kafka::process_env;
        let consumer: StreamConsumer<IngestContext> =
            tripline_kafka::consumer_config(&self.kafka, &self.kafka.ingest_group_id, env)?
                .create_with_context(IngestContext {
                    rebalanced: AtomicBool::new(false),
                })?;
        let consumer = Arc::new(consumer);
        let dlq: FutureProducer = tripline_kafka::producer_config(&self.kafka, env)?.create()?;

        let window_s = self.settings.dedup_window_s as u32;
        let mut warmed_at =
            warmup::refill(&self.clickhouse, &mut self.processor.dedup, window_s, 0).await?;
        self.health.clickhouse_ok.store(true, Ordering::Relaxed);

        consumer.subscribe(&[&self.kafka.gateway_topic, &self.kafka.provider_topic])?;
        self.health.consuming.store(true, Ordering::Relaxed);
        info!(
            gateway_topic = %self.kafka.gateway_topic,
            provider_topic = %self.kafka.provider_topic,
            group = %self.kafka.ingest_group_id,
            "ingest consuming"
        );

        let writer = Writer {
            clickhouse: self.clickhouse.clone(),
            dlq,
            dlq_topic: self.kafka.dlq_topic.clone(),
            consumer: consumer.clone(),
            retry_initial: Duration::from_millis(self.settings.retry_initial_ms),
            retry_max: Duration::from_millis(self.settings.retry_max_ms),
            shutdown: shutdown.clone(),
            health: self.health.clone(),
        };
        // One batch being written while the next one fills: parsing and inserting overlap, and
        // memory stays bounded to two batches when ClickHouse is slow or down.
        let (to_writer, mut batches) = mpsc::channel::<Batch>(1);
        let writer_task = tokio::spawn(async move {
            let mut last: Option<Batch> = None;
            while let Some(batch) = batches.recv().await {
                if writer.write_lagged(&batch).await.is_err() {
                    return None;
                }
                last = Some(batch);
            }
            // Make the final commit synchronous so that a clean stop leaves nothing to redo.
            if let Some(batch) = &last {
                writer.commit(batch, CommitMode::Sync);
            }
            Some(writer)
        });

        let max_rows = self.settings.batch_max_rows;
        let max_age = Duration::from_millis(self.settings.batch_max_age_ms);
        let mut batch = Batch::new();
        loop {
            let deadline = tokio::time::Instant::from_std(batch.started + max_age);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => {}
                received = consumer.recv() => match received {
                    Ok(message) => {
                        let topic = message.topic();
                        let kind = if topic == self.kafka.gateway_topic {
                            EventKind::Gateway
                        } else {
                            EventKind::Provider
                        };
                        let source = Source { topic, partition: message.partition(), offset: message.offset() };
                        let outcome = self.processor.process(kind, message.payload().unwrap_or_default(), source, now_ms());
                        batch.add(outcome, source);
                        if batch.len() < max_rows {
                            continue;
                        }
                    }
                    Err(err) => {
                        ::metrics::counter!(crate::metrics::CONSUMER_ERRORS).increment(1);
                        warn!(%err, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            }
            if consumer.context().rebalanced.swap(false, Ordering::AcqRel) {
                warmed_at = warmup::refill(
                    &self.clickhouse,
                    &mut self.processor.dedup,
                    window_s,
                    warmed_at,
                )
                .await?;
            }
            if !batch.is_empty() && to_writer.send(std::mem::take(&mut batch)).await.is_err() {
                break;
            }
        }

        info!("ingest stopping: storing the last batch");
        if !batch.is_empty() {
            let _ = to_writer.send(batch).await;
        }
        drop(to_writer);
        let writer = writer_task.await.ok().flatten();
        drop(writer);
        self.health.consuming.store(false, Ordering::Relaxed);
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => tripline_kafka::close_consumer(consumer, Duration::from_secs(5)).await,
            Err(_) => warn!("consumer still shared at shutdown; not closing it"),
        }
        info!("ingest stopped");
        Ok(())
    }
}

impl Writer {
    /// Writes a batch, then updates the lag gauges for the partitions it touched.
    async fn write_lagged(&self, batch: &Batch) -> Result<(), writer::Abandoned> {
        self.write(batch).await?;
        let watermarks = tripline_kafka::fetch_high_watermarks(
            &self.consumer,
            batch.next_offsets.keys().cloned(),
        );
        for ((topic, partition), high) in watermarks {
            if let Some(next) = batch.next_offsets.get(&(topic.clone(), partition)) {
                ::metrics::gauge!(crate::metrics::CONSUMER_LAG, "topic" => topic, "partition" => partition.to_string())
                    .set((high - next).max(0) as f64);
            }
        }
        Ok(())
    }
}
