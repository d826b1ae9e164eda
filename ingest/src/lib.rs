//! Ingest: reads contract-v1 events from Kafka, validates, fingerprints secrets, enriches
//! (country, ASN, cost), drops duplicates, and batch-inserts into ClickHouse. Refused messages
//! go to the dead-letter topic with a reason. Offsets are committed only after a batch is stored,
//! so delivery is at-least-once, and the duplicate filter makes redeliveries invisible.

pub mod batch;
pub mod dedup;
pub mod dlq;
pub mod enrich;
pub mod health;
pub mod metrics;
pub mod process;
mod repair;
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
use crate::health::Health;
use crate::process::{Processor, Source};
use crate::writer::Writer;

pub use health::Health as IngestHealth;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Kafka(#[from] tripline_kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(
        "the batch writer stopped before shutdown; the uncommitted batches will be redelivered"
    )]
    WriterStopped,
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
    pub async fn run(&mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        crate::metrics::describe();
        let rollups: Vec<String> = tripline_store::rollup_views()
            .into_iter()
            .map(|view| view.target)
            .collect();
        crate::metrics::init(
            &[&self.kafka.gateway_topic, &self.kafka.provider_topic],
            &[
                tripline_store::GATEWAY_TABLE,
                tripline_store::PROVIDER_TABLE,
            ],
            &rollups.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let env = tripline_kafka::process_env;
        let consumer: StreamConsumer<IngestContext> =
            tripline_kafka::consumer_config(&self.kafka, &self.kafka.ingest_group_id, env)?
                .create_with_context(IngestContext {
                    rebalanced: AtomicBool::new(false),
                })?;
        let consumer = Arc::new(consumer);
        let dlq: FutureProducer = tripline_kafka::producer_config(&self.kafka, env)?.create()?;

        // A restarted run starts from the committed offsets: forget the batches the last run
        // left unstored, and the events it saw but may not have stored (the filter is refilled
        // from what ClickHouse holds), or their redelivery would be dropped as duplicates.
        self.health.reset(self.settings.batch_max_age_ms);
        self.processor.dedup.clear();
        let window_s = self.settings.dedup_window_s as u32;
        let Some(mut warmed_at) = self.refill(window_s, 0, &shutdown).await else {
            return Ok(());
        };
        let stalls = shutdown.child_token();
        let _stop_stall_reports = stalls.clone().drop_guard();
        tokio::spawn(report_stalls(self.health.clone(), stalls));

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
            dlq_limit: crate::dlq::envelope_limit(self.kafka.max_message_bytes),
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
                writer.health.batch_done();
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
                    Ok(message) if consumer.context().rebalanced.swap(false, Ordering::AcqRel) => {
                        // Partitions moved: refill before judging their first message, so that
                        // what the previous owner stored is recognised.
                        let message = message.detach();
                        match self.refill(window_s, warmed_at, &shutdown).await {
                            Some(at) => warmed_at = at,
                            None => break,
                        }
                        self.take(&message, &mut batch);
                        if batch.len() < max_rows {
                            continue;
                        }
                    }
                    Ok(message) => {
                        self.take(&message, &mut batch);
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
        let writer_died = writer.is_none() && !shutdown.is_cancelled();
        drop(writer);
        self.health.consuming.store(false, Ordering::Relaxed);
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => tripline_kafka::close_consumer(consumer, Duration::from_secs(5)).await,
            Err(_) => warn!("consumer still shared at shutdown; not closing it"),
        }
        if writer_died {
            // Not a clean stop: the supervisor starts ingest again from the committed offsets.
            return Err(IngestError::WriterStopped);
        }
        info!("ingest stopped");
        Ok(())
    }

    /// Processes one message into the batch.
    fn take<M: Message>(&mut self, message: &M, batch: &mut Batch) {
        let topic = message.topic();
        let kind = if topic == self.kafka.gateway_topic {
            EventKind::Gateway
        } else {
            EventKind::Provider
        };
        let source = Source {
            topic,
            partition: message.partition(),
            offset: message.offset(),
        };
        if batch.is_empty() {
            self.health.batch_started(now_ms());
        }
        let payload = message.payload().unwrap_or_default();
        let outcome = self.processor.process(kind, payload, source, now_ms());
        batch.add(outcome, source);
    }
}

impl Ingest {
    /// Refills the duplicate filter, retrying while ClickHouse is unreachable: a rebalance
    /// during an outage waits for it rather than ending ingest. `None` at shutdown.
    async fn refill(
        &mut self,
        window_s: u32,
        since_s: u32,
        shutdown: &CancellationToken,
    ) -> Option<u32> {
        let mut delay = Duration::from_millis(self.settings.retry_initial_ms);
        loop {
            match warmup::refill(
                &self.clickhouse,
                &mut self.processor.dedup,
                window_s,
                since_s,
            )
            .await
            {
                Ok(at) => {
                    self.health.clickhouse_ok.store(true, Ordering::Relaxed);
                    return Some(at);
                }
                Err(err) => {
                    ::metrics::counter!(crate::metrics::REFILL_FAILURES).increment(1);
                    self.health.clickhouse_ok.store(false, Ordering::Relaxed);
                    warn!(%err, retry_in_ms = delay.as_millis() as u64, "cannot refill the duplicate filter from clickhouse; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(self.settings.retry_max_ms));
        }
    }
}

/// Keeps the stall gauge current even while the loop and the writer are both blocked.
async fn report_stalls(health: Arc<Health>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                ::metrics::gauge!(crate::metrics::STALLED_SECONDS).set(health.stalled_s(now_ms()));
            }
        }
    }
    ::metrics::gauge!(crate::metrics::STALLED_SECONDS).set(0.0);
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
