//! Warming the models on stored history: at start-up, and again while running when data
//! arrives late (a backfill of past hours, a gateway shipping its logs late).
//!
//! The live worker reads only the minutes after its watermark (`Engine::folded_through`), so
//! events stored later for minutes it has already folded would never reach the models. Every
//! [`CHECK_EVERY_S`] it counts them with one small query (raw events ingested since the last
//! check whose time is before the watermark of that check); once `rewarm_min_late_events` have
//! arrived, a fresh engine replays `history_hours` in the background (the models' CPU work on
//! the blocking pool), quietly, while the live engine goes on; then the fresh one is caught up
//! to the live one's watermark, quietly too, and swapped in. The alert lifecycle is kept, so
//! what fires stays firing and nothing in the replayed history is flagged. Between two re-warms
//! the worker waits at least four times as long as the last one took (and a minute), so that a
//! backfill streaming in for hours costs at most a fifth of a core.

use clickhouse::Client;
use tokio::task::JoinHandle;
use tracing::info;
use tripline_core::config::DetectConfig;
use tripline_store::GATEWAY_TABLE;

use crate::data::{self, Shard};
use crate::engine::Engine;
use crate::{thresholds, MINUTE};

/// How often late events are counted.
pub const CHECK_EVERY_S: u32 = 30;
/// The ingest and detector clocks may differ a little: events ingested this long before the
/// last check are counted again rather than missed.
const CLOCK_SLACK_S: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("invalid detector config: {0}")]
    Config(#[from] tripline_core::models::spend::SpendConfigError),
    #[error("the replay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A fresh engine fed `history_hours` of closed minutes of `shard` up to `now`, flagging
/// nothing.
pub async fn warm(
    clickhouse: &Client,
    config: DetectConfig,
    shard: Shard,
) -> Result<Engine, WarmError> {
    let mut engine = Engine::new(config)?;
    let now = tripline_core::time::now_s();
    let hours = engine.config().history_hours as u32;
    let mut from = now.saturating_sub(hours * 3600) / 3600 * 3600;
    engine.folded_through = from;
    let lateness = engine.config().allowed_lateness_s as u32;
    let started = std::time::Instant::now();
    while from < now {
        let thresholds = thresholds(engine.config());
        let to = (from + 3600 - MINUTE).min(now / MINUTE * MINUTE);
        let query = data::CycleQuery {
            shard,
            from_minute: from,
            to_minute: to,
            thresholds: &thresholds,
            with_budgets: false,
            as_of_ms: None,
        };
        let data = data::fetch(clickhouse, &query).await?;
        // As if just after this chunk, so that all its minutes count as closed, but never
        // later than now: minutes still open are assessed live.
        let as_of = (to + MINUTE + lateness).min(now);
        engine = fold_quietly(engine, data, as_of).await?;
        from = to + MINUTE;
    }
    info!(
        hours,
        shard = shard.index,
        keys = engine.tracked_keys(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "models warmed on history"
    );
    Ok(engine)
}

/// Folds the minutes `fresh` has not folded but `live` has, quietly: after a swap, the live
/// worker goes on from where it was, judging no minute twice.
pub async fn catch_up(
    clickhouse: &Client,
    fresh: Engine,
    live_folded_through: u32,
    shard: Shard,
) -> Result<Engine, WarmError> {
    if fresh.folded_through >= live_folded_through {
        return Ok(fresh);
    }
    let query = data::CycleQuery {
        shard,
        from_minute: fresh.folded_through,
        to_minute: live_folded_through - MINUTE,
        thresholds: &thresholds(fresh.config()),
        with_budgets: false,
        as_of_ms: None,
    };
    let data = data::fetch(clickhouse, &query).await?;
    let as_of = live_folded_through + fresh.config().allowed_lateness_s as u32;
    fold_quietly(fresh, data, as_of).await
}

/// One quiet `cycle` on the blocking pool: replaying an hour of a busy gateway is CPU-bound
/// for a while, and must not hold an async worker (the live cycles, the outbox, HTTP).
async fn fold_quietly(
    mut engine: Engine,
    data: data::CycleData,
    as_of: u32,
) -> Result<Engine, WarmError> {
    Ok(tokio::task::spawn_blocking(move || {
        engine.cycle(&data, as_of, true);
        engine
    })
    .await?)
}

/// Counts late events and says when to re-warm.
#[derive(Debug, Default)]
pub struct LateWatch {
    /// When the last check ran (epoch seconds), and the watermark then.
    checked_s: u32,
    watermark: u32,
    /// Late events counted since the last re-warm started.
    pending: u64,
    /// When the last re-warm ended and how long it took (seconds).
    ended_s: u32,
    took_s: u32,
}

impl LateWatch {
    /// Whether it is time to count (never with re-warming off or no history to replay).
    pub fn due(&self, config: &DetectConfig, now_s: u32) -> bool {
        config.rewarm_min_late_events > 0
            && config.history_hours > 0
            && now_s >= self.checked_s + CHECK_EVERY_S
    }

    /// Starts watching from a warm-up that began reading at `warm_started_s` and folded up to
    /// `folded_through`: events stored since it began, for minutes before that, may have been
    /// missed (a chunk read before they arrived), so they count.
    pub fn new(warm_started_s: u32, folded_through: u32) -> Self {
        Self {
            checked_s: warm_started_s,
            watermark: folded_through,
            ..Self::default()
        }
    }

    /// Counts the events stored since the last check for minutes folded before it; returns how
    /// many.
    pub async fn check(
        &mut self,
        clickhouse: &Client,
        config: &DetectConfig,
        shard: Shard,
        folded_through: u32,
        now_s: u32,
    ) -> Result<u64, clickhouse::error::Error> {
        let (checked, watermark) = (self.checked_s, self.watermark);
        let horizon = now_s.saturating_sub(config.history_hours as u32 * 3600);
        let late = count_late(
            clickhouse,
            shard,
            checked.saturating_sub(CLOCK_SLACK_S),
            horizon,
            watermark,
        )
        .await?;
        (self.checked_s, self.watermark) = (now_s, folded_through);
        self.pending += late;
        Ok(late)
    }

    /// Whether enough late events arrived, and the pause after the last re-warm is over.
    pub fn should_rewarm(&self, config: &DetectConfig, now_s: u32) -> bool {
        let pause = (4 * self.took_s).max(60);
        config.rewarm_min_late_events > 0
            && self.pending >= config.rewarm_min_late_events
            && (self.ended_s == 0 || now_s >= self.ended_s + pause)
    }

    /// A re-warm starts: what it will read is no longer pending.
    pub fn started(&mut self) {
        self.pending = 0;
    }

    pub fn ended(&mut self, now_s: u32, took_s: u32) {
        (self.ended_s, self.took_s) = (now_s, took_s);
    }
}

/// Raw gateway events of this shard ingested at or after `since_s` for minutes in
/// `[horizon_s, watermark)`: already folded when they arrived. Reads two narrow columns of the
/// day partitions the horizon spans.
async fn count_late(
    clickhouse: &Client,
    shard: Shard,
    since_s: u32,
    horizon_s: u32,
    watermark: u32,
) -> Result<u64, clickhouse::error::Error> {
    if watermark <= horizon_s {
        return Ok(0);
    }
    let keys = if shard.owns_shared() {
        // Shard 0 watches projects and providers too: any key's late events matter.
        "1".to_owned()
    } else {
        shard.key_filter()
    };
    clickhouse
        .query_raw(&format!(
            "SELECT count() FROM {GATEWAY_TABLE} PREWHERE ingested_at >= toDateTime({since_s}) \
             WHERE ts >= toDateTime({horizon_s}) AND ts < toDateTime({watermark}) AND {keys}"
        ))
        .fetch_one()
        .await
}

/// A re-warm running in the background.
pub struct Rewarm {
    pub task: JoinHandle<Result<Engine, WarmError>>,
    pub started: std::time::Instant,
}

impl Rewarm {
    pub fn start(clickhouse: Client, config: DetectConfig, shard: Shard) -> Self {
        Self {
            task: tokio::spawn(async move { warm(&clickhouse, config, shard).await }),
            started: std::time::Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewarms_need_enough_late_events_and_pause_after_each() {
        let config = DetectConfig {
            rewarm_min_late_events: 100,
            ..DetectConfig::default()
        };
        let mut watch = LateWatch::default();
        assert!(watch.due(&config, 1_000));
        watch.pending = 99;
        assert!(!watch.should_rewarm(&config, 1_000));
        watch.pending = 100;
        assert!(
            watch.should_rewarm(&config, 1_000),
            "no re-warm yet: at once"
        );
        watch.started();
        watch.ended(1_100, 30);
        watch.pending = 500;
        assert!(!watch.should_rewarm(&config, 1_200), "pause: 4 x 30 s");
        assert!(watch.should_rewarm(&config, 1_220));
        let off = DetectConfig {
            rewarm_min_late_events: 0,
            ..DetectConfig::default()
        };
        assert!(!watch.due(&off, 5_000) && !watch.should_rewarm(&off, 5_000));
    }
}
