//! Unit and property tests of [`super`] (the spend model), kept apart to keep spend.rs short.

use super::*;
use proptest::prelude::*;

fn params(f: impl FnOnce(&mut SpendModelConfig)) -> SpendParams {
    let mut c = SpendModelConfig::default();
    f(&mut c);
    c.validate().unwrap()
}

/// Deterministic noise in [-1, 1).
fn noise(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn trained(p: &SpendParams, level: f64, jitter: f64, windows: usize) -> SpendModel {
    let (mut m, mut seed) = (SpendModel::new(p), 1);
    for _ in 0..windows {
        m.update(p, level + jitter * noise(&mut seed), 0);
    }
    m
}

#[test]
fn sizes() {
    assert_eq!(std::mem::size_of::<SpendModel>(), 144);
    assert_eq!(std::mem::size_of::<Option<Seasonal>>(), 16);
}

#[test]
fn config_defaults_parse_and_bad_values_are_refused() {
    let c: SpendModelConfig = toml::from_str("min_abs_usd = 5.0").unwrap();
    assert_eq!(c.min_abs_usd, 5.0);
    assert_eq!(
        c.half_life_windows,
        SpendModelConfig::default().half_life_windows
    );
    assert!(toml::from_str::<SpendModelConfig>("min_abs = 5.0").is_err());
    let bad = SpendModelConfig {
        tail_probability: 0.7,
        ..Default::default()
    };
    assert_eq!(bad.validate().unwrap_err().field, "tail_probability");
    let bad = SpendModelConfig {
        anomaly_fold: 2.0,
        ..Default::default()
    };
    assert!(bad.validate().is_err());
    let p = SpendModelConfig::default().validate().unwrap();
    // Student-t(4) at 1 - 1e-4.
    assert!((p.k() - 13.034).abs() < 0.01, "{}", p.k());
}

#[test]
fn warm_up_never_breaches() {
    let p = params(|_| {});
    let m = trained(&p, 10.0, 1.0, 29);
    let a = m.assess(&p, 1e6, 1.0, 0);
    assert!(!a.breach && a.score == 0.0 && !m.expectation(&p, 0).ready);
    let m = trained(&p, 10.0, 1.0, 30);
    assert!(m.assess(&p, 1e6, 1.0, 0).breach);
}

#[test]
fn spike_breaches_and_normal_does_not() {
    let p = params(|_| {});
    let m = trained(&p, 10.0, 1.0, 500);
    let e = m.expectation(&p, 0);
    assert!(e.ready && (e.expected - 10.0).abs() < 0.3, "{e:?}");
    let normal = m.assess(&p, 10.5, 1.0, 0);
    assert!(!normal.breach && normal.score < 0.9, "{normal:?}");
    let spike = m.assess(&p, 40.0, 1.0, 0);
    assert!(spike.breach && spike.score > 0.999, "{spike:?}");
    // One-sided: a drop to zero is no spend spike.
    let drop = m.assess(&p, 0.0, 1.0, 0);
    assert!(!drop.breach && drop.score == 0.0, "{drop:?}");
}

#[test]
fn floors_keep_cents_quiet() {
    let p = params(|_| {});
    // 0.2 cents a minute, then 5 cents: 25x, statistically wild, below the 1 USD floor.
    let m = trained(&p, 0.002, 0.0005, 500);
    let a = m.assess(&p, 0.05, 1.0, 0);
    assert!(a.score > 0.99 && !a.breach, "{a:?}");
    assert!(m.expectation(&p, 0).upper >= 1.0);
    // +5 % of a large, perfectly steady spend is below the relative floor.
    let m = trained(&p, 100.0, 0.0, 200);
    assert!(!m.assess(&p, 105.0, 1.0, 0).breach);
    assert!(m.assess(&p, 151.0, 1.0, 0).breach);
}

#[test]
fn early_firing_only_past_the_full_window_bound() {
    let p = params(|_| {});
    let m = trained(&p, 10.0, 1.0, 500);
    let upper = m.expectation(&p, 0).upper;
    // Half the window gone, half the usual spend: no alarm, and no "drop" either.
    assert!(!m.assess(&p, 5.0, 0.5, 0).breach);
    // Half the window gone and already above the full window's bound: fire now.
    assert!(m.assess(&p, upper + 0.01, 0.5, 0).breach);
    // On pace for 2x upper by the end, but not above it yet: wait.
    assert!(!m.assess(&p, upper * 0.9, 0.45, 0).breach);
    // Two-sided: a partial window is never a drop.
    let p2 = params(|c| c.two_sided = true);
    let m2 = trained(&p2, 10.0, 1.0, 500);
    assert!(!m2.assess(&p2, 0.0, 0.5, 0).breach);
    assert!(m2.assess(&p2, -20.0, 1.0, 0).breach);
}

#[test]
fn an_incident_does_not_become_normal_at_once() {
    let p = params(|_| {});
    let mut m = trained(&p, 10.0, 1.0, 500);
    for _ in 0..30 {
        m.update(&p, 100.0, 0);
    }
    // Half an hour of 10x spend (half-life 60 windows) would have moved an undamped
    // baseline to ~33; the damped one is still near 10 and still alarms.
    let e = m.expectation(&p, 0);
    assert!(e.expected < 20.0, "{e:?}");
    assert!(m.assess(&p, 100.0, 1.0, 0).breach);
}

#[test]
fn calibration_quiets_an_entity_that_is_often_wild() {
    // Alternating calm and 10-sigma bursts: after many bursts, a burst is routine.
    let p = params(|c| {
        c.min_abs_usd = 0.0;
        c.min_rel_increase = 0.0;
        c.anomaly_fold = 1.0;
    });
    let (mut m, mut seed) = (SpendModel::new(&p), 9);
    for i in 0..3000 {
        let v = if i % 20 == 0 {
            60.0
        } else {
            10.0 + noise(&mut seed)
        };
        m.update(&p, v, 0);
    }
    // z is about 9 here: Student-t(4) alone would say p ~ 4e-4.
    let a = m.assess(&p, 60.0, 1.0, 0);
    assert!(a.p_value > 5e-3, "{a:?}");
}

#[test]
fn seasonality_expects_the_busy_hour() {
    let p = params(|c| c.seasonality = true);
    let mut m = SpendModel::new(&p);
    // Four weeks of minutes: hour 9 of each day (all weekdays) spends 5x.
    for minute in 0..4 * 7 * 24 * 60u32 {
        let how = ((minute / 60) % 168) as u8;
        let v = if how % 24 == 9 { 50.0 } else { 10.0 };
        m.update(&p, v, how);
    }
    let busy = m.expectation(&p, 9);
    let quiet = m.expectation(&p, 3);
    assert!(busy.expected > 3.0 * quiet.expected, "{busy:?} {quiet:?}");
    assert!(!m.assess(&p, 50.0, 1.0, 9).breach);
    assert!(m.assess(&p, 50.0, 1.0, 3).breach);
}

proptest! {
    #[test]
    fn score_and_bounds_are_well_formed(xs in prop::collection::vec(0.0f64..1e4, 31..120),
                                        obs in -1e5f64..1e5, frac in 0.01f64..=1.0,
                                        how in 0u8..168, seasonal: bool, two: bool) {
        let p = params(|c| { c.seasonality = seasonal; c.two_sided = two; });
        let mut m = SpendModel::new(&p);
        for &x in &xs { m.update(&p, x, how); }
        let e = m.expectation(&p, how);
        let a = m.assess(&p, obs, frac, how);
        prop_assert!((0.0..=1.0).contains(&a.score));
        prop_assert!((0.0..=1.0).contains(&a.p_value));
        prop_assert!(e.lower <= e.expected && e.expected <= e.upper);
        prop_assert!(e.upper - e.expected >= p.config.min_abs_usd);
        if a.breach { prop_assert!(obs > e.upper || (two && frac >= 1.0 && obs < e.lower)); }
        if obs > e.upper { prop_assert!(a.breach); }
    }

    #[test]
    fn higher_spend_is_never_less_anomalous(xs in prop::collection::vec(0.0f64..100.0, 31..100),
                                             a in 0.0f64..1e3, b in 0.0f64..1e3) {
        let p = params(|_| {});
        let mut m = SpendModel::new(&p);
        for &x in &xs { m.update(&p, x, 0); }
        let (lo, hi) = (a.min(b), a.max(b));
        let (sl, sh) = (m.assess(&p, lo, 1.0, 0), m.assess(&p, hi, 1.0, 0));
        prop_assert!(sh.score >= sl.score - 1e-12);
        prop_assert!(sh.breach || !sl.breach);
    }
}
