//! Detector workers: every few seconds, read the minutes not yet folded from ClickHouse, let
//! the four detectors assess them against each entity's learned behaviour, and publish alerts
//! as they fire and resolve through a durable outbox ([`outbox`]: the ClickHouse `alerts` row,
//! then Kafka `tripline.alerts` keyed by fingerprint with acks=all, retried until acknowledged,
//! never holding up a cycle). At start-up the models replay `history_hours` of history quietly,
//! the firing alerts are reloaded and the alerts decided but never published are sent, so a
//! restart makes no burst of alerts, has no blind hour and loses no page. Idle entities are
//! forgotten (engine/evict.rs), and events that arrive for minutes already folded make the
//! models re-warm in the background ([`warm`]).

pub mod data;
pub mod engine;
mod evidence;
pub mod familiar;
pub mod lifecycle;
mod membership;
pub mod outbox;
pub mod replay;
pub mod routine;
pub mod warm;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{DetectConfig, KafkaConfig};
use tripline_core::time::now_s;

use crate::data::{Shard, Thresholds};
use crate::engine::Engine;
use crate::lifecycle::Lifecycle;
use crate::outbox::{Outbox, MAX_IN_MEMORY};
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Kafka(#[from] tripline_kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("invalid detector config: {0}")]
    Config(#[from] tripline_core::models::spend::SpendConfigError),
    #[error("detector group: {0}")]
    Group(String),
}

#[derive(Clone)]
pub struct Detector {
    /// The live config: a reload sends a new value; a bad one is never sent.
    pub config: watch::Receiver<DetectConfig>,
    pub kafka: KafkaConfig,
    pub clickhouse: Client,
    pub health: Arc<DetectorHealth>,
}

/// What `/readyz` asks of the detectors: every shard this worker evaluates warmed up on
/// history, with a cycle that succeeded recently (ClickHouse answering). A group member with
/// no shard assigned is a ready standby. Also the worker's gauges, summed over its shards.
#[derive(Debug, Default)]
pub struct DetectorHealth {
    shards: Mutex<BTreeMap<u32, ShardStatus>>,
    /// The evaluation interval in ms, to tell a late cycle from a stuck one.
    interval_ms: AtomicU64,
    /// A group member whose assignment is empty.
    standby: AtomicBool,
}

/// One shard evaluated here, as of its last good cycle.
#[derive(Debug, Default, Clone, Copy)]
struct ShardStatus {
    /// Epoch seconds of the last good cycle, 0 while warming.
    last_ok_s: u32,
    keys: usize,
    firing: usize,
}

impl DetectorHealth {
    /// Ready when each shard's last good cycle is at most three intervals old (and at least a
    /// minute is allowed).
    pub fn ready(&self, now_s: u32) -> bool {
        let allowed = (3 * self.interval_ms.load(Ordering::Relaxed) / 1000).max(60) as u32;
        let shards = self.shards.lock().expect("health lock");
        if shards.is_empty() {
            return self.standby.load(Ordering::Relaxed);
        }
        shards
            .values()
            .all(|s| s.last_ok_s > 0 && now_s.saturating_sub(s.last_ok_s) <= allowed)
    }

    fn warming(&self, shard: u32) {
        self.update(|shards| {
            shards.insert(shard, ShardStatus::default());
        });
    }

    fn stopped(&self, shard: u32) {
        self.update(|shards| {
            shards.remove(&shard);
        });
    }

    fn standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    fn cycle_ok(&self, shard: u32, now_s: u32, interval_ms: u64, keys: usize, firing: usize) {
        self.interval_ms.store(interval_ms, Ordering::Relaxed);
        self.update(|shards| {
            shards.insert(
                shard,
                ShardStatus {
                    last_ok_s: now_s,
                    keys,
                    firing,
                },
            );
        });
    }

    /// Changes the shards, then sets the worker's gauges from them.
    fn update(&self, change: impl FnOnce(&mut BTreeMap<u32, ShardStatus>)) {
        let mut shards = self.shards.lock().expect("health lock");
        change(&mut shards);
        let keys: usize = shards.values().map(|s| s.keys).sum();
        let firing: usize = shards.values().map(|s| s.firing).sum();
        metrics::gauge!("tripline_detector_shards").set(shards.len() as f64);
        metrics::gauge!("tripline_detector_keys").set(keys as f64);
        metrics::gauge!("tripline_detector_firing_alerts").set(firing as f64);
    }
}

const MINUTE: u32 = 60;

impl Detector {
    /// Evaluates the configured shard, or the shards the group assigns to this worker
    /// (`[detect.group]`), until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DetectError> {
        let config = self.config.borrow().clone();
        // Refuse a bad config before anything starts.
        Engine::new(config.clone())?;
        let producer = Outbox::producer(&self.kafka)?;
        if config.group.enabled {
            return membership::run(self, producer, shutdown).await;
        }
        let shard = Shard {
            index: config.shard_index,
            count: config.shard_count,
        };
        self.run_shard(shard, producer, None, shutdown).await;
        Ok(())
    }

    /// Evaluates one shard until `stop`. Starts from `parked` (the engine this worker ran for
    /// the shard before, caught up by the first cycle) or else warms on history; returns the
    /// engine, to resume from if the shard comes back.
    pub(crate) async fn run_shard(
        mut self,
        shard: Shard,
        producer: FutureProducer,
        parked: Option<Engine>,
        stop: CancellationToken,
    ) -> Option<Engine> {
        self.health.warming(shard.index);
        // The outbox runs from the start: alerts flow whatever Kafka is doing.
        let outbox = Outbox::start(producer, &self.kafka, self.clickhouse.clone(), shard);
        let config = self.config.borrow_and_update().clone();
        let Some(mut worker) = self.start(shard, config, parked, &outbox, &stop).await else {
            outbox.close().await;
            self.health.stopped(shard.index);
            return None;
        };
        loop {
            let interval = Duration::from_millis(worker.engine.config().eval_interval_ms);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                changed = self.config.changed() => {
                    if changed.is_ok() {
                        let next = self.config.borrow_and_update().clone();
                        match worker.engine.reconfigure(next) {
                            Ok(()) => info!(shard = shard.index, "detector thresholds reloaded"),
                            Err(err) => warn!(%err, "new detector config refused; keeping the old one"),
                        }
                    }
                    continue;
                }
                warmed = rewarmed(&mut worker.rewarm) => {
                    worker.swap(&self.clickhouse, warmed).await;
                    continue;
                }
            }
            let started = Instant::now();
            if let Err(err) = worker.cycle(&self.clickhouse, &outbox).await {
                metrics::counter!("tripline_detector_cycle_failures_total").increment(1);
                warn!(%err, shard = shard.index, "detector cycle failed; retrying next interval");
                continue;
            }
            self.health.cycle_ok(
                shard.index,
                now_s(),
                worker.engine.config().eval_interval_ms,
                worker.engine.tracked_keys(),
                worker.firing(),
            );
            metrics::histogram!("tripline_detector_cycle_seconds")
                .record(started.elapsed().as_secs_f64());
            worker.report();
            worker.watch_late(&self.clickhouse).await;
        }
        if let Some(rewarm) = worker.rewarm.take() {
            // Its engine would be dropped anyway; a replay chunk already folding finishes alone.
            rewarm.task.abort();
        }
        outbox.close().await;
        self.health.stopped(shard.index);
        Some(worker.engine)
    }

    /// Warms the models on history (unless `parked` is given) and reloads the alerts' state,
    /// retrying while ClickHouse is unreachable; `None` when stopped first.
    async fn start(
        &self,
        shard: Shard,
        config: DetectConfig,
        mut parked: Option<Engine>,
        outbox: &Outbox,
        stop: &CancellationToken,
    ) -> Option<Worker> {
        loop {
            let started_s = now_s();
            let resumed = parked.take();
            let reloaded = async {
                let engine = match resumed {
                    Some(mut engine) => {
                        engine.reconfigure(config.clone())?;
                        engine
                    }
                    None => warm::warm(&self.clickhouse, config.clone(), shard).await?,
                };
                let firing = outbox::firing_alerts(&self.clickhouse, shard).await?;
                let pending =
                    outbox::pending_alerts(&self.clickhouse, shard, now_s(), MAX_IN_MEMORY).await?;
                Ok::<_, warm::WarmError>((engine, firing, pending))
            };
            // A revocation must not wait for a long warm-up: the shard goes to another worker.
            let reloaded = tokio::select! {
                _ = stop.cancelled() => return None,
                reloaded = reloaded => reloaded,
            };
            match reloaded {
                Ok((engine, firing, pending)) => {
                    let mut lifecycle = Lifecycle::default();
                    for alert in firing {
                        lifecycle.restore(alert, now_s());
                    }
                    // Before any new decision, so that each alert's changes keep their order.
                    outbox.restore(pending).await;
                    info!(
                        shard = shard.index,
                        of = shard.count,
                        keys = engine.tracked_keys(),
                        firing = lifecycle.firing(),
                        "detectors ready"
                    );
                    return Some(Worker::new(shard, engine, lifecycle, started_s));
                }
                Err(err) => warn!(%err, "warming the detectors on history failed; retrying in 5 s"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

/// Waits for a re-warm to end (never, when none runs).
async fn rewarmed(
    rewarm: &mut Option<warm::Rewarm>,
) -> (Result<Engine, warm::WarmError>, Duration) {
    let Some(running) = rewarm.as_mut() else {
        return std::future::pending().await;
    };
    let result = match (&mut running.task).await {
        Ok(result) => result,
        Err(err) => Err(err.into()),
    };
    let took = running.started.elapsed();
    *rewarm = None;
    (result, took)
}

/// What the reads of a cycle depend on in the thresholds.
fn thresholds(config: &DetectConfig) -> Thresholds {
    Thresholds {
        no_backoff_ms: config.retry_storm.no_backoff_ms,
        scan_min_keys: config.leaked_key.scan_min_keys,
        users: config.cross_region.enabled && config.cross_region.per_user,
        scans: true,
    }
}

/// Whether any budget is configured (budget queries cost a little, so they run only then).
pub fn wants_budgets(config: &DetectConfig) -> bool {
    let s = &config.spend_spike;
    s.enabled
        && (s.hourly_budget_usd.is_some()
            || s.daily_budget_usd.is_some()
            || config
                .keys
                .values()
                .chain(config.projects.values())
                .any(|o| o.hourly_budget_usd.is_some() || o.daily_budget_usd.is_some()))
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn ready_after_a_recent_cycle_only() {
        let health = DetectorHealth::default();
        assert!(!health.ready(1_000), "nothing evaluated");
        health.warming(0);
        assert!(!health.ready(1_000), "warming up");
        health.cycle_ok(0, 1_000, 5_000, 0, 0);
        assert!(health.ready(1_030));
        assert!(health.ready(1_060));
        assert!(!health.ready(1_061), "no good cycle for a minute");
        health.cycle_ok(0, 2_000, 60_000, 0, 0); // a slow interval allows three of them
        assert!(health.ready(2_180) && !health.ready(2_181));
    }

    #[test]
    fn a_group_member_is_ready_when_all_its_shards_are() {
        let health = DetectorHealth::default();
        health.cycle_ok(1, 1_000, 5_000, 0, 0);
        health.warming(4);
        assert!(!health.ready(1_001), "shard 4 is still warming");
        health.cycle_ok(4, 1_001, 5_000, 0, 0);
        assert!(health.ready(1_002));
        health.stopped(1);
        health.stopped(4);
        assert!(!health.ready(1_002), "no shard, not a standby yet");
        health.standby(true);
        assert!(health.ready(1_002), "an idle member is a ready standby");
    }
}
