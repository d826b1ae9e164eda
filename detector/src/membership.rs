//! Detector workers sharing the shards by Kafka group membership (`[detect.group]`).
//!
//! Every worker joins one consumer group on a small coordination topic whose partitions are
//! the shards; nothing is ever written to it. Kafka's group protocol does the rest: it hands
//! each member some partitions, and when a member joins, leaves, or stops heartbeating (killed
//! or cut off, after `kafka.session_timeout_ms`), it takes them back from everyone and hands
//! them out again. A worker evaluates each shard it holds in a task of its own
//! ([`Detector::run_shard`]).
//!
//! The consumer polls on a thread of its own, so that a revocation can wait there, inside the
//! rebalance, until the revoked shards have stopped: Kafka hands them out again only once
//! every member has rejoined, so no two workers evaluate a shard at once (tansu, the test
//! broker, does not wait for every member: there two can, for up to a heartbeat interval). A revoked shard's
//! engine is parked: when the next assignment gives the shard back (the usual case when
//! another worker joins or leaves), it resumes at once, caught up by its next cycle; a shard
//! new to this worker is warmed from ClickHouse first, and its firing and pending alerts are
//! reloaded, so an alert another worker fired is not fired again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as sync_mpsc, Arc};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::data::Shard;
use crate::engine::Engine;
use crate::{DetectError, Detector};

/// How long a revocation waits for its shards to stop (a cycle, then the outbox's drain).
const REVOKE_WAIT: Duration = Duration::from_secs(20);
/// How long the consumer's thread blocks in one poll: the longest a shutdown waits for it.
const POLL: Duration = Duration::from_millis(200);

/// What the group's rebalances tell the supervisor.
enum Rebalanced {
    /// Stop these shards, then answer (the rebalance waits for it).
    Revoked(Vec<u32>, sync_mpsc::SyncSender<()>),
    Assigned(Vec<u32>),
}

/// Turns the consumer's rebalance callbacks into [`Rebalanced`] messages.
struct GroupContext {
    topic: String,
    events: mpsc::UnboundedSender<Rebalanced>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let shards = shards_of(partitions, &self.topic);
            let (done, stopped) = sync_mpsc::sync_channel(1);
            if self.events.send(Rebalanced::Revoked(shards, done)).is_ok()
                && stopped.recv_timeout(REVOKE_WAIT).is_err()
            {
                warn!(?REVOKE_WAIT, "revoked detector shards did not stop in time");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let _ = self
                    .events
                    .send(Rebalanced::Assigned(shards_of(partitions, &self.topic)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => warn!(%err, "detector group rebalance failed"),
        }
    }
}

fn shards_of(partitions: &TopicPartitionList, topic: &str) -> Vec<u32> {
    let mut shards: Vec<u32> = partitions
        .elements_for_topic(topic)
        .iter()
        .filter_map(|p| u32::try_from(p.partition()).ok())
        .collect();
    shards.sort_unstable();
    shards
}

/// Joins the group and evaluates the shards it assigns to this worker until `shutdown`.
pub(crate) async fn run(
    detector: Detector,
    producer: FutureProducer,
    shutdown: CancellationToken,
) -> Result<(), DetectError> {
    let group = detector.config.borrow().group.clone();
    let env = tripline_kafka::process_env;
    let partitions = i32::try_from(group.shards).unwrap_or(i32::MAX);
    tripline_kafka::ensure_topics(&detector.kafka, env, &[&group.topic], partitions).await?;
    let (events, mut rebalanced) = mpsc::unbounded_channel();
    let consumer: BaseConsumer<GroupContext> =
        tripline_kafka::consumer_config(&detector.kafka, &group.group_id, env)?
            .create_with_context(GroupContext {
                topic: group.topic.clone(),
                events,
            })?;
    let topic = group.topic.clone();
    let (consumer, count) = tokio::task::spawn_blocking(move || {
        let count = partition_count(&consumer, &topic);
        (consumer, count)
    })
    .await
    .map_err(|_| DetectError::Group("reading the coordination topic's metadata panicked".into()))?;
    let count = count?;
    if count != group.shards {
        warn!(
            topic = %group.topic,
            partitions = count,
            configured = group.shards,
            "the coordination topic already exists with another partition count: it decides the shards"
        );
    }
    consumer.subscribe(&[&group.topic])?;
    info!(group = %group.group_id, topic = %group.topic, shards = count, "joining the detector group");
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let polling = polling.clone();
        tokio::task::spawn_blocking(move || poll_group(consumer, &polling))
    };

    let mut shards = Shards::new(detector, producer, count, shutdown.clone());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = rebalanced.recv() => match event {
                Some(Rebalanced::Revoked(revoked, done)) => {
                    info!(shards = ?revoked, "detector shards revoked: stopping them");
                    shards.park_all().await;
                    let _ = done.send(());
                }
                Some(Rebalanced::Assigned(assigned)) => {
                    info!(shards = ?assigned, of = count, "detector shards assigned");
                    shards.assign(&assigned).await;
                }
                None => break,
            },
        }
    }
    shards.park_all().await;
    polling.store(false, Ordering::Relaxed);
    // Leaving the group revokes once more; that answer is no longer awaited.
    drop(rebalanced);
    if tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .is_err()
    {
        warn!("the detector group's consumer did not close in time; leaving it behind");
    }
    Ok(())
}

/// The coordination topic's partition count, as the brokers know it.
fn partition_count(consumer: &BaseConsumer<GroupContext>, topic: &str) -> Result<u32, DetectError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    match u32::try_from(partitions) {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(DetectError::Group(format!(
            "the coordination topic {topic} has no partitions"
        ))),
    }
}

/// Polls the group consumer until told to stop: the polls drive its rebalance callbacks
/// (heartbeats run on librdkafka's own thread). No message is expected on the topic.
fn poll_group(consumer: BaseConsumer<GroupContext>, polling: &AtomicBool) {
    while polling.load(Ordering::Relaxed) {
        if let Some(Err(err)) = consumer.poll(POLL) {
            warn!(%err, "detector group consumer");
            std::thread::sleep(POLL);
        }
    }
    consumer.unsubscribe();
}

/// The shards this worker evaluates, and the engines of those it stopped evaluating.
struct Shards {
    detector: Detector,
    producer: FutureProducer,
    count: u32,
    shutdown: CancellationToken,
    running: BTreeMap<u32, Running>,
    parked: BTreeMap<u32, Engine>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Option<Engine>>,
}

impl Shards {
    fn new(
        detector: Detector,
        producer: FutureProducer,
        count: u32,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            detector,
            producer,
            count,
            shutdown,
            running: BTreeMap::new(),
            parked: BTreeMap::new(),
        }
    }

    /// Evaluates exactly `assigned`: resumes the parked engines among them, warms the others,
    /// and forgets the parked engines of shards that went elsewhere. A revocation has stopped
    /// every shard before (eager rebalancing); one still running that is not assigned any more
    /// is stopped first all the same.
    async fn assign(&mut self, assigned: &[u32]) {
        let gone: Vec<u32> = self
            .running
            .keys()
            .copied()
            .filter(|shard| !assigned.contains(shard))
            .collect();
        self.park(&gone).await;
        let plan = plan(
            self.running.keys().copied(),
            self.parked.keys().copied(),
            assigned,
        );
        if !plan.start.is_empty() {
            info!(start = ?plan.start, resumed = ?plan.resumed, "starting detector shards");
        }
        for shard in plan.start {
            let parked = self.parked.remove(&shard);
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(self.detector.clone().run_shard(
                Shard {
                    index: shard,
                    count: self.count,
                },
                self.producer.clone(),
                parked,
                stop.clone(),
            ));
            self.running.insert(shard, Running { stop, task });
        }
        self.parked.clear();
        self.detector.health.standby(assigned.is_empty());
    }

    /// Stops every running shard and keeps its engine.
    async fn park_all(&mut self) {
        let all: Vec<u32> = self.running.keys().copied().collect();
        self.park(&all).await;
    }

    /// Stops these running shards (all at once) and keeps their engines.
    async fn park(&mut self, shards: &[u32]) {
        let stopping: Vec<(u32, Running)> = shards
            .iter()
            .filter_map(|shard| self.running.remove(shard).map(|r| (*shard, r)))
            .collect();
        for (_, running) in &stopping {
            running.stop.cancel();
        }
        for (shard, running) in stopping {
            match running.task.await {
                Ok(Some(engine)) => {
                    self.parked.insert(shard, engine);
                }
                Ok(None) => {}
                Err(err) => warn!(%err, shard, "a detector shard's task failed"),
            }
        }
    }
}

/// Which shards to start on an assignment, and from a parked engine or not.
#[derive(Debug, PartialEq)]
struct Plan {
    start: Vec<u32>,
    resumed: Vec<u32>,
}

fn plan(
    running: impl Iterator<Item = u32>,
    parked: impl Iterator<Item = u32>,
    assigned: &[u32],
) -> Plan {
    let running: Vec<u32> = running.collect();
    let parked: Vec<u32> = parked.collect();
    let start: Vec<u32> = assigned
        .iter()
        .copied()
        .filter(|shard| !running.contains(shard))
        .collect();
    let resumed = start
        .iter()
        .copied()
        .filter(|shard| parked.contains(shard))
        .collect();
    Plan { start, resumed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_starts_what_is_not_running_and_resumes_what_was_parked() {
        let p = plan([1].into_iter(), [0, 3].into_iter(), &[0, 1, 2]);
        assert_eq!(
            p,
            Plan {
                start: vec![0, 2],
                resumed: vec![0]
            }
        );
        let p = plan(std::iter::empty(), [4].into_iter(), &[]);
        assert!(p.start.is_empty() && p.resumed.is_empty());
    }

    #[test]
    fn shards_are_the_partitions_of_the_coordination_topic_only() {
        let mut list = TopicPartitionList::new();
        list.add_partition("tripline.detector.shards", 4);
        list.add_partition("tripline.detector.shards", 1);
        list.add_partition("another", 2);
        assert_eq!(shards_of(&list, "tripline.detector.shards"), [1, 4]);
    }
}
