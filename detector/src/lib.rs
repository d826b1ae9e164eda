//! Detector workers: every few seconds, read the minutes not yet folded from ClickHouse, let
//! the four detectors assess them against each entity's learned behaviour, and publish alerts
//! (Kafka `tripline.alerts`, keyed by fingerprint, and the ClickHouse `alerts` table) as they
//! fire and resolve. At start-up the models replay `history_hours` of history quietly and the
//! firing alerts are reloaded, so a restart makes no burst of alerts and has no blind hour.

pub mod data;
pub mod engine;
mod evidence;
pub mod familiar;
pub mod lifecycle;
mod publish;
pub mod replay;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tripline_core::time::now_s;

use clickhouse::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tripline_core::config::{DetectConfig, KafkaConfig};

use crate::data::{Shard, Thresholds};
use crate::engine::Engine;
use crate::lifecycle::{Lifecycle, Step};

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
        let mut engine = Engine::new(config)?;
        let publisher = publish::Publisher::new(&self.kafka, self.clickhouse.clone())?;
        let mut lifecycle = Lifecycle::default();

        // Warm the models on history, quietly, retrying while ClickHouse is unreachable.
        loop {
            match replay_history(&self.clickhouse, &mut engine).await {
                Ok(()) => break,
                Err(err) => warn!(%err, "replaying history failed; retrying in 5 s"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        match publisher.firing_alerts().await {
            Ok(alerts) => {
                for alert in alerts {
                    lifecycle.restore(alert, now_s());
                }
            }
            Err(err) => {
                warn!(%err, "could not reload firing alerts; they will fire again if still true")
            }
        }
        info!(
            keys = engine.tracked_keys(),
            firing = lifecycle.firing(),
            "detectors ready"
        );

        loop {
            let interval = Duration::from_millis(engine.config().eval_interval_ms);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                changed = self.config.changed() => {
                    if changed.is_ok() {
                        let next = self.config.borrow_and_update().clone();
                        match engine.reconfigure(next) {
                            Ok(()) => info!("detector thresholds reloaded"),
                            Err(err) => warn!(%err, "new detector config refused; keeping the old one"),
                        }
                    }
                    continue;
                }
            }
            let started = Instant::now();
            if let Err(err) = cycle(&self.clickhouse, &mut engine, &mut lifecycle, &publisher).await
            {
                metrics::counter!("tripline_detector_cycle_failures_total").increment(1);
                warn!(%err, "detector cycle failed; retrying next interval");
                continue;
            }
            self.health
                .cycle_ok(now_s(), engine.config().eval_interval_ms);
            metrics::histogram!("tripline_detector_cycle_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("tripline_detector_keys").set(engine.tracked_keys() as f64);
            metrics::gauge!("tripline_detector_firing_alerts").set(lifecycle.firing() as f64);
        }
        publisher.flush();
        Ok(())
    }
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

/// One evaluation: read what is new, assess, publish firing and resolved alerts.
async fn cycle(
    clickhouse: &Client,
    engine: &mut Engine,
    lifecycle: &mut Lifecycle,
    publisher: &publish::Publisher,
) -> Result<(), clickhouse::error::Error> {
    let now = now_s();
    let (shard, thresholds) = shard_and_thresholds(engine.config());
    let from = engine
        .folded_through
        .max(now.saturating_sub(3 * 3600) / MINUTE * MINUTE);
    let data = data::fetch(
        clickhouse,
        shard,
        from,
        now / MINUTE * MINUTE,
        &thresholds,
        wants_budgets(engine.config()),
        None,
    )
    .await?;
    let candidates = engine.cycle(&data, now, false);
    for candidate in &candidates {
        if let Step::Fire(mut alert) = lifecycle.observe(candidate, now) {
            if let Err(err) = evidence::attach(clickhouse, &mut alert).await {
                warn!(%err, fingerprint = %alert.fingerprint, "could not gather evidence");
            }
            lifecycle.attach(&alert);
            publisher.publish(&alert).await;
        }
    }
    for alert in lifecycle.resolve_stale(now, engine.config().resolve_after_s as u32) {
        publisher.publish(&alert).await;
    }
    Ok(())
}

/// Feeds `history_hours` of closed minutes to the models without flagging anything.
async fn replay_history(
    clickhouse: &Client,
    engine: &mut Engine,
) -> Result<(), clickhouse::error::Error> {
    let now = now_s();
    let hours = engine.config().history_hours as u32;
    let mut from = now.saturating_sub(hours * 3600) / 3600 * 3600;
    engine.folded_through = from;
    let lateness = engine.config().allowed_lateness_s as u32;
    let started = Instant::now();
    while from < now {
        let (shard, thresholds) = shard_and_thresholds(engine.config());
        let to = (from + 3600 - MINUTE).min(now / MINUTE * MINUTE);
        let data = data::fetch(clickhouse, shard, from, to, &thresholds, false, None).await?;
        // Pretend it is just after this chunk so that all its minutes count as closed, but
        // never later than now: minutes still open are assessed live.
        let as_of = (to + MINUTE + lateness).min(now);
        engine.cycle(&data, as_of, true);
        from = to + MINUTE;
    }
    info!(
        hours,
        keys = engine.tracked_keys(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "models warmed on history"
    );
    Ok(())
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
