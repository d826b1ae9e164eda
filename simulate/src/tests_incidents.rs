//! Incidents: the standard scenario's layout, the ground truth, determinism, the incident tables,
//! and (in `signatures`) each kind's signature in the generated events. Most tests share one run of the standard scenario (6 h at 6 requests/s,
//! which holds every kind); measured values are printed (`--nocapture`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use tripline_core::event::ValidationRules;
use tripline_core::event::{decode_gateway, decode_provider, GatewayRequest, ProviderAttempt};
use tripline_core::price::PriceTable;

use crate::catalog::{CLOUD_BLOCKS, HOSTING_POOLS};
use crate::resolve::SpendDraw;
use crate::{
    demo_scenario, standard_scenario, EventTopic, Incident, IncidentKind, IncidentPlan, SimConfig,
    SimEvent, Simulator, STANDARD_WARMUP_MS,
};

mod signatures;
mod spend;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// Rough country points (lat, lon), independent of the crate's own table.
const COORDS: &[(&str, f64, f64)] = &[
    ("US", 39.8, -98.6),
    ("CA", 60.0, -113.0),
    ("BR", -10.0, -55.0),
    ("GB", 54.0, -2.0),
    ("FR", 46.0, 2.0),
    ("DE", 51.0, 10.0),
    ("NL", 52.0, 5.5),
    ("FI", 64.0, 26.0),
    ("IN", 22.0, 79.0),
    ("SG", 1.3, 103.8),
    ("JP", 36.0, 138.0),
    ("AU", -25.0, 134.0),
    ("MX", 23.0, -102.0),
    ("KR", 36.5, 128.0),
    ("PY", -23.0, -58.0),
    ("MY", 2.5, 112.5),
    ("NP", 28.0, 84.0),
    ("ID", -5.0, 120.0),
];

fn km(a: &str, b: &str) -> f64 {
    let p = |c: &str| {
        let row = COORDS
            .iter()
            .find(|r| r.0 == c)
            .unwrap_or_else(|| panic!("no point for {c}"));
        (row.1.to_radians(), row.2.to_radians())
    };
    let ((la1, lo1), (la2, lo2)) = (p(a), p(b));
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().asin()
}

/// km/h between two uses in two countries.
fn speed(a: &GatewayRequest, b: &GatewayRequest) -> f64 {
    let hours = ((b.ts_ms - a.ts_ms).max(1)) as f64 / HOUR as f64;
    km(&a.client_country, &b.client_country) / hours
}

struct Run {
    config: SimConfig,
    truth: Vec<Incident>,
    /// Per ground-truth incident, a drawn spend incident's figures.
    draws: Vec<Option<SpendDraw>>,
    gateway: Vec<GatewayRequest>,
    provider: Vec<ProviderAttempt>,
}

fn rules() -> ValidationRules {
    ValidationRules {
        now_ms: SimConfig::default().start_ms + 365 * 86_400_000,
        max_future_skew_ms: 0,
    }
}

/// Every event up to `end_ms`, decoded (which checks contract v1).
fn generate(config: SimConfig, end_ms: i64) -> Run {
    let rules = rules();
    let sim = Simulator::new(config.clone());
    let truth = sim.ground_truth();
    let draws = draws_of(&sim);
    let (mut gateway, mut provider) = (Vec::new(), Vec::new());
    for ev in sim {
        if ev.ts_ms > end_ms {
            break;
        }
        match ev.topic {
            EventTopic::Gateway => {
                let g = decode_gateway(&ev.payload, &rules).expect("gateway payload is valid v1");
                assert_eq!(
                    (ev.key.as_str(), ev.ts_ms),
                    (g.api_key_id.as_str(), g.ts_ms)
                );
                gateway.push(g);
            }
            EventTopic::Provider => {
                let p = decode_provider(&ev.payload, &rules).expect("provider payload is valid v1");
                assert_eq!(
                    (ev.key.as_str(), ev.ts_ms),
                    (p.api_key_id.as_str(), p.ts_ms)
                );
                provider.push(p);
            }
        }
    }
    Run {
        config,
        truth,
        draws,
        gateway,
        provider,
    }
}

/// Per ground-truth incident, a drawn spend incident's figures.
fn draws_of(sim: &Simulator) -> Vec<Option<SpendDraw>> {
    sim.engine
        .as_ref()
        .map(|e| e.spend_draws().to_vec())
        .unwrap_or_default()
}

const RUN_MS: i64 = 6 * HOUR;

fn standard_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let start = SimConfig::default().start_ms;
        let config = SimConfig {
            seed: 2,
            rate_per_s: 6.0,
            incidents: standard_scenario(start, RUN_MS, 50, 2),
            ..SimConfig::default()
        };
        let run = generate(config, start + RUN_MS);
        println!(
            "standard run: {} gateway, {} provider events, {} incidents",
            run.gateway.len(),
            run.provider.len(),
            run.truth.len()
        );
        run
    })
}

fn incident(run: &Run, kind: IncidentKind) -> &Incident {
    run.truth
        .iter()
        .find(|i| i.kind == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn of_key<'a>(run: &'a Run, key: &str) -> Vec<&'a GatewayRequest> {
    run.gateway.iter().filter(|g| g.api_key_id == key).collect()
}

fn inside(g: &GatewayRequest, i: &Incident) -> bool {
    (i.start_ms..i.end_ms).contains(&g.ts_ms)
}

fn cost(table: &PriceTable, g: &GatewayRequest) -> f64 {
    g.cost_usd.unwrap_or_else(|| {
        table
            .lookup(&g.provider, &g.model)
            .map_or(0.0, |p| p.cost_usd(g.prompt_tokens, g.completion_tokens))
    })
}

/// USD per minute of the key's gateway events over `[from, to)`, one entry per minute.
fn spend_per_minute(run: &Run, key: &str, from: i64, to: i64) -> Vec<f64> {
    let table = PriceTable::builtin();
    let mut minutes = vec![0.0; ((to - from) / MIN) as usize];
    for g in run
        .gateway
        .iter()
        .filter(|g| g.api_key_id == key && (from..to).contains(&g.ts_ms))
    {
        minutes[((g.ts_ms - from) / MIN) as usize] += cost(&table, g);
    }
    minutes
}

/// Requests a minute of `key`'s gateway events over `[from, to)`.
fn requests_per_min_of(run: &Run, key: &str, from: i64, to: i64) -> f64 {
    run.gateway
        .iter()
        .filter(|g| g.api_key_id == key && (from..to).contains(&g.ts_ms))
        .count() as f64
        / ((to - from) as f64 / MIN as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn standard_scenario_covers_every_kind_without_overlap() {
    use IncidentKind::*;
    let start = SimConfig::default().start_ms + 17_345; // not on a whole minute
    let mut drawn_keys = BTreeMap::new();
    for seed in 0..24 {
        for (minutes, keys) in [
            (270, 50),
            (360, 50),
            (480, 40),
            (480, 17),
            (1440, 50),
            (1440, 17),
            (480, 5),
            (180, 50),
        ] {
            let duration = minutes * MIN;
            let plans = standard_scenario(start, duration, keys, seed);
            assert_eq!(plans, standard_scenario(start, duration, keys, seed));
            let mut count: BTreeMap<IncidentKind, usize> = BTreeMap::new();
            let mut busy: HashMap<usize, Vec<(i64, i64)>> = HashMap::new();
            for p in &plans {
                *count.entry(p.kind).or_default() += 1;
                assert!(p.offset_ms >= STANDARD_WARMUP_MS && STANDARD_WARMUP_MS >= 20 * MIN);
                assert!(
                    p.offset_ms + p.duration_ms <= duration - 5 * MIN,
                    "{p:?} past the end"
                );
                assert_eq!(
                    (start + p.offset_ms) % MIN,
                    0,
                    "{p:?} starts on a whole minute"
                );
                assert!(p.key < keys);
                let (lo, hi) = match p.kind {
                    SpendSpikeSmall | SpendSpikeLarge => (3, 30),
                    SpendRamp => (15, 60),
                    SpendPriceShift => (5, 30),
                    _ => (0, i64::MAX / MIN),
                };
                assert!(
                    (lo * MIN..=hi * MIN).contains(&p.duration_ms)
                        && (!p.kind.is_drawn_spend() || p.duration_ms % MIN == 0),
                    "{p:?}: {lo}-{hi} whole minutes"
                );
                if p.kind.is_drawn_spend() && keys == 40 {
                    *drawn_keys.entry(p.key).or_insert(0) += 1;
                }
                if p.kind.targets_key() {
                    busy.entry(p.key)
                        .or_default()
                        .push((p.offset_ms, p.offset_ms + p.duration_ms));
                }
            }
            for (key, mut spans) in busy {
                spans.sort();
                for w in spans.windows(2) {
                    assert!(w[1].0 >= w[0].1 + 10 * MIN, "key {key}: {:?} too close", w);
                }
            }
            if seed < 2 {
                println!(
                    "seed {seed}, {minutes} min, {keys} keys: {} incidents {count:?}",
                    plans.len()
                );
            }
            if keys >= 17 {
                // Round one fits in 4 h 30 min whatever the seed: every kind but the slow move
                // (from 5 h 30 min) and the storm with backoff (round two).
                let want = match minutes {
                    m if m >= 330 => 15,
                    m if m >= 270 => 13,
                    _ => 0,
                };
                assert!(count.len() >= want, "seed {seed}, {minutes} min: {count:?}");
                if minutes >= 480 {
                    let n = |k| count.get(&k).copied().unwrap_or(0);
                    assert!(
                        n(SpendSpikeSmall) >= 3
                            && n(SpendSpikeLarge) >= 2
                            && n(SpendRamp) >= 2
                            && n(SpendPriceShift) >= 2,
                        "seed {seed}, {minutes} min: {count:?}"
                    );
                }
            }
            if minutes == 1440 {
                let slow = plans
                    .iter()
                    .find(|p| p.kind == BenignSlowRegionMove)
                    .unwrap();
                assert_eq!(slow.duration_ms, 12 * HOUR + 30 * MIN);
            }
        }
    }
    // The spend incidents' keys span the keys' sizes, busiest to quietest decile.
    println!("drawn spend keys of 40 (key: incidents): {drawn_keys:?}");
    let keys: Vec<usize> = drawn_keys.keys().copied().collect();
    assert!(keys[0] <= 3 && *keys.last().unwrap() >= 36, "{keys:?}");
    assert!(keys.len() >= 20, "{keys:?}");
    assert!(standard_scenario(start, 30 * MIN, 50, 1).is_empty());
    assert!(standard_scenario(start, 24 * HOUR, 0, 1).is_empty());
    assert_ne!(
        standard_scenario(start, 8 * HOUR, 40, 1),
        standard_scenario(start, 8 * HOUR, 40, 2),
        "the seed draws the spend incidents"
    );
}

#[test]
fn ground_truth_resolves_the_plans() {
    let run = standard_run();
    let start = run.config.start_ms;
    assert_eq!(run.truth.len(), run.config.incidents.len());
    for (plan, truth) in run.config.incidents.iter().zip(&run.truth) {
        assert_eq!(plan.kind, truth.kind);
        assert_eq!(truth.start_ms, start + plan.offset_ms);
        assert!(
            (truth.start_ms..truth.end_ms).contains(&truth.onset_ms),
            "{truth:?}"
        );
        match plan.kind {
            // The first far-away use comes after a first stretch at home.
            IncidentKind::ImpossibleTravel => {
                assert!(truth.onset_ms >= truth.start_ms + 150_000, "{truth:?}")
            }
            IncidentKind::LeakedKeyProbeThenBurst | IncidentKind::KeyScanning => {
                assert!(truth.onset_ms >= truth.start_ms, "{truth:?}")
            }
            // Linear from nothing to a final 2-10x: at 2x after the window / (final - 1), at
            // most a minute before its end.
            IncidentKind::SpendRamp => {
                assert!(truth.onset_ms > truth.start_ms, "{truth:?}");
                assert!(truth.onset_ms <= truth.end_ms - MIN, "{truth:?}");
                assert!(truth.note.contains("onset at 2x"), "{truth:?}");
            }
            _ => assert_eq!(truth.onset_ms, truth.start_ms, "{truth:?}"),
        }
        if plan.kind == IncidentKind::BenignSlowRegionMove {
            assert!(truth.end_ms >= truth.start_ms + plan.duration_ms);
        } else {
            assert_eq!(truth.end_ms, truth.start_ms + plan.duration_ms);
        }
        match plan.kind {
            IncidentKind::KeyScanning => assert!(truth.key.parse::<std::net::IpAddr>().is_ok()),
            IncidentKind::BenignDailyPeak => assert_eq!(truth.key, "*"),
            IncidentKind::ProviderStormNoBackoff | IncidentKind::ProviderStormWithBackoff => {
                assert!(truth.key.split_once('/').is_some(), "{truth:?}")
            }
            // A drawn spend incident moves to a bigger key when none of its draws on the
            // planned one matters, and says so.
            kind if kind.is_drawn_spend() && truth.key != format!("key-{:04}", plan.key) => {
                assert!(truth.note.contains("next bigger key"), "{truth:?}");
                let moved: usize = truth.key["key-".len()..].parse().unwrap();
                assert!(moved < plan.key, "bigger keys come first: {truth:?}");
            }
            _ => assert_eq!(truth.key, format!("key-{:04}", plan.key)),
        }
        assert_eq!(truth.detector(), plan.kind.detector());
        assert!(!truth.note.is_empty());

        let line: serde_json::Value = serde_json::from_str(&truth.to_json_line()).unwrap();
        assert_eq!(line["kind"], plan.kind.as_str());
        assert_eq!(
            line["detector"],
            serde_json::json!(plan.kind.detector().map(|d| d.as_str()))
        );
        assert_eq!(line["key"], truth.key.as_str());
        assert_eq!(line["start_ms"], truth.start_ms);
        assert_eq!(line["end_ms"], truth.end_ms);
        let parsed = tripline_core::time::parse_rfc3339_ms(line["start"].as_str().unwrap());
        assert_eq!(parsed, Some(truth.start_ms));
        assert_eq!(plan.kind.as_str().parse::<IncidentKind>(), Ok(plan.kind));
    }
    let benign: Vec<_> = IncidentKind::ALL.iter().filter(|k| k.is_benign()).collect();
    assert_eq!(benign.len(), 4);
    for line in run.truth.iter().map(Incident::to_json_line).take(3) {
        println!("{line}");
    }
}

#[test]
fn every_injected_event_is_valid_and_priced() {
    // `generate` decoded every event; here: prices, and the shape of failures.
    let run = standard_run();
    let table = PriceTable::builtin();
    let models: HashSet<(&str, &str)> = run
        .gateway
        .iter()
        .map(|g| (g.provider.as_str(), g.model.as_str()))
        .collect();
    for (provider, model) in &models {
        assert!(
            table.lookup(provider, model).is_some(),
            "{provider}/{model} is priced"
        );
    }
    for g in &run.gateway {
        if g.status >= 400 {
            assert!(g.prompt_tokens == 0 && !g.error_type.is_empty());
        }
        assert!(g.attempt >= 1 && g.client_ip.is_some() && g.client_country.len() == 2);
    }
    let ids: HashSet<&str> = run.gateway.iter().map(|g| g.event_id.as_str()).collect();
    assert_eq!(ids.len(), run.gateway.len(), "event ids are unique");
    assert!(run.provider.iter().all(|p| p.attempt >= 1));
}

#[test]
fn incidents_are_deterministic_under_the_seed() {
    let start = SimConfig::default().start_ms;
    let plans: Vec<IncidentPlan> = IncidentKind::ALL
        .iter()
        .enumerate()
        .map(|(n, &kind)| IncidentPlan {
            kind,
            offset_ms: 2 * MIN + n as i64 * 20_000,
            duration_ms: if kind == IncidentKind::BenignSlowRegionMove {
                3 * HOUR
            } else {
                6 * MIN
            },
            key: n,
        })
        .collect();
    let config = |seed| SimConfig {
        seed,
        rate_per_s: 20.0,
        keys: 20,
        incidents: plans.clone(),
        ..SimConfig::default()
    };
    let take = |seed| -> (Vec<SimEvent>, Vec<Incident>) {
        let sim = Simulator::new(config(seed));
        let truth = sim.ground_truth();
        (
            sim.take_while(|e| e.ts_ms < start + 9 * MIN).collect(),
            truth,
        )
    };
    let (a, truth_a) = take(4);
    let (b, truth_b) = take(4);
    assert_eq!(truth_a, truth_b);
    assert!(a == b, "same seed, same events");
    assert!(
        a.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
        "time order holds"
    );
    let (c, truth_c) = take(5);
    assert_ne!(truth_a, truth_c);
    assert_ne!(a.len(), c.len());
    // Without incidents the same seed gives other events: the incidents added some.
    let plain: Vec<SimEvent> = Simulator::new(SimConfig {
        incidents: Vec::new(),
        ..config(4)
    })
    .take_while(|e| e.ts_ms < start + 9 * MIN)
    .collect();
    println!("{} events with incidents, {} without", a.len(), plain.len());
    assert!(a.len() > plain.len());
    // Plans that make no sense are dropped.
    let bad = SimConfig {
        incidents: vec![
            IncidentPlan {
                kind: IncidentKind::SpendSpikeSmall,
                offset_ms: 0,
                duration_ms: 0,
                key: 0,
            },
            IncidentPlan {
                kind: IncidentKind::SpendSpikeSmall,
                offset_ms: -MIN,
                duration_ms: MIN,
                key: 0,
            },
            IncidentPlan {
                kind: IncidentKind::SpendSpikeSmall,
                offset_ms: 0,
                duration_ms: MIN,
                key: 99,
            },
            IncidentPlan {
                kind: IncidentKind::KeyScanning,
                offset_ms: 0,
                duration_ms: MIN,
                key: 99,
            },
        ],
        ..config(4)
    };
    let truth = Simulator::new(bad).ground_truth();
    assert_eq!(
        truth.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [IncidentKind::KeyScanning]
    );
}

#[test]
fn incident_tables_are_consistent() {
    use crate::catalog::{distance_km, COUNTRIES, EXPENSIVE_MODEL, MODELS, NEIGHBOURS};
    let table = PriceTable::builtin();
    let opus = table
        .lookup(EXPENSIVE_MODEL.provider, EXPENSIVE_MODEL.name)
        .unwrap();
    let mini = table.lookup(MODELS[0].provider, MODELS[0].name).unwrap();
    assert!(opus.input >= 10.0 * mini.input && opus.output >= 10.0 * mini.output);
    assert!(
        MODELS.iter().all(|m| !m.name.contains("opus")),
        "no key ever calls the probe model"
    );
    for c in COUNTRIES {
        let isp = c
            .blocks
            .iter()
            .filter(|b| !CLOUD_BLOCKS.contains(b))
            .count();
        assert!(isp >= 1, "{} has an ISP block to move to", c.code);
        let far = COUNTRIES
            .iter()
            .filter(|o| distance_km(c.code, o.code).unwrap() > 8_000.0)
            .count();
        let near = COUNTRIES
            .iter()
            .chain(NEIGHBOURS)
            .filter(|o| o.code != c.code)
            .map(|o| distance_km(c.code, o.code).unwrap())
            .fold(f64::INFINITY, f64::min);
        println!(
            "{}: nearest other country {near:.0} km, {far} over 8,000 km",
            c.code
        );
        assert!(far >= 1 && near / 4.0 <= 700.0, "{}", c.code);
        assert!(HOSTING_POOLS.iter().any(|p| p.country != c.code));
    }
    for p in HOSTING_POOLS {
        assert!(distance_km(p.country, "US").is_some());
        assert!(p.ranges.iter().all(|r| r[2] <= r[3]));
    }
    for b in CLOUD_BLOCKS {
        assert!(COUNTRIES.iter().any(|c| c.blocks.contains(b)));
    }
}

#[test]
fn slow_moves_from_every_home_stay_below_airliner_speed() {
    let start = SimConfig::default().start_ms;
    let keys = 40;
    let mut moves = BTreeMap::new();
    for seed in [8, 9, 10] {
        let plans: Vec<IncidentPlan> = (0..keys)
            .map(|key| IncidentPlan {
                kind: IncidentKind::BenignSlowRegionMove,
                offset_ms: 30 * MIN,
                duration_ms: 4 * HOUR + 30 * MIN,
                key,
            })
            .collect();
        let config = SimConfig {
            seed,
            rate_per_s: 1.0,
            keys,
            provider_events: false,
            incidents: plans,
            ..SimConfig::default()
        };
        let run = generate(config, start + 5 * HOUR + 10 * MIN);
        for i in &run.truth {
            assert_eq!(
                i.end_ms - i.start_ms,
                4 * HOUR + 30 * MIN,
                "not stretched: {}",
                i.note
            );
            let events = of_key(&run, &i.key);
            let changes: Vec<_> = events
                .windows(2)
                .filter(|w| w[0].client_country != w[1].client_country)
                .collect();
            assert_eq!(changes.len(), 1, "{}: {}", i.key, i.note);
            let (home, abroad) = (changes[0][0], changes[0][1]);
            let v = speed(home, abroad);
            assert!(
                v < 1_000.0 && abroad.ts_ms == i.start_ms + 4 * HOUR,
                "{}",
                i.note
            );
            assert!(events
                .iter()
                .all(|g| g.ts_ms <= i.start_ms || g.ts_ms >= abroad.ts_ms));
            moves.insert(
                format!("{}->{}", home.client_country, abroad.client_country),
                v.round(),
            );
        }
    }
    println!("moves after 4 h of silence, km/h: {moves:?}");
    assert!(moves.len() >= 6);
}

/// Every price shift of the evaluation's seeds moves its key to a model 5-200x pricier per
/// token, whatever the key's usual model: the catalog holds models pricey enough for that.
#[test]
fn price_shifts_reach_the_drawn_range_for_every_key() {
    let start = 1_790_000_000_000 / MIN * MIN;
    let duration = 6 * 60 * MIN;
    let mut shifts = 0;
    for seed in 1..=20 {
        let truth = Simulator::new(SimConfig {
            seed,
            rate_per_s: 10.0,
            keys: 40,
            start_ms: start,
            incidents: standard_scenario(start, duration, 40, seed),
            ..SimConfig::default()
        })
        .ground_truth();
        for shift in truth
            .iter()
            .filter(|i| i.kind == IncidentKind::SpendPriceShift)
        {
            shifts += 1;
            assert!(!shift.note.contains("priciest"), "{}", shift.note);
        }
    }
    assert!(shifts >= 40, "{shifts} price shifts");
}

/// The demo's five incidents fit in 7 minutes, each on a key of its own, all ending inside the
/// run, and a shorter run leaves out what would not end inside it.
#[test]
fn demo_scenario_holds_its_five_incidents_in_seven_minutes() {
    let start = 1_796_000_000_000 / MIN * MIN;
    let config = SimConfig {
        seed: 1,
        rate_per_s: 20.0,
        keys: 50,
        start_ms: start,
        incidents: demo_scenario(start, 7 * MIN, 50, 1),
        ..SimConfig::default()
    };
    let run = generate(config, start + 7 * MIN);
    let kinds: Vec<&str> = run.truth.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "leaked_key_probe_then_burst",
            "impossible_travel",
            "key_scanning",
            "retry_storm_no_backoff",
            "spend_spike_large"
        ]
    );
    let keys: HashSet<&str> = run.truth.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys.len(), 5, "distinct keys: {keys:?}");
    for incident in &run.truth {
        assert!(incident.start_ms >= start + MIN, "{incident:?}");
        assert!(incident.end_ms <= start + 7 * MIN, "{incident:?}");
        // Its key's requests, or its address's for key scanning.
        let of_it = |g: &&GatewayRequest| {
            g.api_key_id == incident.key
                || g.client_ip.is_some_and(|ip| ip.to_string() == incident.key)
        };
        let events = run
            .gateway
            .iter()
            .filter(|g| inside(g, incident))
            .filter(of_it)
            .count();
        assert!(events > 0, "nothing inside {}", incident.kind.as_str());
    }
    let short = demo_scenario(start, 6 * MIN, 50, 1);
    assert_eq!(
        short.len(),
        3,
        "only the incidents from minute 1 end by minute 6"
    );
}
