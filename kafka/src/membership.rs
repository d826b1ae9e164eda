//! Sharing work by Kafka group membership: members join one consumer group on a small
//! coordination topic whose partitions are units of work (detector shards; the one active
//! alerting instance). Nothing is ever written to the topic. Kafka's group protocol hands each
//! member some partitions, and when a member joins, leaves, or stops heartbeating (killed or cut
//! off, after `kafka.session_timeout_ms`), takes them back from everyone and hands them out
//! again.
//!
//! The consumer polls on a thread of its own, so that a revocation can wait there, inside the
//! rebalance, until the member has let go of the revoked work: Kafka hands it out again only
//! once every member has rejoined, so no two members hold a partition at once (tansu, the test
//! broker, does not wait for every member: there two can, for up to a heartbeat interval).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as sync_mpsc, Arc};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tripline_core::config::KafkaConfig;

use crate::KafkaSetupError;

/// How long the consumer's thread blocks in one poll: the longest a shutdown waits for it.
const POLL: Duration = Duration::from_millis(200);

/// What the group's rebalances tell the member.
#[derive(Debug)]
pub enum Rebalanced {
    /// Let go of these partitions, then answer: the rebalance waits for the answer (up to the
    /// `revoke_wait` given to [`Membership::join`]).
    Revoked(Vec<u32>, Release),
    /// These partitions are now this member's.
    Assigned(Vec<u32>),
}

/// The answer a revocation waits for; dropping it answers too.
#[derive(Debug)]
pub struct Release(sync_mpsc::SyncSender<()>);

impl Release {
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

/// A member of a coordination group.
pub struct Membership {
    /// Rebalances, in order. Ends when the consumer's thread stops.
    pub events: mpsc::UnboundedReceiver<Rebalanced>,
    /// The coordination topic's partition count, as the brokers know it.
    pub partitions: u32,
    polling: Arc<AtomicBool>,
    poller: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the coordination topic {0} has no partitions")]
    NoPartitions(String),
    #[error("reading the coordination topic's metadata panicked")]
    Panicked,
}

/// Turns the consumer's rebalance callbacks into [`Rebalanced`] messages.
struct GroupContext {
    topic: String,
    revoke_wait: Duration,
    events: mpsc::UnboundedSender<Rebalanced>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked = partitions_of(partitions, &self.topic);
            let (done, released) = sync_mpsc::sync_channel(1);
            if self
                .events
                .send(Rebalanced::Revoked(revoked, Release(done)))
                .is_ok()
                && matches!(
                    released.recv_timeout(self.revoke_wait),
                    Err(sync_mpsc::RecvTimeoutError::Timeout)
                )
            {
                warn!(topic = %self.topic, wait = ?self.revoke_wait, "revoked work was not released in time");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let _ = self
                    .events
                    .send(Rebalanced::Assigned(partitions_of(partitions, &self.topic)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => warn!(topic = %self.topic, %err, "group rebalance failed"),
        }
    }
}

/// The partitions of `topic` in `list`, sorted.
pub fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    let mut partitions: Vec<u32> = list
        .elements_for_topic(topic)
        .iter()
        .filter_map(|p| u32::try_from(p.partition()).ok())
        .collect();
    partitions.sort_unstable();
    partitions
}

impl Membership {
    /// Creates the coordination topic with `partitions` partitions unless it exists (then its
    /// own count wins, with a warning) and joins `group_id` on it.
    pub async fn join(
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        partitions: u32,
        revoke_wait: Duration,
    ) -> Result<Membership, MembershipError> {
        let env = crate::process_env;
        let wanted = i32::try_from(partitions).unwrap_or(i32::MAX);
        crate::ensure_topics(kafka, env, &[topic], wanted).await?;
        let (events, received) = mpsc::unbounded_channel();
        let consumer: BaseConsumer<GroupContext> = crate::consumer_config(kafka, group_id, env)?
            .create_with_context(GroupContext {
                topic: topic.to_owned(),
                revoke_wait,
                events,
            })?;
        let name = topic.to_owned();
        let (consumer, count) = tokio::task::spawn_blocking(move || {
            let count = partition_count(&consumer, &name);
            (consumer, count)
        })
        .await
        .map_err(|_| MembershipError::Panicked)?;
        let count = count?;
        if count != partitions {
            warn!(
                %topic,
                partitions = count,
                configured = partitions,
                "the coordination topic already exists with another partition count: it decides"
            );
        }
        consumer.subscribe(&[topic])?;
        info!(group = %group_id, %topic, partitions = count, "joining the coordination group");
        let polling = Arc::new(AtomicBool::new(true));
        let poller = {
            let polling = polling.clone();
            tokio::task::spawn_blocking(move || poll_group(consumer, &polling))
        };
        Ok(Membership {
            events: received,
            partitions: count,
            polling,
            poller,
        })
    }

    /// Leaves the group (the revocation this causes is not awaited) and waits up to 10 s for
    /// the consumer to close.
    pub async fn leave(self) {
        self.polling.store(false, Ordering::Relaxed);
        drop(self.events);
        if tokio::time::timeout(Duration::from_secs(10), self.poller)
            .await
            .is_err()
        {
            warn!("a coordination group's consumer did not close in time; leaving it behind");
        }
    }
}

/// The coordination topic's partition count, as the brokers know it.
fn partition_count(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
) -> Result<u32, MembershipError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    match u32::try_from(partitions) {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(MembershipError::NoPartitions(topic.to_owned())),
    }
}

/// Polls the group consumer until told to stop: the polls drive its rebalance callbacks
/// (heartbeats run on librdkafka's own thread). No message is expected on the topic.
fn poll_group(consumer: BaseConsumer<GroupContext>, polling: &AtomicBool) {
    while polling.load(Ordering::Relaxed) {
        if let Some(Err(err)) = consumer.poll(POLL) {
            warn!(%err, "coordination group consumer");
            std::thread::sleep(POLL);
        }
    }
    consumer.unsubscribe();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_coordination_topics_partitions_count() {
        let mut list = TopicPartitionList::new();
        list.add_partition("tripline.detector.shards", 4);
        list.add_partition("tripline.detector.shards", 1);
        list.add_partition("another", 2);
        assert_eq!(partitions_of(&list, "tripline.detector.shards"), [1, 4]);
    }
}
