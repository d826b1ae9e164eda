//! Writes a batch: rows into ClickHouse, dead letters onto the DLQ topic, and only then commits
//! the batch's offsets. Each step is retried with capped exponential backoff until it succeeds
//! or shutdown's grace period ends, so a ClickHouse outage pauses ingest and loses nothing.
//! A step that succeeded is not repeated when a later one fails.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use tripline_store::{GatewayRow, ProviderRow, StoredRow, GATEWAY_TABLE, PROVIDER_TABLE};

use crate::batch::Batch;
use crate::metrics as m;
use crate::IngestContext;

/// Liveness facts for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// The last ClickHouse insert (or the start-up check) succeeded.
    pub clickhouse_ok: AtomicBool,
    /// The consumer is subscribed and polling.
    pub consuming: AtomicBool,
}

/// How long shutdown keeps retrying a batch before leaving it to be redelivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Writer {
    pub clickhouse: Client,
    pub dlq: FutureProducer,
    pub dlq_topic: String,
    pub consumer: Arc<StreamConsumer<IngestContext>>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub shutdown: CancellationToken,
    pub health: Arc<Health>,
}

/// The batch was not fully stored because Tripline is shutting down; its offsets were not
/// committed, so it will be redelivered (and deduplicated) after restart.
#[derive(Debug)]
pub struct Abandoned;

impl Writer {
    pub async fn write(&self, batch: &Batch) -> Result<(), Abandoned> {
        let started = Instant::now();
        if !batch.gateway.is_empty() {
            self.retry("insert gateway_requests", |retrying| {
                insert_rows::<GatewayRow>(&self.clickhouse, GATEWAY_TABLE, &batch.gateway, retrying)
            })
            .await?;
            self.health.clickhouse_ok.store(true, Ordering::Relaxed);
            metrics::counter!(m::INSERTED, "table" => GATEWAY_TABLE)
                .increment(batch.gateway.len() as u64);
        }
        if !batch.provider.is_empty() {
            self.retry("insert provider_attempts", |retrying| {
                insert_rows::<ProviderRow>(
                    &self.clickhouse,
                    PROVIDER_TABLE,
                    &batch.provider,
                    retrying,
                )
            })
            .await?;
            self.health.clickhouse_ok.store(true, Ordering::Relaxed);
            metrics::counter!(m::INSERTED, "table" => PROVIDER_TABLE)
                .increment(batch.provider.len() as u64);
        }
        if !batch.dead.is_empty() {
            self.retry("produce dead letters", |_| self.produce_dead_letters(batch))
                .await?;
            for letter in &batch.dead {
                metrics::counter!(m::DEAD_LETTERED, "reason" => letter.reason.as_str())
                    .increment(1);
            }
        }
        metrics::histogram!(m::INSERT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::BATCH_ROWS)
            .record((batch.gateway.len() + batch.provider.len()) as f64);
        metrics::counter!(m::DUPLICATES).increment(batch.duplicates as u64);
        for (topic, count) in &batch.consumed {
            metrics::counter!(m::CONSUMED, "topic" => topic.clone()).increment(*count);
        }
        self.commit(batch, CommitMode::Async);
        debug!(
            gateway = batch.gateway.len(),
            provider = batch.provider.len(),
            dead = batch.dead.len(),
            duplicates = batch.duplicates,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch stored"
        );
        Ok(())
    }

    /// Commits the batch's offsets. A failed commit only means redelivery, which dedup absorbs.
    pub fn commit(&self, batch: &Batch, mode: CommitMode) {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.next_offsets {
            if let Err(err) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                warn!(%err, topic, partition, "cannot record offset to commit");
            }
        }
        match self.consumer.commit(&offsets, mode) {
            Ok(()) => metrics::counter!(m::COMMITS).increment(1),
            Err(err) => {
                metrics::counter!(m::COMMIT_FAILURES).increment(1);
                warn!(%err, "offset commit failed; the batch will be redelivered and deduplicated");
            }
        }
    }

    async fn produce_dead_letters(&self, batch: &Batch) -> Result<(), String> {
        let records: Vec<(Vec<u8>, String)> = batch
            .dead
            .iter()
            .map(|letter| {
                let key = format!(
                    "{}/{}/{}",
                    letter.source_topic, letter.source_partition, letter.source_offset
                );
                (letter.to_json(), key)
            })
            .collect();
        // Enqueue everything first, then wait: all dead letters are in flight together.
        let mut deliveries = Vec::with_capacity(records.len());
        for (payload, key) in &records {
            let record = FutureRecord::to(&self.dlq_topic).payload(payload).key(key);
            deliveries.push(
                tripline_kafka::enqueue(&self.dlq, record)
                    .await
                    .map_err(|err| err.to_string())?,
            );
        }
        for delivery in deliveries {
            if let Err(err) = tripline_kafka::delivered(delivery.await) {
                metrics::counter!(m::DLQ_FAILURES).increment(1);
                return Err(err);
            }
        }
        Ok(())
    }

    async fn retry<F, Fut, E>(&self, what: &str, mut step: F) -> Result<(), Abandoned>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut delay = self.retry_initial;
        let mut grace_ends: Option<Instant> = None;
        let mut retrying = false;
        loop {
            let err = match step(retrying).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if what.starts_with("insert") {
                metrics::counter!(m::INSERT_FAILURES).increment(1);
                self.health.clickhouse_ok.store(false, Ordering::Relaxed);
            }
            warn!(%err, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
            if self.shutdown.is_cancelled() {
                let ends = *grace_ends.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                if Instant::now() >= ends {
                    warn!("{what}: giving up at shutdown; the batch will be redelivered");
                    return Err(Abandoned);
                }
            }
            tokio::time::sleep(jittered(delay)).await;
            delay = (delay * 2).min(self.retry_max);
            retrying = true;
        }
    }
}

/// Inserts `rows` as one INSERT (atomic below ClickHouse's `max_insert_block_size`).
///
/// A failed attempt is ambiguous: ClickHouse may have stored the rows and only the answer was
/// lost. So a retry first asks which of these events are already stored and sends the rest.
async fn insert_rows<T>(
    client: &Client,
    table: &str,
    rows: &[T],
    retrying: bool,
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite + StoredRow,
{
    let stored = if retrying {
        already_stored(client, table, rows).await?
    } else {
        HashSet::new()
    };
    if !stored.is_empty() {
        warn!(
            table,
            stored = stored.len(),
            of = rows.len(),
            "part of a retried batch was already stored; not sending it again"
        );
    }
    if stored.len() == rows.len() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?.with_timeouts(
        Some(Duration::from_secs(30)),
        Some(Duration::from_secs(120)),
    );
    for row in rows.iter().filter(|row| !stored.contains(row.event_id())) {
        insert.write(row).await?;
    }
    insert.end().await
}

/// Event ids of `rows` already in `table`, looked up by the batch's ingestion-time range.
async fn already_stored<T: StoredRow>(
    client: &Client,
    table: &str,
    rows: &[T],
) -> Result<HashSet<String>, clickhouse::error::Error> {
    let (Some(first), Some(last)) = (
        rows.iter().map(StoredRow::ingested_at).min(),
        rows.iter().map(StoredRow::ingested_at).max(),
    ) else {
        return Ok(HashSet::new());
    };
    let ours: HashSet<&str> = rows.iter().map(StoredRow::event_id).collect();
    let mut cursor = client
        .query_raw(&format!(
            "SELECT event_id FROM {table} WHERE ingested_at >= toDateTime({first}) AND ingested_at <= toDateTime({last})"
        ))
        .fetch::<String>()?;
    let mut stored = HashSet::new();
    while let Some(id) = cursor.next().await? {
        if ours.contains(id.as_str()) {
            stored.insert(id);
        }
    }
    Ok(stored)
}

/// ±25 % jitter, so that many workers do not retry in lockstep.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(factor)
}
