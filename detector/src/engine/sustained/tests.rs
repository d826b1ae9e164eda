use super::*;
use tripline_core::config::EntityOverride;

/// Long runs are judged by where they stand now only in hours whose requests rhythm the
/// key has lived whole.
#[test]
fn long_runs_are_judged_recently_once_the_hour_is_known() {
    let params = tripline_core::models::SpendModelConfig::default()
        .validate()
        .unwrap();
    let mut season = Seasonal::new(false);
    assert_eq!(judged(None, &params, 5), Judged::Run);
    for n in 1..=params.config.season_min_windows {
        assert_eq!(judged(Some(&season), &params, 5), Judged::Run, "{n}");
        season.update(5, 1.0, params.season_alpha(), 1.0, 20.0);
    }
    assert_eq!(judged(Some(&season), &params, 5), Judged::Recent);
    assert_eq!(judged(Some(&season), &params, 6), Judged::Run);
}

const T0: u32 = 1_795_680_000; // a minute boundary

fn engine() -> Engine {
    let mut config = DetectConfig {
        allowed_lateness_s: 0,
        ..DetectConfig::default()
    };
    config.spend_spike.model.warmup_windows = 10;
    config.spend_spike.sustained.enabled = true;
    let mut engine = Engine::new(config).unwrap();
    engine.folded_through = T0;
    engine
}

/// A small, lumpy key: 0-3 requests of $0.0015 a minute, about $0.004 a minute, in a fixed
/// pseudo-random order; `times` multiplies its spend from minute `from` on.
fn spend(i: u32, times: f64, from: u32) -> (u64, f64) {
    // splitmix64's finaliser: minutes independent of each other, as Poisson arrivals are.
    let mut z = u64::from(i).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let requests = (z ^ (z >> 31)) % 4;
    let factor = if i >= from { times } else { 1.0 };
    (requests, requests as f64 * 0.0015 * factor)
}

fn minute_data(key: &str, minute: u32, requests: u64, cost: f64) -> CycleData {
    CycleData {
        keys: vec![KeyMinute {
            api_key_id: key.into(),
            minute,
            project: "p".into(),
            requests,
            cost_usd: cost,
            tokens: requests * 1_000,
            ..KeyMinute::default()
        }],
        ..CycleData::default()
    }
}

/// Runs the key for `minutes`, judging each minute when it ends; returns the minutes (from
/// the start) at which a spend_spike candidate came up, and their summaries.
fn run(
    e: &mut Engine,
    key: &str,
    minutes: u32,
    cost_at: impl Fn(u32) -> (u64, f64),
) -> Vec<(u32, String)> {
    run_data(e, minutes, |i, minute| {
        let (requests, cost) = cost_at(i);
        minute_data(key, minute, requests, cost)
    })
    .into_iter()
    .map(|(i, c)| (i, c.summary))
    .collect()
}

/// Runs `minutes` of `data_at(i, minute)`, judging each minute when it ends; returns the
/// spend_spike candidates with the minute (from the start) they came up in, as paged with
/// no yesterday known (half-certain ones dropped, [`crate::routine::judge`]).
fn run_data(
    e: &mut Engine,
    minutes: u32,
    data_at: impl Fn(u32, u32) -> CycleData,
) -> Vec<(u32, Candidate)> {
    let mut found = Vec::new();
    for i in 0..minutes {
        let minute = T0 + i * 60;
        let mut candidates = e.cycle(&data_at(i, minute), minute + 60, i < 120);
        crate::routine::judge(
            &mut candidates,
            2.0,
            |_| crate::routine::Crowd::UNKNOWN,
            |_| None,
        );
        for c in candidates {
            if c.detector == "spend_spike" {
                found.push((i, c));
            }
        }
    }
    found
}

/// A key's usual requests while its models warm up is their running mean, not an average
/// anchored at its first minute: one request, then ten a minute, is a key of about ten a
/// minute once warm. At the EWMA's pace from that first minute it read about two, and every
/// hour learnt meanwhile took its factor against that.
#[test]
fn the_usual_is_not_anchored_at_the_first_minute() {
    let mut e = engine();
    for i in 0..20 {
        let minute = T0 + i * 60;
        let requests = if i == 0 { 1 } else { 10 };
        let data = minute_data("k", minute, requests, requests as f64 * 0.0015);
        e.cycle(&data, minute + 60, true);
    }
    let state = &e.keys[&KeyId::of("k")];
    let usual = state.usual_requests_at(&e.spend_params, T0 + 20 * 60);
    assert!((8.5..=10.0).contains(&usual), "usual {usual}");
}

/// A key calling once every ten minutes learns its usual price per token as the running mean
/// of its priced minutes, past the warm-up too: three calls at ten times its later price, then
/// forty-seven at it, is a key of about that price. At the EWMA's pace from the end of the
/// warm-up, the first calls still made more than half of its mean log price, and the usual
/// price came out about seven times the price it pays.
#[test]
fn a_sparse_keys_usual_price_is_not_anchored_at_its_first_calls() {
    let mut e = engine();
    for i in 0..500 {
        let minute = T0 + i * 60;
        let data = if i % 10 == 0 {
            let price = if i < 30 { 0.015 } else { 0.0015 };
            minute_data("k", minute, 1, price)
        } else {
            CycleData::default()
        };
        e.cycle(&data, minute + 60, true);
    }
    let usual = e.keys[&KeyId::of("k")].sustained.usual_price();
    // $0.0015 for 1,000 tokens; the mean of the mix's log price, with its spread, about 1.3x.
    assert!(
        (1.5e-6..2.3e-6).contains(&usual),
        "usual price per token {usual:e}"
    );
}

/// A key whose working day is a x10 surge at the same hours every day. The surge pages on
/// the first day (nothing tells it from a runaway job yet) and its evidence is at the alarm,
/// but each hour's bucket still learns its first whole visit in full: after one day the
/// surge hours' rhythm carries most of the surge, so the next day is judged against it.
/// Learnt at a tenth, as an alarm is elsewhere, they stayed near 1 and the key paged
/// every evening.
#[test]
fn a_daily_surge_is_learnt_on_its_first_day_even_at_the_alarm() {
    let mut e = engine();
    // T0 is 08:00 UTC: 20:00-22:59 are minutes 720-899 of the day.
    for i in 0..1440 {
        let minute = T0 + i * 60;
        let times = if (20..23).contains(&(minute / 3600 % 24)) {
            10
        } else {
            1
        };
        let (requests, cost) = spend(i, 1.0, u32::MAX);
        let data = minute_data("k", minute, requests * times, cost * times as f64);
        e.cycle(&data, minute + 60, true);
    }
    let state = &e.keys[&KeyId::of("k")];
    let params = &e.spend_params;
    let usual_at = |hour: u32| state.usual_requests_at(params, T0 + (hour + 16) * 3600);
    let night = usual_at(3);
    for hour in 20..23 {
        // About 15 requests a minute against 1.5 at night: x10.
        assert!(
            usual_at(hour) > 3.0 * night,
            "{hour}:00 {} vs {night}",
            usual_at(hour)
        );
    }
}

#[test]
fn a_tripled_small_key_alarms_within_minutes_under_the_dollar_floor() {
    let mut e = engine();
    let found = run(&mut e, "k", 140, |i| spend(i, 3.0, 125));
    let first = found.first().expect("the x3 was not found");
    assert!((125..=130).contains(&first.0), "{found:?}");
    assert!(first.1.contains("a day if it goes on"), "{}", first.1);
}

#[test]
fn a_key_moved_to_a_pricier_model_alarms_at_the_same_request_rate() {
    let mut e = engine();
    // The same requests, 100x the price per request: $0.004 -> $0.40 a minute.
    let found = run(&mut e, "k", 140, |i| spend(i, 100.0, 125));
    let first = found.first().expect("the price change was not found");
    // Three minutes of evidence at the least; this key's idle minutes add none.
    assert!((127..=130).contains(&first.0), "{found:?}");
}

#[test]
fn noisy_minutes_on_a_small_key_never_page() {
    let mut e = engine();
    // Normal lumpy use, plus a wild minute ($0.09, 20x) every half hour.
    let found = run(&mut e, "k", 300, |i| {
        if i > 120 && i % 30 == 0 {
            (6, 0.09)
        } else {
            spend(i, 1.0, u32::MAX)
        }
    });
    assert!(found.is_empty(), "{found:?}");
}

/// After a burst on a pricier model (a leaked key's, say), the price run stays at its
/// ceiling for a while; one pricey request of the owner's mix at the start of a minute is
/// no reason to page again: the active minute before it must be at the ratio too.
#[test]
fn one_pricey_request_after_a_price_run_does_not_page_again() {
    let config = SustainedConfig::default();
    let mut evidence = Evidence {
        price: Cusum {
            sum: PRICE_EVIDENCE * config.threshold + config.max_step,
            observed: 29.0 * 25.0,
            expected: 29.0,
            windows: 29,
            largest: 30.0,
            largest_expected: 1.0,
            largest_at: 10,
            latest: 4.5,
            recent_observed: 0.0,
            recent_expected: 0.0,
        },
        price_before: 0.9,
        ..Evidence::default()
    };
    // x3 * sqrt(29 / 20) = x3.6 is needed; the run is at x25, the open minute at x4.5.
    assert!(!evidence.price_alarm(&config, 0.01, 5.0));
    evidence.price_before = 4.0;
    assert!(evidence.price_alarm(&config, 0.01, 5.0));
}

/// A move to a pricier model at the same request rate is named in the alert, with the
/// model the key usually calls.
#[test]
fn a_price_jump_names_the_new_model_and_the_usual_one() {
    let mut e = engine();
    let found: Vec<Candidate> = run_data(&mut e, 140, |i, minute| {
        let (requests, cost) = spend(i, if i >= 125 { 100.0 } else { 1.0 }, 0);
        let mut data = minute_data("k", minute, requests, cost);
        if requests > 0 {
            data.usage.push(Usage {
                api_key_id: "k".into(),
                minute,
                model: if i >= 125 { "o1" } else { "deepseek-chat" }.into(),
                requests,
                ..Usage::default()
            });
        }
        data
    })
    .into_iter()
    .map(|(_, c)| c)
    .collect();
    let first = found.first().expect("the price jump was not found");
    assert!(
        first.summary.contains("now 100 % o1, ")
            && first
                .summary
                .contains("x the price per token of its usual deepseek-chat"),
        "{}",
        first.summary
    );
    // Within its first minutes the incident has taught the usual price little: its mean
    // and spread learn the run at a tenth (the spread, squared, a few per cent).
    let ratio = first.facts["price_per_token_ratio"].as_f64().unwrap();
    assert!((88.0..=100.0).contains(&ratio), "{ratio}");
    assert_eq!(first.facts["usual_model"], "deepseek-chat");
    // A plain x3 in requests is no price jump.
    let mut e = engine();
    let found = run(&mut e, "k", 140, |i| {
        let (requests, cost) = spend(i, 3.0, 125);
        (if i >= 125 { requests * 3 } else { requests }, cost)
    });
    assert!(
        found.iter().all(|(_, s)| !s.contains("price per token")),
        "{found:?}"
    );
}

/// Judged every 10 s, as the live worker judges, an open minute counts for the share of it
/// elapsed: a key at x3 (and three) alarms early in its fifth minute, not at its end.
#[test]
fn an_open_minute_counts_for_the_share_elapsed() {
    let mut e = engine();
    let onset = 125;
    let mut first = None;
    for i in 0..140u32 {
        let (requests, cost) = spend(i, 1.0, u32::MAX);
        let (requests, cost) = if i >= onset {
            (requests * 3 + 3, (requests * 3 + 3) as f64 * 0.0015)
        } else {
            (requests, cost)
        };
        for s in (10..=60).step_by(10) {
            // Requests arrive evenly through the minute.
            let share = f64::from(s) / 60.0;
            let seen = (requests as f64 * share).round() as u64;
            let data = minute_data(
                "k",
                T0 + i * 60,
                seen,
                cost * seen as f64 / requests.max(1) as f64,
            );
            let found = e.cycle(&data, T0 + i * 60 + s, i < 120);
            if first.is_none() && found.iter().any(|c| c.detector == "spend_spike") {
                first = Some((i - onset) * 60 + s);
            }
        }
    }
    let first = first.expect("the rise was not found");
    // Four minutes of evidence and the fifth's first 10 s (with each open minute judged
    // against a whole minute's expectation: 280 s).
    assert!(first <= 260, "found {first} s after the onset");
}

/// Once an incident is over, the evidence it left drains over many ordinary minutes: none
/// of them pages again.
#[test]
fn ordinary_minutes_after_an_incident_do_not_page() {
    for (price, requests) in [(20.0, 1), (1.0, 8)] {
        let mut e = engine();
        let found = run(&mut e, "k", 240, |i| {
            let (n, cost) = spend(i, 1.0, u32::MAX);
            if (125..140).contains(&i) {
                (n * requests, cost * price * requests as f64)
            } else {
                (n, cost)
            }
        });
        assert!(
            !found.is_empty(),
            "x{price} price, x{requests} requests: not found"
        );
        assert!(
            found.iter().all(|(i, _)| (125..140).contains(i)),
            "{found:?}"
        );
    }
}

/// A key that calls about once in seven minutes moves to a model fifty times pricier: its
/// spend per minute is mostly zeros, but every call shows the new price.
#[test]
fn a_sparse_key_moved_to_a_pricier_model_is_found_by_its_calls() {
    let mut e = engine();
    let calls = |i: u32, price: f64| {
        if i.is_multiple_of(7) {
            (1, price)
        } else {
            (0, 0.0)
        }
    };
    let found = run(&mut e, "k", 600, |i| {
        calls(i, if i >= 400 { 1.0 } else { 0.02 })
    });
    let first = found.first().expect("the sparse price move was not found");
    // Seven calls at the most a minute can add (twice the evidence of a spend run), the
    // seventh at minute 448.
    assert!((440..=455).contains(&first.0), "{found:?}");
    assert!(first.1.contains("its usual price per token"), "{}", first.1);
    let mut e = engine();
    assert!(run(&mut e, "k", 600, |i| calls(i, 0.02)).is_empty());
}

/// A key whose mix calls a model twenty times pricier in about one minute in ten stays
/// silent: its own spread of prices is the scale, and those minutes come alone or in twos.
#[test]
fn a_mix_with_an_occasional_pricey_model_never_pages() {
    let mut e = engine();
    let found = run(&mut e, "k", 2000, |i| {
        let (requests, cost) = spend(i, 1.0, u32::MAX);
        let pricey = spend(i.wrapping_mul(7919), 1.0, u32::MAX).0 == 3 && i.is_multiple_of(3);
        (
            requests.max(1),
            cost.max(0.0015) * if pricey { 20.0 } else { 1.0 },
        )
    });
    assert!(found.is_empty(), "{found:?}");
}

/// A key that calls a cheap model and, in about four minutes of ten, one twelve times
/// pricier: in dollars its tokens cost about twice what the mix's geometric mean says, and
/// its ordinary runs of the pricier model must not read as a move to it.
#[test]
fn a_mix_with_a_pricier_model_four_minutes_in_ten_never_pages() {
    let mut e = engine();
    let found = run(&mut e, "k", 2000, |i| {
        let pricey = spend(i.wrapping_mul(7919), 1.0, u32::MAX).0 >= 3
            || spend(i.wrapping_mul(104_729), 1.0, u32::MAX).0 == 0;
        (1, 0.0015 * if pricey { 12.0 } else { 1.0 })
    });
    let price: Vec<_> = found
        .iter()
        .filter(|(_, s)| s.contains("price per token"))
        .collect();
    assert!(price.is_empty(), "{price:?}");
}

/// When everyone bursts (the traffic's own rhythm, a daily peak), a key bursting with them
/// stays silent; the same key rising alone is still found.
#[test]
fn a_key_bursting_with_the_crowd_is_not_singled_out() {
    // Every 37 minutes the whole gateway runs at x3 for 4 minutes.
    let crowd_times = |i: u32| if i % 37 < 4 { 3.0 } else { 1.0 };
    let run_with_crowd = |alone_from: u32, minutes: u32| {
        let mut e = engine();
        run_data(&mut e, minutes, |i, minute| {
            let (requests, cost) = spend(i, 1.0, u32::MAX);
            let times = crowd_times(i) * if i >= alone_from { 8.0 } else { 1.0 };
            let mut data = minute_data("k", minute, (requests as f64 * times) as u64, cost * times);
            let others = (20.0 * crowd_times(i)) as u64;
            data.keys
                .extend(minute_data("others", minute, others, others as f64 * 0.001).keys);
            data
        })
        .into_iter()
        .filter(|(_, c)| c.summary.contains("key k "))
        .map(|(i, c)| (i, c.summary))
        .collect::<Vec<_>>()
    };
    let found = run_with_crowd(u32::MAX, 600);
    assert!(found.is_empty(), "{found:?}");
    let found = run_with_crowd(610, 640);
    let first = found
        .first()
        .expect("x8 alone for 30 minutes was not found");
    assert!((610..=616).contains(&first.0), "{found:?}");
}

/// A big key's minute of many tokens in everyone's peak (DEV seed 12's daily peak: key-0006 at
/// 3.5x its usual tokens, the others at about 1.8x): the per-minute token rule scales its usual
/// and spread by the crowd, as the sustained rule does. The same minute with the others calm is
/// the key's own.
#[test]
fn a_minute_of_many_tokens_in_everyones_peak_is_not_singled_out() {
    // `tokens_at(i)`: the key's tokens in minute i; the last minute has `last` and the others
    // `others_times` their 20 requests.
    let tokens_alerts = |tokens_at: &dyn Fn(u32) -> u64, last: u64, others_times: u64| {
        let mut e = engine();
        run_data(&mut e, 200, |i, minute| {
            let mut data = minute_data("k", minute, 30, 0.03);
            data.keys[0].tokens = if i == 199 { last } else { tokens_at(i) };
            let others = 20 * if i == 199 { others_times } else { 1 };
            data.keys
                .extend(minute_data("others", minute, others, others as f64 * 0.001).keys);
            data
        })
        .into_iter()
        .filter(|(_, c)| c.labels.get("measure").map(String::as_str) == Some("tokens"))
        .map(|(i, c)| (i, c.summary))
        .collect::<Vec<_>>()
    };
    // 80,000-100,000 tokens a minute: 350,000 clears the 200,000 floor over the usual.
    let steady = |i: u32| 80_000 + u64::from(i % 5) * 5_000;
    // 20,000-180,000: 500,000 clears six spreads (about 57,000 each) over the usual.
    let wide = |i: u32| 20_000 + u64::from(i % 5) * 40_000;
    for (tokens_at, last) in [(&steady as &dyn Fn(u32) -> u64, 350_000), (&wide, 500_000)] {
        let alone = tokens_alerts(tokens_at, last, 1);
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert_eq!(alone[0].0, 199, "{alone:?}");
        assert!(alone[0].1.contains("tokens in a minute"), "{alone:?}");
        let in_peak = tokens_alerts(tokens_at, last, 2);
        assert!(in_peak.is_empty(), "{in_peak:?}");
    }
}

/// A spray of ids the engine never accepted (key scanning) does not make the crowd look
/// busy: a key's own rise under it is still found.
#[test]
fn a_spray_of_new_ids_does_not_hide_a_rise() {
    let mut e = engine();
    let found = run_data(&mut e, 160, |i, minute| {
        let (requests, cost) = spend(i, if i >= 125 { 8.0 } else { 1.0 }, 0);
        let requests = if i >= 125 { requests * 8 } else { requests };
        let mut data = minute_data("k", minute, requests, cost);
        data.keys
            .extend(minute_data("others", minute, 20, 0.02).keys);
        if i >= 120 {
            for n in 0..500 {
                let mut sprayed = minute_data(&format!("scan-{i}-{n}"), minute, 1, 0.0).keys;
                sprayed[0].auth_failures = 1;
                data.keys.extend(sprayed);
            }
        }
        data
    });
    let first = found
        .iter()
        .find(|(_, c)| c.summary.contains("key k "))
        .expect("x8 under a spray of new ids was not found");
    assert!((125..=131).contains(&first.0), "{}", first.1.summary);
}

/// Tokens alone alarm where the price table cannot say what they cost; where it can, the
/// spend evidence speaks for them (one alert per key).
#[test]
fn tokens_are_judged_alone_only_when_unpriced() {
    let mut e = engine();
    let found = run(&mut e, "k", 140, |i| {
        let (requests, _) = spend(i, 1.0, u32::MAX);
        (if i >= 125 { requests * 3 + 3 } else { requests }, 0.0)
    });
    let first = found.first().expect("unpriced tokens x3 were not found");
    assert!(first.1.contains("tokens a minute"), "{found:?}");
    let mut e = engine();
    let found = run(&mut e, "k", 140, |i| spend(i, 3.0, 125));
    assert!(
        found.iter().all(|(_, s)| !s.contains("tokens")),
        "{found:?}"
    );
}

/// A key that slept for hours and wakes up at its old rate is not a rise, though its
/// idle minutes wore its baseline down; the same key waking at x8 is.
#[test]
fn a_key_waking_from_a_long_sleep_is_judged_on_what_it_did_before() {
    // $0.016 a minute (about $23 a day), asleep for 20 hours.
    let asleep = |i: u32| (200..1400).contains(&i);
    let mut e = engine();
    let found = run(&mut e, "k", 1500, |i| {
        if asleep(i) {
            (0, 0.0)
        } else {
            spend(i, 4.0, 0)
        }
    });
    assert!(found.is_empty(), "{found:?}");
    let mut e = engine();
    let found = run(&mut e, "k", 1500, |i| {
        if asleep(i) {
            (0, 0.0)
        } else {
            spend(i, if i >= 1400 { 32.0 } else { 4.0 }, 0)
        }
    });
    let first = found.first().expect("x8 on waking was not found");
    assert!((1400..=1406).contains(&first.0), "{found:?}");
}

/// A key whose single requests cost from a fifth to five times their mean: its spend a
/// minute is too noisy to show a x3 quickly, its count of requests is not. From `from` on
/// it sends as `times` such keys would.
fn lumpy(i: u32, times: u32, from: u32) -> (u64, f64) {
    let copies = if i >= from { times } else { 1 };
    let requests = (0..copies)
        .map(|c| spend(i + c * 100_000, 1.0, 0).0)
        .sum::<u64>();
    let cost = (0..requests)
        .map(|r| {
            let (n, _) = spend(i.wrapping_mul(31).wrapping_add(r as u32 * 7919), 1.0, 0);
            0.0015 * [0.1, 0.3, 1.0, 8.0][n as usize]
        })
        .sum();
    (requests, cost)
}

/// Once a key's day is known, a x3 of its requests is found by their count; in its first
/// day, only spend speaks.
#[test]
fn a_small_key_sending_three_times_its_requests_is_found_by_their_count() {
    let day = COUNT_AFTER_MINUTES as u32;
    let mut e = engine();
    let quiet = run(&mut e, "k", day + 125, |i| lumpy(i, 1, u32::MAX));
    assert!(quiet.is_empty(), "{quiet:?}");
    let mut e = engine();
    let found = run(&mut e, "k", day + 140, |i| lumpy(i, 3, day + 125));
    let first = found.first().expect("the x3 was not found");
    // Held to its busiest recent rate (the floor that keeps a key waking from a sleep from
    // looking new) and its own lumpiness, the x3 counts as about x2.5: a dozen minutes.
    assert!((day + 125..=day + 138).contains(&first.0), "{found:?}");
    assert!(first.1.contains("requests a minute"), "{}", first.1);

    let mut e = engine();
    let found = run(&mut e, "k", 140, |i| lumpy(i, 3, 125));
    assert!(
        found.iter().all(|(_, s)| !s.contains("requests a minute")),
        "{found:?}"
    );
}

/// A count of requests is not one long request: x20 the key's requests for three minutes is
/// told within them, on two minutes of evidence. Its dollars, capped at `max_step` a minute
/// (one pricey request is a wild minute), could not be in three.
#[test]
fn three_minutes_of_twenty_times_the_requests_are_told() {
    let day = COUNT_AFTER_MINUTES as u32;
    let from = day + 125;
    let mut e = engine();
    // Two idle minutes before: no evidence is carried into the burst.
    let found = run(&mut e, "k", from + 10, |i| match i {
        _ if (from - 2..from).contains(&i) => (0, 0.0),
        _ if (from..from + 3).contains(&i) => lumpy(i, 20, 0),
        _ => lumpy(i, 1, 0),
    });
    let first = found.first().expect("the three minutes were not told");
    assert_eq!(first.0, from + 1, "{found:?}");
    assert!(first.1.contains("requests a minute"), "{}", first.1);
}

/// The reference is what the key sent in its last closed half hour but one: closed minutes
/// only, idle ones counted; nothing before two half hours are marked.
#[test]
fn the_reference_is_the_half_hour_before_the_last() {
    let mut r = Reference::default();
    let mut windows = 0;
    let mut minute = |r: &mut Reference, requests: f64| {
        r.advance(windows, requests, 1.0, 1.0);
        windows += 1;
    };
    for i in 0..30 {
        minute(&mut r, if i % 2 == 0 { 10.0 } else { 0.0 });
    }
    // An open minute's first seconds are not a minute of the half hour.
    r.advance(29, 1_000.0, 0.2, 1.0);
    assert_eq!(r.expected(1.0, 1.0), None);
    for _ in 0..30 {
        minute(&mut r, 40.0);
    }
    minute(&mut r, 40.0);
    let (expected, sigma) = r.expected(2.0, 1.0).unwrap();
    // 5 a minute (10 and 0 in turn, sd 5), everyone twice as busy since.
    assert!((expected - 10.0).abs() < 1e-9, "{expected}");
    assert!((sigma - 10.0).abs() < 1e-9, "{sigma}");
}

/// A key's requests against its reference are a count, capped as one: two minutes at x3.4
/// of what it sent an hour before are certain (at `max_step`, three such minutes were not).
#[test]
fn two_minutes_far_above_the_reference_are_certain() {
    let config = SustainedConfig::default();
    let mut e = Evidence::default();
    // 14 and 26 in turn (20 a minute, sd 6) for an hour: two half hours marked.
    for windows in 0..=60 {
        let requests = if windows % 2 == 0 { 14.0 } else { 26.0 };
        e.reference.advance(windows, requests, 1.0, 1.0);
    }
    e.ramp_step(68.0, 1.0, 1.0, &config);
    assert!(e.ramp.sum < config.threshold, "{:?}", e.ramp);
    e.ramp_step(68.0, 1.0, 1.0, &config);
    assert!(e.ramp.sum >= config.threshold, "{:?}", e.ramp);
    // Everyone else twice as busy since: the same minutes are x1.7 of that, not certain.
    let mut crowded = Evidence {
        ramp: Cusum::default(),
        ..e
    };
    crowded.ramp_step(68.0, 2.0, 1.0, &config);
    crowded.ramp_step(68.0, 2.0, 1.0, &config);
    assert!(crowded.ramp.sum < config.threshold, "{:?}", crowded.ramp);
}

/// A busy key ramping up over 40 minutes, to x3 at its end: its usual, its hour's factor
/// and its burstiness learn the ramp as it climbs, but against its reference (what it did
/// half an hour to an hour before) the ramp is certain, and pages where yesterday confirms
/// it. With no yesterday it is only a candidate; the same key without a ramp never is.
#[test]
fn a_ramp_is_judged_against_the_key_before_it_and_confirmed_by_yesterday() {
    let day = COUNT_AFTER_MINUTES as u32;
    let (from, minutes) = (day + 300, 40);
    // 24-48 requests a minute (36 on average) at $0.001 each: +$52 a day at x2, far over
    // the floor.
    let busy = |i: u32, ramp: bool| {
        let times = if ramp && i >= from {
            1.0 + 2.0 * (f64::from(i - from) / f64::from(minutes)).min(1.0)
        } else {
            1.0
        };
        let noise: u64 = (0..4).map(|c| spend(i + c * 100_000, 1.0, 0).0).sum();
        let requests = ((24 + noise * 2) as f64 * times).round() as u64;
        (requests, requests as f64 * 0.001)
    };
    // Every candidate judged against the reference, with the minute it came up in.
    let reference_candidates = |ramp: bool| {
        let mut e = engine();
        let mut found = Vec::new();
        for i in 0..from + minutes + 5 {
            let minute = T0 + i * 60;
            let (requests, cost) = busy(i, ramp);
            let data = minute_data("k", minute, requests, cost);
            for c in e.cycle(&data, minute + 60, i < 120) {
                if c.facts.get("baseline") == Some(&json!("reference")) {
                    found.push((i, c));
                }
            }
        }
        found
    };
    let quiet = reference_candidates(false);
    assert!(quiet.is_empty(), "{quiet:?}");
    let found = reference_candidates(true);
    let (at, first) = found
        .first()
        .expect("the ramp was not found against its reference");
    // At x2 from minute 20 of the ramp: certain within a few minutes of that.
    assert!(
        (from + 15..from + minutes).contains(at),
        "{at}: {}",
        first.summary
    );
    assert_eq!(first.facts.get("confirm"), Some(&json!("yesterday")));
    assert!(
        first.summary.contains("half an hour to an hour ago"),
        "{}",
        first.summary
    );
    let mut found: Vec<Candidate> = found.into_iter().map(|(_, c)| c).collect();
    // About 36 a minute at this time yesterday: the ramp is confirmed once it is past x2
    // of that; with no yesterday known, it is not.
    let yesterday = crate::routine::Yesterday {
        requests: 36.0,
        cost_usd: 0.036,
        tokens: 36_000.0,
    };
    let mut kept = found.clone();
    crate::routine::judge(
        &mut kept,
        2.0,
        |_| crate::routine::Crowd::UNKNOWN,
        |_| Some(yesterday),
    );
    assert!(!kept.is_empty(), "{found:?}");
    let all = found.len();
    assert_eq!(
        crate::routine::judge(
            &mut found,
            2.0,
            |_| crate::routine::Crowd::UNKNOWN,
            |_| None
        ),
        all
    );
}

/// Requests that fail (a client retrying 429s, a key refused) are not billable: a storm of
/// them is retry_storm's or leaked_key's to report, not a spend rise.
#[test]
fn failed_requests_are_not_a_spend_rise() {
    // After a day of history, so that the request count is judged too.
    let day = COUNT_AFTER_MINUTES as u32;
    let mut e = engine();
    let found = run_data(&mut e, day + 140, |i, minute| {
        let (requests, cost) = spend(i, 1.0, 0);
        let mut data = minute_data("k", minute, requests, cost);
        if i >= day + 125 {
            data.keys[0].requests = requests * 5 + 5;
            data.keys[0].failures = requests * 4 + 5;
            data.keys[0].throttled = requests * 4 + 5;
        }
        data
    });
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_planned_batch_with_its_own_floor_is_judged_on_its_own_terms() {
    let mut e = engine();
    let mut config = e.config().clone();
    config.keys.insert(
        "batch".into(),
        EntityOverride {
            min_abs_usd: Some(50.0),
            ..EntityOverride::default()
        },
    );
    e.reconfigure(config).unwrap();
    let found = run(&mut e, "batch", 140, |i| spend(i, 10.0, 125));
    assert!(found.is_empty(), "{found:?}");
}

/// A key's own rise is found while a few other keys run incidents of their own: the crowd is
/// the median key, whom their x5 does not move. (Counted as a sum, each capped at three times
/// its usual, their rise made the crowd x1.65 and the key's x3 a x1.8.)
#[test]
fn other_keys_incidents_do_not_hide_a_rise() {
    let mut e = engine();
    let found = run_data(&mut e, 640, |i, minute| {
        let (requests, cost) = spend(i, 3.0, 610);
        let requests = if i >= 610 { requests * 3 } else { requests };
        let mut data = minute_data("k", minute, requests, cost);
        for n in 0..10 {
            let own = if n < 3 && i >= 610 { 100 } else { 20 };
            let other = minute_data(&format!("other-{n}"), minute, own, own as f64 * 0.001);
            data.keys.extend(other.keys);
        }
        data
    });
    let first = found
        .iter()
        .find(|(_, c)| c.summary.contains("key k "))
        .expect("x3 beside three keys at x5 was not found");
    assert!((610..=620).contains(&first.0), "{}", first.1.summary);
}
