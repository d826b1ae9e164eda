//! Detector workers sharing the shards by Kafka group membership (`[detect.group]`): the
//! partitions of the coordination topic are the shards (see [`tripline_kafka::membership`]).
//! A worker evaluates each shard it holds in a task of its own ([`Detector::run_shard`]); a
//! revocation waits until the revoked shards have stopped.
//!
//! A revoked shard's engine is parked: when the next assignment gives the shard back (the usual
//! case when another worker joins or leaves), it resumes at once, caught up by its next cycle;
//! a shard new to this worker is warmed from ClickHouse first, and its firing and pending
//! alerts are reloaded, so an alert another worker fired is not fired again.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_kafka::membership::{Membership, Rebalanced};

use crate::data::Shard;
use crate::engine::Engine;
use crate::{DetectError, Detector};

/// How long a revocation waits for its shards to stop (a cycle, then the outbox's drain).
const REVOKE_WAIT: Duration = Duration::from_secs(20);

/// Joins the group and evaluates the shards it assigns to this worker until `shutdown`.
pub(crate) async fn run(
    detector: Detector,
    producer: FutureProducer,
    shutdown: CancellationToken,
) -> Result<(), DetectError> {
    let group = detector.config.borrow().group.clone();
    let mut membership = Membership::join(
        &detector.kafka,
        &group.topic,
        &group.group_id,
        group.shards,
        REVOKE_WAIT,
    )
    .await
    .map_err(|e| DetectError::Group(e.to_string()))?;
    let count = membership.partitions;
    let mut shards = Shards::new(detector, producer, count, shutdown.clone());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = membership.events.recv() => match event {
                Some(Rebalanced::Revoked(revoked, release)) => {
                    info!(shards = ?revoked, "detector shards revoked: stopping them");
                    shards.park_all().await;
                    release.done();
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
    membership.leave().await;
    Ok(())
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
}
