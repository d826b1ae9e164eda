//! The spend-spike model: one entity's spend (or any rate) on fixed windows, e.g. per minute.
//!
//! ```text
//! expected = level * season(hour)           level, sigma: EW mean and std (ewma.rs) of the
//! band     = max(k * sigma * season(hour),           deseasonalised value
//!                min_abs_usd, min_rel_increase * expected)
//! upper    = expected + band                k: Student-t quantile at 1 - tail_probability
//! p        = max(Student-t tail of z, this entity's own rate of |z| this large)
//! ```
//!
//! Why each piece:
//! - EW mean and variance, with anomalous windows damped (below) rather than a robust
//!   (median/MAD) band: a robust band is narrow for bursty series and pages on their every
//!   burst. Measured on the NAB development split (prototype of this model): 47 with
//!   `RobustEw` level and spread, 55 with a robust level and EW spread, 60 with the EW mean
//!   and spread. Robustness to the incident
//!   itself comes from the damped folding instead.
//! - A *Student-t* tail (statrs) instead of a raw z threshold: with few degrees of freedom the
//!   same tail probability asks for a larger deviation, which is what heavy-tailed spend needs,
//!   and the probability is a score that means the same for every entity.
//! - Calibration ([`TailCalibration`]): if this entity has produced a |z| this large in 2 % of
//!   its windows, the window is a 2 % event whatever the fitted tail says.
//! - Floors (`min_abs_usd`, `min_rel_increase`): a key that spends 0.2 cents a minute and then 2
//!   cents is statistically wild and of no interest to anyone; no page for cents, none for +5 %.
//! - Damped folding (`anomaly_fold`): a window judged anomalous updates the baseline with a
//!   fraction of the usual weight, so a runaway loop does not become the new normal within
//!   minutes; it still does eventually, as a real change of usage should.
//! - Seasonality (optional, [`Seasonal`]): office hours and weekdays.
//! - Early firing (`elapsed_fraction < 1`): spend only grows within a window, so a partial
//!   window that is *already* above the full window's upper bound will breach; firing then
//!   saves up to a window of money and can never be a false early alarm the full window would
//!   not also raise. Nothing is extrapolated.
//!
//! The same model scores generic series (the NAB runner) with `min_abs_usd = 0`,
//! `min_rel_increase = 0` and `two_sided = true`, so drops are scored too.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::calibration::TailCalibration;
use super::ewma::{alpha_from_half_life, Ewma};
use super::seasonal::Seasonal;

/// Settings of [`SpendModel`], as written in the config file. Validate once with
/// [`SpendModelConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendModelConfig {
    /// Memory of the baseline, in windows: a window's weight halves after this many more.
    pub half_life_windows: f64,
    /// Breach when the observed value's tail probability under the baseline is below this
    /// (per side). 1e-4 on per-minute windows: about one statistical exceedance a week per
    /// entity before the floors, which remove most of them.
    pub tail_probability: f64,
    /// Degrees of freedom of the Student-t predictive distribution (heavier tails when lower;
    /// `inf` gives the normal).
    pub tail_dof: f64,
    /// A breach must exceed the expectation by at least this much (USD per window).
    pub min_abs_usd: f64,
    /// ... and by at least this fraction of the expectation (0.5 = +50 %).
    pub min_rel_increase: f64,
    /// Windows folded in before the model may breach.
    pub warmup_windows: u32,
    /// Hour-of-day seasonality (144 bytes on the heap per entity): a key's working day, learnt
    /// from `detect.history_hours` at start-up, is its usual and not a rise.
    pub seasonality: bool,
    /// Also hour-of-week buckets over the daily ones (weekday/weekend differences, once weeks
    /// of history are in; 1,008 more bytes per entity).
    pub season_weeks: bool,
    /// Memory of each hour-of-week bucket, in that bucket's own windows.
    pub season_half_life_windows: f64,
    /// Shrinkage of young buckets toward the global level, in pseudo-windows. Small (3): a
    /// bucket is only used once its hour has been seen whole (`season_min_windows`), and a
    /// whole visit is a measurement of the hour; at 30, a key whose working day is x16 its
    /// level was expected at x11 through its first days, and its level and burstiness were
    /// learnt from that misfit (a third of the false spend alerts on DEV seeds, BENCHMARKS.md,
    /// "Session 14"). The NAB development split agrees (59.0 at 3, 49.1 at 30).
    pub season_prior_windows: f64,
    /// A bucket counts once it holds this many windows (60: an hour of minutes, its hour seen
    /// whole once), so that the first day's hours are not learnt as they are lived.
    pub season_min_windows: u16,
    /// Weight of an anomalous window in the baseline, as a fraction of a normal one
    /// (0 = anomalies never move it, 1 = no damping).
    pub anomaly_fold: f64,
    /// Also breach (and score) on drops below `expected - band`; off for spend.
    pub two_sided: bool,
    /// Memory of the |z| calibration histogram, in windows (10,080 = a week of minutes).
    pub calibration_half_life_windows: f64,
    /// Lower bound on sigma as a fraction of the expectation, so a perfectly flat history does
    /// not make any change infinitely surprising. 0 turns it off.
    pub min_sigma_rel: f64,
}

impl Default for SpendModelConfig {
    fn default() -> Self {
        Self {
            half_life_windows: 60.0,
            tail_probability: 1e-4,
            tail_dof: 4.0,
            min_abs_usd: 1.0,
            min_rel_increase: 0.5,
            warmup_windows: 30,
            seasonality: true,
            season_weeks: false,
            season_half_life_windows: 120.0,
            season_prior_windows: 3.0,
            season_min_windows: 60,
            anomaly_fold: 0.1,
            two_sided: false,
            calibration_half_life_windows: 10_080.0,
            min_sigma_rel: 0.01,
        }
    }
}

/// A config value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("spend model: {field} = {value} is out of range ({expected})")]
pub struct SpendConfigError {
    pub field: &'static str,
    pub value: f64,
    pub expected: &'static str,
}

/// A validated [`SpendModelConfig`] with its derived constants (the smoothing weights and the
/// Student-t quantile are computed once here, not per entity and window).
#[derive(Debug, Clone)]
pub struct SpendParams {
    pub config: SpendModelConfig,
    alpha: f64,
    season_alpha: f64,
    calibration_alpha: f64,
    /// Student-t quantile at `1 - tail_probability`.
    k: f64,
    t: StudentsT,
}

impl SpendModelConfig {
    pub fn validate(&self) -> Result<SpendParams, SpendConfigError> {
        let check = |field, value: f64, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(SpendConfigError {
                    field,
                    value,
                    expected,
                })
            }
        };
        let c = self;
        check(
            "half_life_windows",
            c.half_life_windows,
            c.half_life_windows > 0.0 && c.half_life_windows.is_finite(),
            "> 0",
        )?;
        check(
            "tail_probability",
            c.tail_probability,
            c.tail_probability > 0.0 && c.tail_probability < 0.5,
            "0 < p < 0.5",
        )?;
        check(
            "tail_dof",
            c.tail_dof,
            c.tail_dof > 0.0,
            "> 0, or inf for the normal",
        )?;
        check(
            "min_abs_usd",
            c.min_abs_usd,
            c.min_abs_usd >= 0.0 && c.min_abs_usd.is_finite(),
            ">= 0",
        )?;
        check(
            "min_rel_increase",
            c.min_rel_increase,
            c.min_rel_increase >= 0.0 && c.min_rel_increase.is_finite(),
            ">= 0",
        )?;
        check(
            "season_half_life_windows",
            c.season_half_life_windows,
            c.season_half_life_windows > 0.0 && c.season_half_life_windows.is_finite(),
            "> 0",
        )?;
        check(
            "season_prior_windows",
            c.season_prior_windows,
            c.season_prior_windows >= 0.0 && c.season_prior_windows.is_finite(),
            ">= 0",
        )?;
        check(
            "anomaly_fold",
            c.anomaly_fold,
            (0.0..=1.0).contains(&c.anomaly_fold),
            "0..=1",
        )?;
        check(
            "calibration_half_life_windows",
            c.calibration_half_life_windows,
            c.calibration_half_life_windows > 0.0,
            "> 0 (inf: never forget)",
        )?;
        check(
            "min_sigma_rel",
            c.min_sigma_rel,
            c.min_sigma_rel >= 0.0 && c.min_sigma_rel.is_finite(),
            ">= 0",
        )?;
        let t = StudentsT::new(0.0, 1.0, c.tail_dof).map_err(|_| SpendConfigError {
            field: "tail_dof",
            value: c.tail_dof,
            expected: "> 0",
        })?;
        Ok(SpendParams {
            config: c.clone(),
            alpha: alpha_from_half_life(c.half_life_windows),
            season_alpha: alpha_from_half_life(c.season_half_life_windows),
            calibration_alpha: if c.calibration_half_life_windows.is_finite() {
                alpha_from_half_life(c.calibration_half_life_windows)
            } else {
                0.0
            },
            k: t.inverse_cdf(1.0 - c.tail_probability),
            t,
        })
    }
}

impl SpendParams {
    /// The number of sigmas of the statistical part of the band.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// How fast a seasonal bucket learns (from `season_half_life_windows`), for companion
    /// seasonal factors that should learn at the same pace.
    pub fn season_alpha(&self) -> f64 {
        self.season_alpha
    }

    /// The baseline's weight per window (from `half_life_windows`), for companion averages
    /// that should forget at the same pace.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// What the model expects of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected value of the full window.
    pub expected: f64,
    /// A full window above this breaches (and a partial one already above it, too).
    pub upper: f64,
    /// With `two_sided`, a full window below this breaches; reported either way.
    pub lower: f64,
    /// Past warm-up: `false` means no breach is possible yet.
    pub ready: bool,
}

/// The verdict on one (possibly partial) window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// 0 at the expectation, toward 1 as the tail probability falls: `1 - 2 p_value`; 0 before
    /// warm-up and for drops unless `two_sided`. How unusual the window is *for this entity*
    /// (calibrated); the floors act on `breach`, not on the score.
    pub score: f64,
    /// Beyond the band (`observed > upper`, or `< lower` for a full window when two-sided)
    /// and past warm-up. The band is the fitted Student-t band and the floors; calibration does
    /// not move it, so a sustained incident keeps breaching.
    pub breach: bool,
    /// Tail probability of the observation on its side: `max(Student-t tail, the entity's own
    /// past rate of a |z| this large)`; 1 when not scored.
    pub p_value: f64,
    pub expected: f64,
    pub upper: f64,
    pub lower: f64,
}

/// One entity's baseline: 144 bytes inline, plus 144 on the heap with seasonality (1,152 with
/// its weeks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendModel {
    /// Mean and variance of the deseasonalised value.
    level: Ewma,
    /// This entity's past |z| (on the scored side).
    calibration: TailCalibration,
    seasonal: Option<Seasonal>,
}

impl SpendModel {
    pub fn new(params: &SpendParams) -> Self {
        Self {
            level: Ewma::new(),
            calibration: TailCalibration::new(),
            seasonal: params
                .config
                .seasonality
                .then(|| Seasonal::new(params.config.season_weeks)),
        }
    }

    /// Closed windows folded in so far.
    pub fn windows(&self) -> u64 {
        self.level.n
    }

    /// Mean and variance of the deseasonalised value.
    pub fn baseline(&self) -> &Ewma {
        &self.level
    }

    fn season(&self, p: &SpendParams, hour_of_week: u8) -> f64 {
        match &self.seasonal {
            Some(s) => s.factor_from(
                hour_of_week,
                p.config.season_prior_windows,
                p.config.season_min_windows,
            ),
            None => 1.0,
        }
    }

    /// Expected value and sigma of the full window at this hour of the week.
    pub fn moments(&self, p: &SpendParams, hour_of_week: u8) -> (f64, f64) {
        let f = self.season(p, hour_of_week);
        let expected = self.level.mean * f;
        let sigma = (self.level.std() * f).max(p.config.min_sigma_rel * expected.abs());
        (expected, sigma)
    }

    pub fn expectation(&self, p: &SpendParams, hour_of_week: u8) -> Expectation {
        let (expected, sigma) = self.moments(p, hour_of_week);
        let c = &p.config;
        let band = (p.k * sigma)
            .max(c.min_abs_usd)
            .max(c.min_rel_increase * expected.abs());
        Expectation {
            expected,
            upper: expected + band,
            lower: expected - band,
            ready: self.level.n >= u64::from(c.warmup_windows.max(1)),
        }
    }

    /// Judge `observed` for the window at `hour_of_week`, of which `elapsed_fraction` in (0, 1]
    /// has passed (values outside are taken as 1). A partial window is judged only against the
    /// full window's upper bound, as it stands, and never on the low side.
    pub fn assess(
        &self,
        p: &SpendParams,
        observed: f64,
        elapsed_fraction: f64,
        hour_of_week: u8,
    ) -> Assessment {
        let e = self.expectation(p, hour_of_week);
        let partial = elapsed_fraction > 0.0 && elapsed_fraction < 1.0;
        let mut a = Assessment {
            score: 0.0,
            breach: false,
            p_value: 1.0,
            expected: e.expected,
            upper: e.upper,
            lower: e.lower,
        };
        if !e.ready || !observed.is_finite() {
            return a;
        }
        let z = self.z(p, observed, hour_of_week);
        let upward = z >= 0.0;
        if upward || (p.config.two_sided && !partial) {
            let model_p = if upward { p.t.sf(z) } else { p.t.cdf(z) };
            // Per side: in two-sided mode the histogram counts both sides' |z|.
            let seen = self.calibration.tail_fraction(z).unwrap_or(0.0)
                / if p.config.two_sided { 2.0 } else { 1.0 };
            a.p_value = model_p.max(seen).clamp(0.0, 1.0);
            a.score = (1.0 - 2.0 * a.p_value).clamp(0.0, 1.0);
        }
        a.breach = if upward {
            observed > e.upper
        } else {
            p.config.two_sided && !partial && observed < e.lower
        };
        a
    }

    /// Standard score of a full window against the baseline (±inf off a zero spread).
    fn z(&self, p: &SpendParams, observed: f64, hour_of_week: u8) -> f64 {
        let (expected, sigma) = self.moments(p, hour_of_week);
        let d = observed - expected;
        if sigma > 0.0 {
            d / sigma
        } else if d == 0.0 {
            0.0
        } else {
            d.signum() * f64::INFINITY
        }
    }

    /// Fold a closed window's value into the baseline. A window outside the statistical band
    /// (|z| > k, before floors and calibration) counts `anomaly_fold` times a normal one; its
    /// |z| joins the calibration histogram either way.
    pub fn update(&mut self, p: &SpendParams, value: f64, hour_of_week: u8) {
        self.update_weighted(p, value, hour_of_week, 1.0);
    }

    /// [`SpendModel::update`] for a window the caller already doubts (`weight` below 1: a
    /// sustained rise is building on it), learnt at most at that weight, as an anomalous
    /// window is; the seasonal bucket too, even while it is young.
    pub fn update_weighted(&mut self, p: &SpendParams, value: f64, hour_of_week: u8, weight: f64) {
        if !value.is_finite() {
            return;
        }
        let c = &p.config;
        let ready = self.level.n >= u64::from(c.warmup_windows.max(1));
        let doubted = weight.clamp(0.0, 1.0);
        let mut weight = doubted;
        if ready {
            // Anomalous for the baseline = outside the statistical band (k sigma), judged
            // without the calibration: a sustained incident soon looks "routine" to the
            // calibration, and must still not be learnt at full speed.
            let z = self.z(p, value, hour_of_week);
            let scored = if c.two_sided { z.abs() } else { z.max(0.0) };
            if scored > p.k {
                weight = weight.min(c.anomaly_fold);
            }
            self.calibration.observe(scored, p.calibration_alpha);
        }
        let f = self.season(p, hour_of_week);
        let level_before = self.level.mean;
        let deseasonalised = if f > 0.0 { value / f } else { value };
        // While young, equal weights (the running mean), so the first windows are not
        // averaged against the zero the estimate starts from.
        if weight < 1.0 {
            // An anomalous window moves the mean by its full (damped) residual, so a lasting
            // change is learnt in time, but the variance sees the residual clipped at 3 sigma:
            // unclipped, a 10x window at 1/10 weight still widens the band enough in a dozen
            // windows that the rest of the incident looks normal.
            let (m, var) = (self.level.mean, self.level.var);
            let a = (p.alpha * weight).clamp(0.0, 1.0);
            let d = deseasonalised - m;
            let clip = 3.0 * var.sqrt();
            let dc = d.clamp(-clip, clip);
            self.level.mean = m + a * d;
            self.level.var = ((1.0 - a) * (var + a * dc * dc)).max(0.0);
            self.level.n = self.level.n.saturating_add(1);
        } else {
            self.level
                .update(deseasonalised, self.level.young_alpha(p.alpha));
        }
        if let Some(s) = &mut self.seasonal {
            if level_before > 0.0 && self.level.n > 1 {
                let young_weight =
                    s.first_visit_weight(hour_of_week, c.season_min_windows, doubted);
                s.update(
                    hour_of_week,
                    value / level_before,
                    p.season_alpha * weight,
                    young_weight,
                    20.0,
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "spend_tests.rs"]
mod tests;
