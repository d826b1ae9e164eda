//! The travel rule on live timelines: cycles every 5 s with the default 30 s of allowed
//! lateness, so that minutes are folded while requests keep arriving, as in `tripline detect`.

use super::*;
use crate::data::{KeyMinute, Usage};

const T0: u32 = 1_795_680_000; // a minute boundary
const CYCLE_S: u32 = 5;

/// One request of key "k": when (ms) and from where.
type Request = (i64, &'static str);

fn engine() -> Engine {
    let config = DetectConfig::default();
    assert_eq!(config.allowed_lateness_s, 30);
    let mut engine = Engine::new(config).unwrap();
    engine.folded_through = T0;
    engine
}

/// What a cycle at `now` reads: the minutes from `from` on, of the requests made by then.
fn read(requests: &[Request], from: u32, now: u32) -> CycleData {
    let mut usage: Vec<Usage> = Vec::new();
    let mut keys: Vec<KeyMinute> = Vec::new();
    for &(ts, country) in requests
        .iter()
        .filter(|r| r.0 >= i64::from(from) * 1000 && r.0 <= i64::from(now) * 1000)
    {
        let minute = (ts / 60_000 * 60) as u32;
        match usage
            .iter_mut()
            .find(|u| u.minute == minute && u.country == country)
        {
            Some(u) => {
                u.requests += 1;
                u.last_ms = ts;
            }
            None => usage.push(Usage {
                api_key_id: "k".into(),
                minute,
                country: country.into(),
                asn: 1,
                as_org: "ISP".into(),
                model: "gpt-4o-mini".into(),
                user_agent: "openai-python/1.52.0".into(),
                requests: 1,
                first_ms: ts,
                last_ms: ts,
            }),
        }
        match keys.iter_mut().find(|k| k.minute == minute) {
            Some(k) => k.requests += 1,
            None => keys.push(KeyMinute {
                api_key_id: "k".into(),
                minute,
                project: "p".into(),
                requests: 1,
                cost_usd: 0.001,
                distinct_ips: 1,
                ..KeyMinute::default()
            }),
        }
    }
    CycleData {
        keys,
        usage,
        ..CycleData::default()
    }
}

/// Runs cycles every 5 s from `T0` to `end` s after it (quietly for the first `quiet_s`); returns the
/// times of the cycles that flagged cross_region.
fn run(requests: &[Request], quiet_s: u32, end: u32) -> Vec<u32> {
    let mut e = engine();
    let mut flagged = Vec::new();
    let mut now = T0 + CYCLE_S;
    while now <= T0 + end {
        let data = read(requests, e.folded_through, now);
        let quiet = now < T0 + quiet_s;
        if e.cycle(&data, now, quiet)
            .iter()
            .any(|c| c.detector == "cross_region")
        {
            flagged.push(now);
        }
        now += CYCLE_S;
    }
    flagged
}

/// The owner: six requests a minute from Germany, from `T0` for `minutes`.
fn owner(minutes: u32) -> Vec<Request> {
    (0..i64::from(minutes) * 6)
        .map(|i| (i64::from(T0) * 1000 + 3_000 + i * 10_000, "DE"))
        .collect()
}

/// A request `s` seconds after `T0`.
fn at(s: u32, country: &'static str) -> Request {
    (i64::from(T0 + s) * 1000, country)
}

#[test]
fn a_thief_calling_once_a_minute_is_judged_at_its_second_request() {
    // Warm for 30 minutes, then requests from Japan at 47 s past two minutes in a row: the
    // first minute is folded (at 90 s past) before the second request comes.
    let live = 30 * 60;
    let mut requests = owner(40);
    requests.push(at(live + 60 + 47, "JP"));
    requests.push(at(live + 120 + 47, "JP"));
    let flagged = run(&requests, live, live + 300);
    assert_eq!(
        flagged.first().map(|t| t - T0 - live),
        Some(170),
        "the first cycle after the second request, not before: {flagged:?}"
    );
}

#[test]
fn one_far_request_every_few_minutes_is_no_travel() {
    // A stray request from Japan every four minutes: never two within three minutes.
    let live = 30 * 60;
    let mut requests = owner(70);
    requests.extend((0..9).map(|i| at(live + 15 + i * 240, "JP")));
    assert_eq!(run(&requests, live, live + 40 * 60), Vec::<u32>::new());
}

#[test]
fn a_second_region_used_once_a_minute_becomes_familiar() {
    // From minute 30 on, the key also serves from the US once a minute: news for its first
    // half hour, then the key's habit.
    let live = 30 * 60;
    let mut requests = owner(80);
    requests.extend((0..50).map(|i| at(live + 40 + i * 60, "US")));
    let flagged = run(&requests, live, live + 50 * 60);
    assert!(!flagged.is_empty(), "news at first");
    let last = flagged.last().unwrap() - T0 - live;
    assert!(last < 35 * 60, "quiet after half an hour: last at {last} s");
}

#[test]
fn a_slow_move_with_sparse_requests_is_no_travel() {
    // The owner stops, and twelve hours later calls from Japan once a minute: 750 km/h.
    let mut requests = owner(30);
    let later = 30 * 60 + 12 * 3600;
    requests.extend((0..5).map(|i| at(later + i * 60, "JP")));
    let mut e = engine();
    let mut now = T0 + CYCLE_S;
    while now <= T0 + 31 * 60 {
        let data = read(&requests, e.folded_through, now);
        e.cycle(&data, now, true);
        now += CYCLE_S;
    }
    e.folded_through = T0 + later;
    let mut now = T0 + later + CYCLE_S;
    while now <= T0 + later + 6 * 60 {
        let data = read(&requests, e.folded_through, now);
        let found = e.cycle(&data, now, false);
        assert!(
            found.iter().all(|c| c.detector != "cross_region"),
            "{found:?}"
        );
        now += CYCLE_S;
    }
}
