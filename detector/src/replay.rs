//! Replaying stored history through the detectors as if time were passing, one minute at a
//! time: how `tripline evaluate` scores them and `tripline backtest` compares thresholds.

use clickhouse::Client;
use tripline_core::alert::Alert;
use tripline_core::config::DetectConfig;

mod minutes;

use self::minutes::{scans_at, split_by_minute, BudgetSums};
use crate::data::{self, CycleData, CycleQuery, Shard, Thresholds};
use crate::engine::Engine;
use crate::lifecycle::Lifecycle;
use crate::routine::Routine;

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

/// Replays `[from_s, to_s)` with one config. See [`replay_each`].
pub async fn replay(
    clickhouse: &Client,
    config: DetectConfig,
    span: Span,
    progress: impl FnMut(u32, u32),
) -> Result<Vec<Firing>, ReplayError> {
    let mut runs = replay_each(clickhouse, vec![config], span, progress).await?;
    Ok(runs.pop().unwrap_or_default())
}

/// Replays `[from_s, to_s)` once per config, from the same reads (configs whose no-backoff
/// thresholds differ need reads of their own and replay one after the other). Time before
/// `active_from_s` only warms the models (an hour of minutes per read); from there the
/// detectors run every `step_s` seconds of event time, each time on exactly what had happened
/// by then, as the live worker does every few seconds (a step under 60 s judges open minutes
/// and so measures early firing; 60 s judges each minute as it ends, reading an hour of minutes
/// at a time). The stored data is complete, so no lateness is waited for. `progress(done,
/// total)` is called after every step, in seconds of event time. Returns the firings per config,
/// in the configs' order.
pub async fn replay_each(
    clickhouse: &Client,
    configs: Vec<DetectConfig>,
    span: Span,
    mut progress: impl FnMut(u32, u32),
) -> Result<Vec<Vec<Firing>>, ReplayError> {
    let mut out: Vec<Option<Vec<Firing>>> = vec![None; configs.len()];
    let mut left: Vec<(usize, DetectConfig)> = configs.into_iter().enumerate().collect();
    while let Some((_, head)) = left.first() {
        let no_backoff_ms = head.retry_storm.no_backoff_ms;
        let (group, rest): (Vec<_>, Vec<_>) = left
            .into_iter()
            .partition(|(_, c)| c.retry_storm.no_backoff_ms.to_bits() == no_backoff_ms.to_bits());
        left = rest;
        let (indexes, configs): (Vec<usize>, Vec<DetectConfig>) = group.into_iter().unzip();
        let firings = replay_together(clickhouse, configs, span, &mut progress).await?;
        for (i, f) in indexes.into_iter().zip(firings) {
            out[i] = Some(f);
        }
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

/// One config's replay: its detectors, its alerts' lifecycle, what fired.
struct Run {
    engine: Engine,
    lifecycle: Lifecycle,
    firings: Vec<Firing>,
    resolve_after_s: u32,
    scan_min_keys: u64,
}

impl Run {
    async fn step(
        &mut self,
        clickhouse: &Client,
        routine: &mut Routine,
        data: &CycleData,
        now: u32,
    ) {
        let mut candidates = self.engine.cycle(data, now, false);
        if self.engine.config().spend_spike.compare_with_yesterday {
            let min_ratio = self.engine.config().spend_spike.sustained.min_ratio;
            routine
                .judge(clickhouse, &mut candidates, min_ratio, now)
                .await;
        }
        for alert in self.lifecycle.observe_cycle(&candidates, now) {
            self.firings.push(Firing { at_s: now, alert });
        }
        self.lifecycle.resolve_stale(now, self.resolve_after_s);
    }
}

/// Replays configs that read the same rows side by side.
async fn replay_together(
    clickhouse: &Client,
    configs: Vec<DetectConfig>,
    span: Span,
    progress: &mut impl FnMut(u32, u32),
) -> Result<Vec<Vec<Firing>>, ReplayError> {
    if span.to_s <= span.from_s || configs.is_empty() {
        return Ok(vec![Vec::new(); configs.len()]);
    }
    let shard = Shard { index: 0, count: 1 };
    let mut thresholds = Thresholds {
        no_backoff_ms: configs.first().map_or(0.0, |c| c.retry_storm.no_backoff_ms),
        scan_min_keys: configs
            .iter()
            .map(|c| c.leaked_key.scan_min_keys)
            .min()
            .unwrap_or(u64::MAX),
        users: configs
            .iter()
            .any(|c| c.cross_region.enabled && c.cross_region.per_user),
        scans: false,
    };
    let wants_budgets = configs.iter().any(crate::wants_budgets);
    let step = span.step_s.clamp(1, MINUTE);
    let first = span.from_s / MINUTE * MINUTE;
    let active_from = (span.active_from_s / MINUTE * MINUTE).clamp(first, span.to_s);
    let total = span.to_s.saturating_sub(first);
    let mut runs = Vec::with_capacity(configs.len());
    // Yesterday's levels are the same rows for every config.
    let mut routine = Routine::default();
    for mut config in configs {
        config.allowed_lateness_s = 0;
        let (resolve_after_s, scan_min_keys) = (
            config.resolve_after_s as u32,
            config.leaked_key.scan_min_keys,
        );
        let mut engine = Engine::new(config)?;
        engine.folded_through = first;
        runs.push(Run {
            engine,
            lifecycle: Lifecycle::default(),
            firings: Vec::new(),
            resolve_after_s,
            scan_min_keys,
        });
    }

    // Warm-up: whole hours of closed minutes per read, nothing flagged.
    let mut from = first;
    while from < active_from {
        let to = (from + 3600).min(active_from);
        let query = CycleQuery {
            shard,
            from_minute: from,
            to_minute: to - MINUTE,
            thresholds: &thresholds,
            with_budgets: false,
            as_of_ms: None,
        };
        let data = data::fetch(clickhouse, &query).await?;
        for run in &mut runs {
            run.engine.cycle(&data, to, true);
        }
        from = to;
        progress(from - first, total);
    }

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
            let query = CycleQuery {
                shard,
                from_minute: from,
                to_minute: last,
                thresholds: &thresholds,
                with_budgets: false,
                as_of_ms: None,
            };
            let (rows, failures) = tokio::try_join!(
                data::fetch(clickhouse, &query),
                data::fetch_auth_failures(clickhouse, from.saturating_sub(4 * MINUTE), last),
            )?;
            let mut minutes = split_by_minute(rows);
            for minute in (from..to).step_by(MINUTE as usize) {
                let mut data = minutes.remove(&minute).unwrap_or_default();
                if wants_budgets {
                    for k in &data.keys {
                        budgets.add(&k.api_key_id, &k.project, minute, k.cost_usd);
                    }
                    data.budgets = budgets.at(minute);
                    data.budget_minute = minute;
                }
                for run in &mut runs {
                    data.scans = scans_at(&failures, minute, run.scan_min_keys);
                    run.step(clickhouse, &mut routine, &data, minute + MINUTE)
                        .await;
                }
                progress(minute + MINUTE - first, total);
            }
            from = to;
        }
    } else {
        thresholds.scans = true;
        let mut now = active_from;
        while now < span.to_s {
            now = (now + step).min(span.to_s.div_ceil(MINUTE) * MINUTE);
            // The minute `now` falls in, or the one that just ended when `now` is a minute
            // start.
            let open_minute = (now - 1) / MINUTE * MINUTE;
            let as_of_ms = (!now.is_multiple_of(MINUTE)).then_some(i64::from(now) * 1000);
            // Every run has folded the same minutes.
            let folded = runs
                .first()
                .map_or(open_minute, |r| r.engine.folded_through);
            let query = CycleQuery {
                shard,
                from_minute: folded,
                to_minute: open_minute,
                thresholds: &thresholds,
                with_budgets: wants_budgets,
                as_of_ms,
            };
            let mut data = data::fetch(clickhouse, &query).await?;
            let scans = std::mem::take(&mut data.scans);
            for run in &mut runs {
                data.scans = scans
                    .iter()
                    .filter(|s| s.keys >= run.scan_min_keys)
                    .cloned()
                    .collect();
                run.step(clickhouse, &mut routine, &data, now).await;
            }
            progress(now.min(span.to_s) - first, total);
        }
    }
    Ok(runs.into_iter().map(|r| r.firings).collect())
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
