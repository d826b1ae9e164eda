//! Writes a batch: rows into ClickHouse, dead letters onto the DLQ topic, and only then commits
//! the batch's offsets. Each step is retried with capped exponential backoff until it succeeds
//! or shutdown's grace period ends, so a ClickHouse outage pauses ingest and loses nothing.
//! A step that succeeded is not repeated when a later one fails.
//!
//! Nothing in one message can hold a partition: a dead letter is cut to the broker's size limit,
//! and one the broker still refuses as it is goes out without its payload, or is counted and
//! skipped; only failures that waiting can cure (ClickHouse or the broker away) are retried.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use tripline_kafka::ProduceError;
use tripline_store::{GatewayRow, ProviderRow, StoredRow, GATEWAY_TABLE, PROVIDER_TABLE};

use crate::batch::Batch;
use crate::dlq::DeadLetter;
use crate::health::Health;
use crate::metrics as m;
use crate::IngestContext;

/// How long shutdown keeps retrying a batch before leaving it to be redelivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Daily partitions one INSERT may touch: ClickHouse 19+ refuses more
/// (`max_partitions_per_insert_block`, default 100), so a backfill spanning months is split.
pub const MAX_PARTITIONS_PER_INSERT: usize = 100;

pub struct Writer {
    pub clickhouse: Client,
    pub dlq: FutureProducer,
    pub dlq_topic: String,
    /// The largest dead-letter envelope the broker takes (see [`crate::dlq::envelope_limit`]).
    pub dlq_limit: usize,
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

/// What a retried step talks to: its failures say which part is unwell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    ClickHouse,
    Kafka,
}

impl Writer {
    pub async fn write(&self, batch: &Batch) -> Result<(), Abandoned> {
        let started = Instant::now();
        self.store::<GatewayRow>(GATEWAY_TABLE, &batch.gateway)
            .await?;
        self.store::<ProviderRow>(PROVIDER_TABLE, &batch.provider)
            .await?;
        if !batch.dead.is_empty() {
            self.deliver_dead_letters(&batch.dead).await?;
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

    /// Inserts `rows` into `table`, at most [`MAX_PARTITIONS_PER_INSERT`] days per INSERT, and
    /// repairs the rollups of any rows a failed attempt had stored (see [`crate::repair`]).
    async fn store<T>(&self, table: &'static str, rows: &[T]) -> Result<(), Abandoned>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + StoredRow,
    {
        for chunk in partition_chunks(rows, MAX_PARTITIONS_PER_INSERT) {
            let attempts = Mutex::new(Attempts::default());
            self.retry(Server::ClickHouse, &format!("insert {table}"), |retrying| {
                insert_rows(&self.clickhouse, table, &chunk, retrying, &attempts)
            })
            .await?;
            self.health.clickhouse_ok.store(true, Ordering::Relaxed);
            metrics::counter!(m::INSERTED, "table" => table).increment(chunk.len() as u64);
            let attempts = attempts.into_inner().unwrap_or_else(|p| p.into_inner());
            let found: Vec<&T> = attempts.found_stored.iter().map(|&i| chunk[i]).collect();
            if let (false, Some(failed)) = (found.is_empty(), &attempts.failed) {
                self.retry(
                    Server::ClickHouse,
                    &format!("check rollups of {table}"),
                    |_| crate::repair::repair(&self.clickhouse, table, &found, failed),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Writes every dead letter. Transient failures are retried (only the letters not yet
    /// acknowledged); a letter the broker refuses as it is goes again without its payload, and
    /// is dropped with an error log if even that is refused.
    async fn deliver_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), Abandoned> {
        let sent = Mutex::new(vec![false; letters.len()]);
        self.retry(Server::Kafka, "produce dead letters", |_| {
            self.produce_dead_letters(letters, &sent)
        })
        .await
    }

    async fn produce_dead_letters(
        &self,
        letters: &[DeadLetter],
        sent: &Mutex<Vec<bool>>,
    ) -> Result<(), ProduceError> {
        let todo: Vec<usize> = {
            let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
            (0..letters.len()).filter(|&i| !sent[i]).collect()
        };
        // Enqueue everything first, then wait: all dead letters are in flight together.
        let mut in_flight = Vec::with_capacity(todo.len());
        let mut refused = Vec::new();
        let mut transient = None;
        for i in todo {
            let payload = letters[i].to_json(self.dlq_limit);
            let key = letters[i].key();
            let record = FutureRecord::to(&self.dlq_topic)
                .payload(&payload)
                .key(&key);
            match tripline_kafka::enqueue(&self.dlq, record)
                .await
                .map_err(ProduceError::from)
            {
                Ok(delivery) => in_flight.push((i, delivery)),
                Err(ProduceError::Permanent(err)) => refused.push((i, err)),
                Err(err) => {
                    transient.get_or_insert(err);
                }
            }
        }
        for (i, delivery) in in_flight {
            match delivery.await {
                Ok(Ok(_)) => mark_sent(sent, i),
                Ok(Err((err, _))) => match ProduceError::from(err) {
                    ProduceError::Permanent(err) => refused.push((i, err)),
                    err => {
                        transient.get_or_insert(err);
                    }
                },
                Err(_) => {
                    transient.get_or_insert(ProduceError::Transient(
                        "producer dropped before acknowledging".into(),
                    ));
                }
            }
        }
        for (i, err) in refused {
            let letter = &letters[i];
            let bare = letter.without_payload(&format!("the broker refused it: {err}"));
            let key = letter.key();
            let record = FutureRecord::to(&self.dlq_topic).payload(&bare).key(&key);
            match tripline_kafka::produce(&self.dlq, record).await {
                Ok(()) => {
                    metrics::counter!(m::DLQ_PAYLOADS_DROPPED).increment(1);
                    warn!(%err, key = %letter.key(), "dead letter refused by the broker; sent without its payload");
                    mark_sent(sent, i);
                }
                Err(ProduceError::Permanent(again)) => {
                    metrics::counter!(m::DLQ_LOST).increment(1);
                    error!(
                        %err, %again, key = %letter.key(), reason = letter.reason.as_str(),
                        "dead letter refused by the broker even without its payload; skipped"
                    );
                    mark_sent(sent, i);
                }
                Err(again) => {
                    transient.get_or_insert(again);
                }
            }
        }
        match transient {
            Some(err) => {
                metrics::counter!(m::DLQ_FAILURES).increment(1);
                Err(err)
            }
            None => Ok(()),
        }
    }

    async fn retry<F, Fut, T, E>(
        &self,
        server: Server,
        what: &str,
        mut step: F,
    ) -> Result<(), Abandoned>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut delay = self.retry_initial;
        let mut grace_ends: Option<Instant> = None;
        let mut retrying = false;
        loop {
            let err = match step(retrying).await {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if server == Server::ClickHouse {
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

fn mark_sent(sent: &Mutex<Vec<bool>>, i: usize) {
    sent.lock().unwrap_or_else(|p| p.into_inner())[i] = true;
}

/// `rows` cut into runs that each touch at most `max_days` daily partitions. The common batch
/// (a day or two) is one run in arrival order; a backfill is cut by day, oldest first.
pub fn partition_chunks<T: StoredRow>(rows: &[T], max_days: usize) -> Vec<Vec<&T>> {
    let day = |row: &T| row.ts() / 86_400;
    let mut days: HashSet<u32> = HashSet::new();
    for row in rows {
        days.insert(day(row));
        if days.len() > max_days {
            break;
        }
    }
    if days.len() <= max_days {
        return if rows.is_empty() {
            Vec::new()
        } else {
            vec![rows.iter().collect()]
        };
    }
    let mut by_day: BTreeMap<u32, Vec<&T>> = BTreeMap::new();
    for row in rows {
        by_day.entry(day(row)).or_default().push(row);
    }
    let days: Vec<Vec<&T>> = by_day.into_values().collect();
    days.chunks(max_days).map(|run| run.concat()).collect()
}

/// What the attempts to insert one run of rows left behind, for the rollup check.
#[derive(Debug, Default)]
struct Attempts {
    /// The last attempt that failed, if any.
    failed: Option<FailedInsert>,
    /// Rows (indices into the run) that a retry found already stored.
    found_stored: Vec<usize>,
}

/// A failed INSERT: its id (to find it in `system.processes` and `system.query_log`) and error.
#[derive(Debug, Clone)]
pub struct FailedInsert {
    pub query_id: String,
    pub error: String,
}

/// Inserts `rows` as one INSERT (one block: the raw rows are stored all or none).
///
/// A failed attempt is ambiguous: ClickHouse may have stored the rows and only the answer was
/// lost, or stored them and then failed a materialized view. So a retry first asks which of
/// these events are already stored, sends the rest, and records the stored ones in `attempts`
/// with the failed attempt, so that their rollups can be checked (see [`crate::repair`]).
async fn insert_rows<T>(
    client: &Client,
    table: &str,
    rows: &[&T],
    retrying: bool,
    attempts: &Mutex<Attempts>,
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite + StoredRow,
{
    let stored = if retrying {
        already_stored(client, table, rows).await?
    } else {
        HashSet::new()
    };
    let is_stored = |row: &T| stored.contains(&(row.event_id(), row.event_digest()));
    let lock = || attempts.lock().unwrap_or_else(|p| p.into_inner());
    lock().found_stored = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| is_stored(row))
        .map(|(i, _)| i)
        .collect();
    if !stored.is_empty() {
        warn!(
            table,
            stored = stored.len(),
            of = rows.len(),
            "part of a retried batch was already stored; not sending it again"
        );
    }
    if rows.iter().all(|row| is_stored(row)) {
        return Ok(());
    }
    let query_id = next_query_id();
    let sent = async {
        let mut insert = client
            .insert::<T>(table)
            .await?
            .with_setting("query_id", query_id.clone())
            // Logged so that a lost answer can be told apart from a failed view afterwards.
            .with_setting("log_queries", "1")
            .with_timeouts(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(120)),
            );
        for row in rows.iter().filter(|row| !is_stored(row)) {
            insert.write(*row).await?;
        }
        insert.end().await
    };
    let result = sent.await;
    if let Err(err) = &result {
        lock().failed = Some(FailedInsert {
            query_id,
            error: err.to_string(),
        });
    }
    result
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Identity {
    event_id: String,
    event_digest: u64,
}

/// Identities (id, digest) of `rows` already in `table`, looked up by the batch's
/// ingestion-time range.
async fn already_stored<'a, T: StoredRow>(
    client: &Client,
    table: &str,
    rows: &[&'a T],
) -> Result<HashSet<(&'a str, u64)>, clickhouse::error::Error> {
    let (Some(first), Some(last)) = (
        rows.iter().map(|r| r.ingested_at()).min(),
        rows.iter().map(|r| r.ingested_at()).max(),
    ) else {
        return Ok(HashSet::new());
    };
    let ours: HashMap<&str, Vec<(&'a str, u64)>> =
        rows.iter().fold(HashMap::new(), |mut ours, row| {
            ours.entry(row.event_id())
                .or_default()
                .push((row.event_id(), row.event_digest()));
            ours
        });
    let mut cursor = client
        .query_raw(&format!(
            "SELECT event_id, event_digest FROM {table} WHERE ingested_at >= toDateTime({first}) AND ingested_at <= toDateTime({last})"
        ))
        .fetch::<Identity>()?;
    let mut stored = HashSet::new();
    while let Some(row) = cursor.next().await? {
        let same_id = ours.get(row.event_id.as_str()).into_iter().flatten();
        stored.extend(same_id.filter(|(_, digest)| *digest == row.event_digest));
    }
    Ok(stored)
}

/// A query id unique across workers and restarts: process id, start time and a counter.
fn next_query_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static STARTED_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let started = *STARTED_MS.get_or_init(tripline_core::time::now_ms);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("tripline-ingest-{}-{started}-{n}", std::process::id())
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Row {
        ts: u32,
    }

    impl StoredRow for Row {
        fn event_id(&self) -> &str {
            ""
        }
        fn event_digest(&self) -> u64 {
            0
        }
        fn ts(&self) -> u32 {
            self.ts
        }
        fn ingested_at(&self) -> u32 {
            0
        }
    }

    fn days(runs: &[Vec<&Row>]) -> Vec<usize> {
        runs.iter()
            .map(|run| {
                run.iter()
                    .map(|r| r.ts / 86_400)
                    .collect::<HashSet<_>>()
                    .len()
            })
            .collect()
    }

    #[test]
    fn a_live_batch_is_one_insert_in_arrival_order() {
        let rows: Vec<Row> = [5, 1, 86_401, 3].map(|ts| Row { ts }).into();
        let runs = partition_chunks(&rows, 100);
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs[0].iter().map(|r| r.ts).collect::<Vec<_>>(),
            [5, 1, 86_401, 3]
        );
        assert!(partition_chunks::<Row>(&[], 100).is_empty());
    }

    #[test]
    fn a_backfill_over_400_days_is_cut_into_runs_of_100_days() {
        let rows: Vec<Row> = (0..4_000)
            .map(|i| Row {
                ts: (i % 400) * 86_400 + i,
            })
            .collect();
        let runs = partition_chunks(&rows, 100);
        assert_eq!(days(&runs), [100, 100, 100, 100]);
        assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 4_000);
    }
}
