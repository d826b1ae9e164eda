//! Replaying stored history through the detectors as if time were passing, one minute at a
//! time: how `tripline evaluate` scores them and `tripline backtest` compares thresholds.

use clickhouse::Client;
use tripline_core::alert::Alert;
use tripline_core::config::DetectConfig;

use crate::data::{self, Shard, Thresholds};
use crate::engine::Engine;
use crate::lifecycle::{Lifecycle, Step};

/// An alert that fired during a replay, at event time `at_s`.
#[derive(Debug, Clone)]
pub struct Firing {
    pub at_s: u32,
    pub alert: Alert,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid detector config: {0}")]
    Config(#[from] tripline_core::models::spend::SpendConfigError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// Replays the minutes `[from_s, to_s)`. Minutes before `active_from_s` only warm the models;
/// alerts from the rest are returned. Each minute is judged when it ends (the stored data is
/// complete, so no lateness is waited for). `progress(done, total)` is called every minute.
pub async fn replay(
    clickhouse: &Client,
    mut config: DetectConfig,
    from_s: u32,
    active_from_s: u32,
    to_s: u32,
    mut progress: impl FnMut(u32, u32),
) -> Result<Vec<Firing>, ReplayError> {
    config.allowed_lateness_s = 0;
    let shard = Shard { index: 0, count: 1 };
    let thresholds = Thresholds {
        no_backoff_ms: config.retry_storm.no_backoff_ms,
        scan_min_keys: config.leaked_key.scan_min_keys,
    };
    let budgets = crate::wants_budgets(&config);
    let resolve_after_s = config.resolve_after_s as u32;
    let mut engine = Engine::new(config)?;
    let mut lifecycle = Lifecycle::default();
    let first = from_s / 60 * 60;
    engine.folded_through = first;
    let total = to_s.saturating_sub(first) / 60;
    let mut firings = Vec::new();
    let mut minute = first;
    while minute < to_s {
        let data = data::fetch(
            clickhouse,
            shard,
            engine.folded_through,
            minute,
            &thresholds,
            budgets,
        )
        .await?;
        let now = minute + 60;
        let quiet = minute < active_from_s;
        for candidate in engine.cycle(&data, now, quiet) {
            if let Step::Fire(alert) = lifecycle.observe(&candidate, now) {
                firings.push(Firing {
                    at_s: now,
                    alert: *alert,
                });
            }
        }
        lifecycle.resolve_stale(now, resolve_after_s);
        minute += 60;
        progress((minute - first) / 60, total);
    }
    Ok(firings)
}
