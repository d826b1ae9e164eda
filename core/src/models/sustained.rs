//! Sustained evidence that an entity's rate went up: a one-sided CUSUM of capped standard
//! scores, judged on the entity's own scale and on what it would cost if it went on.
//!
//! ```text
//! z_t  = (x_t - expected_t) / sigma_t            the window against the entity's baseline
//! S_t  = max(0, S_{t-1} + min(z_t, max_step) - slack)
//! alarm: S_t >= threshold                         enough evidence, accumulated
//!    and run observed / run expected >= min_ratio the entity's own scale (x2, not +5 %)
//!    and (run observed - run expected) per window * windows per day >= impact floor
//! ```
//!
//! Why each piece:
//! - A one-minute tail test cannot tell a key that went x20 for ten minutes from one noisy
//!   minute on a small key: both are one wild window. CUSUM adds up evidence over windows and
//!   forgets it (S falls back to 0) when windows look normal again.
//! - The cap (`max_step`) is what makes a single window never enough: one long request on a
//!   quiet key is a z of 30, but adds at most `max_step - slack` (2.5 by default, under the
//!   threshold of 4.5). Two windows in a row at three sigmas, or five at two, do alarm.
//! - The ratio and the impact floor speak the user's language: a key that spends $3 a day and
//!   starts spending $1,400 a day is told within minutes; a +5 % drift on a big key, or cents
//!   on a tiny one, never pages however certain it is.
//! - The run (from when S last left 0) is the incident as evidence sees it: its observed and
//!   expected sums give the ratio and the extra spend per day that the alert reports. They are
//!   judged without the run's largest window, so that no single window carries the case: one
//!   wild minute after a few slightly busy ones is not a x6.

use serde::{Deserialize, Serialize};

/// Settings of the sustained-evidence rule (in `[detect.spend_spike]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SustainedConfig {
    /// Off by default: on real-trace background traffic, whose keys burst x2-x4 for minutes at
    /// a time, per-minute sigmas make the sums overconfident (BENCHMARKS.md, "Sustained spend").
    pub enabled: bool,
    /// Evidence needed, in capped standard scores summed over windows.
    pub threshold: f64,
    /// Subtracted from each window's score: windows within this many sigmas of normal add no
    /// evidence (half the smallest shift worth finding quickly).
    pub slack: f64,
    /// The most evidence one window can add (before the slack).
    pub max_step: f64,
    /// The run must be at least this multiple of what the entity usually does.
    pub min_ratio: f64,
}

impl Default for SustainedConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 4.5,
            slack: 0.5,
            max_step: 3.0,
            min_ratio: 2.0,
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
        ]
        .into_iter()
        .find(|(_, _, ok, _)| !ok)
        .map(|(field, value, _, expected)| (field, value, expected))
    }
}

/// One entity's accumulated evidence: 24 bytes.
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
}

impl Cusum {
    /// The evidence after one more window. `sigma` is floored at a tenth of `expected` (and a
    /// tiny absolute amount), so a flat history does not make any change infinitely telling.
    pub fn step(
        &self,
        observed: f64,
        expected: f64,
        sigma: f64,
        config: &SustainedConfig,
    ) -> Cusum {
        let expected = expected.max(0.0);
        let sigma = sigma.max(0.1 * expected).max(1e-9);
        let z = ((observed - expected) / sigma).min(config.max_step);
        let sum = (self.sum + z - config.slack).max(0.0);
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
            };
        }
        let (largest, largest_expected) = if observed > self.largest {
            (observed, expected)
        } else {
            (self.largest, self.largest_expected)
        };
        Cusum {
            sum,
            observed: self.observed + observed,
            expected: self.expected + expected,
            windows: self.windows + 1,
            largest,
            largest_expected,
        }
    }

    /// The run's observed over expected (infinite when nothing was expected).
    pub fn ratio(&self) -> f64 {
        if self.expected > 0.0 {
            self.observed / self.expected
        } else if self.observed > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
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
    /// `windows_per_day` if it went on, without leaning on any single window.
    pub fn alarm(
        &self,
        config: &SustainedConfig,
        windows_per_day: f64,
        impact_per_day: f64,
    ) -> bool {
        let trimmed = self.trimmed();
        self.sum >= config.threshold
            && trimmed.ratio() >= config.min_ratio
            && trimmed.extra_per_window() * windows_per_day >= impact_per_day
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTES_PER_DAY: f64 = 1440.0;

    fn run(cusum: Cusum, values: &[f64], expected: f64, sigma: f64) -> Cusum {
        let config = SustainedConfig::default();
        values
            .iter()
            .fold(cusum, |c, &x| c.step(x, expected, sigma, &config))
    }

    /// A key spending $0.004 a minute, noisy (sigma $0.004), goes x3: certain within minutes,
    /// and worth telling (+$11.50 a day) over a $10-a-day floor.
    #[test]
    fn a_tripled_small_key_alarms_within_minutes() {
        let config = SustainedConfig::default();
        let mut c = Cusum::default();
        let mut minutes = 0;
        while !c.alarm(&config, MINUTES_PER_DAY, 10.0) {
            c = c.step(0.012, 0.004, 0.004, &config);
            minutes += 1;
            assert!(minutes < 10, "{c:?}");
        }
        assert!(minutes <= 3, "{minutes} minutes");
        assert!((c.ratio() - 3.0).abs() < 1e-9);
    }

    /// x20 on a key: two minutes of evidence, whatever the size of the first one.
    #[test]
    fn one_wild_window_is_never_enough() {
        let config = SustainedConfig::default();
        let wild = Cusum::default().step(100.0, 0.004, 0.004, &config);
        assert!(!wild.alarm(&config, MINUTES_PER_DAY, 10.0), "{wild:?}");
        let twice = wild.step(100.0, 0.004, 0.004, &config);
        assert!(twice.alarm(&config, MINUTES_PER_DAY, 10.0));
    }

    /// A few slightly busy windows, then one wild one: evidence enough, but without the wild
    /// window the run is x1.3, not the key's x2.
    #[test]
    fn no_single_window_carries_the_case() {
        let config = SustainedConfig::default();
        let c = run(
            Cusum::default(),
            &[0.0065, 0.0065, 0.0065, 0.09],
            0.004,
            0.002,
        );
        assert!(c.sum >= config.threshold, "{c:?}");
        assert!(c.ratio() > 2.0);
        assert!(!c.alarm(&config, MINUTES_PER_DAY, 10.0), "{c:?}");
    }

    #[test]
    fn normal_windows_forget_the_evidence() {
        let c = run(
            Cusum::default(),
            &[0.05, 0.004, 0.0, 0.004, 0.003],
            0.004,
            0.004,
        );
        assert_eq!(c, Cusum::default());
    }

    #[test]
    fn cents_on_a_tiny_key_and_drift_on_a_big_one_never_page() {
        let config = SustainedConfig::default();
        // x3 on a key of $0.0005 a minute: certain, but +$1.44 a day.
        let tiny = run(Cusum::default(), &[0.0015; 20], 0.0005, 0.0002);
        assert!(tiny.sum >= config.threshold);
        assert!(!tiny.alarm(&config, MINUTES_PER_DAY, 10.0));
        // +20 % on a key of $5 a minute with a tight history: certain, large, but not x2.
        let drift = run(Cusum::default(), &[6.0; 20], 5.0, 0.1);
        assert!(drift.sum >= config.threshold);
        assert!(!drift.alarm(&config, MINUTES_PER_DAY, 10.0));
    }

    #[test]
    fn nothing_expected_and_something_spent_is_an_infinite_ratio() {
        let c = run(Cusum::default(), &[1.0, 1.0], 0.0, 0.0);
        assert!(c.ratio().is_infinite());
        assert!(c.alarm(&SustainedConfig::default(), MINUTES_PER_DAY, 10.0));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(SustainedConfig::default().invalid(), None);
        let bad = SustainedConfig {
            max_step: 0.4,
            ..SustainedConfig::default()
        };
        assert_eq!(bad.invalid().map(|(f, ..)| f), Some("max_step"));
    }

    proptest! {
        /// Noise around the expectation (within two sigmas, any order) never alarms.
        #[test]
        fn bounded_noise_never_alarms(values in proptest::collection::vec(-2.0f64..2.0, 1..500)) {
            let config = SustainedConfig::default();
            let mut c = Cusum::default();
            for z in values {
                c = c.step(1.0 + 0.1 * z, 1.0, 0.1, &config);
                // Evidence may pile up (two sigmas, three times), but x1.2 is not the key's x2.
                prop_assert!(!c.alarm(&config, MINUTES_PER_DAY, 0.0), "{:?}", c);
                prop_assert!(c.sum >= 0.0);
            }
        }

        /// The statistic never goes negative and a run's totals add up.
        #[test]
        fn runs_add_up(values in proptest::collection::vec(0.0f64..10.0, 1..200)) {
            let config = SustainedConfig::default();
            let mut c = Cusum::default();
            for x in values {
                let next = c.step(x, 1.0, 0.5, &config);
                prop_assert!(next.sum >= 0.0);
                if next.sum > 0.0 && c.sum > 0.0 {
                    prop_assert!((next.observed - c.observed - x).abs() < 1e-9);
                    prop_assert_eq!(next.windows, c.windows + 1);
                }
                c = next;
            }
        }
    }
}
