//! A running detector worker's state: the models, the alerts' lifecycle, the watch on late
//! data and a re-warm in progress; and what one evaluation cycle does with them.

use std::time::Duration;

use clickhouse::Client;
use tracing::{info, warn};
use tripline_core::time::now_s;

use crate::data::{self, Shard};
use crate::engine::{Engine, Evictions};
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::routine::Routine;
use crate::warm::{self, LateWatch, Rewarm, WarmError};
use crate::{evidence, thresholds, wants_budgets, MINUTE};

pub(crate) struct Worker {
    /// The keys this worker evaluates.
    pub shard: Shard,
    pub engine: Engine,
    lifecycle: Lifecycle,
    /// Yesterday's levels of the keys the sustained rules flag.
    routine: Routine,
    late: LateWatch,
    pub rewarm: Option<Rewarm>,
    /// Evictions already counted in the metrics (the engine's totals restart with a re-warm).
    reported: Evictions,
}

impl Worker {
    /// A worker on an engine warmed from `warm_started_s` (when its replay began reading).
    pub fn new(shard: Shard, engine: Engine, lifecycle: Lifecycle, warm_started_s: u32) -> Self {
        let reported = engine.evictions();
        Self {
            shard,
            late: LateWatch::new(warm_started_s, engine.folded_through),
            engine,
            lifecycle,
            routine: Routine::default(),
            rewarm: None,
            reported,
        }
    }

    /// One evaluation: read what is new, assess, and hand the alerts that fire or resolve to
    /// the outbox (which publishes them without holding this up).
    pub async fn cycle(
        &mut self,
        clickhouse: &Client,
        outbox: &Outbox,
    ) -> Result<(), clickhouse::error::Error> {
        let now = now_s();
        let thresholds = thresholds(self.engine.config());
        let from = self
            .engine
            .folded_through
            .max(now.saturating_sub(3 * 3600) / MINUTE * MINUTE);
        let query = data::CycleQuery {
            shard: self.shard,
            from_minute: from,
            to_minute: now / MINUTE * MINUTE,
            thresholds: &thresholds,
            with_budgets: wants_budgets(self.engine.config()),
            as_of_ms: None,
        };
        let data = data::fetch(clickhouse, &query).await?;
        let mut candidates = self.engine.cycle(&data, now, false);
        if self.engine.config().spend_spike.compare_with_yesterday {
            let min_ratio = self.engine.config().spend_spike.sustained.min_ratio;
            self.routine
                .judge(clickhouse, &mut candidates, min_ratio, now)
                .await;
        }
        for mut alert in self.lifecycle.observe_cycle(&candidates, now) {
            if let Err(err) = evidence::attach(clickhouse, &mut alert).await {
                warn!(%err, fingerprint = %alert.fingerprint, "could not gather evidence");
            }
            self.lifecycle.attach(&alert);
            outbox.decided(alert).await;
        }
        let resolve_after_s = self.engine.config().resolve_after_s as u32;
        for alert in self.lifecycle.resolve_stale(now, resolve_after_s) {
            outbox.decided(alert).await;
        }
        Ok(())
    }

    /// Alerts firing on this worker's shard.
    pub fn firing(&self) -> usize {
        self.lifecycle.firing()
    }

    /// The entities forgotten since the last report, after a good cycle.
    pub fn report(&mut self) {
        let now = self.engine.evictions();
        let idle = now.idle.saturating_sub(self.reported.idle);
        let cap = now.cap.saturating_sub(self.reported.cap);
        metrics::counter!("tripline_detector_evicted_total", "cause" => "idle").increment(idle);
        metrics::counter!("tripline_detector_evicted_total", "cause" => "cap").increment(cap);
        self.reported = now;
    }

    /// Counts late events when due, and starts a re-warm when enough arrived.
    pub async fn watch_late(&mut self, clickhouse: &Client) {
        let now = now_s();
        let config = self.engine.config();
        if self.late.due(config, now) {
            match self
                .late
                .check(
                    clickhouse,
                    config,
                    self.shard,
                    self.engine.folded_through,
                    now,
                )
                .await
            {
                Ok(late) => {
                    metrics::counter!("tripline_detector_late_events_total").increment(late)
                }
                Err(err) => warn!(%err, "counting late events failed"),
            }
        }
        if self.rewarm.is_none() && self.late.should_rewarm(self.engine.config(), now) {
            info!("events arrived for minutes already folded: re-warming the models on history");
            metrics::counter!("tripline_detector_rewarms_total").increment(1);
            self.late.started();
            self.rewarm = Some(Rewarm::start(
                clickhouse.clone(),
                self.engine.config().clone(),
                self.shard,
            ));
        }
    }

    /// A re-warm ended: its engine, caught up to the live watermark, replaces the live one
    /// (with the live thresholds: the config may have been reloaded meanwhile). On failure the
    /// live engine stays, and the late events count towards the next attempt.
    pub async fn swap(
        &mut self,
        clickhouse: &Client,
        (warmed, took): (Result<Engine, WarmError>, Duration),
    ) {
        self.late.ended(now_s(), took.as_secs() as u32);
        let fresh = match warmed {
            Ok(fresh) => {
                warm::catch_up(clickhouse, fresh, self.engine.folded_through, self.shard).await
            }
            Err(err) => Err(err),
        };
        let mut fresh = match fresh {
            Ok(fresh) => fresh,
            Err(err) => {
                warn!(%err, "re-warming the models failed; keeping the running ones");
                return;
            }
        };
        if let Err(err) = fresh.reconfigure(self.engine.config().clone()) {
            warn!(%err, "re-warmed models refused the running config; keeping the running ones");
            return;
        }
        info!(
            keys_before = self.engine.tracked_keys(),
            keys = fresh.tracked_keys(),
            took_ms = took.as_millis() as u64,
            "models re-warmed on history, late events included"
        );
        self.reported = fresh.evictions();
        fresh.carry_over_from(&mut self.engine);
        self.engine = fresh;
    }
}
