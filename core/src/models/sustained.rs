//! Sustained evidence that an entity's rate went up: a one-sided CUSUM of capped standard
//! scores, judged on the entity's own scale and on what it would cost if it went on.
//!
//! ```text
//! z_t  = (x_t - expected_t) / sigma_t            the window against the entity's baseline
//! S_t  = max(0, S_{t-1} + min(z_t, max_step) - slack)
//! alarm: S_t >= threshold                         enough evidence, accumulated
//!    and run observed / run expected >= min_ratio the entity's own scale (x2, not +5 %)
//!    and (run observed - run expected) per window * windows per day >= impact floor
//!    and x_t / expected_t >= that ratio too        the latest window is itself raised
//!    (min_ratio grows as sqrt(run windows / drift_windows) for a run longer than that; where
//!    the entity's daily rhythm is known, such a run's ratio is its recent windows', Judged)
//! ```
//!
//! Why each piece:
//! - A one-minute tail test cannot tell a key that went x20 for ten minutes from one noisy
//!   minute on a small key: both are one wild window. CUSUM adds up evidence over windows and
//!   forgets it (S falls back to 0) when windows look normal again.
//! - The cap (`max_step`) is what makes a single window never enough: one long request on a
//!   quiet key is a z of 30, but adds at most `max_step - slack` (2.5 by default, under the
//!   threshold of 8). Four windows in a row at three sigmas, or six at two, do alarm.
//! - The ratio and the impact floor speak the user's language: a key that spends $3 a day and
//!   starts spending $1,400 a day is told within minutes; a +5 % drift on a big key, or cents
//!   on a tiny one, never pages however certain it is.
//! - The run (from when S last left 0) is the incident as evidence sees it: its observed and
//!   expected sums give the ratio and the extra spend per day that the alert reports. They are
//!   judged without the run's largest window, so that no single window carries the case: one
//!   wild minute after a few slightly busy ones is not a x6.
//! - Real traffic comes in bursts: a busy minute is followed by busy minutes, so ten minutes
//!   vary far more than ten independent minutes would, and per-minute sigmas summed over a run
//!   are overconfident. [`Dispersion`] measures by how much on the entity's own history
//!   (ten-minute blocks against what the model expected of them) and widens its sigma to match:
//!   a key that often bursts x3 for a few minutes needs a longer or larger rise to alarm than a
//!   steady one.

use serde::{Deserialize, Serialize};

/// Settings of the sustained-evidence rule (in `[detect.spend_spike]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SustainedConfig {
    /// On by default. Judged against the key's own burstiness ([`Dispersion`]) and, in the
    /// detector, against how busy every other key is, it stays quiet on ordinary bursts
    /// (BENCHMARKS.md, "Sustained spend").
    pub enabled: bool,
    /// Evidence needed, in capped standard scores summed over windows.
    pub threshold: f64,
    /// Subtracted from each window's score: windows within this many sigmas of normal add no
    /// evidence (half the smallest shift worth finding quickly).
    pub slack: f64,
    /// The most evidence one window can add (before the slack). The detector lets a count of
    /// requests add up to `threshold / 2 + slack` when that is more (no one request makes a
    /// wild count).
    pub max_step: f64,
    /// The run must be at least this multiple of what the entity usually does.
    pub min_ratio: f64,
    /// A run longer than this many windows must be larger to alarm: its ratio must reach
    /// `min_ratio * sqrt(windows / drift_windows)` (a slow drift is usage changing).
    pub drift_windows: u32,
    /// Windows per block when measuring how bursty an entity is (ten minutes).
    pub block_windows: u32,
    /// Half-life of that measure, in blocks (36: six hours of ten-minute blocks).
    pub dispersion_half_life_blocks: f64,
}

impl Default for SustainedConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 8.0,
            slack: 0.5,
            max_step: 3.0,
            min_ratio: 2.0,
            drift_windows: 20,
            block_windows: 10,
            dispersion_half_life_blocks: 36.0,
        }
    }
}

impl SustainedConfig {
    /// The first setting out of range: `(field, value, what is expected)`.
    pub fn invalid(&self) -> Option<(&'static str, f64, &'static str)> {
        let positive = |v: f64| v > 0.0 && v.is_finite();
        [
            ("threshold", self.threshold, positive(self.threshold), "> 0"),
            (
                "slack",
                self.slack,
                self.slack >= 0.0 && self.slack.is_finite(),
                ">= 0",
            ),
            (
                "max_step",
                self.max_step,
                positive(self.max_step) && self.max_step > self.slack,
                "> slack",
            ),
            (
                "min_ratio",
                self.min_ratio,
                self.min_ratio >= 1.0 && self.min_ratio.is_finite(),
                ">= 1",
            ),
            (
                "drift_windows",
                f64::from(self.drift_windows),
                self.drift_windows >= 1,
                ">= 1",
            ),
            (
                "block_windows",
                f64::from(self.block_windows),
                (2..=240).contains(&self.block_windows),
                "2..=240",
            ),
            (
                "dispersion_half_life_blocks",
                self.dispersion_half_life_blocks,
                self.dispersion_half_life_blocks >= 1.0
                    && self.dispersion_half_life_blocks.is_finite(),
                ">= 1",
            ),
        ]
        .into_iter()
        .find(|(_, _, ok, _)| !ok)
        .map(|(field, value, _, expected)| (field, value, expected))
    }
}

/// One entity's accumulated evidence: 72 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cusum {
    /// The CUSUM statistic S (0 when the recent windows look normal).
    pub sum: f64,
    /// Observed and expected totals of the current run (since S last left 0).
    pub observed: f64,
    pub expected: f64,
    /// Windows in the current run.
    pub windows: u32,
    /// The largest single window of the run, and what was expected of it.
    pub largest: f64,
    pub largest_expected: f64,
    /// Which window of the run (1 for its first) was the largest.
    pub largest_at: u32,
    /// The latest window's observed over expected. Only a window that itself looks like the
    /// incident (at the ratio the run needs) alarms: once an incident is over, the evidence it
    /// left takes a few windows to drain, and ordinary windows meanwhile are no reason to
    /// page again with the incident's ratio.
    pub latest: f64,
    /// The run's recent windows: observed and expected, each window's weight fading by
    /// [`RECENT_FADE`] per window after it.
    pub recent_observed: f64,
    pub recent_expected: f64,
}

/// How fast the run's recent sums forget: a window counts for half after about seven more.
pub const RECENT_FADE: f64 = 0.9;

/// What a run is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// The whole run (without its largest window): where nothing tells a slow rise of the
    /// entity's own usage (its working day starting) from an incident, a rise that took long
    /// to become certain must be large over all of it.
    Run,
    /// A run longer than `drift_windows` by its recent windows (about the last ten), against
    /// the same growing ratio: where the entity's daily rhythm is known and in its
    /// expectation, a rise that is still climbing (a ramp) is judged by where it stands now,
    /// not by its average since it began.
    Recent,
}

/// A run's level per window: observed, expected, and their ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub observed: f64,
    pub expected: f64,
    pub ratio: f64,
}

/// `observed / expected`, infinite when nothing was expected but something came.
fn ratio(observed: f64, expected: f64) -> f64 {
    if expected > 0.0 {
        observed / expected
    } else if observed > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// `sigma` floored at a tenth of `expected` (and a tiny absolute amount), so that a flat history
/// does not make any change infinitely telling.
pub fn floored_sigma(expected: f64, sigma: f64) -> f64 {
    sigma.max(0.1 * expected.max(0.0)).max(1e-9)
}

/// How much more an entity's windows vary in blocks than independent windows would (its
/// overdispersion): the decayed mean of `(block observed - block expected)^2 / sum of the
/// windows' sigma^2` over closed blocks. About 1 for steady Poisson-like traffic, 3-10 for a
/// key that bursts for minutes at a time. 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dispersion {
    /// The open block: summed deviation and variance, and its windows so far.
    deviation: f64,
    variance: f64,
    windows: u32,
    /// Closed blocks seen (saturating) and their decayed mean ratio.
    blocks: u32,
    ratio: f64,
}

impl Default for Dispersion {
    fn default() -> Self {
        Self {
            deviation: 0.0,
            variance: 0.0,
            windows: 0,
            blocks: 0,
            ratio: 1.0,
        }
    }
}

impl Dispersion {
    /// One block's ratio counts at most this much: an incident's blocks widen the entity's
    /// sigma for a while after it, but a single one cannot blind it for a day.
    const MAX_BLOCK_RATIO: f64 = 50.0;

    /// Adds one window (`sigma` as floored by [`floored_sigma`]).
    pub fn observe(&mut self, observed: f64, expected: f64, sigma: f64, config: &SustainedConfig) {
        self.deviation += observed - expected.max(0.0);
        self.variance += sigma * sigma;
        self.windows += 1;
        if self.windows < config.block_windows.max(1) {
            return;
        }
        let ratio = (self.deviation * self.deviation / self.variance.max(f64::MIN_POSITIVE))
            .min(Self::MAX_BLOCK_RATIO);
        // A running mean over the first blocks, then exponential forgetting.
        self.blocks = self.blocks.saturating_add(1);
        let alpha = (1.0 / f64::from(self.blocks))
            .max(1.0 - 0.5f64.powf(1.0 / config.dispersion_half_life_blocks));
        self.ratio += alpha * (ratio - self.ratio);
        (self.deviation, self.variance, self.windows) = (0.0, 0.0, 0);
    }

    /// The factor to widen a window's sigma by: `sqrt(ratio)`, never below 1 (a history that
    /// varies less than its sigmas say does not make the rule more eager).
    pub fn widening(&self) -> f64 {
        self.ratio.max(1.0).sqrt()
    }
}

impl Cusum {
    /// The evidence after one more window (`sigma` floored as [`floored_sigma`] does).
    pub fn step(
        &self,
        observed: f64,
        expected: f64,
        sigma: f64,
        config: &SustainedConfig,
    ) -> Cusum {
        let expected = expected.max(0.0);
        let sigma = floored_sigma(expected, sigma);
        let ceiling = config.threshold + config.max_step;
        self.step_scored(
            (observed - expected) / sigma,
            observed,
            expected,
            ceiling,
            config,
        )
    }

    /// The evidence after one more window whose standard score `z` was reckoned elsewhere (on
    /// a log scale, say), with its `observed` and `expected` amounts for the run's sums.
    ///
    /// The sum never exceeds `ceiling` (one full step above the alarm): a long incident piles
    /// up no credit, so once it is over the run drains below the alarm within a few ordinary
    /// windows (`max_step / slack` and one: seven by default) and the next run starts afresh,
    /// instead of judging ordinary windows for an hour by the incident's ratio.
    pub fn step_scored(
        &self,
        z: f64,
        observed: f64,
        expected: f64,
        ceiling: f64,
        config: &SustainedConfig,
    ) -> Cusum {
        let z = z.min(config.max_step);
        let sum = (self.sum + z - config.slack).clamp(0.0, ceiling.max(0.0));
        if sum == 0.0 {
            return Cusum::default();
        }
        if self.sum == 0.0 {
            return Cusum {
                sum,
                observed,
                expected,
                windows: 1,
                largest: observed,
                largest_expected: expected,
                largest_at: 1,
                latest: ratio(observed, expected),
                recent_observed: observed,
                recent_expected: expected,
            };
        }
        let (largest, largest_expected, largest_at) = if observed > self.largest {
            (observed, expected, self.windows + 1)
        } else {
            (self.largest, self.largest_expected, self.largest_at)
        };
        Cusum {
            sum,
            observed: self.observed + observed,
            expected: self.expected + expected,
            windows: self.windows + 1,
            largest,
            largest_expected,
            largest_at,
            latest: ratio(observed, expected),
            recent_observed: self.recent_observed * RECENT_FADE + observed,
            recent_expected: self.recent_expected * RECENT_FADE + expected,
        }
    }

    /// How much the window just judged should teach the baseline: a tenth while the evidence
    /// is at the alarm, else all of it. At the alarm, not at the first raised window: ordinary
    /// windows start and end small runs all the time, and learning their high windows at a
    /// tenth (and their low ones in full) would bias the baseline down.
    pub fn learning_weight(&self, config: &SustainedConfig) -> f64 {
        if self.sum >= config.threshold {
            0.1
        } else {
            1.0
        }
    }

    /// The run's observed over expected (infinite when nothing was expected).
    pub fn ratio(&self) -> f64 {
        ratio(self.observed, self.expected)
    }

    /// What the run adds per window on average, above what was expected.
    pub fn extra_per_window(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            (self.observed - self.expected) / f64::from(self.windows)
        }
    }

    /// The run without its largest window (empty for a run of one window).
    pub fn trimmed(&self) -> Cusum {
        if self.windows < 2 {
            return Cusum::default();
        }
        Cusum {
            observed: self.observed - self.largest,
            expected: self.expected - self.largest_expected,
            windows: self.windows - 1,
            ..*self
        }
    }

    /// Enough evidence, on the entity's scale, and worth `impact_per_day` at
    /// `windows_per_day` if it went on, without leaning on any single window; judged on a
    /// window that itself is that far above its expectation.
    ///
    /// `by` says what the ratio and the impact are read from: the whole run, or, for a run
    /// longer than `drift_windows`, where it stands now ([`Judged::Recent`]).
    pub fn alarm(
        &self,
        config: &SustainedConfig,
        windows_per_day: f64,
        impact_per_day: f64,
        by: Judged,
    ) -> bool {
        let level = self.level(config, by);
        let needed = self.ratio_needed(config);
        self.sum >= config.threshold
            && level.ratio >= needed
            && self.latest >= needed
            && (level.observed - level.expected) * windows_per_day >= impact_per_day
    }

    /// Half the evidence [`Cusum::alarm`] needs, at `min_ratio` whatever the run's length:
    /// too little to page on the entity's own model, enough where an independent baseline
    /// confirms the rise (the detector's: the entity at this time yesterday). A ramp's rise is
    /// learnt into its model as it climbs, and only half certain there when it is already
    /// twice what the entity did at this time the day before.
    pub fn half_alarm(
        &self,
        config: &SustainedConfig,
        windows_per_day: f64,
        impact_per_day: f64,
        by: Judged,
    ) -> bool {
        // As many windows as the full alarm takes at the least: half the evidence, not half
        // the time (a two-minute burst on a key quieter yesterday is not a ramp).
        let fastest = (config.threshold / (config.max_step - config.slack)).ceil();
        f64::from(self.windows) >= fastest
            && self.steady_alarm_from(
                config.threshold / 2.0,
                config,
                windows_per_day,
                impact_per_day,
                by,
            )
    }

    /// The full evidence at `min_ratio` whatever the run's length. For evidence judged against
    /// a baseline the rise cannot have taught (the detector's reference, half an hour to an
    /// hour old) and confirmed independently (the entity at this time yesterday): there, a
    /// rise that took long to become certain is a ramp still climbing, not usage drifting,
    /// and needs no larger ratio for its length.
    pub fn steady_alarm(
        &self,
        config: &SustainedConfig,
        windows_per_day: f64,
        impact_per_day: f64,
        by: Judged,
    ) -> bool {
        self.steady_alarm_from(
            config.threshold,
            config,
            windows_per_day,
            impact_per_day,
            by,
        )
    }

    fn steady_alarm_from(
        &self,
        least: f64,
        config: &SustainedConfig,
        windows_per_day: f64,
        impact_per_day: f64,
        by: Judged,
    ) -> bool {
        let level = self.level(config, by);
        self.sum >= least
            && level.ratio >= config.min_ratio
            && self.latest >= config.min_ratio
            && (level.observed - level.expected) * windows_per_day >= impact_per_day
    }

    /// The run's level per window as `by` judges it: the whole run without its largest window,
    /// or its recent windows once it is longer than `drift_windows` and `by` is
    /// [`Judged::Recent`].
    pub fn level(&self, config: &SustainedConfig, by: Judged) -> Level {
        if self.judged_recently(config, by) {
            // The recent sums without the largest window, faded as it has been since.
            let fade = RECENT_FADE.powi((self.windows - self.largest_at) as i32);
            let observed = self.recent_observed - self.largest * fade;
            let expected = self.recent_expected - self.largest_expected * fade;
            let weights =
                (1.0 - RECENT_FADE.powi(self.windows as i32)) / (1.0 - RECENT_FADE) - fade;
            let weights = weights.max(f64::MIN_POSITIVE);
            return Level {
                observed: observed / weights,
                expected: expected / weights,
                ratio: ratio(observed, expected),
            };
        }
        let trimmed = self.trimmed();
        let windows = f64::from(trimmed.windows.max(1));
        Level {
            observed: trimmed.observed / windows,
            expected: trimmed.expected / windows,
            ratio: trimmed.ratio(),
        }
    }

    /// What an alert reports of the run as `by` judged it: the whole run's means (its largest
    /// window included: it was spent), or its recent level when that is what was judged.
    pub fn reported(&self, config: &SustainedConfig, by: Judged) -> Level {
        if self.judged_recently(config, by) {
            return self.level(config, by);
        }
        let windows = f64::from(self.windows.max(1));
        Level {
            observed: self.observed / windows,
            expected: self.expected / windows,
            ratio: self.ratio(),
        }
    }

    /// Whether `by` judges this run by its recent windows (it is longer than `drift_windows`).
    pub fn judged_recently(&self, config: &SustainedConfig, by: Judged) -> bool {
        by == Judged::Recent && self.windows > config.drift_windows
    }

    /// One line for a log: the sum, the run's length, its level as `by` judges it against the
    /// ratio needed, and the latest window's ratio.
    pub fn explain(&self, config: &SustainedConfig, by: Judged) -> String {
        self.explain_needing(config, by, self.ratio_needed(config))
    }

    /// [`Cusum::explain`] for evidence judged by [`Cusum::steady_alarm`]: it needs
    /// `min_ratio` whatever the run's length.
    pub fn explain_steady(&self, config: &SustainedConfig, by: Judged) -> String {
        self.explain_needing(config, by, config.min_ratio)
    }

    /// [`Cusum::explain`] against a ratio of the caller's (a rule with its own least ratio).
    pub fn explain_needing(&self, config: &SustainedConfig, by: Judged, needed: f64) -> String {
        let level = self.level(config, by);
        format!(
            "S={:.1} n={} level={:.3e}/{:.3e}=x{:.2} need x{:.2} latest x{:.2}",
            self.sum,
            self.windows,
            level.observed,
            level.expected,
            level.ratio,
            needed,
            self.latest
        )
    }

    /// The ratio a run must reach: `min_ratio`, and more for a run that took longer than
    /// `drift_windows` to become certain (x `sqrt(windows / drift_windows)`). A rise that
    /// builds over hours is a change of usage (a key's working day, a new feature) that the
    /// baseline is learning, not a spike: it must be large to page.
    pub fn ratio_needed(&self, config: &SustainedConfig) -> f64 {
        self.ratio_needed_from(config.min_ratio, config)
    }

    /// [`Cusum::ratio_needed`] for a rule whose least ratio is `base` rather than `min_ratio`.
    pub fn ratio_needed_from(&self, base: f64, config: &SustainedConfig) -> f64 {
        let drift = f64::from(self.windows) / f64::from(config.drift_windows.max(1));
        base * drift.max(1.0).sqrt()
    }
}

#[cfg(test)]
mod tests;
