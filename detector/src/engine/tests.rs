use super::*;
use crate::data::{
    KeyMinute, KeyProviderFailures, KeyRetries, ProviderBucket, ScanCandidate, Usage, UserUse,
};
use tripline_core::config::EntityOverride;

const T0: u32 = 1_795_680_000; // a minute boundary

fn engine() -> Engine {
    let mut config = DetectConfig {
        allowed_lateness_s: 0,
        ..DetectConfig::default()
    };
    config.spend_spike.model.warmup_windows = 10;
    config.leaked_key.min_history_minutes = 10;
    let mut engine = Engine::new(config).unwrap();
    engine.folded_through = T0;
    engine
}

fn key_minute(key: &str, minute: u32, requests: u64, cost: f64) -> KeyMinute {
    KeyMinute {
        api_key_id: key.into(),
        minute,
        project: "p".into(),
        requests,
        cost_usd: cost,
        distinct_ips: 2,
        ..KeyMinute::default()
    }
}

fn usage(
    key: &str,
    minute: u32,
    country: &str,
    asn: u32,
    org: &str,
    model: &str,
    requests: u64,
) -> Usage {
    Usage {
        api_key_id: key.into(),
        minute,
        country: country.into(),
        asn,
        as_org: org.into(),
        model: model.into(),
        user_agent: "openai-python/1.52.0".into(),
        requests,
        first_ms: i64::from(minute) * 1000 + 1_000,
        last_ms: i64::from(minute) * 1000 + 50_000,
    }
}

/// Key "k" used from its home: Germany, Deutsche Telekom (AS3320), gpt-4o-mini.
fn home_usage(minute: u32, requests: u64) -> Usage {
    usage(
        "k",
        minute,
        "DE",
        3320,
        "Deutsche Telekom AG",
        "gpt-4o-mini",
        requests,
    )
}

/// Feeds `minutes` of normal traffic for key "k" (DE, AS3320, gpt-4o-mini, ~$0.10/minute).
fn warm(engine: &mut Engine, minutes: u32) -> u32 {
    for i in 0..minutes {
        let minute = T0 + i * 60;
        let data = CycleData {
            keys: vec![key_minute("k", minute, 30, 0.10 + f64::from(i % 3) * 0.01)],
            usage: vec![home_usage(minute, 30)],
            ..CycleData::default()
        };
        engine.cycle(&data, minute + 60, true);
    }
    T0 + minutes * 60
}

#[test]
fn a_large_spend_spike_fires_and_normal_spend_does_not() {
    let mut e = engine();
    let now = warm(&mut e, 60);
    let normal = CycleData {
        keys: vec![key_minute("k", now, 30, 0.11)],
        ..CycleData::default()
    };
    assert!(e.cycle(&normal, now + 30, false).is_empty());
    let spike = CycleData {
        keys: vec![key_minute("k", now, 300, 25.0)],
        ..CycleData::default()
    };
    let found = e.cycle(&spike, now + 30, false);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].detector, "spend_spike");
    assert_eq!(found[0].labels["api_key_id"], "k");
    assert!(found[0].observed > found[0].upper);
}

#[test]
fn cents_never_page_anyone() {
    let mut e = engine();
    let now = warm(&mut e, 60);
    // Ten times the usual spend, but only ~$0.9 over: under the $1 floor.
    let small = CycleData {
        keys: vec![key_minute("k", now, 300, 1.0)],
        ..CycleData::default()
    };
    assert!(e.cycle(&small, now + 59, false).is_empty());
}

#[test]
fn budgets_fire_on_overspend_and_projection() {
    let mut e = engine();
    let mut config = e.config().clone();
    config.spend_spike.hourly_budget_usd = Some(10.0);
    config.spend_spike.daily_budget_usd = Some(100.0);
    e.reconfigure(config).unwrap();
    let now = T0 + 7200;
    let data = CycleData {
        budgets: vec![
            crate::data::BudgetUse {
                api_key_id: "over".into(),
                project: "p".into(),
                hour_usd: 12.0,
                day_usd: 20.0,
                last_hour_usd: 1.0,
            },
            crate::data::BudgetUse {
                api_key_id: "ok".into(),
                project: "p".into(),
                hour_usd: 1.0,
                day_usd: 2.0,
                last_hour_usd: 0.5,
            },
        ],
        budget_minute: now - 60,
        ..CycleData::default()
    };
    let found = e.cycle(&data, now, false);
    assert!(found
        .iter()
        .any(|c| c.labels["api_key_id"] == "over" && c.labels["budget"] == "hourly"));
    assert!(
        found.iter().all(|c| c.labels["api_key_id"] != "ok"),
        "{found:?}"
    );

    // A replay judges 23:59 when it has ended, at 00:00 of the next day: the sums are still
    // that day's, with no day left to project over ($48 so far at $3 an hour stays under $100).
    let day_end = T0 / 86_400 * 86_400 + 86_400;
    let data = CycleData {
        budgets: vec![crate::data::BudgetUse {
            api_key_id: "steady".into(),
            project: "p".into(),
            hour_usd: 3.0,
            day_usd: 48.0,
            last_hour_usd: 3.0,
        }],
        budget_minute: day_end - 60,
        ..CycleData::default()
    };
    let found = e.cycle(&data, day_end, false);
    assert!(
        found.iter().all(|c| c.detector != "spend_spike"),
        "{found:?}"
    );
}

#[test]
fn a_key_used_from_a_new_country_and_hosting_network_is_flagged() {
    let mut e = engine();
    let now = warm(&mut e, 60);
    let same = CycleData {
        keys: vec![key_minute("k", now, 30, 0.1)],
        usage: vec![home_usage(now, 30)],
        ..CycleData::default()
    };
    assert!(e.cycle(&same, now + 20, false).is_empty());
    let leak = CycleData {
        keys: vec![key_minute("k", now, 35, 0.3)],
        usage: vec![
            home_usage(now, 30),
            usage(
                "k",
                now,
                "DE",
                14061,
                "DigitalOcean, LLC",
                "claude-opus-4-5",
                5,
            ),
        ],
        ..CycleData::default()
    };
    let found = e.cycle(&leak, now + 30, false);
    let leaked: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "leaked_key")
        .collect();
    assert_eq!(leaked.len(), 1, "{found:?}");
    assert!(
        leaked[0].summary.contains("hosting network"),
        "{}",
        leaked[0].summary
    );
    assert!(leaked[0]
        .summary
        .contains("new model family claude-opus-4-5"));
}

#[test]
fn key_scanning_is_flagged_by_ip() {
    let mut e = engine();
    let data = CycleData {
        scans: vec![ScanCandidate {
            client_ip: "203.0.113.9".into(),
            keys: 40,
            requests: 40,
            first_ms: i64::from(T0) * 1000,
            last_ms: i64::from(T0) * 1000 + 30_000,
        }],
        ..CycleData::default()
    };
    let found = e.cycle(&data, T0 + 40, false);
    assert_eq!(found[0].labels["client_ip"], "203.0.113.9");
    assert_eq!(found[0].severity, Severity::Critical);
}

#[test]
fn retry_storm_severity_follows_amplification_and_backoff() {
    let mut e = engine();
    let now = warm(&mut e, 5);
    let mut storm = key_minute("k", now, 100, 0.5);
    storm.failures = 70;
    storm.retries = 60;
    let data = CycleData {
        keys: vec![storm],
        retries: vec![KeyRetries {
            api_key_id: "k".into(),
            minute: now,
            provider_attempts: 200,
            provider_successes: 30,
            chains: 20,
            fast_chains: 18,
        }],
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 30, false);
    let storm: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "retry_storm")
        .collect();
    assert_eq!(storm.len(), 1, "{found:?}");
    assert_eq!(storm[0].severity, Severity::Critical);
    assert!(storm[0].observed > 6.0);

    // 40 % of 100 requests are retries: clearly above 25 %, with little amplification.
    let mut mild = key_minute("k", now, 100, 0.5);
    mild.failures = 10;
    mild.retries = 40;
    let data = CycleData {
        keys: vec![mild],
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 30, false);
    assert_eq!(
        found.iter().filter(|c| c.detector == "retry_storm").count(),
        1
    );
    assert_eq!(found[0].severity, Severity::Warning);

    // 7 retries among the first 20 requests of a minute (35 %) could be chance at a 25 %
    // threshold: not yet a storm.
    let mut early = key_minute("k", now, 20, 0.1);
    early.retries = 7;
    let data = CycleData {
        keys: vec![early],
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 10, false);
    assert!(
        found.iter().all(|c| c.detector != "retry_storm"),
        "{found:?}"
    );
}

#[test]
fn impossible_travel_fires_and_a_slow_move_does_not() {
    let mut e = engine();
    let now = warm(&mut e, 30);
    // DE at the end of warm-up, then JP a few minutes later: ~9,000 km in minutes.
    let jump = CycleData {
        keys: vec![key_minute("k", now + 120, 10, 0.1)],
        usage: vec![usage("k", now + 120, "JP", 2516, "KDDI", "gpt-4o-mini", 10)],
        ..CycleData::default()
    };
    let found = e.cycle(&jump, now + 150, false);
    let travel: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "cross_region")
        .collect();
    assert_eq!(travel.len(), 1, "{found:?}");
    assert!(travel[0].summary.contains("DE") && travel[0].summary.contains("JP"));

    // Same move twelve hours later: 750 km/h, possible.
    let mut slow = engine();
    let now = warm(&mut slow, 30);
    let later = now + 12 * 3600;
    slow.folded_through = later;
    let moved = CycleData {
        keys: vec![key_minute("k", later, 10, 0.1)],
        usage: vec![usage("k", later, "JP", 2516, "KDDI", "gpt-4o-mini", 10)],
        ..CycleData::default()
    };
    let found = slow.cycle(&moved, later + 30, false);
    assert!(
        found.iter().all(|c| c.detector != "cross_region"),
        "{found:?}"
    );
}

#[test]
fn overrides_switch_detectors_off_per_key() {
    let mut e = engine();
    let now = warm(&mut e, 60);
    let mut config = e.config().clone();
    config.keys.insert(
        "k".into(),
        tripline_core::config::EntityOverride {
            disabled: vec!["spend_spike".into()],
            ..Default::default()
        },
    );
    e.reconfigure(config).unwrap();
    let spike = CycleData {
        keys: vec![key_minute("k", now, 300, 25.0)],
        ..CycleData::default()
    };
    assert!(e
        .cycle(&spike, now + 30, false)
        .iter()
        .all(|c| c.detector != "spend_spike"));
}

#[test]
fn many_countries_at_once_is_flagged_even_when_close_together() {
    let mut e = engine();
    let now = warm(&mut e, 30);
    // Four neighbouring countries in one minute: no single hop is impossible, the spread is.
    let usage: Vec<Usage> = ["DE", "NL", "BE", "LU"]
        .iter()
        .map(|c| usage("k", now, c, 3320, "Deutsche Telekom AG", "gpt-4o-mini", 5))
        .collect();
    let data = CycleData {
        keys: vec![key_minute("k", now, 20, 0.1)],
        usage,
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 30, false);
    let travel: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "cross_region")
        .collect();
    assert_eq!(travel.len(), 1, "{found:?}");
    assert!(
        travel[0].summary.contains("4 countries"),
        "{}",
        travel[0].summary
    );
}

#[test]
fn a_new_country_and_network_alone_is_not_a_leak() {
    let mut e = engine();
    let now = warm(&mut e, 60);
    // The owner travels: another country and ISP, same client and model.
    let trip = CycleData {
        keys: vec![key_minute("k", now, 30, 0.1)],
        usage: vec![usage(
            "k",
            now,
            "FR",
            3215,
            "Orange S.A.",
            "gpt-4o-mini",
            30,
        )],
        ..CycleData::default()
    };
    let found = e.cycle(&trip, now + 30, false);
    assert!(
        found.iter().all(|c| c.detector != "leaked_key"),
        "{found:?}"
    );
}

#[test]
fn use_at_a_sleeping_hour_from_a_new_place_is_a_leak() {
    let mut e = engine();
    // Four days of office hours (08:00-17:59 UTC) from Germany.
    let day0 = T0 / 86_400 * 86_400 + 86_400;
    e.folded_through = day0;
    for day in 0..4u32 {
        for minute in (8 * 60)..(18 * 60) {
            let m = day0 + day * 86_400 + minute * 60;
            let data = CycleData {
                keys: vec![key_minute("k", m, 30, 0.1)],
                usage: vec![home_usage(m, 30)],
                ..CycleData::default()
            };
            e.cycle(&data, m + 60, true);
        }
    }
    // 03:00 UTC on day five, from France on another network: two weak signals and the hour.
    let night = day0 + 4 * 86_400 + 3 * 3600;
    e.folded_through = night;
    let data = CycleData {
        keys: vec![key_minute("k", night, 2, 0.01)],
        usage: vec![usage(
            "k",
            night,
            "FR",
            3215,
            "Orange S.A.",
            "gpt-4o-mini",
            2,
        )],
        ..CycleData::default()
    };
    let found = e.cycle(&data, night + 30, false);
    let leaks: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "leaked_key")
        .collect();
    assert_eq!(leaks.len(), 1, "{found:?}");
    assert!(
        leaks[0].summary.contains("03:00 UTC"),
        "{}",
        leaks[0].summary
    );
}

fn user_use(user: &str, key: &str, minute: u32, country: &str, requests: u64) -> UserUse {
    UserUse {
        user: user.into(),
        minute,
        country: country.into(),
        api_key_id: key.into(),
        requests,
        first_ms: i64::from(minute) * 1000 + 1_000,
        last_ms: i64::from(minute) * 1000 + 50_000,
    }
}

fn travel_of(found: &[Candidate]) -> Vec<&Candidate> {
    found
        .iter()
        .filter(|c| c.detector == "cross_region")
        .collect()
}

#[test]
fn a_user_on_two_keys_in_far_countries_is_impossible_travel() {
    let mut e = engine();
    let mut config = e.config().clone();
    config.cross_region.per_user = true;
    e.reconfigure(config).unwrap();
    // Twenty minutes of "alice" in Germany through key k1.
    for i in 0..20 {
        let minute = T0 + i * 60;
        let data = CycleData {
            users: vec![user_use("alice", "k1", minute, "DE", 5)],
            ..CycleData::default()
        };
        assert!(travel_of(&e.cycle(&data, minute + 60, false)).is_empty());
    }
    // Then alice through key k2 from Brazil, two minutes later: ~9,800 km.
    let now = T0 + 22 * 60;
    let data = CycleData {
        users: vec![user_use("alice", "k2", now, "BR", 3)],
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 30, false);
    let travel = travel_of(&found);
    assert_eq!(travel.len(), 1, "{found:?}");
    assert_eq!(
        travel[0].labels.get("user").map(String::as_str),
        Some("alice")
    );
    assert!(!travel[0].labels.contains_key("api_key_id"));
    assert!(travel[0].summary.contains("user alice used from DE and BR"));
    assert_eq!(travel[0].facts["api_key_ids"], json!(["k2"]));

    // Bob is new: five minutes are too little to know where he belongs.
    let bob = CycleData {
        users: vec![
            user_use("bob", "k1", now, "DE", 3),
            user_use("bob", "k2", now, "BR", 3),
        ],
        ..CycleData::default()
    };
    assert!(travel_of(&e.cycle(&bob, now + 40, false)).is_empty());
}

#[test]
fn a_key_used_from_two_far_regions_for_half_an_hour_stops_alerting() {
    let mut e = engine();
    let now = warm(&mut e, 30);
    // From now on the key serves from Germany and Japan in every minute (a second region).
    let both = |minute: u32| CycleData {
        keys: vec![key_minute("k", minute, 20, 0.1)],
        usage: vec![
            home_usage(minute, 10),
            usage("k", minute, "JP", 2516, "KDDI", "gpt-4o-mini", 10),
        ],
        ..CycleData::default()
    };
    let mut alerting_minutes = 0;
    for i in 0..40 {
        let minute = now + i * 60;
        if !travel_of(&e.cycle(&both(minute), minute + 60, false)).is_empty() {
            alerting_minutes += 1;
        }
    }
    // Flagged while the pair is news (30 closed minutes), quiet once it is the key's habit.
    assert_eq!(alerting_minutes, 30);
    // Another far country is still news.
    let minute = now + 40 * 60;
    let mut data = both(minute);
    data.usage
        .push(usage("k", minute, "BR", 28573, "Claro", "gpt-4o-mini", 5));
    let found = e.cycle(&data, minute + 30, false);
    let travel = travel_of(&found);
    assert_eq!(travel.len(), 1, "{found:?}");
    assert!(travel[0].summary.contains("BR"), "{}", travel[0].summary);
}

#[test]
fn users_idle_for_a_day_are_forgotten() {
    let mut e = engine();
    let mut config = e.config().clone();
    config.cross_region.per_user = true;
    e.reconfigure(config).unwrap();
    let data = CycleData {
        users: vec![user_use("carol", "k1", T0, "DE", 5)],
        ..CycleData::default()
    };
    e.cycle(&data, T0 + 60, true);
    assert_eq!(e.users.len(), 1);
    let later = T0 + 25 * 3600;
    e.cycle(&CycleData::default(), later, true);
    assert!(e.users.is_empty());
}

#[test]
fn a_few_fast_failures_early_in_a_minute_are_not_amplification() {
    let mut e = engine();
    let now = warm(&mut e, 30);
    // 10 s in: 25 requests, but of the upstream attempts finished so far 8 failed fast and
    // only 1 slow success is back (9 attempts per success, on nine attempts).
    let data = CycleData {
        keys: vec![key_minute("k", now, 25, 0.05)],
        retries: vec![KeyRetries {
            api_key_id: "k".into(),
            minute: now,
            provider_attempts: 9,
            provider_successes: 1,
            ..KeyRetries::default()
        }],
        ..CycleData::default()
    };
    let found = e.cycle(&data, now + 10, false);
    assert!(
        found.iter().all(|c| c.detector != "retry_storm"),
        "{found:?}"
    );
}

#[test]
fn a_storm_building_is_caught_in_its_first_minute() {
    let mut e = engine();
    let now = warm(&mut e, 30); // 30 requests a minute, no failures
    let minute_with = |requests: u64, throttled: u64, retries: u64| {
        let mut row = key_minute("k", now, requests, 0.05);
        (row.failures, row.throttled, row.retries) = (throttled, throttled, retries);
        CycleData {
            keys: vec![row],
            // The retries follow their failures within milliseconds.
            retries: vec![KeyRetries {
                api_key_id: "k".into(),
                minute: now,
                chains: retries.min(3),
                fast_chains: retries.min(3),
                ..KeyRetries::default()
            }],
            ..CycleData::default()
        }
    };
    // 20 s into the minute: 25 requests (2.5x the usual pace), 8 answered 429, 5 retries.
    // Neither the retry share (20 %) nor the amplification says storm yet; the trend does.
    let found = e.cycle(&minute_with(25, 8, 5), now + 20, false);
    let storm: Vec<_> = found
        .iter()
        .filter(|c| c.detector == "retry_storm")
        .collect();
    assert_eq!(storm.len(), 1, "{found:?}");
    assert!(storm[0].summary.contains("429/5xx"), "{}", storm[0].summary);
    assert_eq!(storm[0].severity, Severity::Warning);

    // The same pace without failures is a busy minute; failures at the usual pace, or without
    // any retry, are not a storm either.
    for (requests, throttled, retries) in [(25, 0, 5), (10, 4, 3), (25, 8, 0)] {
        let found = e.cycle(&minute_with(requests, throttled, retries), now + 20, false);
        assert!(
            found.iter().all(|c| c.detector != "retry_storm"),
            "{requests} requests, {throttled} throttled, {retries} retries: {found:?}"
        );
    }
    // A gateway retrying upstream answers 200 in the end: its failed attempts count.
    let mut upstream = minute_with(25, 0, 5);
    upstream.retries[0].provider_attempts = 40;
    upstream.retries[0].provider_successes = 25;
    let found = e.cycle(&upstream, now + 20, false);
    assert_eq!(
        found.iter().filter(|c| c.detector == "retry_storm").count(),
        1,
        "{found:?}"
    );
    // 20 requests with 8 retries: at once, the retries double the key's pace (a storm);
    // backed off, its first attempts are at their usual pace (a provider's bad spell).
    let count = |data: &CycleData, at: u32, e: &mut Engine| {
        let found = e.cycle(data, now + at, false);
        found.iter().filter(|c| c.detector == "retry_storm").count()
    };
    assert_eq!(count(&minute_with(20, 8, 8), 20, &mut e), 1);
    let mut backing_off = minute_with(20, 8, 8);
    backing_off.retries[0].fast_chains = 0;
    assert_eq!(count(&backing_off, 20, &mut e), 0);
    // Backed off too, but 30 s into the minute 35 first attempts (2.3x the usual pace): the
    // load is rising with the failures. Whether that is a storm depends on the other keys on
    // its provider while it failed: failing as often, it is a bad spell meeting a busy moment;
    // failing rarely, the key is on its own.
    let backed_off_with_peers = |peer_attempts: u64, peer_failures: u64, failing_s: u32| {
        let mut data = minute_with(40, 12, 5);
        data.retries[0].fast_chains = 0;
        data.retries[0].provider_attempts = 40;
        data.retries[0].provider_successes = 28;
        // Its 12 failures from 1 s into the minute on, for `failing_s`.
        let first_ms = i64::from(now) * 1000 + 1_000;
        data.key_failures = vec![KeyProviderFailures {
            api_key_id: "k".into(),
            minute: now,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            attempts: 40,
            failures: 12,
            first_ms,
            last_ms: first_ms + i64::from(failing_s) * 1000,
        }];
        let bucket = |provider: &str, second: u32, attempts: u64, failures: u64| ProviderBucket {
            provider: provider.into(),
            model: "gpt-4o-mini".into(),
            minute: now,
            bucket: now + second,
            attempts,
            failures,
            first_attempts: attempts,
        };
        // The key's own attempts and failures are in the buckets too.
        data.provider_buckets = vec![
            bucket("openai", 0, 14 + peer_attempts / 3, 4 + peer_failures / 3),
            bucket("openai", 10, 13 + peer_attempts / 3, 4 + peer_failures / 3),
            bucket("openai", 20, 13 + peer_attempts / 3, 4 + peer_failures / 3),
            // After the key's failures, and on another provider: neither counts.
            bucket("openai", 30, 40, 40),
            bucket("anthropic", 10, 100, 0),
        ];
        data
    };
    assert_eq!(count(&backed_off_with_peers(60, 2, 25), 30, &mut e), 1);
    // Everyone failing on the provider: its bad spell, or a storm on it the provider alert
    // covers.
    assert_eq!(count(&backed_off_with_peers(60, 12, 25), 30, &mut e), 0);
    // Too few attempts by others to tell.
    assert_eq!(count(&backed_off_with_peers(10, 0, 25), 30, &mut e), 0);
    // Failing for 5 s only: a bad spell it retried into.
    assert_eq!(count(&backed_off_with_peers(60, 2, 5), 30, &mut e), 0);
}

#[test]
fn a_token_spike_on_an_unpriced_model_fires_and_a_planned_batch_does_not() {
    let with_tokens = |minute: u32, tokens: u64| {
        let mut row = key_minute("k", minute, 30, 0.0); // a model missing from the price table
        row.tokens = tokens;
        CycleData {
            keys: vec![row],
            ..CycleData::default()
        }
    };
    let run = |config: DetectConfig| {
        let mut e = Engine::new(config).unwrap();
        e.folded_through = T0;
        for i in 0..40 {
            let minute = T0 + i * 60;
            e.cycle(
                &with_tokens(minute, 40_000 + u64::from(i % 5) * 1_000),
                minute + 60,
                true,
            );
        }
        let now = T0 + 40 * 60;
        // 30 s into the minute the key has used 900,000 tokens (usually ~42,000).
        e.cycle(&with_tokens(now, 900_000), now + 30, false)
    };
    let config = engine().config().clone();
    let found = run(config.clone());
    let tokens: Vec<_> = found
        .iter()
        .filter(|c| c.labels.get("measure").map(String::as_str) == Some("tokens"))
        .collect();
    assert_eq!(tokens.len(), 1, "{found:?}");
    assert_eq!(tokens[0].detector, "spend_spike");
    assert!(
        tokens[0].summary.contains("900000 tokens"),
        "{}",
        tokens[0].summary
    );
    assert!(tokens[0].upper - tokens[0].expected >= 200_000.0);
    assert!(
        (39_000.0..45_000.0).contains(&tokens[0].expected),
        "{:?}",
        tokens[0]
    );

    // A planned batch: its operator raised the dollar floor; its tokens are expected too.
    let mut planned = config.clone();
    planned.keys.insert(
        "k".into(),
        EntityOverride {
            min_abs_usd: Some(50.0),
            ..EntityOverride::default()
        },
    );
    assert!(run(planned.clone()).is_empty());
    // Unless the override names a token floor as well.
    planned.keys.get_mut("k").unwrap().min_abs_tokens = Some(500_000);
    assert_eq!(run(planned).len(), 1);
    // 0 switches token alerts off.
    let mut off = config;
    off.spend_spike.min_abs_tokens = 0;
    assert!(run(off).is_empty());
}

#[test]
fn country_pairs_still_being_learned_make_room_for_new_ones() {
    let mut e = engine();
    let now = warm(&mut e, 30);
    // Eight one-minute far hops (noise) fill the pair list; a real second region (JP) must
    // still become familiar after its 30 minutes.
    let noise = ["BR", "AU", "ZA", "AR", "CL", "NZ", "PE", "KE"];
    for (i, c) in noise.iter().enumerate() {
        let minute = now + i as u32 * 60;
        let data = CycleData {
            keys: vec![key_minute("k", minute, 20, 0.1)],
            usage: vec![
                home_usage(minute, 10),
                usage("k", minute, c, 1, "Some ISP", "gpt-4o-mini", 5),
            ],
            ..CycleData::default()
        };
        e.cycle(&data, minute + 60, false);
    }
    let start = now + 8 * 60;
    let mut last = Vec::new();
    for i in 0..32 {
        let minute = start + i * 60;
        let data = CycleData {
            keys: vec![key_minute("k", minute, 20, 0.1)],
            usage: vec![
                home_usage(minute, 10),
                usage("k", minute, "JP", 2516, "KDDI", "gpt-4o-mini", 10),
            ],
            ..CycleData::default()
        };
        last = e.cycle(&data, minute + 60, false);
    }
    assert!(
        last.iter().all(|c| c.detector != "cross_region"),
        "{last:?}"
    );
}

#[test]
fn retry_shares_early_in_a_minute_are_judged_over_the_last_60_seconds() {
    let minute_of = |minute: u32, requests: u64, retries: u64| {
        let mut row = key_minute("k", minute, requests, 0.05);
        row.retries = retries;
        CycleData {
            keys: vec![row],
            ..CycleData::default()
        }
    };
    let retry_alerts =
        |found: &[Candidate]| found.iter().filter(|c| c.detector == "retry_storm").count();
    // A calm minute (60 requests, 1 retry), then 10 s of a provider's bad spell: 30 requests,
    // 15 of them retries. Alone that is 50 %; over the last 60 s it is 16 of 80.
    let mut e = engine();
    let now = warm(&mut e, 30);
    e.cycle(&minute_of(now, 60, 1), now + 60, false);
    let spell = e.cycle(&minute_of(now + 60, 30, 15), now + 70, false);
    assert_eq!(retry_alerts(&spell), 0, "{spell:?}");

    // The same 10 s after a minute that was already half retries: a storm going on.
    let mut e = engine();
    let now = warm(&mut e, 30);
    e.cycle(&minute_of(now, 60, 30), now + 60, false);
    let storm = e.cycle(&minute_of(now + 60, 30, 15), now + 70, false);
    assert_eq!(retry_alerts(&storm), 1, "{storm:?}");
}

/// Provider storms: a provider/model (openai/gpt-4o-mini) with 80 upstream attempts every 10 s,
/// 2 of them 429/5xx, and other keys on it.
mod provider_storms {
    use super::*;
    use crate::data::{ProviderChains, ProviderKeyFailures, ProviderMinute};

    const P: &str = "openai";
    const M: &str = "gpt-4o-mini";

    /// 10 s of the provider/model: attempts, failures and first attempts.
    fn bucket(
        minute: u32,
        second: u32,
        attempts: u64,
        failures: u64,
        first: u64,
    ) -> ProviderBucket {
        ProviderBucket {
            provider: P.into(),
            model: M.into(),
            minute,
            bucket: minute + second,
            attempts,
            failures,
            first_attempts: first,
        }
    }

    fn calm_minute(minute: u32) -> Vec<ProviderBucket> {
        (0..6).map(|b| bucket(minute, b * 10, 80, 2, 79)).collect()
    }

    /// 30 minutes of calm traffic, key "k" included (30 requests a minute); returns the
    /// next minute.
    fn warmed() -> (Engine, u32) {
        let mut e = engine();
        for i in 0..30 {
            let minute = T0 + i * 60;
            let data = CycleData {
                keys: vec![key_minute("k", minute, 30, 0.10)],
                usage: vec![home_usage(minute, 30)],
                provider_buckets: calm_minute(minute),
                ..CycleData::default()
            };
            e.cycle(&data, minute + 60, true);
        }
        (e, T0 + 30 * 60)
    }

    /// What shard 0 reads from `now` (the open minute) on, the minute before included: the
    /// provider/model storming from `now` at `attempts` and `failures` per 10 s (up to
    /// `until_s` into the minute), with five keys failing on it, `fast` of `chains` retry
    /// chains without backoff.
    fn storm(
        now: u32,
        attempts: u64,
        failures: u64,
        until_s: u32,
        chains: u64,
        fast: u64,
    ) -> CycleData {
        let mut buckets = calm_minute(now - 60);
        buckets.extend((0..until_s / 10).map(|b| bucket(now, b * 10, attempts, failures, 80)));
        let total = (
            attempts * u64::from(until_s / 10),
            failures * u64::from(until_s / 10),
        );
        let provider_keys = ["key-a", "key-b", "key-c", "key-d", "key-e"]
            .iter()
            .map(|k| ProviderKeyFailures {
                provider: P.into(),
                model: M.into(),
                minute: now,
                api_key_id: (*k).into(),
                attempts: total.0 / 6,
                failures: total.1 / 6,
                failing_keys: 7,
                calling_keys: 9,
            })
            .collect();
        CycleData {
            providers: vec![ProviderMinute {
                provider: P.into(),
                model: M.into(),
                minute: now,
                attempts: total.0,
                successes: total.0 - total.1,
            }],
            provider_buckets: buckets,
            provider_keys,
            provider_chains: vec![ProviderChains {
                provider: P.into(),
                model: M.into(),
                minute: now,
                chains,
                fast_chains: fast,
                client_retries: 0,
            }],
            ..CycleData::default()
        }
    }

    /// Makes the storm of `data` (at `now`) begin 30 s before `now`, in the minute before: a
    /// storm with backoff is one once the 60 s that ended 30 s ago were failing too.
    fn began_earlier(data: &mut CycleData, now: u32) {
        let first = data
            .provider_buckets
            .iter()
            .find(|b| b.minute == now)
            .cloned()
            .expect("the storm's first bucket");
        for b in data
            .provider_buckets
            .iter_mut()
            .filter(|b| b.minute == now - 60 && b.bucket >= now - 30)
        {
            (b.attempts, b.failures, b.first_attempts) =
                (first.attempts, first.failures, first.first_attempts);
        }
    }

    fn provider_alerts(found: &[Candidate]) -> Vec<&Candidate> {
        found
            .iter()
            .filter(|c| c.detector == "retry_storm" && c.labels.contains_key("provider"))
            .collect()
    }

    fn key_alerts<'a>(found: &'a [Candidate], key: &str) -> Vec<&'a Candidate> {
        found
            .iter()
            .filter(|c| c.detector == "retry_storm" && c.api_key_id() == Some(key))
            .collect()
    }

    #[test]
    fn a_storm_without_backoff_at_twice_the_attempts_pages_within_a_minute() {
        let (mut e, now) = warmed();
        // 60 % of attempts failing, 2.2x the attempts (the gateway retrying at once).
        let data = storm(now, 176, 106, 60, 100, 95);
        // 20 s in: the failures fill only part of the last 60 s. Not yet.
        assert!(provider_alerts(&e.cycle(&data, now + 20, false)).is_empty());
        let found = e.cycle(&data, now + 50, false);
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        let a = alerts[0];
        assert_eq!(a.labels["provider"], P);
        assert_eq!(a.labels["model"], M);
        assert_eq!(a.severity, Severity::Critical);
        assert!(a.observed > 0.5 && a.expected < 0.05, "{a:?}");
        assert!(
            a.summary.contains("without backoff")
                && a.summary
                    .contains("keys affected: key-a, key-b, key-c (+4 more)"),
            "{}",
            a.summary
        );
        assert_eq!(a.facts["keys_affected_total"], json!(7));
    }

    #[test]
    fn a_storm_with_backoff_is_a_warning() {
        let (mut e, now) = warmed();
        // 40 % failing, 1.5x the attempts (clients retrying after 0.5-4 s), for 90 s.
        let mut data = storm(now, 120, 48, 60, 30, 0);
        began_earlier(&mut data, now);
        let found = e.cycle(&data, now + 60, false);
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        assert_eq!(alerts[0].severity, Severity::Warning);
        assert!(
            alerts[0].summary.contains("with backoff"),
            "{}",
            alerts[0].summary
        );
        // For 60 s only: bad spells of a provider in a row, clients backing off through them
        // as they would in a storm. Not yet one.
        let (mut e, now) = warmed();
        let found = e.cycle(&storm(now, 120, 48, 60, 30, 0), now + 60, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
        // Failing as much, but no more attempts than usual (clients gave up): an outage, not
        // a retry storm.
        let (mut e, now) = warmed();
        let mut data = storm(now, 80, 32, 60, 0, 0);
        began_earlier(&mut data, now);
        let found = e.cycle(&data, now + 60, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
    }

    #[test]
    fn blips_and_bad_spells_do_not_fire() {
        // A 10 s blip: every attempt failing, retried at once.
        let (mut e, now) = warmed();
        let mut data = storm(now, 80, 2, 60, 0, 0);
        data.provider_buckets[8] = bucket(now, 20, 240, 240, 80);
        for at in (10..=60).step_by(10) {
            let found = e.cycle(&data, now + at, false);
            assert!(provider_alerts(&found).is_empty(), "at {at} s: {found:?}");
        }
        // A 30 s bad spell at 40 %, 1.4x the attempts: half a minute does not fill three
        // thirds of one.
        let (mut e, now) = warmed();
        let mut data = storm(now, 80, 2, 60, 0, 0);
        for b in 7..10 {
            data.provider_buckets[b].attempts = 112;
            data.provider_buckets[b].failures = 45;
        }
        for at in (10..=60).step_by(5) {
            let found = e.cycle(&data, now + at, false);
            assert!(provider_alerts(&found).is_empty(), "at {at} s: {found:?}");
        }
    }

    /// Key "k" storming: 100 requests, 70 failed, 60 retries, 200 upstream attempts of which
    /// 30 succeeded (6.7 per success), without backoff; its failures on openai/gpt-4o-mini
    /// over the minute so far, `own` of its 200 attempts.
    fn key_storm(data: &mut CycleData, now: u32, own: u64) {
        let mut row = key_minute("k", now, 100, 0.5);
        (row.failures, row.throttled, row.retries) = (70, 70, 60);
        data.keys.push(row);
        data.retries.push(KeyRetries {
            api_key_id: "k".into(),
            minute: now,
            provider_attempts: 200,
            provider_successes: 30,
            chains: 20,
            fast_chains: 18,
        });
        data.key_failures.push(KeyProviderFailures {
            api_key_id: "k".into(),
            minute: now,
            provider: P.into(),
            model: M.into(),
            attempts: 200,
            failures: own,
            first_ms: i64::from(now) * 1000 + 1_000,
            last_ms: i64::from(now) * 1000 + 49_000,
        });
    }

    #[test]
    fn keys_caught_in_a_provider_storm_are_folded_into_its_alert() {
        let (mut e, now) = warmed();
        // k's 200 attempts are among the provider's; it fails as often as everyone (60 %).
        let mut data = storm(now, 176, 106, 60, 100, 95);
        key_storm(&mut data, now, 120);
        let found = e.cycle(&data, now + 50, false);
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        assert_eq!(alerts[0].facts["key_alerts_folded"], json!(["k"]));
        assert!(alerts[0].summary.contains("folded in: 1"));

        // Another shard (no provider minutes): no provider alert, and still no key alert.
        data.providers.clear();
        let found = e.cycle(&data, now + 50, false);
        assert!(
            found.iter().all(|c| c.detector != "retry_storm"),
            "{found:?}"
        );

        // 20 s in, the storm is not yet one, but the others fail as much: k is held back.
        let found = e.cycle(&data, now + 20, false);
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");

        // A key failing far more than the others (every attempt) still alerts.
        let (mut e, now) = warmed();
        let mut data = storm(now, 176, 70, 60, 100, 95);
        key_storm(&mut data, now, 200);
        let found = e.cycle(&data, now + 50, false);
        assert_eq!(key_alerts(&found, "k").len(), 1, "{found:?}");
    }

    #[test]
    fn a_caught_key_stays_quiet_as_the_storm_ends() {
        let (mut e, now) = warmed();
        // The storm for 40 s of the minute, k caught in it; the minute closes.
        let mut data = storm(now, 176, 106, 40, 100, 95);
        key_storm(&mut data, now, 120);
        let found = e.cycle(&data, now + 60, false);
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");
        // 10 s into the next minute, calm: k's last 60 s are still half retries, and the
        // provider's no longer a storm. Its failures of the minute before were the provider's.
        let mut next = storm(now + 60, 80, 2, 10, 0, 0);
        next.provider_buckets = data.provider_buckets.clone();
        next.provider_buckets.push(bucket(now + 60, 0, 80, 2, 79));
        let mut calm = key_minute("k", now + 60, 10, 0.05);
        calm.retries = 2; // the last retries of the storm
        next.keys = vec![calm];
        next.key_failures = data.key_failures.clone();
        let found = e.cycle(&next, now + 70, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");
        // Without them, its window alone would page.
        next.key_failures.clear();
        let found = e.cycle(&next, now + 70, false);
        assert_eq!(key_alerts(&found, "k").len(), 1, "{found:?}");
    }

    #[test]
    fn a_storm_is_judged_against_the_load_of_the_last_minutes_not_of_the_last_hour() {
        // An hour at three times the load (its busy hour), then half an hour calm; then a
        // third of the attempts failing at twice the calm load, clients backing off. Against
        // the last hour's load, that is less than usual.
        let mut e = engine();
        for i in 0..90 {
            let minute = T0 + i * 60;
            let per_10s = if i < 60 { 240 } else { 80 };
            let data = CycleData {
                provider_buckets: (0..6)
                    .map(|b| bucket(minute, b * 10, per_10s, per_10s / 40, per_10s - 1))
                    .collect(),
                ..CycleData::default()
            };
            e.cycle(&data, minute + 60, true);
        }
        let now = T0 + 90 * 60;
        let mut data = storm(now, 160, 53, 60, 30, 0);
        // The gateway does not retry: every attempt is a request's first.
        for b in data.provider_buckets.iter_mut() {
            b.first_attempts = b.attempts;
        }
        began_earlier(&mut data, now);
        let found = e.cycle(&data, now + 60, false);
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        assert!(alerts[0].summary.contains("with backoff"), "{alerts:?}");
    }

    #[test]
    fn a_provider_serving_mostly_one_key_storms_on_the_few_requests_of_the_others() {
        // 60 % failing at twice the attempts, nearly all of them one big key's; the two other
        // keys make 5 attempts each in the window. Failing 3 of 5 each, they are the provider
        // failing; failing 1 of 10 between them, it is the big key's own trouble.
        let peers = |failures: [u64; 2]| {
            let (mut e, now) = warmed();
            let mut data = storm(now, 176, 106, 60, 100, 95);
            let row = |key: &str, attempts, failures| ProviderKeyFailures {
                provider: P.into(),
                model: M.into(),
                minute: now,
                api_key_id: key.into(),
                attempts,
                failures,
                failing_keys: 3,
                calling_keys: 3,
            };
            data.provider_keys = vec![
                row("big", 1046, 630),
                row("small-1", 5, failures[0]),
                row("small-2", 5, failures[1]),
            ];
            provider_alerts(&e.cycle(&data, now + 60, false)).len()
        };
        assert_eq!(peers([3, 3]), 1);
        assert_eq!(peers([1, 0]), 0);
        // Half of ten: a bad spell of seconds meeting a few attempts does as much by chance.
        assert_eq!(peers([3, 2]), 0);
    }

    /// The storm of [`storm`] on a provider/model that key "solo" alone calls, sending its
    /// requests at `first` first attempts per 10 s.
    fn only_caller_storm(now: u32, attempts: u64, failures: u64, first: u64) -> CycleData {
        let mut data = storm(now, attempts, failures, 60, 100, 95);
        for b in data.provider_buckets.iter_mut().filter(|b| b.minute == now) {
            b.first_attempts = first;
        }
        data.provider_keys = vec![ProviderKeyFailures {
            provider: P.into(),
            model: M.into(),
            minute: now,
            api_key_id: "solo".into(),
            attempts: attempts * 6,
            failures: failures * 6,
            failing_keys: 1,
            calling_keys: 1,
        }];
        data
    }

    #[test]
    fn a_provider_that_one_key_alone_calls_storms_when_that_key_sends_as_usual() {
        // 60 % failing at 2.2x the attempts per request, and the one caller sending its usual
        // requests: the provider is failing it, once it was 30 s ago too (a key's own storm
        // shows its rise by then).
        let (mut e, now) = warmed();
        let found = e.cycle(&only_caller_storm(now, 176, 106, 80), now + 60, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
        let (mut e, now) = warmed();
        let mut data = only_caller_storm(now, 176, 106, 80);
        began_earlier(&mut data, now);
        let found = e.cycle(&data, now + 60, false);
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        assert!(
            alerts[0]
                .summary
                .contains("keys affected: solo (its only caller"),
            "{}",
            alerts[0].summary
        );
        assert_eq!(alerts[0].facts["only_caller"], json!(true));
        // The same failures while it sends three times its requests: its own storm, not the
        // provider's.
        let (mut e, now) = warmed();
        let mut data = only_caller_storm(now, 528, 318, 240);
        began_earlier(&mut data, now);
        let found = e.cycle(&data, now + 60, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
    }

    /// Key "k" backing off through failures: `requests` in the minute so far, half of them its
    /// clients' repeats, 60 % failing; upstream, `attempts` of the minute's, `failures` of them
    /// failed, from its first seconds to its last.
    fn backing_off(data: &mut CycleData, now: u32, requests: u64, attempts: u64, failures: u64) {
        let mut row = key_minute("k", now, requests, 0.5);
        (row.failures, row.throttled, row.retries) =
            (requests * 3 / 5, requests * 3 / 5, requests / 2);
        data.keys.push(row);
        data.retries.push(KeyRetries {
            api_key_id: "k".into(),
            minute: now,
            provider_attempts: attempts,
            provider_successes: attempts - failures,
            chains: 10,
            fast_chains: 0,
        });
        data.key_failures.push(KeyProviderFailures {
            api_key_id: "k".into(),
            minute: now,
            provider: P.into(),
            model: M.into(),
            attempts,
            failures,
            first_ms: i64::from(now) * 1000 + 1_000,
            last_ms: i64::from(now) * 1000 + 59_000,
        });
    }

    /// A provider/model that k (nearly) alone calls failing 60 % of its 176 attempts per 10 s
    /// (for 90 s, twice its usual attempts per request), k's clients backing off and sending
    /// `requests` in the minute; `others` attempts of the minute are other keys', `failed` of
    /// them failed.
    fn alone_backing_off(now: u32, requests: u64, others: u64, failed: u64) -> CycleData {
        let mut data = only_caller_storm(now, 176, 106, 80);
        began_earlier(&mut data, now);
        data.provider_chains[0].fast_chains = 0;
        data.provider_keys[0].api_key_id = "k".into();
        backing_off(&mut data, now, requests, 6 * 176 - others, 6 * 106 - failed);
        data
    }

    #[test]
    fn a_key_alone_on_its_provider_waits_for_the_providers_alert() {
        // k sends its usual requests: the provider's trouble or k's own, none can tell 30 s
        // in. It waits, and 60 s in, the provider's alert (with backoff) takes it in.
        let (mut e, now) = warmed();
        let data = alone_backing_off(now, 50, 0, 0);
        let found = e.cycle(&data, now + 30, false);
        assert!(
            found.iter().all(|c| c.detector != "retry_storm"),
            "{found:?}"
        );
        let found = e.cycle(&data, now + 60, false);
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");
        let alerts = provider_alerts(&found);
        assert_eq!(alerts.len(), 1, "{found:?}");
        assert!(alerts[0].summary.contains("with backoff"), "{alerts:?}");
        assert_eq!(alerts[0].facts["key_alerts_folded"], json!(["k"]));
        // The next minute's first cycle falls short of the storm's bar (the provider's
        // buckets calm so far) while k still fails: the storm judged 10 s ago holds k.
        let mut short = storm(now + 60, 80, 2, 60, 0, 0);
        backing_off(&mut short, now + 60, 50, 6 * 176, 6 * 106);
        let found = e.cycle(&short, now + 70, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");

        // Four attempts of another key there, two of them failed: the few others fail as k
        // does, and k waits. The same four all answered: the failures are k's alone.
        let (mut e, now) = warmed();
        let found = e.cycle(&alone_backing_off(now, 50, 4, 2), now + 30, false);
        assert!(key_alerts(&found, "k").is_empty(), "{found:?}");
        let (mut e, now) = warmed();
        let found = e.cycle(&alone_backing_off(now, 50, 4, 0), now + 30, false);
        assert_eq!(key_alerts(&found, "k").len(), 1, "{found:?}");

        // No provider storm follows (the attempts do not rise: an outage): k pages once it
        // has waited 90 s, two minutes on.
        let (mut e, now) = warmed();
        let outage = |minute| {
            let mut data = storm(minute, 80, 48, 60, 30, 0);
            backing_off(&mut data, minute, 50, 6 * 80, 6 * 48);
            data
        };
        for at in [30, 50, 80, 110] {
            let found = e.cycle(&outage(now + at / 60 * 60), now + at, false);
            assert!(key_alerts(&found, "k").is_empty(), "at {at} s: {found:?}");
        }
        let found = e.cycle(&outage(now + 120), now + 125, false);
        assert_eq!(key_alerts(&found, "k").len(), 1, "{found:?}");
        assert!(provider_alerts(&found).is_empty(), "{found:?}");

        // At 2.7 times its usual requests over the last 60 s, the failures rise with k's own
        // load: it pages at once.
        let (mut e, now) = warmed();
        let found = e.cycle(&alone_backing_off(now, 130, 0, 0), now + 30, false);
        assert_eq!(key_alerts(&found, "k").len(), 1, "{found:?}");
    }

    #[test]
    fn clients_repeating_their_requests_are_load_per_request() {
        // 40 % failing at 1.2x the attempts per minute; the gateway does not retry (every
        // attempt is a first one), but 180 of the 576 first attempts are clients repeating a
        // request after backing off: 1.45 attempts per request of theirs.
        let storm_with = |client_retries| {
            let (mut e, now) = warmed();
            let mut data = storm(now, 96, 38, 60, 30, 0);
            for b in data.provider_buckets.iter_mut().filter(|b| b.minute == now) {
                b.first_attempts = 96;
            }
            began_earlier(&mut data, now);
            data.provider_chains[0].client_retries = client_retries;
            provider_alerts(&e.cycle(&data, now + 60, false)).len()
        };
        assert_eq!(storm_with(180), 1);
        // Without the repeats, 1.2x the attempts is no storm.
        assert_eq!(storm_with(0), 0);
    }

    #[test]
    fn a_key_storming_alone_on_a_healthy_provider_still_alerts() {
        let (mut e, now) = warmed();
        // The others as usual (80 attempts, 2 failed per 10 s); k's own attempts, 85 % of them
        // failing, push the provider/model's share to 40 %, but it is one key.
        let mut data = storm(now, 80 + 40, 2 + 34, 60, 100, 95);
        data.provider_keys = vec![ProviderKeyFailures {
            provider: P.into(),
            model: M.into(),
            minute: now,
            api_key_id: "k".into(),
            attempts: 240,
            failures: 204,
            failing_keys: 3,
            calling_keys: 3,
        }];
        key_storm(&mut data, now, 170);
        let found = e.cycle(&data, now + 50, false);
        assert!(provider_alerts(&found).is_empty(), "{found:?}");
        let key = key_alerts(&found, "k");
        assert_eq!(key.len(), 1, "{found:?}");
        assert_eq!(key[0].severity, Severity::Critical);
    }
}
