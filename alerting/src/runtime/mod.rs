//! The alerting service (`tripline alert`): Kafka `tripline.alerts` → [`Pipeline`] → outbox →
//! receivers, with the state on disk and every attempt in ClickHouse `notifications`.
//!
//! One task owns the pipeline and the outbox; delivery attempts run as their own tasks and
//! report back. The loop:
//!
//! 1. a message from Kafka goes to `Pipeline::ingest`; its offset is noted, not committed;
//! 2. `Pipeline::tick` runs whenever `next_wakeup()` has passed (and at least every second);
//!    each notification becomes an [`outbox::OutboxEntry`];
//! 3. the state (pipeline snapshot, outbox, applied offsets) is written atomically ([`state`])
//!    at once after messages or new notifications, and only then are the noted offsets
//!    committed: a crash before the write redelivers the messages into the old state (messages
//!    already applied are recognised by offset and skipped), a crash after it finds them
//!    applied. A notification is on disk before its first attempt, so kill -9 loses none.
//!    Delivery results alone are written at most every `SAVE_EVERY_MS` (a crash in between
//!    repeats an attempt, never loses one);
//! 4. due outbox entries are attempted (rate limit per receiver, at most
//!    [`MAX_IN_FLIGHT_PER_RECEIVER`] at once); each result goes through
//!    `RetryPolicy::decide` and is logged in ClickHouse ([`log`]).
//!
//! Delivery is at least once: an attempt cut short by a crash is made again after the restart
//! with the same `webhook-id`, so receivers can drop the duplicate. API requests and config
//! reloads reach the loop through [`control::Handle`] (handled in `commands`).

mod commands;
pub mod control;
pub mod deliver;
pub mod ha;
mod health;
pub mod log;
pub mod outbox;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse::Client;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_core::alert::Alert;
use tripline_core::config::{AlertingConfig, KafkaConfig};

use crate::receivers::delivery::{DeliveryError, Outcome, RetryPolicy};

use crate::pipeline::{Pipeline, PipelineError};
use control::Command;
use deliver::Receivers;
use log::{DeliveryLog, NotificationRow};
use outbox::OutboxEntry;
use state::{partition_key, State, StateError, StateFile, StateStore, STATE_VERSION};

/// The consumer group of `tripline alert` unless the deployment names another.
pub const DEFAULT_GROUP_ID: &str = "tripline-alerting";
/// Attempts running at once per receiver: a slow receiver holds at most this many tasks.
pub const MAX_IN_FLIGHT_PER_RECEIVER: usize = 4;
/// The pipeline is ticked at least this often (silences starting and ending, timeouts).
const TICK_EVERY_MS: i64 = 1_000;
/// Messages taken from Kafka before the state is written and their offsets committed.
const MAX_MESSAGES_PER_ROUND: usize = 500;
/// A message this far behind the last applied offset of its partition is not a redelivery
/// (commits follow every round of at most `MAX_MESSAGES_PER_ROUND` messages) but a recreated
/// topic.
const MAX_UNCOMMITTED: i64 = 20 * MAX_MESSAGES_PER_ROUND as i64;
/// Delivery results are written to the state file at most this often (a burst of deliveries
/// costs one write, not one each). New notifications and consumed messages are written at once.
const SAVE_EVERY_MS: i64 = 200;
/// At shutdown, attempts in flight get this long to finish before the state is written.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, the last state write gets this long.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    KafkaSetup(#[from] tripline_kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Membership(#[from] tripline_kafka::membership::MembershipError),
    #[error("alerting standby: {0}")]
    Standby(String),
}

/// Everything `tripline alert` needs.
pub struct AlertService {
    pub config: AlertingConfig,
    pub kafka: KafkaConfig,
    pub group_id: String,
    pub clickhouse: Client,
    /// `[alerting] state_dir`, resolved.
    pub state_dir: PathBuf,
    pub retry: RetryPolicy,
    /// Requests from the API and config reloads (see [`control::Handle::channel`]).
    pub commands: mpsc::Receiver<Command>,
    /// What `/readyz` reads.
    pub health: Arc<AlertingHealth>,
}

/// An attempt's result, reported by its task.
struct Attempted {
    id: String,
    result: Result<(), DeliveryError>,
}

pub use health::AlertingHealth;
pub use tripline_core::time::now_ms;

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A number in [0, 1) for backoff jitter (std's randomly keyed hasher; no RNG crate needed).
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(now_ms());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

struct Runner<'a> {
    /// `[alerting]` as last (re)loaded.
    config: AlertingConfig,
    retry: RetryPolicy,
    health: Arc<AlertingHealth>,
    pipeline: Pipeline,
    outbox: Vec<OutboxEntry>,
    receivers: Receivers,
    store: StateStore,
    /// What the instances share (`[alerting.ha]`): silences, and where they are published.
    shared: Option<&'a ha::Shared>,
    /// The version of the shared silences last merged.
    silences_seen: u64,
    log: DeliveryLog,
    in_flight: HashSet<String>,
    per_receiver: HashMap<String, usize>,
    done_tx: mpsc::UnboundedSender<Attempted>,
    /// Offsets (one past the last message applied) not yet committed.
    offsets: BTreeMap<(String, i32), i64>,
    /// Per `topic/partition`: one past the last message applied (persisted with the state).
    applied: BTreeMap<String, i64>,
    /// Outbox entries not on disk yet: not attempted before they are.
    unsaved: HashSet<String>,
    last_save_ms: i64,
    dirty: bool,
    last_tick_ms: i64,
}

impl AlertService {
    /// Runs until `shutdown`: alone with its state in `state_dir`, or as one of several
    /// instances (`[alerting.ha]`, see [`ha`]).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AlertingError> {
        // The receiver moves out of the service, which lends itself to the loops.
        let (_unused, idle) = mpsc::channel(1);
        let mut commands = std::mem::replace(&mut self.commands, idle);
        let (log, log_task) = DeliveryLog::start(self.clickhouse.clone(), shutdown.clone());
        let result = if self.config.ha.enabled {
            ha::run(&mut self, &mut commands, &log, shutdown).await
        } else {
            let state_file = StateFile::new(&self.state_dir);
            let loaded = state_file.load()?;
            // Not ready until the state is known to be writable (the first save, or nothing
            // to save yet).
            self.health
                .state_written(health::dir_writable(&self.state_dir));
            self.serve(
                loaded,
                StateStore::File(state_file),
                None,
                &mut commands,
                &log,
                &shutdown,
            )
            .await
        };
        drop(log);
        let _ = tokio::time::timeout(Duration::from_secs(10), log_task).await;
        result
    }

    /// The active loop: consumes alerts, notifies, answers `commands`, until `stop`; then
    /// drains the attempts in flight, writes the state and leaves the alerts group.
    async fn serve(
        &mut self,
        loaded: Option<State>,
        store: StateStore,
        shared: Option<&ha::Shared>,
        commands: &mut mpsc::Receiver<Command>,
        log: &DeliveryLog,
        stop: &CancellationToken,
    ) -> Result<(), AlertingError> {
        let now = now_ms();
        let (pipeline, outbox, applied) = match loaded {
            Some(state) => (
                Pipeline::restore(&self.config, state.pipeline, now)?,
                state.outbox,
                state.applied,
            ),
            None => (
                Pipeline::from_config(&self.config)?,
                Vec::new(),
                BTreeMap::new(),
            ),
        };
        info!(
            state = %store,
            alerts = pipeline.store.alerts().count(),
            pending_notifications = outbox.len(),
            "alerting state loaded"
        );
        let receivers = Receivers::from_config(&self.config, &tripline_kafka::process_env)?;
        for (name, err) in receivers.broken() {
            error!(
                receiver = name,
                "receiver misconfigured, its notifications will fail: {err}"
            );
        }
        let consumer: StreamConsumer = tripline_kafka::consumer_config(
            &self.kafka,
            &self.group_id,
            tripline_kafka::process_env,
        )?
        .create()?;
        consumer.subscribe(&[&self.kafka.alerts_topic])?;
        info!(topic = %self.kafka.alerts_topic, group = %self.group_id, "alerting consumer subscribed");
        let health = self.health.clone();
        health.set_running(true);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut shared_updates = shared.map(ha::Shared::updates);
        let mut runner = Runner {
            config: self.config.clone(),
            retry: self.retry,
            health: health.clone(),
            pipeline,
            outbox,
            receivers,
            store,
            shared,
            log: log.clone(),
            in_flight: HashSet::new(),
            per_receiver: HashMap::new(),
            done_tx,
            offsets: BTreeMap::new(),
            applied,
            unsaved: HashSet::new(),
            last_save_ms: 0,
            // A new term's first write says who holds the state now.
            dirty: shared.is_some(),
            last_tick_ms: 0,
            silences_seen: 0,
        };
        runner.merge_shared_silences();

        loop {
            runner.tick();
            // A write blocked by an unreachable Kafka gives way to a stop (what it would have
            // stored is written last, below); a stopped instance sends nothing more.
            let saved = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                saved = runner.persist(&consumer) => saved,
            };
            health.state_written(saved);
            if saved && !stop.is_cancelled() {
                runner.dispatch();
            }
            // A state that cannot be written is retried every tick, not in a hot loop.
            let sleep = if saved {
                (runner.next_wake_ms() - now_ms()).clamp(1, TICK_EVERY_MS)
            } else {
                TICK_EVERY_MS
            };
            let sleep = Duration::from_millis(sleep as u64);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                received = consumer.recv() => {
                    runner.take(received);
                    // Take what is already waiting too, so a burst costs one state write.
                    for _ in 1..MAX_MESSAGES_PER_ROUND {
                        tokio::select! {
                            biased;
                            received = consumer.recv() => runner.take(received),
                            _ = std::future::ready(()) => break,
                        }
                    }
                }
                Some(done) = done_rx.recv() => {
                    runner.settle(done);
                    while let Ok(done) = done_rx.try_recv() {
                        runner.settle(done);
                    }
                }
                Some(command) = commands.recv() => runner.command(command, &consumer).await,
                Some(()) = ha::changed(&mut shared_updates) => runner.merge_shared_silences(),
                _ = tokio::time::sleep(sleep) => {}
            }
        }

        health.set_running(false);
        // Stopping: stop polling, let attempts in flight finish, write the state, commit.
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while !runner.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => runner.settle(done),
                _ => break,
            }
        }
        runner.dirty = true;
        // Bounded: a stop must end within the revocation's wait even when Kafka is unreachable
        // (the state already stored is at most one delivery result behind).
        let last_write = runner.persist_with(&consumer, CommitMode::Sync, true);
        if tokio::time::timeout(LAST_WRITE_TIMEOUT, last_write)
            .await
            .is_err()
        {
            warn!(timeout = ?LAST_WRITE_TIMEOUT, "the last state write did not finish; the stored state is the one before");
        }
        info!(
            pending_notifications = runner.outbox.len(),
            "alerting stopped"
        );
        self.config = runner.config.clone();
        drop(runner);
        tripline_kafka::close_consumer(consumer, Duration::from_secs(10)).await;
        Ok(())
    }
}

impl Runner<'_> {
    /// Takes the silences other instances created or changed (`[alerting.ha]`); those gone
    /// past their retention stay forgotten.
    fn merge_shared_silences(&mut self) {
        let Some(silences) = self
            .shared
            .and_then(|shared| shared.silences_since(&mut self.silences_seen))
        else {
            return;
        };
        let retention_ms =
            i64::try_from(self.config.silence_retention_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = now_ms();
        for silence in silences.list() {
            if silence.ends_at_ms.saturating_add(retention_ms) > now
                && self.pipeline.silences.merge(silence.clone())
            {
                info!(id = %silence.id, "silence from another instance applied");
                self.dirty = true;
            }
        }
    }

    fn take(
        &mut self,
        received: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    ) {
        let message = match received {
            Ok(message) => message,
            Err(err) => {
                warn!(%err, "kafka consumer error");
                self.health.kafka_error(now_ms());
                return;
            }
        };
        metrics::counter!("tripline_alerting_messages_consumed_total").increment(1);
        let key = (message.topic().to_owned(), message.partition());
        let applied_key = partition_key(&key.0, key.1);
        match self.applied.get(&applied_key) {
            Some(next)
                if message.offset() < *next && *next - message.offset() <= MAX_UNCOMMITTED =>
            {
                // Already in the state: its commit was lost (crash, rebalance). Commit it now.
                metrics::counter!("tripline_alerting_redelivered_messages_total").increment(1);
                self.offsets.insert(key, message.offset() + 1);
                return;
            }
            Some(next) if message.offset() < *next => {
                // Far behind what was applied: not a redelivery (at most one round of messages
                // is ever uncommitted) but a topic that was deleted and created again.
                warn!(topic = %key.0, partition = key.1, offset = message.offset(), applied_up_to = *next, "partition offsets went back: topic recreated? applying its messages");
            }
            _ => {}
        }
        self.applied.insert(applied_key, message.offset() + 1);
        match message.payload().map(serde_json::from_slice::<Alert>) {
            Some(Ok(alert)) => {
                let now = now_ms();
                if let Some(change) = self.pipeline.ingest(alert, now) {
                    tracing::debug!(fingerprint = %change.fingerprint, to = ?change.to, "alert state change");
                }
            }
            Some(Err(err)) => {
                metrics::counter!("tripline_alerting_invalid_messages_total").increment(1);
                warn!(%err, topic = %key.0, partition = key.1, offset = message.offset(), "not an alert, skipped");
            }
            None => {
                metrics::counter!("tripline_alerting_invalid_messages_total").increment(1);
            }
        }
        self.offsets.insert(key, message.offset() + 1);
        self.dirty = true;
    }

    /// Ticks the pipeline when it is due (or a second has passed); notifications go to the
    /// outbox.
    fn tick(&mut self) {
        let now = now_ms();
        let due = self.pipeline.next_wakeup().is_some_and(|t| t <= now);
        if !due && now < self.last_tick_ms + TICK_EVERY_MS {
            return;
        }
        self.last_tick_ms = now;
        let (notifications, changes) = self.pipeline.tick(now);
        if notifications.is_empty() && changes.is_empty() {
            return;
        }
        self.dirty = true;
        for n in notifications {
            let entry = OutboxEntry::new(n, self.config.external_url.clone());
            info!(
                receiver = %entry.message.receiver,
                group_key = %entry.message.group_key,
                reason = %entry.message.reason,
                alerts = entry.message.alerts.len(),
                id = %entry.id,
                "notification queued"
            );
            metrics::counter!("tripline_alerting_notifications_total", "receiver" => entry.message.receiver.clone())
                .increment(1);
            self.unsaved.insert(entry.id.clone());
            self.outbox.push(entry);
        }
        metrics::gauge!("tripline_alerting_outbox_pending").set(self.outbox.len() as f64);
    }

    /// Writes the state if it changed, then commits the offsets it includes. `false` when the
    /// state could not be written (nothing is committed or sent until it can).
    async fn persist(&mut self, consumer: &StreamConsumer) -> bool {
        self.persist_with(consumer, CommitMode::Async, false).await
    }

    /// Writes now when `force`, when messages wait for their commit or notifications for
    /// their first attempt; otherwise (delivery results only) at most every `SAVE_EVERY_MS`.
    async fn persist_with(
        &mut self,
        consumer: &StreamConsumer,
        mode: CommitMode,
        force: bool,
    ) -> bool {
        let now = now_ms();
        let urgent = force || !self.unsaved.is_empty() || !self.offsets.is_empty();
        if self.dirty && (urgent || now >= self.last_save_ms + SAVE_EVERY_MS) {
            let state = State {
                version: STATE_VERSION,
                term: self.store.term(),
                saved_at_ms: now_ms(),
                pipeline: self.pipeline.snapshot(),
                outbox: self.outbox.clone(),
                applied: self.applied.clone(),
            };
            if let Err(err) = self.store.save(&state).await {
                metrics::counter!("tripline_alerting_state_write_failures_total").increment(1);
                error!(%err, "cannot write the alerting state; retrying");
                return false;
            }
            self.dirty = false;
            self.unsaved.clear();
            // From the end of the write: a large state never makes the loop write back to back.
            self.last_save_ms = now_ms();
        }
        // Offsets are committed only once the state that applied them is stored.
        if !self.dirty && !self.offsets.is_empty() {
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in &self.offsets {
                if let Err(err) =
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                {
                    warn!(%err, "cannot record an offset to commit");
                }
            }
            // A failed commit only redelivers messages the state already holds; ingesting an
            // alert message twice changes nothing.
            if let Err(err) = consumer.commit(&list, mode) {
                warn!(%err, "offset commit failed; messages will be redelivered");
            }
            self.offsets.clear();
        }
        true
    }

    /// When the loop must look again: the pipeline's wakeup, the next due attempt, or the
    /// periodic tick.
    fn next_wake_ms(&self) -> i64 {
        let due = self
            .outbox
            .iter()
            .filter(|e| !self.in_flight.contains(&e.id))
            .filter(|e| {
                self.per_receiver
                    .get(&e.message.receiver)
                    .copied()
                    .unwrap_or(0)
                    < MAX_IN_FLIGHT_PER_RECEIVER
            })
            .map(|e| e.next_attempt_at_ms)
            .min();
        [
            self.pipeline.next_wakeup(),
            due,
            Some(self.last_tick_ms + TICK_EVERY_MS),
            self.dirty.then_some(self.last_save_ms + SAVE_EVERY_MS),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(i64::MAX)
    }

    /// Starts an attempt for every due entry its receiver has room and a token for.
    fn dispatch(&mut self) {
        let now = now_ms();
        let mut unknown = Vec::new();
        for entry in &mut self.outbox {
            if entry.next_attempt_at_ms > now
                || self.in_flight.contains(&entry.id)
                || self.unsaved.contains(&entry.id)
            {
                continue;
            }
            let Some(receiver) = self.receivers.by_name.get_mut(&entry.message.receiver) else {
                unknown.push(entry.id.clone());
                continue;
            };
            let busy = self.per_receiver.entry(receiver.name.clone()).or_default();
            if *busy >= MAX_IN_FLIGHT_PER_RECEIVER {
                continue;
            }
            if let Some(limiter) = &mut receiver.limiter {
                if let Err(wait) = limiter.try_acquire(Instant::now()) {
                    entry.next_attempt_at_ms = now + wait.as_millis() as i64 + 1;
                    continue;
                }
            }
            *busy += 1;
            entry.attempts += 1;
            entry.first_attempt_at_ms.get_or_insert(now);
            self.in_flight.insert(entry.id.clone());
            let transport = receiver.transport.clone();
            let http = self.receivers.http.clone();
            let done = self.done_tx.clone();
            let entry = entry.clone();
            tokio::spawn(async move {
                let id = entry.id.clone();
                let result = deliver::attempt(transport, http, entry, system_time(now)).await;
                let _ = done.send(Attempted { id, result });
            });
        }
        for id in unknown {
            self.finish_unknown(&id);
        }
    }

    fn finish_unknown(&mut self, id: &str) {
        let Some(pos) = self.outbox.iter().position(|e| e.id == id) else {
            return;
        };
        let mut entry = self.outbox.remove(pos);
        let reason = format!("receiver {:?} is not configured", entry.message.receiver);
        error!(id, "notification dropped: {reason}");
        entry.last_error = reason.clone();
        self.record(&entry, log::FAILED, reason);
        self.dirty = true;
    }

    /// Applies an attempt's result.
    fn settle(&mut self, done: Attempted) {
        self.in_flight.remove(&done.id);
        let Some(pos) = self.outbox.iter().position(|e| e.id == done.id) else {
            return;
        };
        let receiver = self.outbox[pos].message.receiver.clone();
        if let Some(busy) = self.per_receiver.get_mut(&receiver) {
            *busy = busy.saturating_sub(1);
        }
        let now = now_ms();
        let entry = &mut self.outbox[pos];
        let first = entry.first_attempt_at_ms.unwrap_or(now);
        let outcome = self.retry.decide(
            &done.result,
            entry.attempts,
            system_time(first),
            system_time(now),
            &mut jitter,
        );
        let error = done
            .result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        let outcome_name = match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Permanent { .. } => "permanent",
            Outcome::GaveUp { .. } => "gave_up",
        };
        metrics::counter!("tripline_alerting_delivery_attempts_total", "receiver" => receiver.clone(), "outcome" => outcome_name)
            .increment(1);
        self.dirty = true;
        match outcome {
            Outcome::Retry { after } => {
                entry.next_attempt_at_ms = now + after.as_millis() as i64;
                entry.last_error = error.clone();
                warn!(receiver = %receiver, id = %entry.id, attempts = entry.attempts, retry_in_ms = after.as_millis() as u64, "delivery failed, retrying: {error}");
                let entry = entry.clone();
                self.record(&entry, log::RETRY, error);
            }
            Outcome::Delivered => {
                let entry = self.outbox.remove(pos);
                info!(receiver = %receiver, id = %entry.id, attempts = entry.attempts, "notification delivered");
                self.record(&entry, log::DELIVERED, String::new());
            }
            Outcome::Permanent { reason } | Outcome::GaveUp { reason } => {
                let entry = self.outbox.remove(pos);
                error!(receiver = %receiver, id = %entry.id, attempts = entry.attempts, "notification not delivered: {reason}");
                self.record(&entry, log::FAILED, reason);
            }
        }
        metrics::gauge!("tripline_alerting_outbox_pending").set(self.outbox.len() as f64);
    }

    fn record(&self, entry: &OutboxEntry, status: i8, error: String) {
        let now = now_ms();
        let kind = self
            .receivers
            .by_name
            .get(&entry.message.receiver)
            .map_or("", |r| r.kind.as_str());
        self.log.record(NotificationRow {
            sent_at: (now / 1000) as u32,
            receiver: entry.message.receiver.clone(),
            status,
            attempts: entry.attempts.min(u32::from(u16::MAX)) as u16,
            latency_ms: (now - entry.created_at_ms).clamp(0, i64::from(u32::MAX)) as u32,
            error,
            kind: kind.to_owned(),
            notification_id: entry.id.clone(),
            sequence: entry.sequence,
            group_key: entry.message.group_key.clone(),
            reason: entry.message.reason.clone(),
            notification_status: entry.message.status.as_str().to_owned(),
            alerts: entry.message.alerts.len().min(usize::from(u16::MAX)) as u16,
        });
    }
}
