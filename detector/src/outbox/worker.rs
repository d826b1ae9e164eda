//! The outbox's task: takes decided changes from the cycles over a bounded channel, records
//! them, publishes them to Kafka and records the acknowledgements. Nothing here is awaited by a
//! cycle except the hand-over itself: each message's acknowledgement is its own small task, and
//! the ClickHouse writes happen on this task's tick.

use std::time::Duration;

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};
use tripline_core::alert::Alert;
use tripline_core::config::KafkaConfig;
use tripline_core::time::{now_ms, now_s};

use super::store::{self, Publication};
use super::{Queue, MAX_IN_MEMORY};
use crate::data::Shard;

/// Changes waiting to be taken by the task; a cycle waits only when this many are queued.
const CHANNEL: usize = 1_024;
/// Recording, retrying and the gauges run this often.
const TICK: Duration = Duration::from_millis(500);
/// A ClickHouse write taking longer than this failed (it is retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, messages in flight get this long to be acknowledged.
const DRAIN: Duration = Duration::from_secs(5);

enum Command {
    /// A change a cycle decided: to record and publish.
    Decided(Box<Alert>),
    /// Changes reloaded from ClickHouse at start-up: recorded already, to publish.
    Restored(Vec<Alert>),
}

/// The handle the detector loop holds.
pub struct Outbox {
    sender: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Outbox {
    /// A producer for [`Outbox::start`]: one per process, shared by its shards' outboxes.
    pub fn producer(kafka: &KafkaConfig) -> Result<FutureProducer, crate::DetectError> {
        Ok(tripline_kafka::producer_config(kafka, tripline_kafka::process_env)?.create()?)
    }

    /// Starts the task. `shard` says which pending changes are this worker's to reload.
    pub fn start(
        producer: FutureProducer,
        kafka: &KafkaConfig,
        clickhouse: Client,
        shard: Shard,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL);
        let worker = Worker {
            producer,
            topic: kafka.alerts_topic.clone(),
            clickhouse,
            shard,
            queue: Queue::default(),
            unrecorded: Vec::new(),
            acknowledged: Vec::new(),
            overflowed: false,
            deliveries: JoinSet::new(),
            write_due_ms: 0,
            write_failures: 0,
            alerts_in_doubt: false,
        };
        let task = tokio::spawn(worker.run(receiver));
        Self { sender, task }
    }

    /// Hands a decided change over (waits only while the channel is full).
    pub async fn decided(&self, alert: Alert) {
        if self
            .sender
            .send(Command::Decided(Box::new(alert)))
            .await
            .is_err()
        {
            warn!("the alert outbox has stopped; a decided alert is only in the lifecycle");
        }
    }

    /// Hands over the pending changes reloaded at start-up (before any new decision, so that
    /// each fingerprint's changes keep their order).
    pub async fn restore(&self, alerts: Vec<Alert>) {
        if !alerts.is_empty() && self.sender.send(Command::Restored(alerts)).await.is_err() {
            warn!("the alert outbox has stopped before its pending alerts were restored");
        }
    }

    /// Stops taking changes and waits for the task to drain: what is still pending stays in
    /// ClickHouse for the next start.
    pub async fn close(self) {
        drop(self.sender);
        if let Err(err) = self.task.await {
            warn!(%err, "the alert outbox task failed");
        }
    }
}

struct Worker {
    producer: FutureProducer,
    topic: String,
    clickhouse: Client,
    shard: Shard,
    queue: Queue,
    /// Decided changes whose `alerts` row is not written yet.
    unrecorded: Vec<(Alert, String)>,
    /// Acknowledgements not written yet.
    acknowledged: Vec<Publication>,
    /// Changes were only recorded (the queue was full): reload them once it has drained.
    overflowed: bool,
    /// Each message's acknowledgement: (its sequence number, the outcome).
    deliveries: JoinSet<(u64, Result<(), String>)>,
    /// After a failed write, ClickHouse is not written again before this (epoch ms).
    write_due_ms: i64,
    write_failures: u32,
    /// The last insert of `alerts` rows failed: it may have landed all the same (its answer
    /// lost), so the rows already there are left out before the next one.
    alerts_in_doubt: bool,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.take(command),
                    None => break,
                },
                Some(joined) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                    match joined {
                        Ok((seq, outcome)) => self.delivered(seq, outcome),
                        Err(err) => warn!(%err, "an alert delivery task failed"),
                    }
                }
                _ = tick.tick() => {
                    self.write().await;
                    self.reload_overflow().await;
                    self.gauges();
                }
            }
            self.send_due().await;
        }
        self.drain().await;
    }

    fn take(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::Decided(alert) => {
                let Some(json) = to_json(&alert) else { return };
                info!(
                    detector = %alert.detector,
                    status = alert.status.as_str(),
                    severity = alert.severity.as_str(),
                    fingerprint = %alert.fingerprint,
                    "{}", alert.summary
                );
                if self.unrecorded.len() >= MAX_IN_MEMORY {
                    // ClickHouse has refused writes for a long while: the oldest decision is
                    // given up rather than memory.
                    self.unrecorded.remove(0);
                    metrics::counter!("tripline_detector_outbox_dropped_total").increment(1);
                    warn!("alert outbox: too many alerts not recorded; dropped the oldest");
                }
                self.unrecorded.push((alert.as_ref().clone(), json.clone()));
                if self.overflowed || self.queue.push(*alert, json, now).is_none() {
                    self.overflowed = true;
                }
            }
            Command::Restored(alerts) if alerts.is_empty() => {}
            Command::Restored(alerts) => {
                info!(
                    "alerts decided but never published, sending: {}",
                    alerts.len()
                );
                for alert in alerts {
                    let Some(json) = to_json(&alert) else {
                        continue;
                    };
                    if self.overflowed || self.queue.push(alert, json, now).is_none() {
                        self.overflowed = true;
                    }
                }
            }
        }
    }

    /// Puts the changes that are due on the producer's queue; each acknowledgement is awaited
    /// by a task of its own.
    async fn send_due(&mut self) {
        let due: Vec<(u64, String, String)> = self
            .queue
            .take_due(now_ms())
            .into_iter()
            .map(|(seq, e)| (seq, e.alert.fingerprint.clone(), e.json.clone()))
            .collect();
        let topic = self.topic.clone();
        for (seq, fingerprint, json) in due {
            let record = FutureRecord::to(&topic).key(&fingerprint).payload(&json);
            match tripline_kafka::enqueue(&self.producer, record).await {
                Ok(delivery) => {
                    self.deliveries
                        .spawn(async move { (seq, tripline_kafka::delivered(delivery.await)) });
                }
                Err(err) => self.delivered(seq, Err(err.to_string())),
            }
        }
    }

    fn delivered(&mut self, seq: u64, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let Some(entry) = self.queue.acknowledged(seq) else {
                    return;
                };
                let alert = &entry.alert;
                metrics::counter!("tripline_detector_alerts_total", "detector" => alert.detector.clone(), "status" => alert.status.as_str())
                    .increment(1);
                if entry.attempts > 0 {
                    info!(fingerprint = %alert.fingerprint, attempts = entry.attempts + 1, "alert published after retries");
                }
                self.acknowledged.push(Publication::of(alert, now_s()));
            }
            Err(err) => {
                metrics::counter!("tripline_detector_outbox_publish_failures_total").increment(1);
                if let Some(entry) = self.queue.failed(seq, now_ms()) {
                    warn!(%err, fingerprint = %entry.alert.fingerprint, attempts = entry.attempts, "publishing an alert to kafka failed; it stays pending and is retried");
                }
            }
        }
    }

    /// Writes the `alerts` rows, then the acknowledgements; after a failure, waits with a
    /// doubling backoff (capped at 30 s) before trying again, and leaves out the rows a failed
    /// insert of `alerts` wrote after all (a check with a timeout of its own, so that it cannot
    /// make every retry too slow).
    async fn write(&mut self) {
        if now_ms() < self.write_due_ms
            || (self.unrecorded.is_empty() && self.acknowledged.is_empty())
        {
            return;
        }
        if self.alerts_in_doubt && !self.unrecorded.is_empty() {
            match within_write_timeout(store::recorded(&self.clickhouse, &self.unrecorded)).await {
                Ok(landed) => self
                    .unrecorded
                    .retain(|(alert, _)| !landed.contains(&store::Change::of(alert))),
                Err(err) => {
                    return self.write_failed("checking which alerts a failed insert wrote", err)
                }
            }
        }
        let written = within_write_timeout(async {
            store::insert_alerts(&self.clickhouse, &self.unrecorded).await?;
            self.unrecorded.clear();
            store::insert_publications(&self.clickhouse, &self.acknowledged).await?;
            self.acknowledged.clear();
            Ok(())
        })
        .await;
        // The `alerts` rows are cleared once their insert answered: any left are in doubt.
        self.alerts_in_doubt = !self.unrecorded.is_empty();
        match written {
            Ok(()) => self.write_failures = 0,
            Err(err) => self.write_failed("recording alerts in clickhouse", err),
        }
    }

    /// Counts a failed write and puts the next one off from now (a step that timed out took
    /// its 10 s): 2 s, doubling to 30 s.
    fn write_failed(&mut self, step: &str, err: String) {
        metrics::counter!("tripline_detector_outbox_write_failures_total").increment(1);
        self.write_failures = self.write_failures.saturating_add(1);
        let wait_ms = (1_000_i64 << self.write_failures.min(5)).min(30_000);
        self.write_due_ms = now_ms() + wait_ms;
        warn!(%err, step, unrecorded = self.unrecorded.len(), acknowledgements = self.acknowledged.len(), "a clickhouse write of the outbox failed; retrying");
    }

    /// After an overflow, once everything in memory is published and written down, the changes
    /// that were only recorded are reloaded (oldest first).
    async fn reload_overflow(&mut self) {
        if !self.overflowed
            || !self.queue.is_empty()
            || !self.unrecorded.is_empty()
            || !self.acknowledged.is_empty()
        {
            return;
        }
        match store::pending_alerts(&self.clickhouse, self.shard, now_s(), MAX_IN_MEMORY).await {
            Ok(alerts) => {
                // A full page may have left more behind: they come with the next reload.
                let full = alerts.len() >= MAX_IN_MEMORY;
                self.overflowed = false;
                self.take(Command::Restored(alerts));
                self.overflowed |= full;
            }
            Err(err) => warn!(%err, "reloading pending alerts failed; retrying"),
        }
    }

    fn gauges(&self) {
        let now_s = now_ms() / 1000;
        let oldest = self
            .queue
            .oldest_decided_s()
            .map_or(0, |s| (now_s - i64::from(s)).max(0));
        metrics::gauge!("tripline_detector_outbox_pending").set(self.queue.len() as f64);
        metrics::gauge!("tripline_detector_outbox_oldest_pending_seconds").set(oldest as f64);
    }

    /// Shutdown: waits up to [`DRAIN`] for the messages in flight, then writes what it can once.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while !self.deliveries.is_empty() {
            match tokio::time::timeout_at(deadline, self.deliveries.join_next()).await {
                Ok(Some(Ok((seq, outcome)))) => self.delivered(seq, outcome),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.write_due_ms = 0;
        self.write().await;
        let _ = self.producer.flush(Duration::from_secs(1));
        if !self.unrecorded.is_empty() {
            warn!(
                unrecorded = self.unrecorded.len(),
                "alerts decided but neither recorded nor published are lost; those still true are decided again after the restart"
            );
        }
        if !self.queue.is_empty() {
            info!(
                pending = self.queue.len(),
                "alerts not yet published stay pending for the next start"
            );
        }
        self.gauges();
    }
}

fn to_json(alert: &Alert) -> Option<String> {
    match serde_json::to_string(alert) {
        Ok(json) => Some(json),
        Err(err) => {
            warn!(%err, fingerprint = %alert.fingerprint, "an alert could not be serialized; dropped");
            None
        }
    }
}

/// A ClickHouse step given [`WRITE_TIMEOUT`]: its error, or the timeout, as text.
async fn within_write_timeout<T>(
    step: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(WRITE_TIMEOUT, step).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
    }
}
