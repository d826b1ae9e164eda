//! Daily (and optionally weekly) seasonality: 24 hour-of-day multiplicative factors, and 168
//! hour-of-week ones over them, learned Holt-Winters style.
//!
//! LLM traffic follows office hours and weekdays, so "3x the last hour" at 09:00 Monday is
//! normal and at 03:00 Sunday it is not. Each of the 168 hours of the week keeps an
//! exponentially weighted factor `value / deseasonalised level`, so the model's level stays
//! the week's typical rate and `expected = level * factor(hour)`.
//!
//! Why shrinkage: a bucket learns only from its own hour, once a week. A new key has one or
//! two observations in most buckets, and a factor from one noisy hour would make the first
//! busy Monday look like an attack (or hide one). So the factors form a small hierarchy, each
//! level an empirical-Bayes mean with `prior` pseudo-windows at the level above:
//!
//! ```text
//! day(h)  = (n_h * f_h + prior * 1)       / (n_h + prior)    24 hour-of-day buckets
//! week(w) = (n_w * f_w + prior * day(h))  / (n_w + prior)    168 hour-of-week buckets, h = w % 24
//! ```
//!
//! The hour-of-day layer learns the daily shape in one day (most usage has one), the
//! hour-of-week layer adds weekday/weekend differences as weeks of evidence accumulate, and
//! with no evidence at all the factor is 1, the global level. Measured on the NAB development
//! split (5-minute series of one to eight weeks, see core/examples/nab.rs): 59.0 Standard with
//! this hierarchy at prior 3, 49.5 without seasonality, 49.1 with prior 30.
//!
//! The hour-of-week layer is optional (`season_weeks`): it needs weeks of history to say
//! anything, and costs seven times the memory of the daily one. Without it the factor is the
//! hour-of-day one.
//!
//! Memory: a `f32` factor and a `u16` count per bucket, 144 bytes for the day's 24 and 1,008
//! for the week's 168, allocated only for entities whose config enables seasonality. `f32` is
//! ample for a factor.

/// Hours in a week; the number of buckets.
pub const HOURS_PER_WEEK: usize = 168;

/// The hour of the week (0 = Monday 00:00-00:59 UTC, 167 = Sunday 23:00) of a Unix time in
/// milliseconds. Before 1970 works too (Euclidean division).
pub fn hour_of_week(ts_ms: i64) -> u8 {
    const HOUR_MS: i64 = 3_600_000;
    let hours = ts_ms.div_euclid(HOUR_MS);
    // 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week.
    (hours + 72).rem_euclid(HOURS_PER_WEEK as i64) as u8
}

/// Per-hour multiplicative factors with evidence counts: 24 hour-of-day buckets (144 bytes
/// on the heap) and, when weeks are learnt too, 168 hour-of-week ones (1,008 more), each layer
/// behind a thin pointer.
#[derive(Debug, Clone, PartialEq)]
pub struct Seasonal {
    day: Box<Layer<24>>,
    week: Option<Box<Layer<HOURS_PER_WEEK>>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Layer<const N: usize> {
    factor: [f32; N],
    count: [u16; N],
}

impl<const N: usize> Layer<N> {
    fn new() -> Box<Self> {
        Box::new(Layer {
            factor: [1.0; N],
            count: [0; N],
        })
    }

    /// Folds `ratio` into bucket `i` (see [`Seasonal::update`]).
    fn fold(&mut self, i: usize, ratio: f64, alpha: f64, young_weight: f64) {
        let n = &mut self.count[i];
        let f = &mut self.factor[i];
        let a = alpha.max(young_weight / (f64::from(*n) + 1.0));
        *f = (f64::from(*f) + a * (ratio - f64::from(*f))) as f32;
        *n = n.saturating_add(1);
    }
}

impl Default for Seasonal {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Seasonal {
    /// Every factor 1 with no evidence; hour-of-week buckets only with `weeks`.
    pub fn new(weeks: bool) -> Self {
        Self {
            day: Layer::new(),
            week: weeks.then(Layer::new),
        }
    }

    /// Bytes on the heap: the hour-of-day layer, and the hour-of-week one when learnt.
    pub const DAY_HEAP_BYTES: usize = std::mem::size_of::<Layer<24>>();
    pub const WEEK_HEAP_BYTES: usize = std::mem::size_of::<Layer<HOURS_PER_WEEK>>();

    fn bucket(hour_of_week: u8) -> usize {
        usize::from(hour_of_week) % HOURS_PER_WEEK
    }

    /// Updates folded into this hour's bucket (saturating at `u16::MAX`): its hour of the week
    /// when weeks are learnt, else its hour of the day.
    pub fn count(&self, hour_of_week: u8) -> u16 {
        let w = Self::bucket(hour_of_week);
        match &self.week {
            Some(week) => week.count[w],
            None => self.day.count[w % 24],
        }
    }

    /// The raw (unshrunk) factor of this hour (of the week, or of the day).
    pub fn raw_factor(&self, hour_of_week: u8) -> f64 {
        let w = Self::bucket(hour_of_week);
        f64::from(match &self.week {
            Some(week) => week.factor[w],
            None => self.day.factor[w % 24],
        })
    }

    /// The factor to multiply the deseasonalised level by: the hour-of-week bucket shrunk
    /// toward the hour-of-day bucket, itself shrunk toward 1, each with `prior_windows`
    /// pseudo-observations (0 = trust a bucket fully once it has data).
    pub fn factor(&self, hour_of_week: u8, prior_windows: f64) -> f64 {
        self.factor_from(hour_of_week, prior_windows, 0)
    }

    /// [`Seasonal::factor`], counting a bucket only once it holds `min_windows` windows: a whole
    /// visit of its hour (60 one-minute windows), so that the hour being lived for the first
    /// time is not also the hour's shape. Learnt while it is being lived, a young bucket would
    /// follow its last minutes like a second, faster level, and an incident in them would
    /// raise its own expectation.
    pub fn factor_from(&self, hour_of_week: u8, prior_windows: f64, min_windows: u16) -> f64 {
        let w = Self::bucket(hour_of_week);
        let d = w % 24;
        let prior = prior_windows.max(0.0);
        let shrink = |n: u16, f: f32, toward: f64| {
            let n = if n < min_windows { 0.0 } else { f64::from(n) };
            if n + prior <= 0.0 {
                toward
            } else {
                (n * f64::from(f) + prior * toward) / (n + prior)
            }
        };
        let day = shrink(self.day.count[d], self.day.factor[d], 1.0);
        match &self.week {
            Some(week) => shrink(week.count[w], week.factor[w], day),
            None => day,
        }
    }

    /// The `young_weight` to learn a window the caller doubts (`doubted`, below 1) at: in full
    /// while this hour's bucket has not held `min_windows` yet. Until then
    /// [`Seasonal::factor_from`] does not use the bucket, so learning the hour's first whole
    /// visit in full cannot hide anything in it; learnt at a tenth, a key whose working day is
    /// a x10 surge would be judged against a fraction of it every day after, and page daily.
    pub fn first_visit_weight(&self, hour_of_week: u8, min_windows: u16, doubted: f64) -> f64 {
        if self.count(hour_of_week) < min_windows {
            1.0
        } else {
            doubted
        }
    }

    /// Fold `ratio = value / deseasonalised level` into this hour's factors with weight `alpha`
    /// (at least `young_weight / n` while a bucket is young, so early windows count equally;
    /// `young_weight` below 1 for a window the caller doubts, so that a young bucket does not
    /// learn an incident as the hour's shape). Ratios are capped at `max_ratio` so one extreme
    /// window cannot own a bucket; non-finite or negative ratios are ignored.
    pub fn update(
        &mut self,
        hour_of_week: u8,
        ratio: f64,
        alpha: f64,
        young_weight: f64,
        max_ratio: f64,
    ) {
        if !ratio.is_finite() || ratio < 0.0 || !alpha.is_finite() {
            return;
        }
        let w = Self::bucket(hour_of_week);
        let ratio = ratio.min(max_ratio.max(0.0));
        let alpha = alpha.clamp(0.0, 1.0);
        let young_weight = young_weight.clamp(0.0, 1.0);
        if let Some(week) = &mut self.week {
            week.fold(w, ratio, alpha, young_weight);
        }
        self.day.fold(w % 24, ratio, alpha, young_weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hour_of_week_of_known_dates() {
        assert_eq!(hour_of_week(0), 72); // Thursday 1970-01-01 00:00
                                         // Monday 2024-01-01 00:00 UTC and 13:30 the same day.
        assert_eq!(hour_of_week(1_704_067_200_000), 0);
        assert_eq!(
            hour_of_week(1_704_067_200_000 + 13 * 3_600_000 + 1_800_000),
            13
        );
        // Sunday 2023-12-31 23:59:59.
        assert_eq!(hour_of_week(1_704_067_199_000), 167);
        assert_eq!(hour_of_week(-1), 71);
    }

    #[test]
    fn young_buckets_shrink_toward_the_level_above() {
        let mut s = Seasonal::new(true);
        assert_eq!(s.factor(10, 5.0), 1.0);
        s.update(10, 3.0, 0.1, 1.0, 100.0);
        assert_eq!(s.raw_factor(10), 3.0);
        // Hour of day: one window against five pseudo-windows at 1; hour of week: one window
        // against five pseudo-windows at the hour-of-day factor.
        let day = (3.0 + 5.0) / 6.0;
        assert!((s.factor(10, 5.0) - (3.0 + 5.0 * day) / 6.0).abs() < 1e-6);
        // The same hour on another day of the week has only the hour-of-day evidence.
        assert!((s.factor(34, 5.0) - day).abs() < 1e-6);
        assert_eq!(s.factor(11, 5.0), 1.0);
        for _ in 0..1000 {
            s.update(10, 3.0, 0.1, 1.0, 100.0);
        }
        assert!((s.factor(10, 5.0) - 3.0).abs() < 0.02);
        assert_eq!(s.factor(10 + 168, 0.0), s.factor(10, 0.0));
        // Counted from a whole visit of the hour only: 1,001 windows here, none at 11.
        assert_eq!(s.factor_from(10, 5.0, 1002), 1.0);
        assert_eq!(s.factor_from(10, 5.0, 1001), s.factor(10, 5.0));
    }

    #[test]
    fn extreme_and_bad_ratios_are_contained() {
        let mut s = Seasonal::new(true);
        s.update(0, 1e12, 0.1, 1.0, 20.0);
        assert_eq!(s.raw_factor(0), 20.0);
        s.update(1, f64::NAN, 0.1, 1.0, 20.0);
        s.update(1, -1.0, 0.1, 1.0, 20.0);
        assert_eq!(s.count(1), 0);
        assert_eq!(Seasonal::DAY_HEAP_BYTES + Seasonal::WEEK_HEAP_BYTES, 1152);
        assert_eq!(Seasonal::DAY_HEAP_BYTES, 144);
        assert_eq!(std::mem::size_of::<Option<Seasonal>>(), 16);
    }

    proptest! {
        #[test]
        fn factor_between_one_and_raw(ratios in prop::collection::vec(0.0f64..50.0, 1..50),
                                      prior in 0.0f64..100.0, how in 0u8..168) {
            let mut s = Seasonal::new(true);
            for &r in &ratios { s.update(how, r, 0.2, 1.0, 100.0); }
            let (raw, f) = (s.raw_factor(how), s.factor(how, prior));
            let (lo, hi) = (raw.min(1.0), raw.max(1.0));
            prop_assert!(f >= lo - 1e-9 && f <= hi + 1e-9, "{f} not between 1 and {raw}");
            let (min, max) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &r| (a.min(r), b.max(r)));
            prop_assert!(raw >= min * (1.0 - 1e-6) - 1e-6 && raw <= max * (1.0 + 1e-6) + 1e-6);
        }

        #[test]
        fn hour_of_week_advances_by_one_per_hour(ts in -4_000_000_000_000i64..4_000_000_000_000) {
            let h = hour_of_week(ts);
            prop_assert!(usize::from(h) < HOURS_PER_WEEK);
            prop_assert_eq!(hour_of_week(ts + 3_600_000), ((usize::from(h) + 1) % HOURS_PER_WEEK) as u8);
            prop_assert_eq!(hour_of_week(ts + 7 * 24 * 3_600_000), h);
        }
    }
}
