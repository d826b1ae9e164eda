//! Replaying stored history through the detectors as if time were passing, one minute at a
//! time: how `tripline evaluate` scores them and `tripline backtest` compares thresholds.

use clickhouse::Client;
use tripline_core::alert::Alert;
use tripline_core::config::DetectConfig;

mod minutes;

use self::minutes::{scans_at, split_by_minute, BudgetSums};
use crate::data::{self, CycleData, Shard, Thresholds};
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

/// Replays `[from_s, to_s)`. Time before `active_from_s` only warms the models (an hour of
/// minutes per read); from there the detectors run every `step_s` seconds of event time, each
/// time on exactly what had happened by then, as the live worker does every few seconds (a step
/// under 60 s judges open minutes and so measures early firing; 60 s judges each minute as it
/// ends). The stored data is complete, so no lateness is waited for. `progress(done, total)`
/// is called after every step, in seconds of event time.
pub async fn replay(
    clickhouse: &Client,
    mut config: DetectConfig,
    span: Span,
    mut progress: impl FnMut(u32, u32),
) -> Result<Vec<Firing>, ReplayError> {
    config.allowed_lateness_s = 0;
    let shard = Shard { index: 0, count: 1 };
    let thresholds = Thresholds {
        no_backoff_ms: config.retry_storm.no_backoff_ms,
        scan_min_keys: config.leaked_key.scan_min_keys,
        users: config.cross_region.enabled && config.cross_region.per_user,
    };
    let wants_budgets = crate::wants_budgets(&config);
    let resolve_after_s = config.resolve_after_s as u32;
    let step = span.step_s.clamp(1, MINUTE);
    let mut engine = Engine::new(config)?;
    let mut lifecycle = Lifecycle::default();
    let first = span.from_s / MINUTE * MINUTE;
    let active_from = (span.active_from_s / MINUTE * MINUTE).clamp(first, span.to_s);
    let total = span.to_s.saturating_sub(first);
    engine.folded_through = first;

    // Warm-up: whole hours of closed minutes per read, nothing flagged.
    let mut from = first;
    while from < active_from {
        let to = (from + 3600).min(active_from);
        let data = data::fetch(
            clickhouse,
            shard,
            from,
            to - MINUTE,
            &thresholds,
            false,
            None,
        )
        .await?;
        engine.cycle(&data, to, true);
        from = to;
        progress(from - first, total);
    }

    let mut firings = Vec::new();
    let mut fire = |engine: &mut Engine, data: &CycleData, now: u32| {
        for candidate in engine.cycle(data, now, false) {
            if let Step::Fire(alert) = lifecycle.observe(&candidate, now) {
                firings.push(Firing {
                    at_s: now,
                    alert: *alert,
                });
            }
        }
        lifecycle.resolve_stale(now, resolve_after_s);
    };
    if step == MINUTE {
        // Minute by minute, from one read per hour of minutes: the same rows the live worker
        // reads when each minute ends, with scans and budgets rebuilt in memory.
        let mut budgets = BudgetSums::default();
        if wants_budgets {
            let day_start = active_from / 86_400 * 86_400;
            for (key, project, minute, usd) in
                data::fetch_key_spend(clickhouse, day_start, active_from).await?
            {
                budgets.add(&key, &project, minute, usd);
            }
        }
        let end = span.to_s.div_ceil(MINUTE) * MINUTE;
        let mut from = active_from;
        while from < end {
            let to = (from + 3600).min(end);
            let last = to - MINUTE;
            let (rows, failures) = tokio::try_join!(
                data::fetch(clickhouse, shard, from, last, &thresholds, false, None),
                data::fetch_auth_failures(clickhouse, from.saturating_sub(4 * MINUTE), last),
            )?;
            let mut minutes = split_by_minute(rows);
            for minute in (from..to).step_by(MINUTE as usize) {
                let mut data = minutes.remove(&minute).unwrap_or_default();
                data.scans = scans_at(&failures, minute, thresholds.scan_min_keys);
                if wants_budgets {
                    for k in &data.keys {
                        budgets.add(&k.api_key_id, &k.project, minute, k.cost_usd);
                    }
                    data.budgets = budgets.at(minute);
                }
                fire(&mut engine, &data, minute + MINUTE);
                progress(minute + MINUTE - first, total);
            }
            from = to;
        }
        return Ok(firings);
    }
    let mut now = active_from;
    while now < span.to_s {
        now = (now + step).min(span.to_s.div_ceil(MINUTE) * MINUTE);
        // The minute `now` falls in, or the one that just ended when `now` is a minute start.
        let open_minute = (now - 1) / MINUTE * MINUTE;
        let as_of_ms = (!now.is_multiple_of(MINUTE)).then_some(i64::from(now) * 1000);
        let data = data::fetch(
            clickhouse,
            shard,
            engine.folded_through,
            open_minute,
            &thresholds,
            wants_budgets,
            as_of_ms,
        )
        .await?;
        fire(&mut engine, &data, now);
        progress(now.min(span.to_s) - first, total);
    }
    Ok(firings)
}

/// What `replay` covers, in epoch seconds.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Start of the warm-up (rounded down to a minute).
    pub from_s: u32,
    /// Alerts count from here (rounded down to a minute).
    pub active_from_s: u32,
    pub to_s: u32,
    /// Seconds of event time between two assessments (1 to 60).
    pub step_s: u32,
}

const MINUTE: u32 = 60;
