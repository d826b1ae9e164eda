//! Drawn spend incidents: their figures stay in their ranges and matter under every seed, and a
//! price shift moves a key's requests to a pricier model without changing their rate.

use std::collections::BTreeMap;

use tripline_core::config::SpendSpikeConfig;
use tripline_core::price::PriceTable;

use super::{draws_of, generate, requests_per_min_of, HOUR, MIN};
use crate::catalog::MODELS;
use crate::{standard_scenario, IncidentKind, IncidentPlan, SimConfig, Simulator};

#[test]
fn drawn_spend_figures_stay_in_their_ranges_and_matter() {
    use IncidentKind::*;
    let start = SimConfig::default().start_ms;
    let floor = 2.0 * SpendSpikeConfig::default().impact_usd_per_day;
    assert!(floor >= 10.0, "the brief's $10/day at the default $5/day");
    let mut seen: BTreeMap<IncidentKind, (usize, f64, f64)> = BTreeMap::new();
    let mut moved = 0;
    let mut capped = 0;
    for seed in 0..40 {
        // As `tripline evaluate --hours 8 --rate 10` (40 keys) lays them out.
        let config = SimConfig {
            seed,
            rate_per_s: 10.0,
            keys: 40,
            start_ms: start,
            incidents: standard_scenario(start, 8 * HOUR, 40, seed),
            ..SimConfig::default()
        };
        let sim = Simulator::new(config.clone());
        let truth = sim.ground_truth();
        let draws = draws_of(&sim);
        let shares: Vec<f64> = sim.engine.as_ref().unwrap().key_shares();
        assert_eq!(truth.len(), config.incidents.len());
        for ((plan, i), d) in config.incidents.iter().zip(&truth).zip(&draws) {
            let Some(d) = d else {
                assert!(!plan.kind.is_drawn_spend());
                continue;
            };
            assert!(plan.kind.is_drawn_spend());
            let (lo, hi) = match plan.kind {
                SpendSpikeSmall => (2.0, 8.0),
                SpendSpikeLarge => (8.0, 50.0),
                SpendRamp => (2.0, 10.0),
                _ => (5.0, 200.0),
            };
            let in_range = (lo..=hi).contains(&d.multiple);
            if plan.kind == SpendPriceShift {
                // The drawn ratio is in range; the model taken is the nearest in range, or
                // the catalog's priciest when nothing is 5x pricier (said in the note).
                assert!((lo..=hi).contains(&d.drawn_ratio), "{d:?}");
                let model = d.model.expect("a price shift has its model");
                assert!(i.note.contains(model.name), "{}", i.note);
                if !in_range {
                    capped += 1;
                    assert!(i.note.contains("priciest"), "{}", i.note);
                }
            } else {
                assert!(in_range, "{}: {} outside {lo}-{hi}", plan.kind, d.multiple);
            }
            // The impact: computed again from the key's usual spend.
            let per_day = (d.multiple - 1.0) * d.base_usd_per_min * 1440.0;
            assert!((per_day - d.extra_usd_per_day).abs() <= 1e-9 * per_day.max(1.0));
            assert!(
                d.matters && per_day >= floor,
                "seed {seed}: {} ${per_day:.2}/day < ${floor}: {}",
                plan.kind,
                i.note
            );
            if d.key != d.planned_key {
                moved += 1;
                assert!(shares[d.key] > shares[d.planned_key], "{d:?}");
            }
            assert_eq!(i.key, format!("key-{:04}", d.key));
            let e = seen.entry(plan.kind).or_insert((0, f64::MAX, 0.0));
            *e = (e.0 + 1, e.1.min(d.multiple), e.2.max(d.multiple));
        }
    }
    println!("kind: (incidents, lowest, highest multiple or ratio): {seen:?}");
    println!("{moved} moved to a bigger key, {capped} price shifts at the catalog's priciest");
    // 40 seeds of 8 h: at least 3/2/2/2 each, and the draws spread over their ranges.
    for (kind, want, lo, hi) in [
        (SpendSpikeSmall, 120, 3.0, 5.0),
        (SpendSpikeLarge, 80, 12.0, 30.0),
        (SpendRamp, 80, 3.0, 6.0),
        (SpendPriceShift, 80, 8.0, 12.0),
    ] {
        let (n, min, max) = seen[&kind];
        assert!(n >= want, "{kind}: {n}");
        assert!(min < lo && max > hi, "{kind}: {min:.1}-{max:.1}");
    }
}

#[test]
fn price_shift_changes_the_model_not_the_request_rate() {
    let start = SimConfig::default().start_ms;
    let plan = IncidentPlan {
        kind: IncidentKind::SpendPriceShift,
        offset_ms: 40 * MIN,
        duration_ms: 20 * MIN,
        key: 1,
    };
    let config = SimConfig {
        seed: 11,
        rate_per_s: 6.0,
        keys: 20,
        provider_events: false,
        incidents: vec![plan],
        ..SimConfig::default()
    };
    let run = generate(config, start + 75 * MIN);
    let i = &run.truth[0];
    let d = run.draws[0].as_ref().unwrap();
    let model = d.model.unwrap();
    println!("{}", i.note);
    let of_key: Vec<_> = run
        .gateway
        .iter()
        .filter(|g| g.api_key_id == i.key)
        .collect();
    let on_model = |from: i64, to: i64| {
        let inside: Vec<_> = of_key
            .iter()
            .filter(|g| (from..to).contains(&g.ts_ms))
            .collect();
        let shifted = inside.iter().filter(|g| g.model == model.name).count();
        (shifted, inside.len())
    };
    let (before_on, before) = on_model(i.start_ms - 30 * MIN, i.start_ms);
    let (during_on, during) = on_model(i.start_ms, i.end_ms);
    let (after_on, after) = on_model(i.end_ms + MIN, i.end_ms + 15 * MIN);
    println!(
        "{}: {before_on}/{before} on {} before, {during_on}/{during} during, {after_on}/{after} after",
        i.key, model.name
    );
    // Every request of the key in the window goes to the model, hardly any outside it.
    assert!(during > 100 && during_on == during);
    assert!((before_on as f64) < 0.5 * before as f64);
    assert!((after_on as f64) < 0.5 * after as f64);
    // At the same rate: requests a minute within Poisson noise of the 30 minutes before.
    let rate_before = requests_per_min_of(&run, &i.key, i.start_ms - 30 * MIN, i.start_ms);
    let rate_during = requests_per_min_of(&run, &i.key, i.start_ms, i.end_ms);
    let expected = rate_before * 20.0;
    let noise = 4.0 * expected.sqrt() + 0.1 * expected;
    assert!(
        (rate_during * 20.0 - expected).abs() <= noise,
        "{rate_before:.1} -> {rate_during:.1} requests/min"
    );
    // And the spend goes up by about the ratio the note states.
    let table = PriceTable::builtin();
    let spend = |from: i64, to: i64| -> f64 {
        of_key
            .iter()
            .filter(|g| (from..to).contains(&g.ts_ms))
            .map(|g| super::cost(&table, g))
            .sum::<f64>()
            / ((to - from) / MIN) as f64
    };
    let (usd_before, usd_during) = (
        spend(i.start_ms - 30 * MIN, i.start_ms),
        spend(i.start_ms, i.end_ms),
    );
    println!(
        "${usd_before:.4}/min -> ${usd_during:.4}/min (x{:.1}, {:.1} stated)",
        usd_during / usd_before,
        d.multiple
    );
    assert!(d.multiple >= 5.0 || i.note.contains("priciest"));
    assert!(usd_during / usd_before >= 0.4 * d.multiple);
    assert!(MODELS.iter().any(|m| m.name == model.name));
}
