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
pub mod outbox;
pub mod replay;
pub mod warm;
mod worker;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
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
}

pub struct Detector {
    /// The live config: a reload sends a new value; a bad one is never sent.
    pub config: watch::Receiver<DetectConfig>,
    pub kafka: KafkaConfig,
    pub clickhouse: Client,
    pub health: Arc<DetectorHealth>,
}

/// What `/readyz` asks of the detectors: warmed up on history, and a cycle that succeeded
/// recently (ClickHouse answering).
#[derive(Debug, Default)]
pub struct DetectorHealth {
    /// Epoch seconds of the last successful cycle; 0 while warming up.
    last_cycle_ok_s: AtomicU32,
    /// The evaluation interval in ms, to tell a late cycle from a stuck one.
    interval_ms: AtomicU64,
}

impl DetectorHealth {
    /// Ready when the last good cycle is at most three intervals old (and at least a minute is
    /// allowed).
    pub fn ready(&self, now_s: u32) -> bool {
        let last = self.last_cycle_ok_s.load(Ordering::Relaxed);
        let allowed = (3 * self.interval_ms.load(Ordering::Relaxed) / 1000).max(60) as u32;
        last > 0 && now_s.saturating_sub(last) <= allowed
    }

    fn cycle_ok(&self, now_s: u32, interval_ms: u64) {
        self.interval_ms.store(interval_ms, Ordering::Relaxed);
        self.last_cycle_ok_s.store(now_s, Ordering::Relaxed);
    }
}

const MINUTE: u32 = 60;

impl Detector {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DetectError> {
        let config = self.config.borrow_and_update().clone();
        // Refuse a bad config before anything starts.
        Engine::new(config.clone())?;
        let (shard, _) = shard_and_thresholds(&config);
        // The outbox runs from the start: alerts flow whatever Kafka is doing.
        let outbox = Outbox::start(&self.kafka, self.clickhouse.clone(), shard)?;
        let Some(mut worker) = self.start(config, &outbox, &shutdown).await else {
            outbox.close().await;
            return Ok(());
        };
        loop {
            let interval = Duration::from_millis(worker.engine.config().eval_interval_ms);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                changed = self.config.changed() => {
                    if changed.is_ok() {
                        let next = self.config.borrow_and_update().clone();
                        match worker.engine.reconfigure(next) {
                            Ok(()) => info!("detector thresholds reloaded"),
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
                warn!(%err, "detector cycle failed; retrying next interval");
                continue;
            }
            self.health
                .cycle_ok(now_s(), worker.engine.config().eval_interval_ms);
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
        Ok(())
    }

    /// Warms the models on history and reloads the alerts' state, retrying while ClickHouse is
    /// unreachable; `None` when shut down first.
    async fn start(
        &self,
        config: DetectConfig,
        outbox: &Outbox,
        shutdown: &CancellationToken,
    ) -> Option<Worker> {
        let (shard, _) = shard_and_thresholds(&config);
        loop {
            let started_s = now_s();
            let reloaded = async {
                let engine = warm::warm(&self.clickhouse, config.clone()).await?;
                let firing = outbox::firing_alerts(&self.clickhouse, shard).await?;
                let pending =
                    outbox::pending_alerts(&self.clickhouse, shard, now_s(), MAX_IN_MEMORY).await?;
                Ok::<_, warm::WarmError>((engine, firing, pending))
            };
            match reloaded.await {
                Ok((engine, firing, pending)) => {
                    let mut lifecycle = Lifecycle::default();
                    for alert in firing {
                        lifecycle.restore(alert, now_s());
                    }
                    // Before any new decision, so that each alert's changes keep their order.
                    outbox.restore(pending).await;
                    info!(
                        keys = engine.tracked_keys(),
                        firing = lifecycle.firing(),
                        "detectors ready"
                    );
                    return Some(Worker::new(engine, lifecycle, started_s));
                }
                Err(err) => warn!(%err, "warming the detectors on history failed; retrying in 5 s"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
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

fn shard_and_thresholds(config: &DetectConfig) -> (Shard, Thresholds) {
    (
        Shard {
            index: config.shard_index,
            count: config.shard_count,
        },
        Thresholds {
            no_backoff_ms: config.retry_storm.no_backoff_ms,
            scan_min_keys: config.leaked_key.scan_min_keys,
            users: config.cross_region.enabled && config.cross_region.per_user,
            scans: true,
        },
    )
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
        assert!(!health.ready(1_000), "warming up");
        health.cycle_ok(1_000, 5_000);
        assert!(health.ready(1_030));
        assert!(health.ready(1_060));
        assert!(!health.ready(1_061), "no good cycle for a minute");
        health.cycle_ok(2_000, 60_000); // a slow interval allows three of them
        assert!(health.ready(2_180) && !health.ready(2_181));
    }
}
