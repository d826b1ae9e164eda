//! Each incident kind's signature in the events of the shared standard run: what a detector
//! would see (spend per minute, new networks, retry chains, implied travel speeds, ...).

use std::collections::{HashMap, HashSet};

use tripline_core::config::Detector;
use tripline_core::event::GatewayRequest;
use tripline_core::price::PriceTable;

use super::{
    cost, incident, inside, km, mean, median, of_key, requests_per_min_of, speed, spend_per_minute,
    standard_run, Run, HOUR, MIN,
};
use crate::catalog::{CLOUD_BLOCKS, HOSTING_POOLS};
use crate::{Incident, IncidentKind};

#[test]
fn spend_incidents_add_what_their_notes_say() {
    let run = standard_run();
    let (mut predicted, mut measured) = (0.0, 0.0);
    for (n, i) in run.truth.iter().enumerate() {
        let kind = i.kind;
        if !(kind.is_drawn_spend() || kind == IncidentKind::BenignPlannedBatch) {
            continue;
        }
        let minutes = ((i.end_ms - i.start_ms) / MIN) as f64;
        let before = spend_per_minute(run, &i.key, i.start_ms - 30 * MIN, i.start_ms);
        let during = spend_per_minute(run, &i.key, i.start_ms, i.end_ms);
        let base = mean(&before);
        let (req_before, req_during) = (
            requests_per_min_of(run, &i.key, i.start_ms - 30 * MIN, i.start_ms),
            requests_per_min_of(run, &i.key, i.start_ms, i.end_ms),
        );
        println!(
            "{kind} on {} ({minutes} min): ${base:.4}/min before, ${:.4}/min during, \
             {req_before:.2} -> {req_during:.2} requests/min; {}",
            i.key,
            mean(&during),
            i.note
        );
        if kind == IncidentKind::BenignPlannedBatch {
            assert!(mean(&during) - median(&before) >= 3.0);
            assert!(i.note.contains("budget raised") && i.note.contains(&i.key));
            assert!(i.note.contains("min_abs_usd") && i.note.contains("hourly_budget_usd"));
            continue;
        }
        let d = run.draws[n]
            .as_ref()
            .expect("a drawn spend incident has its draw");
        assert_eq!(i.key, format!("key-{:04}", d.key));
        assert!(
            i.note.contains(&format!("{:.2}/day", d.extra_usd_per_day)),
            "{}",
            i.note
        );
        // Requests: ×multiple for a spike, ×(1 + (multiple - 1) / 2) on average over a ramp,
        // unchanged by a price shift (Poisson noise allowed where there are few).
        let want = match kind {
            IncidentKind::SpendSpikeSmall | IncidentKind::SpendSpikeLarge => d.multiple,
            IncidentKind::SpendRamp => 1.0 + (d.multiple - 1.0) / 2.0,
            _ => 1.0,
        };
        let expected = d.base_req_per_min * want * minutes;
        let got = req_during * minutes;
        let slack = 4.0 * expected.sqrt() + 0.35 * expected;
        assert!(
            (got - expected).abs() <= slack,
            "{kind} on {}: {got:.0} requests, about {expected:.0} expected",
            i.key
        );
        let extra = match kind {
            IncidentKind::SpendRamp => d.extra_usd_per_min / 2.0,
            _ => d.extra_usd_per_min,
        };
        predicted += extra * minutes;
        measured += (mean(&during) - base) * minutes;
        // Nothing spills past the window.
        let after = requests_per_min_of(run, &i.key, i.end_ms, i.end_ms + 10 * MIN);
        assert!(
            after <= 2.0 * req_before.max(d.base_req_per_min) + 1.0,
            "{kind} ends: {after:.2} requests/min after"
        );
    }
    // Token counts are heavy-tailed: the incidents' extra spend together, not each one's.
    println!("extra spend of the drawn spend incidents: ${measured:.2} measured, ${predicted:.2} predicted");
    assert!(
        measured >= 0.4 * predicted && measured <= 2.5 * predicted,
        "${measured:.2} measured, ${predicted:.2} predicted"
    );
}

#[test]
fn leaked_key_probes_then_bursts_from_a_new_network() {
    let run = standard_run();
    let i = incident(run, IncidentKind::LeakedKeyProbeThenBurst);
    let events = of_key(run, &i.key);
    let home = &events[0].client_country;
    let history: Vec<_> = events.iter().filter(|g| g.ts_ms < i.start_ms).collect();
    let usual_ua: HashSet<&str> = history.iter().map(|g| g.user_agent.as_str()).collect();
    let usual_models: HashSet<&str> = history.iter().map(|g| g.model.as_str()).collect();
    assert!(history.iter().all(|g| &g.client_country == home) && history.len() > 100);

    let abuse: Vec<_> = events
        .iter()
        .filter(|g| &g.client_country != home)
        .collect();
    assert!(
        abuse.iter().all(|g| inside(g, i)),
        "the new country only inside the window"
    );
    for g in &events {
        let new_ua = !usual_ua.contains(g.user_agent.as_str());
        let new_model = !usual_models.contains(g.model.as_str());
        assert_eq!(
            new_ua,
            &g.client_country != home,
            "the new user agent exactly with it"
        );
        assert_eq!(new_model, new_ua, "the new model family exactly with it");
    }
    let in_pool = |ip: &str| {
        let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        HOSTING_POOLS.iter().any(|p| {
            p.country == abuse[0].client_country
                && p.ranges
                    .iter()
                    .any(|r| r[0] == o[0] && r[1] == o[1] && (r[2]..=r[3]).contains(&o[2]))
        })
    };
    let ips: HashSet<String> = abuse
        .iter()
        .map(|g| g.client_ip.unwrap().to_string())
        .collect();
    assert!(
        ips.iter().all(|ip| in_pool(ip)),
        "hosting addresses: {ips:?}"
    );
    // A few probes from one address with tiny prompts, a pause, then the burst.
    let probes: Vec<_> = abuse
        .iter()
        .take_while(|g| g.prompt_tokens <= 60 || g.status >= 400)
        .collect();
    let burst = &abuse[probes.len()..];
    let probe_ips: HashSet<_> = probes.iter().map(|g| g.client_ip).collect();
    let pause = burst[0].ts_ms - probes.last().unwrap().ts_ms;
    let burst_span = (burst[burst.len() - 1].ts_ms - burst[0].ts_ms) as f64 / MIN as f64;
    let burst_ips: HashSet<_> = burst.iter().map(|g| g.client_ip).collect();
    println!(
        "leaked {} (home {home}): {} probes from {} address(es) on {}, pause {:.1} min, burst of \
         {} requests over {burst_span:.1} min from {} addresses in {} ({})",
        i.key,
        probes.len(),
        probe_ips.len(),
        probes[0].model,
        pause as f64 / MIN as f64,
        burst.len(),
        burst_ips.len(),
        abuse[0].client_country,
        abuse[0].user_agent
    );
    let table = PriceTable::builtin();
    let burst_usd: f64 = burst.iter().map(|g| cost(&table, g)).sum();
    println!(
        "burst spend ${burst_usd:.2}, ${:.2}/min",
        burst_usd / burst_span
    );
    assert!((3..=5).contains(&probes.len()) && probe_ips.len() == 1);
    assert!(probes[0].model.contains("opus") && pause >= 3 * MIN);
    assert!(burst.len() >= 300 && burst_ips.len() >= 10 && burst_span <= 20.0);
    assert!(abuse.iter().all(|g| g.user.is_empty()));
}

#[test]
fn key_scanning_tries_many_unknown_keys_from_one_address() {
    let run = standard_run();
    let i = incident(run, IncidentKind::KeyScanning);
    let tries: Vec<_> = run
        .gateway
        .iter()
        .filter(|g| g.client_ip.is_some_and(|ip| ip.to_string() == i.key))
        .collect();
    let keys: HashSet<&str> = tries.iter().map(|g| g.api_key_id.as_str()).collect();
    let known: HashSet<&str> = run
        .gateway
        .iter()
        .filter(|g| g.status != 401)
        .map(|g| g.api_key_id.as_str())
        .collect();
    println!(
        "key scanning from {}: {} tries of {} distinct keys",
        i.key,
        tries.len(),
        keys.len()
    );
    assert!(keys.len() >= 30);
    assert!(tries.iter().all(|g| g.status == 401 && inside(g, i)));
    assert!(tries
        .iter()
        .all(|g| g.project.is_empty() && g.user.is_empty()));
    assert!(keys
        .iter()
        .all(|k| !known.contains(k) && k.starts_with("fp_")));
    let scanned: HashSet<&str> = tries.iter().map(|g| g.request_id.as_str()).collect();
    assert!(run
        .provider
        .iter()
        .all(|p| !scanned.contains(p.request_id.as_str())));
}

/// (retry share, provider attempts per success, gaps after a failure in ms, start-to-start
/// gaps in ms, longest chain) of the key's requests to the storm's provider in the window.
fn storm_figures(run: &Run, i: &Incident) -> (f64, f64, Vec<f64>, Vec<f64>, u16) {
    let events: Vec<_> = of_key(run, &i.key)
        .into_iter()
        .filter(|g| inside(g, i))
        .collect();
    let provider = events
        .iter()
        .filter(|g| g.attempt > 1)
        .map(|g| g.provider.clone())
        .next()
        .unwrap();
    let events: Vec<_> = events
        .into_iter()
        .filter(|g| g.provider == provider)
        .collect();
    let retries = events.iter().filter(|g| g.attempt > 1).count() as f64 / events.len() as f64;
    let attempts: Vec<_> = run
        .provider
        .iter()
        .filter(|p| {
            p.api_key_id == i.key
                && p.provider == provider
                && (i.start_ms..i.end_ms).contains(&p.ts_ms)
        })
        .collect();
    let ok = attempts.iter().filter(|p| p.status == 200).count() as f64;
    let amplification = attempts.len() as f64 / ok.max(1.0);
    let mut chains: HashMap<&str, Vec<&GatewayRequest>> = HashMap::new();
    for g in &events {
        chains.entry(&g.idempotency_key).or_default().push(g);
    }
    let (mut idle, mut start_to_start, mut longest) = (Vec::new(), Vec::new(), 0);
    for chain in chains.values() {
        longest = longest.max(chain.last().unwrap().attempt);
        for w in chain.windows(2) {
            assert_eq!(w[1].attempt, w[0].attempt + 1);
            assert!(w[0].status == 429 || w[0].status == 503 || w[0].status >= 500);
            idle.push((w[1].ts_ms - w[0].ts_ms - i64::from(w[0].latency_ms)) as f64);
            start_to_start.push((w[1].ts_ms - w[0].ts_ms) as f64);
        }
    }
    (retries, amplification, idle, start_to_start, longest)
}

#[test]
fn retry_storms_with_and_without_backoff() {
    let run = standard_run();
    let hard = incident(run, IncidentKind::RetryStormNoBackoff);
    let soft = incident(run, IncidentKind::RetryStormWithBackoff);
    let (share, amp, idle, s2s, longest) = storm_figures(run, hard);
    println!(
        "no backoff on {}: retries {:.0} %, {amp:.2} provider attempts per success, idle gap \
         median {:.0} ms max {:.0} ms, start-to-start median {:.0} ms, {} retries, chains up to \
         attempt {longest}",
        hard.key,
        100.0 * share,
        median(&idle),
        idle.iter().copied().fold(0.0, f64::max),
        median(&s2s),
        idle.len()
    );
    assert!(amp >= 3.0 && share >= 0.4 && longest == 6);
    assert!(idle.iter().all(|g| *g < 100.0) && median(&s2s) < 250.0);

    let (share_b, amp_b, idle_b, _, longest_b) = storm_figures(run, soft);
    println!(
        "with backoff on {}: retries {:.0} %, {amp_b:.2} provider attempts per success, idle gap \
         median {:.0} ms, chains up to attempt {longest_b}",
        soft.key,
        100.0 * share_b,
        median(&idle_b)
    );
    assert!(share_b >= 0.25 && amp_b < 3.0 && amp_b < amp && longest_b <= 5);
    assert!(idle_b.iter().all(|g| *g >= 440.0) && idle_b.iter().any(|g| *g >= 1_800.0));
    assert!(soft.note.contains("size small") && hard.note.contains("size large"));
}

#[test]
fn impossible_travel_is_faster_than_any_airliner() {
    let run = standard_run();
    let i = incident(run, IncidentKind::ImpossibleTravel);
    let events = of_key(run, &i.key);
    let home = events[0].client_country.clone();
    let mut speeds = Vec::new();
    for w in events.windows(2) {
        if w[0].client_country != w[1].client_country {
            assert!(
                inside(w[0], i) || inside(w[1], i),
                "travel only inside the window"
            );
            speeds.push(speed(w[0], w[1]));
        }
    }
    let far = events.iter().find(|g| g.client_country != home).unwrap();
    println!(
        "{} travels {home} <-> {} ({:.0} km) {} times, implied speeds from {:.0} km/h",
        i.key,
        far.client_country,
        km(&home, &far.client_country),
        speeds.len(),
        speeds.iter().copied().fold(f64::INFINITY, f64::min)
    );
    assert!(km(&home, &far.client_country) > 8_000.0);
    assert!(speeds.len() >= 6 && speeds.iter().all(|s| *s > 1_000.0));
}

#[test]
fn slow_move_stays_below_airliner_speed() {
    let run = standard_run();
    let i = incident(run, IncidentKind::BenignSlowRegionMove);
    let events = of_key(run, &i.key);
    let changes: Vec<_> = events
        .windows(2)
        .filter(|w| w[0].client_country != w[1].client_country)
        .collect();
    assert_eq!(changes.len(), 1, "one move, no way back");
    let (last_home, first_abroad) = (changes[0][0], changes[0][1]);
    let v = speed(last_home, first_abroad);
    println!(
        "{} moves {} -> {} ({:.0} km) after {:.1} h of silence: {v:.0} km/h",
        i.key,
        last_home.client_country,
        first_abroad.client_country,
        km(&last_home.client_country, &first_abroad.client_country),
        (first_abroad.ts_ms - last_home.ts_ms) as f64 / HOUR as f64
    );
    assert!(v < 1_000.0);
    assert!(last_home.ts_ms <= i.start_ms && first_abroad.ts_ms < i.end_ms);
    assert!(first_abroad.user_agent == last_home.user_agent);
    let cloud = |g: &GatewayRequest| {
        let o: Vec<u8> = g
            .client_ip
            .unwrap()
            .to_string()
            .split('.')
            .map(|x| x.parse().unwrap())
            .collect();
        CLOUD_BLOCKS.contains(&[o[0], o[1]])
    };
    assert!(events
        .iter()
        .filter(|g| g.ts_ms >= first_abroad.ts_ms)
        .all(|g| !cloud(g)));
}

#[test]
fn daily_peak_doubles_smoothly() {
    let run = standard_run();
    let i = incident(run, IncidentKind::BenignDailyPeak);
    let per_min = |from: i64, minutes: i64| {
        let to = from + minutes * MIN;
        run.gateway
            .iter()
            .filter(|g| g.attempt == 1 && (from..to).contains(&g.ts_ms))
            .count() as f64
            / minutes as f64
    };
    let before = per_min(i.start_ms - 20 * MIN, 20);
    let tens: Vec<f64> = (0..6)
        .map(|k| per_min(i.start_ms + k * 10 * MIN, 10))
        .collect();
    let top = per_min(i.start_ms + 20 * MIN, 20);
    let busiest_minute = (0..60)
        .map(|k| per_min(i.start_ms + k * MIN, 1))
        .fold(0.0, f64::max);
    println!(
        "daily peak: {before:.0} requests/min before, 10-minute means {tens:.0?}, {top:.0} in \
         the middle 20 min ({:.2}x), busiest minute {busiest_minute:.0}",
        top / before
    );
    // The multiplier is a raised cosine; the counts also carry the trace's own burstiness,
    // replayed up to twice as fast.
    assert!((1.6..2.6).contains(&(top / before)));
    assert!(tens[2] > tens[0] && tens[3] > tens[5], "up, then down");
    assert!(busiest_minute < 3.5 * before, "no spike");
}

#[test]
fn new_key_appears_at_its_window() {
    let run = standard_run();
    let i = incident(run, IncidentKind::BenignNewKey);
    let events = of_key(run, &i.key);
    let countries: HashSet<&str> = events.iter().map(|g| g.client_country.as_str()).collect();
    let first = events[0].ts_ms;
    let per_min = events.iter().filter(|g| inside(g, i)).count() as f64
        / ((i.end_ms - i.start_ms) / MIN) as f64;
    println!(
        "{} first seen {:.1} s into its window, {per_min:.1} requests/min, countries {countries:?}",
        i.key,
        (first - i.start_ms) as f64 / 1000.0
    );
    assert!(first >= i.start_ms && first < i.start_ms + 5 * MIN);
    assert!(countries.len() == 1 && per_min >= 1.0);
}

#[test]
fn provider_storms_fail_every_free_key_on_one_model_and_raise_its_attempts() {
    let run = standard_run();
    for kind in [
        IncidentKind::ProviderStormNoBackoff,
        IncidentKind::ProviderStormWithBackoff,
    ] {
        let i = incident(run, kind);
        let (provider, model) = i.key.split_once('/').unwrap();
        let on_model = |from: i64, to: i64| {
            run.provider
                .iter()
                .filter(|p| p.provider == provider && p.model == model)
                .filter(move |p| (from..to).contains(&p.ts_ms))
        };
        let share = |from: i64, to: i64| {
            let (n, failed) = on_model(from, to).fold((0, 0), |(n, f), p| {
                (n + 1, f + usize::from(p.status == 429 || p.status >= 500))
            });
            (n as f64, failed as f64 / n.max(1) as f64)
        };
        let (before, usual) = share(i.start_ms - 10 * MIN, i.start_ms);
        let (during, failing) = share(i.start_ms + MIN, i.end_ms - MIN);
        // Upstream attempts per first attempt of a client: the trace's own rate drifts by tens
        // of percent within minutes, so attempts per minute alone would measure that too.
        let first = |from: i64, to: i64| {
            run.gateway
                .iter()
                .filter(|g| g.provider == provider && g.model == model && g.attempt == 1)
                .filter(|g| (from..to).contains(&g.ts_ms))
                .count()
                .max(1) as f64
        };
        let ratio = (during / first(i.start_ms + MIN, i.end_ms - MIN))
            / (before / first(i.start_ms - 10 * MIN, i.start_ms));
        // Most keys on the model fail alike; every free key calling it is caught.
        let keys: HashSet<&str> = on_model(i.start_ms + MIN, i.end_ms - MIN)
            .filter(|p| p.status == 429 || p.status == 503)
            .map(|p| p.api_key_id.as_str())
            .collect();
        let spared = i.note.split("): ").last().unwrap_or_default();
        println!(
            "{kind} on {}: {:.0} % of attempts failing (usually {:.1} %), {ratio:.2}x the \
             attempts per first attempt, {} keys failing; {}",
            i.key,
            100.0 * failing,
            100.0 * usual,
            keys.len(),
            i.note
        );
        assert!(
            (0.28..0.92).contains(&failing) && usual < 0.1,
            "{failing} {usual}"
        );
        assert!(ratio >= 1.25, "{ratio}");
        assert!(keys.len() >= 3, "{keys:?}");
        // The spared keys fail on it no more than usual (a bad spell of the provider, at most).
        for key in spared
            .split(", ")
            .map(str::trim)
            .filter(|k| k.starts_with("key-"))
        {
            let (n, failed) = on_model(i.start_ms, i.end_ms)
                .filter(|p| p.api_key_id == key)
                .fold((0, 0), |(n, f), p| {
                    (n + 1, f + usize::from(p.status == 429 || p.status >= 500))
                });
            assert!(failed * 4 <= n.max(4), "{key}: {failed} of {n} failed");
        }
        assert_eq!(kind.detector(), Some(Detector::RetryStorm));
    }
}
