//! The sustained-evidence rule's tests: unit cases and properties.

use super::*;
use proptest::prelude::*;

const MINUTES_PER_DAY: f64 = 1440.0;

fn run(cusum: Cusum, values: &[f64], expected: f64, sigma: f64) -> Cusum {
    let config = SustainedConfig::default();
    values
        .iter()
        .fold(cusum, |c, &x| c.step(x, expected, sigma, &config))
}

/// Half an hour of x20 piles up no credit: seven ordinary windows later the evidence is
/// below the alarm, and the run ends soon after.
#[test]
fn a_long_incident_drains_within_a_few_windows() {
    let config = SustainedConfig::default();
    let mut c = run(Cusum::default(), &[0.08; 30], 0.004, 0.004);
    assert!(c.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    for _ in 0..7 {
        c = c.step(0.004, 0.004, 0.004, &config);
    }
    assert!(c.sum < config.threshold, "{c:?}");
    for _ in 0..15 {
        c = c.step(0.004, 0.004, 0.004, &config);
    }
    assert_eq!(c, Cusum::default());
}

/// A key spending $0.004 a minute, noisy (sigma $0.004), goes x3: certain within minutes,
/// and worth telling (+$11.50 a day) over a $10-a-day floor.
#[test]
fn a_tripled_small_key_alarms_within_minutes() {
    let config = SustainedConfig::default();
    let mut c = Cusum::default();
    let mut minutes = 0;
    while !c.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run) {
        c = c.step(0.012, 0.004, 0.004, &config);
        minutes += 1;
        assert!(minutes < 10, "{c:?}");
    }
    assert!(minutes <= 6, "{minutes} minutes");
    assert!((c.ratio() - 3.0).abs() < 1e-9);
}

/// x20 on a key: four minutes of evidence, whatever the size of the first ones.
#[test]
fn one_wild_window_is_never_enough() {
    let config = SustainedConfig::default();
    let wild = Cusum::default().step(100.0, 0.004, 0.004, &config);
    assert!(
        !wild.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run),
        "{wild:?}"
    );
    let twice = wild.step(100.0, 0.004, 0.004, &config);
    assert!(
        !twice.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run),
        "{twice:?}"
    );
    let thrice = twice.step(100.0, 0.004, 0.004, &config);
    assert!(
        !thrice.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run),
        "{thrice:?}"
    );
    let four = thrice.step(100.0, 0.004, 0.004, &config);
    assert!(four.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
}

/// A few slightly busy windows, then one wild one: evidence enough, but without the wild
/// window the run is x1.6, not the key's x2.
#[test]
fn no_single_window_carries_the_case() {
    let config = SustainedConfig::default();
    let c = run(
        Cusum::default(),
        &[
            0.0065, 0.0065, 0.0065, 0.0065, 0.0065, 0.0065, 0.0065, 0.0065, 0.09,
        ],
        0.004,
        0.002,
    );
    assert!(c.sum >= config.threshold, "{c:?}");
    assert!(c.ratio() > 2.0);
    assert!(
        !c.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run),
        "{c:?}"
    );
}

/// A x2.2 whose run has lasted an hour is usage drifting, not a spike, however soon it was
/// certain (the ratio needed grows with the run's length); the same ratio over a quarter of
/// an hour is a spike.
#[test]
fn a_slow_drift_needs_a_larger_ratio_than_a_quick_rise() {
    let config = SustainedConfig::default();
    let quick = run(Cusum::default(), &[0.0088; 15], 0.004, 0.002);
    assert!(
        quick.alarm(&config, MINUTES_PER_DAY, 5.0, Judged::Run),
        "{quick:?}"
    );
    let slow = run(Cusum::default(), &[0.0088; 60], 0.004, 0.002);
    assert!(slow.sum >= config.threshold);
    assert!(
        !slow.alarm(&config, MINUTES_PER_DAY, 5.0, Judged::Run),
        "{slow:?}"
    );
    // Judged by its recent windows, it is the same x2.2: still short of x3.5.
    assert!(
        !slow.alarm(&config, MINUTES_PER_DAY, 5.0, Judged::Recent),
        "{slow:?}"
    );
    assert!((slow.ratio_needed(&config) - 2.0 * 3f64.sqrt()).abs() < 1e-9);
}

/// A ramp from x1.2 to x4 over 40 windows: its average since it began lags behind the
/// ratio its length asks for, so judged on the whole run it never pages; judged by where it
/// stands now (its recent windows) it does, before its end.
#[test]
fn a_ramp_is_judged_by_where_it_stands_now() {
    let config = SustainedConfig::default();
    let ramp: Vec<f64> = (0..40).map(|i| 1.2 + 2.8 * f64::from(i) / 39.0).collect();
    let mut c = Cusum::default();
    let mut first = [None, None];
    for (i, &x) in ramp.iter().enumerate() {
        c = c.step(x, 1.0, 0.3, &config);
        for (slot, by) in first.iter_mut().zip([Judged::Run, Judged::Recent]) {
            if slot.is_none() && c.alarm(&config, MINUTES_PER_DAY, 10.0, by) {
                *slot = Some(i);
            }
        }
    }
    assert_eq!(first[0], None, "{c:?}");
    let at = first[1].expect("the recent windows page");
    assert!(at + 1 > config.drift_windows as usize && at < 39, "{at}");
    // Its recent level is about where the ramp stood over its last windows.
    let level = c.level(&config, Judged::Recent);
    assert!(level.ratio > 3.0 && level.ratio < 4.0, "{level:?}");
    assert!((level.ratio - level.observed / level.expected).abs() < 1e-9);
}

/// Half the evidence, over as many windows as the full alarm takes at the least: four
/// windows at x2.6 on an entity whose spread is its level, which the full alarm does not
/// page on; never fewer windows however wild, nor a run under `min_ratio`.
#[test]
fn half_an_alarm_takes_half_the_evidence_at_the_least_ratio() {
    let config = SustainedConfig::default();
    let four = run(Cusum::default(), &[2.6; 4], 1.0, 1.0);
    assert!(four.half_alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    assert!(!four.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    let three = run(Cusum::default(), &[100.0; 3], 1.0, 0.3);
    assert!(!three.half_alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    let mild = run(Cusum::default(), &[1.8; 10], 1.0, 0.1);
    assert!(mild.sum >= config.threshold, "{mild:?}");
    assert!(!mild.half_alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    // A ramp of an hour is judged at the least ratio, not the one its length asks for.
    let ramp: Vec<f64> = (0..40).map(|i| 1.2 + 1.3 * f64::from(i) / 39.0).collect();
    let slow = run(Cusum::default(), &ramp, 1.0, 0.3);
    assert!(slow.half_alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Recent));
    assert!(!slow.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Recent));
}

/// The recent level of a steady run is its value per window, its largest window left out.
#[test]
fn the_recent_level_is_per_window_without_the_largest() {
    let config = SustainedConfig::default();
    let mut values = vec![3.0; 30];
    values[25] = 50.0;
    let c = run(Cusum::default(), &values, 1.0, 0.3);
    let level = c.level(&config, Judged::Recent);
    assert!((level.observed - 3.0).abs() < 1e-9, "{level:?}");
    assert!((level.expected - 1.0).abs() < 1e-9, "{level:?}");
    // A short run is judged on all of it, recent or not.
    let short = run(Cusum::default(), &values[..10], 1.0, 0.3);
    assert_eq!(
        short.level(&config, Judged::Recent),
        short.level(&config, Judged::Run)
    );
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
    assert!(!tiny.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
    // +20 % on a key of $5 a minute with a tight history: certain, large, but not x2.
    let drift = run(Cusum::default(), &[6.0; 20], 5.0, 0.1);
    assert!(drift.sum >= config.threshold);
    assert!(!drift.alarm(&config, MINUTES_PER_DAY, 10.0, Judged::Run));
}

#[test]
fn nothing_expected_and_something_spent_is_an_infinite_ratio() {
    let c = run(Cusum::default(), &[1.0; 4], 0.0, 0.0);
    assert!(c.ratio().is_infinite());
    assert!(c.alarm(
        &SustainedConfig::default(),
        MINUTES_PER_DAY,
        10.0,
        Judged::Run
    ));
}

/// Steady minutes scattered around the expectation leave the sigma as it is; minutes that
/// come in runs (busy for ten, quiet for ten) widen it by about the root of their run length.
#[test]
fn bursts_in_runs_widen_the_sigma_and_steady_noise_does_not() {
    let config = SustainedConfig::default();
    let mut steady = Dispersion::default();
    let mut bursty = Dispersion::default();
    for i in 0..600 {
        // Alternating +-1 sigma: blocks sum to 0.
        let alternating = if i % 2 == 0 { 1.1 } else { 0.9 };
        steady.observe(alternating, 1.0, 0.1, &config);
        // Ten minutes at +1 sigma, then ten at -1.
        let run = if i % 20 < 10 { 1.1 } else { 0.9 };
        bursty.observe(run, 1.0, 0.1, &config);
    }
    assert_eq!(steady.widening(), 1.0, "{steady:?}");
    // Each block is +-10 sigmas of deviation over a variance of 10 sigma^2: ratio 10.
    assert!(
        (bursty.widening() - 10f64.sqrt()).abs() < 1e-6,
        "{bursty:?}"
    );
}

/// One wild block (an incident) widens the sigma for a while, not for ever, and by a
/// bounded amount.
#[test]
fn an_incident_block_fades() {
    let config = SustainedConfig::default();
    let mut d = Dispersion::default();
    let feed = |d: &mut Dispersion, value: f64, windows: usize| {
        for i in 0..windows {
            let v = if i % 2 == 0 { 1.0 + value } else { 1.0 - value };
            d.observe(v, 1.0, 0.1, &config);
        }
    };
    feed(&mut d, 0.1, 1440);
    for _ in 0..30 {
        d.observe(100.0, 1.0, 0.1, &config);
    }
    let after = d.widening();
    assert!(after > 1.0 && after < 2.0, "{d:?}");
    feed(&mut d, 0.1, 2880);
    assert!(d.widening() < 1.1, "{d:?}");
}

#[test]
fn evidence_is_seventy_two_bytes() {
    assert_eq!(std::mem::size_of::<Cusum>(), 72);
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
            prop_assert!(!c.alarm(&config, MINUTES_PER_DAY, 0.0, Judged::Run), "{:?}", c);
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
