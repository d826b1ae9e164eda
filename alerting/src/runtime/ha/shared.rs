//! What the instances share ([`Shared`]): a task that follows the state and silences topics
//! into a [`View`], silence changes published to their topic, and the take-over's read up to
//! its own marker.
//!
//! Kept apart from the runner (`ha.rs`), which decides when this instance stands by and when
//! it is active: this is how the instances' common knowledge is kept up to date and changed,
//! whichever role the instance has.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{HaConfig, KafkaConfig};

use super::state_log::{StateLog, StateRecord, View, MARKER_KEY_PREFIX};
use crate::runtime::control::{ControlError, SilenceView};
use crate::runtime::state::State;
use crate::runtime::{now_ms, AlertingError};
use crate::silence::{Silence, SilenceError, SilenceStore};

/// How long a new active instance waits to read its own marker back.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(super) fn start(
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

    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, View> {
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
    pub(super) fn merged(
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
    pub(super) async fn take_over(
        &self,
        instance: &str,
    ) -> Result<(Option<State>, StateLog), AlertingError> {
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
pub(crate) async fn changed(read: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match read {
        Some(read) => read.changed().await.ok(),
        None => std::future::pending().await,
    }
}
