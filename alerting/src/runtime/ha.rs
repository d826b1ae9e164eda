//! Alerting with standbys (`[alerting.ha]`), on Kafka alone.
//!
//! - **Who is active.** Every instance joins one consumer group on a one-partition
//!   coordination topic ([`Membership`]); the member Kafka assigns the partition to is active,
//!   the others stand by. When the active one is killed or cut off, Kafka hands the partition
//!   to a standby after `kafka.session_timeout_ms`.
//! - **The state** (alerts, groups, silences, pending notifications and their attempts, the
//!   alerts topic's applied offsets) is the state file's document, written by the active
//!   instance to a compacted topic instead of `state_dir`, under the key `state/<term>`, with
//!   the same rule: stored before the offsets are committed and before a notification's first
//!   attempt. Every instance reads the topic as it is written.
//! - **Taking over.** A standby given the partition writes a marker to the state topic and
//!   reads up to it: it then holds everything its predecessor stored. It takes the state of
//!   the highest term and starts a term of its own, numbered by its marker's offset, so every
//!   term is unique and later than all before it. Readers trust the highest term, so an
//!   instance that was cut off and still writes cannot overwrite its successor (Kafka's group
//!   protocol, not this, decides who sends: a cut-off instance stops when its session times
//!   out). Once its first state is stored, the older
//!   states and markers are deleted (tombstones: Kafka's compaction drops them). Pending
//!   notifications are attempted at once, with their `webhook-id`: an attempt the predecessor
//!   made but did not live to store is the one duplicate a receiver can see.
//! - **Silences** also go through a compacted topic of their own, keyed by silence id, merged
//!   by every instance (the later change wins). The API answers on every instance: a standby
//!   lists alerts from the last stored state, and creates and expires silences through the
//!   topic, so they apply on all.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{HaConfig, KafkaConfig};
use tripline_kafka::membership::{Membership, Rebalanced};

use super::commands::{alert_views, silence_views};
use super::control::{Command, ControlError, SilenceView};
use super::deliver::Receivers;
use super::log::DeliveryLog;
use super::state::{State, StateError, StateStore, STATE_VERSION};
use super::{now_ms, AlertService, AlertingError};
use crate::pipeline::Pipeline;
use crate::silence::{Silence, SilenceError, SilenceStore};

/// How long a revocation waits for the active loop to stop (drain, last write, commit).
const REVOKE_WAIT: Duration = Duration::from_secs(20);
/// How long a new active instance waits to read its own marker back.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const STATE_KEY_PREFIX: &str = "state/";
const MARKER_KEY_PREFIX: &str = "marker/";

/// Runs this instance as a standby until Kafka makes it active, then as the active one until
/// the partition is taken back, and so on until `shutdown`.
pub(super) async fn run(
    service: &mut AlertService,
    commands: &mut mpsc::Receiver<Command>,
    log: &DeliveryLog,
    shutdown: CancellationToken,
) -> Result<(), AlertingError> {
    let ha = service.config.ha.clone();
    let instance = ha.instance.clone().unwrap_or_else(default_instance);
    let env = tripline_kafka::process_env;
    tripline_kafka::ensure_changelog_topics(
        &service.kafka,
        env,
        &[&ha.state_topic, &ha.silences_topic],
    )
    .await?;
    let producer: FutureProducer =
        tripline_kafka::producer_config(&service.kafka, env)?.create()?;
    let shared = Shared::start(&service.kafka, &ha, &instance, producer.clone(), &shutdown)?;
    let mut membership = Membership::join(
        &service.kafka,
        &ha.leader_topic,
        &ha.group_id,
        1,
        REVOKE_WAIT,
    )
    .await?;
    if membership.partitions != 1 {
        let partitions = membership.partitions;
        membership.leave().await;
        shared.stop().await;
        return Err(AlertingError::Standby(format!(
            "the leader topic {} has {partitions} partitions: it needs exactly one, or several \
             instances would be active at once",
            ha.leader_topic
        )));
    }
    // A standby is ready: it answers the API and can take over.
    service.health.set_running(true);
    service.health.state_written(true);
    // Whether the partition is this instance's already (handed back while a term was stopping).
    let mut holds = false;
    let result = loop {
        if !holds {
            info!(%instance, "alerting standing by");
            metrics::gauge!("tripline_alerting_active").set(0.0);
            let active = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                active = stand_by(service, &shared, &mut membership, commands) => active,
            };
            if let Err(err) = active {
                break Err(err);
            }
        }
        holds = false;
        let taken = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            taken = take_over(&shared, &instance, &mut membership) => taken,
        };
        let (mut state, log_state) = match taken {
            Ok(Some(taken)) => taken,
            // Taken back before this instance was ready: stand by again.
            Ok(None) => continue,
            Err(err) => break Err(err),
        };
        let term = log_state.term;
        // Every pending notification is tried once at once: the predecessor's backoff was
        // about receivers as it reached them, and what cut it off may have been its network.
        let now = now_ms();
        for entry in state.iter_mut().flat_map(|s| s.outbox.iter_mut()) {
            entry.next_attempt_at_ms = entry.next_attempt_at_ms.min(now);
        }
        info!(%instance, term, pending_notifications = state.as_ref().map_or(0, |s| s.outbox.len()), "alerting active");
        metrics::gauge!("tripline_alerting_active").set(1.0);
        let store = StateStore::Log(log_state);
        let stop = shutdown.child_token();
        let mut serve = Box::pin(service.serve(state, store, Some(&shared), commands, log, &stop));
        let mut release = None;
        let mut events_open = true;
        let served = loop {
            tokio::select! {
                served = &mut serve => break served,
                event = membership.events.recv(), if events_open => match event {
                    Some(Rebalanced::Revoked(_, handed_back)) => {
                        info!(%instance, term, "alerting partition revoked: stopping");
                        stop.cancel();
                        holds = false;
                        release = Some(handed_back);
                    }
                    // The revocation's wait ran out while this term was stopping: the
                    // partition may come straight back.
                    Some(Rebalanced::Assigned(partitions)) => holds = !partitions.is_empty(),
                    None => {
                        events_open = false;
                        stop.cancel();
                    }
                },
            }
        };
        drop(serve);
        if let Some(release) = release {
            release.done();
        }
        if served.is_err() || shutdown.is_cancelled() {
            break served;
        }
        if !events_open {
            break Err(AlertingError::Standby(
                "the coordination group's consumer stopped".into(),
            ));
        }
        // The API keeps answering while this instance stands by.
        service.health.set_running(true);
        service.health.state_written(true);
    };
    metrics::gauge!("tripline_alerting_active").set(0.0);
    service.health.set_running(false);
    membership.leave().await;
    shared.stop().await;
    result
}

/// Takes over the state unless the partition is taken back meanwhile (`None`).
async fn take_over(
    shared: &Shared,
    instance: &str,
    membership: &mut Membership,
) -> Result<Option<(Option<State>, StateLog)>, AlertingError> {
    let mut reading = Box::pin(shared.take_over(instance));
    loop {
        tokio::select! {
            taken = &mut reading => return taken.map(Some),
            event = membership.events.recv() => match event {
                Some(Rebalanced::Revoked(_, release)) => {
                    release.done();
                    return Ok(None);
                }
                Some(Rebalanced::Assigned(partitions)) if partitions.is_empty() => return Ok(None),
                Some(Rebalanced::Assigned(_)) => {}
                None => {
                    return Err(AlertingError::Standby(
                        "the coordination group's consumer stopped".into(),
                    ))
                }
            },
        }
    }
}

/// Answers the API as a standby until the coordination partition is assigned to this instance.
async fn stand_by(
    service: &mut AlertService,
    shared: &Shared,
    membership: &mut Membership,
    commands: &mut mpsc::Receiver<Command>,
) -> Result<(), AlertingError> {
    loop {
        tokio::select! {
            event = membership.events.recv() => match event {
                Some(Rebalanced::Assigned(partitions)) if !partitions.is_empty() => return Ok(()),
                Some(Rebalanced::Revoked(_, release)) => release.done(),
                Some(Rebalanced::Assigned(_)) => info!("alerting standby: another instance is active"),
                None => {
                    return Err(AlertingError::Standby(
                        "the coordination group's consumer stopped".into(),
                    ))
                }
            },
            Some(command) = commands.recv() => standby_command(service, shared, command).await,
        }
    }
}

/// A standby's answer: reads from the last stored state, silences through their topic.
async fn standby_command(service: &mut AlertService, shared: &Shared, command: Command) {
    let now = now_ms();
    match command {
        Command::ListAlerts(reply) => {
            let views = match shared.lock().state.clone() {
                None => Ok(Vec::new()),
                Some(state) => Pipeline::restore(&service.config, state.pipeline, now)
                    .map(|pipeline| alert_views(&pipeline, now))
                    .map_err(|e| ControlError::Config(e.to_string())),
            };
            let _ = reply.send(views);
        }
        Command::ListSilences(reply) => {
            let _ = reply.send(Ok(silence_views(&shared.silences(), now)));
        }
        Command::CreateSilence(new, reply) => {
            let result = shared
                .change_silence(&shared.silences(), |s| s.create(new, now))
                .await;
            let _ = reply.send(shared.merged(result, now));
        }
        Command::ExpireSilence(id, reply) => {
            let result = shared
                .change_silence(&shared.silences(), |s| s.expire(&id, now))
                .await;
            let _ = reply.send(shared.merged(result, now));
        }
        Command::Test(_, reply) => {
            let _ = reply.send(Err(ControlError::Standby));
        }
        Command::Reload(config, reply) => {
            let checked = Receivers::from_config(&config, &tripline_kafka::process_env)
                .map_err(|e| ControlError::Config(e.to_string()))
                .and_then(|_| {
                    Pipeline::from_config(&config).map_err(|e| ControlError::Config(e.to_string()))
                });
            let _ = reply.send(checked.map(|_| {
                service.config = *config;
                info!("alerting config reloaded (standby)");
            }));
        }
    }
}

/// `<host>-<pid>`: tells the instances apart in logs and markers.
fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "alerting".into());
    format!("{host}-{}", std::process::id())
}

/// The active instance's state, written to the state topic in its term.
pub struct StateLog {
    producer: FutureProducer,
    topic: String,
    term: u64,
    /// Keys of earlier terms' states and of markers, deleted once this term's first state is
    /// stored.
    retire: Mutex<Vec<String>>,
}

impl StateLog {
    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Returns once every in-sync replica has the state.
    pub async fn save(&self, state: &State) -> Result<(), StateError> {
        let key = state_key(self.term);
        let payload = serde_json::to_vec(state).expect("state serializes");
        tripline_kafka::produce(
            &self.producer,
            FutureRecord::to(&self.topic).key(&key).payload(&payload),
        )
        .await
        .map_err(|err| StateError::Kafka {
            topic: self.topic.clone(),
            message: err.to_string(),
        })?;
        let retire = std::mem::take(&mut *self.retire.lock().unwrap_or_else(|e| e.into_inner()));
        for key in retire {
            let tombstone = FutureRecord::<str, [u8]>::to(&self.topic).key(&key);
            if let Err(err) = tripline_kafka::produce(&self.producer, tombstone).await {
                warn!(%key, %err, "an old state could not be deleted; compaction will not drop it");
            }
        }
        Ok(())
    }
}

fn state_key(term: u64) -> String {
    format!("{STATE_KEY_PREFIX}{term:020}")
}

/// What an instance has read of the state and silences topics.
#[derive(Default)]
pub struct View {
    /// The state of the highest term, its latest write.
    pub state: Option<State>,
    /// The highest term seen.
    pub term: u64,
    /// Every silence seen, in the state or its own topic.
    pub silences: SilenceStore,
    /// Bumped whenever `silences` changes.
    silences_version: u64,
    /// The next offset of the state topic to read: everything before it has been applied.
    read_up_to: i64,
    /// Keys of states and markers seen, with their term (a marker's is its offset): a new
    /// term deletes those of earlier ones.
    keys: std::collections::BTreeMap<String, u64>,
}

/// One record of the state topic, decoded outside the view's lock.
enum StateRecord {
    Marker,
    State(u64, Box<State>),
    Skip,
}

impl StateRecord {
    fn decode(key: &str, payload: Option<&[u8]>) -> StateRecord {
        if key.starts_with(MARKER_KEY_PREFIX) {
            return StateRecord::Marker;
        }
        let (Some(term), Some(payload)) = (
            key.strip_prefix(STATE_KEY_PREFIX)
                .and_then(|t| t.parse::<u64>().ok()),
            payload,
        ) else {
            // A tombstone, or a key of no concern.
            return StateRecord::Skip;
        };
        match serde_json::from_slice::<State>(payload) {
            Ok(state) if state.version == STATE_VERSION => {
                StateRecord::State(term, Box::new(state))
            }
            Ok(state) => {
                warn!(
                    term,
                    version = state.version,
                    "a state of another version in the state topic; ignored"
                );
                StateRecord::Skip
            }
            Err(err) => {
                warn!(term, %err, "an unreadable state in the state topic; ignored");
                StateRecord::Skip
            }
        }
    }
}

impl View {
    /// Applies one record of the state topic, read at `offset`.
    fn apply_state(&mut self, key: &str, record: StateRecord, offset: i64) {
        self.read_up_to = self.read_up_to.max(offset + 1);
        match record {
            StateRecord::Marker => {
                self.keys
                    .insert(key.to_owned(), u64::try_from(offset).unwrap_or_default());
            }
            StateRecord::State(term, _) if term < self.term => warn!(
                term,
                current = self.term,
                "a state from an earlier term: an instance that was cut off still writes; ignored"
            ),
            StateRecord::State(term, state) => {
                self.keys.insert(key.to_owned(), term);
                for silence in state.pipeline.silences.list() {
                    if self.silences.merge(silence.clone()) {
                        self.silences_version += 1;
                    }
                }
                self.term = term;
                self.state = Some(*state);
            }
            StateRecord::Skip => {}
        }
    }

    /// Applies one record of the silences topic.
    fn apply_silence(&mut self, payload: Option<&[u8]>) {
        let silence = match payload.map(serde_json::from_slice::<Silence>) {
            Some(Ok(silence)) => silence,
            Some(Err(err)) => {
                warn!(%err, "an unreadable silence in the silences topic; ignored");
                return;
            }
            None => return,
        };
        if self.silences.merge(silence) {
            self.silences_version += 1;
        }
    }
}

/// What the instances share, read by a task that follows the state and silences topics.
pub struct Shared {
    view: Arc<Mutex<View>>,
    /// Bumped after every record read.
    read: watch::Receiver<u64>,
    producer: FutureProducer,
    state_topic: String,
    silences_topic: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Shared {
    fn start(
        kafka: &KafkaConfig,
        ha: &HaConfig,
        instance: &str,
        producer: FutureProducer,
        shutdown: &CancellationToken,
    ) -> Result<Shared, AlertingError> {
        // Assigned, never subscribed: the group id is only a name, nothing is committed.
        let group = format!("{}-reader-{instance}", ha.group_id);
        let consumer: StreamConsumer =
            tripline_kafka::consumer_config(kafka, &group, tripline_kafka::process_env)?
                .create()?;
        let mut partitions = TopicPartitionList::new();
        for topic in [&ha.state_topic, &ha.silences_topic] {
            partitions.add_partition_offset(topic, 0, Offset::Beginning)?;
        }
        consumer.assign(&partitions)?;
        let view = Arc::new(Mutex::new(View::default()));
        let (bump, read) = watch::channel(0);
        let stop = shutdown.child_token();
        let task = tokio::spawn(follow(
            consumer,
            ha.state_topic.clone(),
            view.clone(),
            bump,
            stop.clone(),
        ));
        Ok(Shared {
            view,
            read,
            producer,
            state_topic: ha.state_topic.clone(),
            silences_topic: ha.silences_topic.clone(),
            stop,
            task,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    /// Wakes whenever a record was read (see [`changed`]).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.read.clone()
    }

    /// Every silence known here.
    pub fn silences(&self) -> SilenceStore {
        self.lock().silences.clone()
    }

    /// Every silence known here, if they changed since `seen` (which is brought up to date).
    pub fn silences_since(&self, seen: &mut u64) -> Option<SilenceStore> {
        let view = self.lock();
        (view.silences_version != *seen).then(|| {
            *seen = view.silences_version;
            view.silences.clone()
        })
    }

    /// Applies `change` (a create or an expiry) to a copy of `known` and shares the silence
    /// it made; returns it once Kafka has it. `known` itself changes when the caller merges it.
    pub async fn change_silence(
        &self,
        known: &SilenceStore,
        change: impl FnOnce(&mut SilenceStore) -> Result<&Silence, SilenceError>,
    ) -> Result<Silence, ControlError> {
        let mut scratch = known.clone();
        let silence = change(&mut scratch)?.clone();
        self.publish(&silence).await?;
        Ok(silence)
    }

    async fn publish(&self, silence: &Silence) -> Result<(), ControlError> {
        let payload = serde_json::to_vec(silence).expect("a silence serializes");
        tripline_kafka::produce(
            &self.producer,
            FutureRecord::to(&self.silences_topic)
                .key(&silence.id)
                .payload(&payload),
        )
        .await
        .map_err(|err| ControlError::NotShared {
            topic: self.silences_topic.clone(),
            reason: err.to_string(),
        })
    }

    /// A standby's answer to a silence change: kept here at once, so that it lists it.
    fn merged(
        &self,
        result: Result<Silence, ControlError>,
        now: i64,
    ) -> Result<SilenceView, ControlError> {
        let silence = result?;
        self.lock().silences.merge(silence.clone());
        info!(id = %silence.id, "silence shared (standby)");
        Ok(SilenceView::of(&silence, now))
    }

    /// Reads everything stored before this call (up to a marker it writes), then returns the
    /// state to continue from and where to store it: in the term numbered by the marker's
    /// offset.
    async fn take_over(&self, instance: &str) -> Result<(Option<State>, StateLog), AlertingError> {
        let marker = format!("{MARKER_KEY_PREFIX}{instance}/{}", now_ms());
        let offset = tripline_kafka::produce_at(
            &self.producer,
            FutureRecord::to(&self.state_topic)
                .key(&marker)
                .payload(&[] as &[u8]),
        )
        .await
        .map_err(|err| AlertingError::Standby(format!("cannot write a marker: {err}")))?;
        let mut read = self.read.clone();
        let caught_up = tokio::time::timeout(CATCH_UP_TIMEOUT, async {
            loop {
                if self.lock().read_up_to > offset {
                    return true;
                }
                if read.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        if caught_up != Ok(true) {
            return Err(AlertingError::Standby(format!(
                "the state topic {} was not read up to this instance's marker within {CATCH_UP_TIMEOUT:?}",
                self.state_topic
            )));
        }
        let term = u64::try_from(offset).unwrap_or_default();
        let view = self.lock();
        let retire = view
            .keys
            .iter()
            .filter(|(_, of_term)| **of_term < term)
            .map(|(key, _)| key.clone())
            .collect();
        let log = StateLog {
            producer: self.producer.clone(),
            topic: self.state_topic.clone(),
            term,
            retire: Mutex::new(retire),
        };
        Ok((view.state.clone(), log))
    }
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

/// Follows both topics into the view until `stop`.
async fn follow(
    consumer: StreamConsumer,
    state_topic: String,
    view: Arc<Mutex<View>>,
    bump: watch::Sender<u64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    if message.topic() == state_topic {
                        let key = message.key().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or_default();
                        let record = StateRecord::decode(key, message.payload());
                        lock(&view).apply_state(key, record, message.offset());
                    } else {
                        lock(&view).apply_silence(message.payload());
                    }
                    bump.send_modify(|n| *n += 1);
                }
                Err(err) => {
                    warn!(%err, "reading the shared alerting state");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    tripline_kafka::close_consumer(consumer, Duration::from_secs(10)).await;
}

/// Resolves when `read` moved on (never when there is nothing to follow).
pub(super) async fn changed(read: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match read {
        Some(read) => read.changed().await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::alerting_config;
    use crate::pipeline::Pipeline;

    fn state(term: u64, saved_at_ms: i64, silences: SilenceStore) -> Vec<u8> {
        let config = alerting_config(
            "[[alerting.receivers]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n[alerting.route]\nreceiver = \"w\"\n",
        );
        let mut snapshot = Pipeline::from_config(&config).unwrap().snapshot();
        snapshot.silences = silences;
        serde_json::to_vec(&State {
            version: STATE_VERSION,
            term,
            saved_at_ms,
            pipeline: snapshot,
            outbox: Vec::new(),
            applied: Default::default(),
        })
        .unwrap()
    }

    fn silence(store: &mut SilenceStore, now: i64) -> Silence {
        store
            .create(
                crate::silence::NewSilence {
                    matchers: crate::matcher::parse_list(r#"{detector="spend_spike"}"#).unwrap(),
                    starts_at_ms: None,
                    ends_at_ms: now + 60_000,
                    created_by: "ops".into(),
                    comment: "deploy".into(),
                },
                now,
            )
            .unwrap()
            .clone()
    }

    fn apply(view: &mut View, key: &str, payload: Option<&[u8]>, offset: i64) {
        let record = StateRecord::decode(key, payload);
        view.apply_state(key, record, offset);
    }

    #[test]
    fn the_highest_term_wins_and_a_late_write_of_an_earlier_term_is_ignored() {
        let mut view = View::default();
        apply(&mut view, "marker/a/1", Some(b""), 0);
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 10, SilenceStore::new())),
            1,
        );
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 20, SilenceStore::new())),
            2,
        );
        assert_eq!(view.state.as_ref().map(|s| s.saved_at_ms), Some(20));
        apply(&mut view, "marker/b/1", Some(b""), 3);
        apply(
            &mut view,
            &state_key(3),
            Some(&state(3, 30, SilenceStore::new())),
            4,
        );
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 40, SilenceStore::new())),
            5,
        );
        assert_eq!(
            (view.term, view.state.as_ref().map(|s| s.saved_at_ms)),
            (3, Some(30))
        );
        apply(&mut view, &state_key(3), Some(b"{not json"), 6);
        apply(&mut view, &state_key(0), None, 7);
        assert_eq!(view.state.as_ref().map(|s| s.saved_at_ms), Some(30));
        assert_eq!(view.read_up_to, 8);
        let keys: Vec<(&str, u64)> = view.keys.iter().map(|(k, t)| (k.as_str(), *t)).collect();
        assert_eq!(
            keys,
            [
                ("marker/a/1", 0),
                ("marker/b/1", 3),
                ("state/00000000000000000000", 0),
                ("state/00000000000000000003", 3)
            ]
        );
    }

    #[test]
    fn silences_arrive_from_their_topic_and_from_the_state() {
        let mut view = View::default();
        let mut elsewhere = SilenceStore::new();
        let first = silence(&mut elsewhere, 1_000);
        view.apply_silence(Some(&serde_json::to_vec(&first).unwrap()));
        assert_eq!(view.silences_version, 1);
        view.apply_silence(Some(b"nonsense"));
        view.apply_silence(Some(&serde_json::to_vec(&first).unwrap()));
        assert_eq!(view.silences_version, 1, "nothing new");
        let second = silence(&mut elsewhere, 2_000);
        apply(
            &mut view,
            &state_key(1),
            Some(&state(1, 5, elsewhere.clone())),
            0,
        );
        assert_eq!(view.silences_version, 2);
        let ids: Vec<&str> = view.silences.list().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&first.id.as_str()) && ids.contains(&second.id.as_str()));
    }
}
