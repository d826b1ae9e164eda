//! Exponentially weighted mean and variance.
//!
//! The incremental form of West (1979) as written by Finch ("Incremental calculation of weighted
//! mean and variance", 2009, eq. 143-144):
//!
//! ```text
//! d    = x - mean
//! mean = mean + alpha * d
//! var  = (1 - alpha) * (var + alpha * d * d)
//! ```
//!
//! Why this form: it never subtracts two large sums (the `E[x²] - E[x]²` form cancels
//! catastrophically when the mean is large against the spread: spend of 1,000.00 USD/min that
//! moves by cents), `mean` is always a convex combination of the inputs, and `var` stays `>= 0`
//! by construction. One `f64` each for mean and variance and a counter: 24 bytes.

use serde::{Deserialize, Serialize};

/// `alpha` for a memory of `half_life` updates: an observation's weight halves after
/// `half_life` later updates. `half_life <= 0` (or NaN) means "no memory" (alpha = 1).
pub fn alpha_from_half_life(half_life: f64) -> f64 {
    if half_life.is_nan() || half_life <= 0.0 {
        return 1.0;
    }
    // 1 - 2^(-1/h), written with exp_m1 so that long half-lives keep their precision.
    -(-std::f64::consts::LN_2 / half_life).exp_m1()
}

/// Exponentially weighted mean and variance of a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Exponentially weighted mean (the first observation until a second arrives).
    pub mean: f64,
    /// Exponentially weighted (population) variance around `mean`; `>= 0`.
    pub var: f64,
    /// Number of observations folded in (saturating).
    pub n: u64,
}

impl Ewma {
    /// An empty estimate: `n == 0`, mean and variance 0.
    pub const fn new() -> Self {
        Self {
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    /// `alpha`, or the running mean's weight for the next observation while that is more: the
    /// first windows then count equally, not as an average anchored at the first one.
    pub fn young_alpha(&self, alpha: f64) -> f64 {
        alpha.max(1.0 / (self.n as f64 + 1.0))
    }

    /// The weight to learn a window at that the caller trusts `weight` of (1 for an ordinary
    /// window, less for a doubted one, e.g. while evidence of an incident is building): an
    /// ordinary one at [`Ewma::young_alpha`], a doubted one at `alpha * weight` only, so that a
    /// possible incident is not learnt at the running mean's pace while the estimate is young.
    pub fn learning_alpha(&self, alpha: f64, weight: f64) -> f64 {
        if weight < 1.0 {
            alpha * weight
        } else {
            self.young_alpha(alpha)
        }
    }

    /// Fold in `x` with weight `alpha` (clamped to `[0, 1]`; 1 forgets everything before `x`).
    /// The first observation sets the mean outright, so the estimate is not biased toward the
    /// zero it starts from. A non-finite `x` or `alpha` is ignored: one corrupt rollup row must
    /// not poison a baseline forever.
    pub fn update(&mut self, x: f64, alpha: f64) {
        if !x.is_finite() || !alpha.is_finite() {
            return;
        }
        let alpha = alpha.clamp(0.0, 1.0);
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            let incr = alpha * d;
            // Clamp: rounding may step a hair outside [mean, x]; the mean must stay a convex
            // combination of what was seen.
            let m = self.mean + incr;
            self.mean = if d >= 0.0 {
                m.clamp(self.mean, x)
            } else {
                m.clamp(x, self.mean)
            };
            self.var = ((1.0 - alpha) * (self.var + d * incr)).max(0.0);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Standard deviation, `sqrt(var)`.
    pub fn std(&self) -> f64 {
        self.var.sqrt()
    }

    /// Standard score of `x` against this estimate. With zero spread: 0 at the mean, and
    /// `±inf` away from it (a constant series that moves is as surprising as it gets). 0 before
    /// the first observation.
    pub fn z(&self, x: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let d = x - self.mean;
        let s = self.std();
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

    #[test]
    fn half_life_gives_half_weight() {
        let a = alpha_from_half_life(10.0);
        assert!(((1.0 - a).powi(10) - 0.5).abs() < 1e-12);
        assert_eq!(alpha_from_half_life(0.0), 1.0);
        assert_eq!(alpha_from_half_life(f64::NAN), 1.0);
    }

    #[test]
    fn first_value_sets_mean() {
        let mut e = Ewma::new();
        e.update(42.0, 0.1);
        assert_eq!((e.mean, e.var, e.n), (42.0, 0.0, 1));
        assert_eq!(e.z(42.0), 0.0);
        assert_eq!(e.z(43.0), f64::INFINITY);
        assert_eq!(Ewma::new().z(5.0), 0.0);
    }

    #[test]
    fn converges_to_stationary_moments() {
        // Alternating 0/2: mean 1, population variance 1.
        let mut e = Ewma::new();
        for i in 0..10_000 {
            e.update(if i % 2 == 0 { 0.0 } else { 2.0 }, 0.01);
        }
        assert!((e.mean - 1.0).abs() < 0.02, "{e:?}");
        assert!((e.var - 1.0).abs() < 0.03, "{e:?}");
        assert!((e.z(3.0) - 2.0).abs() < 0.1);
    }

    #[test]
    fn large_offset_keeps_small_variance() {
        // The naive E[x²]-E[x]² form loses every digit here.
        let mut e = Ewma::new();
        for i in 0..1000 {
            e.update(1e9 + if i % 2 == 0 { -0.01 } else { 0.01 }, 0.05);
        }
        assert!((e.std() - 0.01).abs() < 0.002, "{e:?}");
    }

    #[test]
    fn non_finite_input_is_ignored() {
        let mut e = Ewma::new();
        e.update(1.0, 0.5);
        e.update(f64::NAN, 0.5);
        e.update(f64::INFINITY, 0.5);
        e.update(2.0, f64::NAN);
        assert_eq!((e.mean, e.n), (1.0, 1));
    }

    proptest! {
        #[test]
        fn constant_input_has_zero_variance(x in -1e12f64..1e12, alpha in 0.001f64..1.0, n in 1usize..200) {
            let mut e = Ewma::new();
            for _ in 0..n { e.update(x, alpha); }
            prop_assert_eq!(e.mean, x);
            prop_assert_eq!(e.var, 0.0);
            prop_assert_eq!(e.n, n as u64);
        }

        #[test]
        fn mean_is_bounded_by_inputs(xs in prop::collection::vec(-1e9f64..1e9, 1..200), alpha in 0.0f64..=1.0) {
            let mut e = Ewma::new();
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &x in &xs {
                e.update(x, alpha);
                lo = lo.min(x);
                hi = hi.max(x);
                prop_assert!(e.mean >= lo && e.mean <= hi, "{} not in [{lo}, {hi}]", e.mean);
                prop_assert!(e.var >= 0.0);
                // The variance of values in [lo, hi] is at most (hi-lo)²/4.
                prop_assert!(e.var <= (hi - lo).powi(2) / 4.0 * (1.0 + 1e-9) + 1e-9);
            }
        }

        #[test]
        fn scale_and_shift_equivariant(xs in prop::collection::vec(-1e6f64..1e6, 1..100),
                                       alpha in 0.01f64..1.0, c in 0.001f64..1000.0, b in -1e6f64..1e6) {
            let (mut e, mut f) = (Ewma::new(), Ewma::new());
            for &x in &xs {
                e.update(x, alpha);
                f.update(c * x + b, alpha);
            }
            let tol = 1e-7 * (1.0 + c * e.mean.abs() + b.abs() + c * 2e6);
            prop_assert!((f.mean - (c * e.mean + b)).abs() <= tol, "{} vs {}", f.mean, c * e.mean + b);
            prop_assert!((f.std() - c * e.std()).abs() <= tol, "{} vs {}", f.std(), c * e.std());
        }
    }
}
