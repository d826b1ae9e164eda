//! A streaming robust level and spread in 24 bytes.
//!
//! Robust exponential smoothing in the manner of Gelper, Fried & Croux ("Robust forecasting with
//! exponential and Holt-Winters smoothing", J. Forecasting 2010): the level moves by the
//! *clipped* residual (Huber's psi), so one 100x window moves it as far as a 2-sigma window
//! would, and the spread is an exponentially weighted mean absolute deviation of residuals that
//! are themselves clipped, so a spike barely widens the band it is judged against.
//!
//! Why this and not a ring of recent values with an exact median/MAD: the detector keeps one of
//! these per API key (100,000 keys, 2 KB each for all state), and a ring long enough to be
//! stable costs hundreds of bytes and forgets in one ring length; this costs two `f64`s and a
//! counter and forgets smoothly with the same `alpha` as the rest of the model. Why not pure
//! sign updates (stochastic median): with a step proportional to the spread they behave like
//! this with a clip of zero, which jitters around plateaus and learns a level shift no faster.
//!
//! The clip needs a spread to clip with, so the first [`RobustEw::WARMUP`] observations are
//! averaged with equal weights and unclipped; after that a zero spread (a constant series)
//! lets the next residual through unclipped instead of freezing the estimate forever.

use serde::{Deserialize, Serialize};

/// Robust exponentially smoothed level and spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RobustEw {
    /// Robust level (a Huber M-estimate of location, exponentially weighted).
    pub level: f64,
    /// Exponentially weighted mean of clipped absolute residuals; [`RobustEw::sigma`] turns it
    /// into a normal-consistent standard deviation.
    pub mad: f64,
    /// Observations folded in (saturating).
    pub n: u32,
}

impl RobustEw {
    /// Observations averaged with equal weights before clipping starts.
    pub const WARMUP: u32 = 8;
    /// The level follows residuals up to this many sigmas; larger ones count as this many.
    pub const LEVEL_CLIP: f64 = 2.0;
    /// The spread follows absolute residuals up to this many sigmas.
    pub const SCALE_CLIP: f64 = 4.0;
    /// `sigma = MAD_TO_SIGMA * mad` for normal data: 1 / E|Z| = sqrt(pi/2). The clip at 4 sigma
    /// changes E|Z| by less than 1e-4.
    pub const MAD_TO_SIGMA: f64 = 1.253_314_137_315_500_3;

    pub const fn new() -> Self {
        Self {
            level: 0.0,
            mad: 0.0,
            n: 0,
        }
    }

    /// Normal-consistent spread (a standard deviation for Gaussian data).
    pub fn sigma(&self) -> f64 {
        Self::MAD_TO_SIGMA * self.mad
    }

    /// Fold in `x` with weight `alpha` (clamped to `[0, 1]`). Non-finite values are ignored.
    /// During warm-up the weight is at least `1 / n`, so early values count equally.
    pub fn update(&mut self, x: f64, alpha: f64) {
        if !x.is_finite() || !alpha.is_finite() {
            return;
        }
        let alpha = alpha.clamp(0.0, 1.0);
        if self.n == 0 {
            self.level = x;
            self.mad = 0.0;
            self.n = 1;
            return;
        }
        let level = self.level;
        let mad = self.mad;
        let r = x - level;
        let (a, clip) = if self.n < Self::WARMUP {
            (alpha.max(1.0 / f64::from(self.n + 1)), false)
        } else {
            (alpha, mad > 0.0)
        };
        let sigma = Self::MAD_TO_SIGMA * mad;
        let (r_level, abs_r_scale) = if clip {
            let b = Self::LEVEL_CLIP * sigma;
            (r.clamp(-b, b), r.abs().min(Self::SCALE_CLIP * sigma))
        } else {
            (r, r.abs())
        };
        // The scale tracks the residual against the level *before* this value moved it, the
        // same quantity a forecast is judged by.
        self.level = level + a * r_level;
        self.mad = (mad + a * (abs_r_scale - mad)).max(0.0);
        self.n = self.n.saturating_add(1);
    }

    /// Robust standard score of `x`; `±inf` for a move off a zero spread, 0 before any data.
    pub fn z(&self, x: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let d = x - self.level;
        let s = self.sigma();
        if s > 0.0 {
            d / s
        } else if d == 0.0 {
            0.0
        } else {
            d.signum() * f64::INFINITY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic stand-in for N(0, 1) noise: the sum of 12 uniforms minus 6.
    fn noise(seed: &mut u64) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s += (*seed >> 11) as f64 / (1u64 << 53) as f64;
        }
        s - 6.0
    }

    #[test]
    fn estimates_gaussian_level_and_sigma() {
        let (mut r, mut seed) = (RobustEw::new(), 7);
        for _ in 0..20_000 {
            r.update(100.0 + 5.0 * noise(&mut seed), 0.01);
        }
        assert!((r.level - 100.0).abs() < 1.0, "{r:?}");
        assert!((r.sigma() - 5.0).abs() < 0.6, "{r:?}");
    }

    #[test]
    fn spikes_barely_move_it() {
        let (mut r, mut seed) = (RobustEw::new(), 3);
        for _ in 0..2_000 {
            r.update(10.0 + noise(&mut seed), 0.02);
        }
        let before = r;
        for _ in 0..3 {
            r.update(10_000.0, 0.02);
        }
        assert!(r.level - before.level < 0.2, "{before:?} -> {r:?}");
        // Three 1,000x windows widen the band by about a quarter (each counts as 4 sigma).
        assert!(r.sigma() < before.sigma() * 1.35, "{before:?} -> {r:?}");
    }

    #[test]
    fn learns_a_level_shift() {
        let (mut r, mut seed) = (RobustEw::new(), 5);
        for _ in 0..1_000 {
            r.update(noise(&mut seed), 0.05);
        }
        for _ in 0..400 {
            r.update(50.0 + noise(&mut seed), 0.05);
        }
        assert!((r.level - 50.0).abs() < 1.0, "{r:?}");
    }

    #[test]
    fn a_constant_series_that_starts_moving_is_not_frozen() {
        let mut r = RobustEw::new();
        for _ in 0..100 {
            r.update(0.0, 0.1);
        }
        assert_eq!((r.level, r.mad), (0.0, 0.0));
        assert_eq!(r.z(1.0), f64::INFINITY);
        r.update(10.0, 0.1);
        assert!(r.level > 0.0 && r.mad > 0.0, "{r:?}");
    }

    #[test]
    fn non_finite_is_ignored() {
        let mut r = RobustEw::new();
        r.update(1.0, 0.1);
        r.update(f64::NAN, 0.1);
        r.update(f64::NEG_INFINITY, 0.1);
        assert_eq!((r.level, r.n), (1.0, 1));
        assert_eq!(std::mem::size_of::<RobustEw>(), 24);
    }

    proptest! {
        #[test]
        fn constant_input(x in -1e6f64..1e6, alpha in 0.001f64..1.0, n in 1usize..100) {
            let mut r = RobustEw::new();
            for _ in 0..n { r.update(x, alpha); }
            prop_assert_eq!(r.level, x);
            prop_assert_eq!(r.mad, 0.0);
        }

        #[test]
        fn level_within_inputs_and_spread_bounded(xs in prop::collection::vec(-1e6f64..1e6, 1..200),
                                                  alpha in 0.0f64..=1.0) {
            let mut r = RobustEw::new();
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &x in &xs {
                r.update(x, alpha);
                lo = lo.min(x);
                hi = hi.max(x);
                let slack = 1e-6 * (1.0 + lo.abs().max(hi.abs()));
                let l = r.level;
                prop_assert!(l >= lo - slack && l <= hi + slack, "{l} not in [{lo}, {hi}]");
                prop_assert!(r.mad >= 0.0);
                prop_assert!(r.mad <= (hi - lo) + slack);
            }
        }

        #[test]
        fn scale_equivariant(xs in prop::collection::vec(-1e3f64..1e3, 1..100),
                             alpha in 0.01f64..1.0, c in 0.01f64..100.0) {
            let (mut r, mut s) = (RobustEw::new(), RobustEw::new());
            for &x in &xs {
                r.update(x, alpha);
                s.update(c * x, alpha);
            }
            let tol = 1e-9 * c * (1.0 + 1e3);
            prop_assert!((s.level - c * r.level).abs() <= tol);
            prop_assert!((s.sigma() - c * r.sigma()).abs() <= tol);
        }
    }
}
