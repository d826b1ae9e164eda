//! Impossible travel end to end, as a user gets it: `tripline run` (ingest, detectors and
//! alerting in one process) with the default `[detect]` thresholds and the default alerting
//! route (a receiver and nothing else), events through the real broker and ClickHouse, pages
//! read from a signed webhook on 127.0.0.1.
//!
//! `each_stolen_key_is_paged_as_its_own_group` checks the path: several keys taken from far
//! countries one after another, each paged in a notification of its own, none waiting for
//! another key's group, and nothing for a key with a habitual second region or one that moved
//! at an airliner's pace. `measure_time_to_page` (ignored; run it by name) prints where the
//! seconds go between a thief's first request and the page: BENCHMARKS.md has its figures.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use common::*;

const WEBHOOK_SECRET: &str = "e2e-webhook-signing-secret-0123456789";

/// A webhook receiver that records each notification's body and arrival (epoch ms).
#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<(i64, serde_json::Value)>>>,
}

impl Hook {
    async fn start() -> (Hook, String) {
        let hook = Hook::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, url)
    }

    fn got(&self) -> Vec<(i64, serde_json::Value)> {
        self.got.lock().unwrap().clone()
    }

    /// When each (detector, entity label value) was first in a firing notification, with the
    /// notification's group key and reason.
    fn first_pages(&self) -> BTreeMap<(String, String), (i64, String, String)> {
        let mut out = BTreeMap::new();
        for (at, body) in self.got() {
            if body["status"] != "firing" {
                continue;
            }
            for alert in body["alerts"].as_array().into_iter().flatten() {
                if alert["status"] != "firing" {
                    continue;
                }
                let labels = &alert["labels"];
                let entity = ["api_key_id", "user", "client_ip", "provider"]
                    .iter()
                    .find_map(|l| labels[*l].as_str())
                    .unwrap_or("")
                    .to_owned();
                let detector = labels["detector"].as_str().unwrap_or("").to_owned();
                out.entry((detector, entity)).or_insert((
                    at,
                    body["group_key"].as_str().unwrap_or("").to_owned(),
                    body["notification_reason"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                ));
            }
        }
        out
    }
}

async fn receive(State(hook): State<Hook>, body: Bytes) -> &'static str {
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    hook.got.lock().unwrap().push((now_ms(), json));
    "ok"
}

/// The test's config with the ingest batching of the defaults and `extra` appended: a webhook
/// receiver on the default route, and whatever `[detect]` lines the test needs.
fn run_config(env: &TestEnv, url: &str, extra: &str) -> std::path::PathBuf {
    let base = std::fs::read_to_string(env.config_path()).unwrap();
    let base = base.replace("batch_max_age_ms = 200", "batch_max_age_ms = 1000");
    let text = format!(
        r#"{base}
{extra}

[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "hook"

[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
secret_env = "E2E_WEBHOOK_SECRET"
"#,
        dir = env.dir.display(),
    );
    let path = env.dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_run(env: &TestEnv, config: &std::path::Path) -> Tripline {
    let log = std::fs::File::create(env.log_path("run")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["run", "--config"])
        .arg(config)
        .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
        .env("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env(
            "TRIPLINE_ALERTING_GROUP_ID",
            format!("{}-alerting", env.group),
        )
        .env("RUST_LOG", "info")
        .env_remove("TRIPLINE_KAFKA_BROKERS")
        .env_remove("TRIPLINE_CLICKHOUSE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start tripline run");
    Tripline { child }
}

/// A request of `key` from `country` at `ts`.
fn request(id: &str, key: &str, ts: i64, country: &str, ip: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":200,"prompt_tokens":100,"completion_tokens":20,"cost_usd":0.002,"client_ip":"{ip}","client_country":"{country}","user_agent":"openai-python/1.52.0"}}"#
    )
    .into_bytes()
}

/// Live traffic of one key: who sends it, from where, how often.
#[derive(Debug, Clone)]
struct Stream {
    key: String,
    country: &'static str,
    ip: &'static str,
    /// Requests per minute, evenly spaced from `from_ms` (first at `from_ms + offset_ms`).
    per_minute: f64,
    offset_ms: i64,
    from_ms: i64,
    to_ms: i64,
}

impl Stream {
    fn times(&self) -> Vec<i64> {
        let gap = (60_000.0 / self.per_minute) as i64;
        (0..)
            .map(|i| self.from_ms + self.offset_ms + i * gap)
            .take_while(|t| *t < self.to_ms)
            .collect()
    }
}

/// Stores `minutes` of history for `keys` from Germany (plus `second` for keys that always
/// also serve from the US), then starts `tripline run` and waits until it is ready.
async fn history_and_run(
    env: &TestEnv,
    keys: &[String],
    habitual: &[String],
    config: &std::path::Path,
) -> Tripline {
    let _ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(env, Duration::from_secs(60)).await);
    let producer = producer();
    let now = now_ms();
    let mut history = Vec::new();
    for minute in (1..41).rev() {
        for key in keys {
            for i in 0..6 {
                let ts = now - minute * 60_000 + i * 10_000;
                history.push(request(
                    &format!("h-{key}-{minute}-{i}"),
                    key,
                    ts,
                    "DE",
                    "91.0.0.7",
                ));
            }
        }
        for key in habitual {
            for i in 0..3 {
                let ts = now - minute * 60_000 + 5_000 + i * 20_000;
                history.push(request(
                    &format!("h2-{key}-{minute}-{i}"),
                    key,
                    ts,
                    "US",
                    "8.8.4.7",
                ));
            }
        }
    }
    env.store_history(&producer, "h", &history).await;
    drop(_ingest);
    let run = spawn_run(env, config);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = std::fs::read_to_string(env.log_path("run")).unwrap_or_default();
        if log.contains("detectors ready") && wait_ready(env, Duration::from_secs(1)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tripline run never got ready:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run
}

/// Produces every stream's requests at their times (event time = produce time), until
/// `until_ms`; returns when each event was produced, by event id.
async fn play(env: &TestEnv, streams: &[Stream], until_ms: i64) -> BTreeMap<String, i64> {
    let producer = producer();
    let mut schedule: Vec<(i64, Vec<u8>, String)> = Vec::new();
    for (s, stream) in streams.iter().enumerate() {
        for (i, t) in stream.times().into_iter().enumerate() {
            let id = format!("live-{s}-{}-{}-{i}", stream.key, stream.country);
            schedule.push((
                t,
                request(&id, &stream.key, t, stream.country, stream.ip),
                id,
            ));
        }
    }
    schedule.sort_by_key(|e| e.0);
    let mut produced = BTreeMap::new();
    let mut next = 0;
    while now_ms() < until_ms {
        let now = now_ms();
        let mut batch = Vec::new();
        while next < schedule.len() && schedule[next].0 <= now {
            batch.push(schedule[next].1.clone());
            produced.insert(schedule[next].2.clone(), schedule[next].0);
            next += 1;
        }
        if !batch.is_empty() {
            produce(&producer, &env.gateway_topic, "live", &batch).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produced
}

/// A far country and an address in it, per incident.
const FAR: [(&str, &str); 6] = [
    ("JP", "126.0.0.9"),
    ("US", "8.8.8.9"),
    ("BR", "177.0.0.9"),
    ("AU", "1.128.0.9"),
    ("IN", "49.32.0.9"),
    ("ZA", "41.0.0.9"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stolen_key_is_paged_as_its_own_group() {
    let env = TestEnv::new("travel_run").await;
    let (hook, url) = Hook::start().await;
    let config = run_config(&env, &url, "");
    let thieves: Vec<String> = (0..3).map(|i| format!("k-stolen-{i}")).collect();
    let habitual = vec!["k-two-regions".to_owned()];
    let mut keys = thieves.clone();
    keys.extend(habitual.iter().cloned());
    keys.push("k-quiet".to_owned());
    let _run = history_and_run(&env, &keys, &habitual, &config).await;

    // Every key goes on as usual; the habitual one keeps its US traffic; each stolen key is
    // used from a far country too, the second and third while the first still fires.
    let start = now_ms() + 1_000;
    let end = start + 75_000;
    let mut streams: Vec<Stream> = keys
        .iter()
        .map(|key| Stream {
            key: key.clone(),
            country: "DE",
            ip: "91.0.0.7",
            per_minute: 6.0,
            offset_ms: 0,
            from_ms: start,
            to_ms: end,
        })
        .collect();
    streams.push(Stream {
        key: habitual[0].clone(),
        country: "US",
        ip: "8.8.4.7",
        per_minute: 3.0,
        offset_ms: 5_000,
        from_ms: start,
        to_ms: end,
    });
    for (i, key) in thieves.iter().enumerate() {
        let (country, ip) = FAR[i];
        streams.push(Stream {
            key: key.clone(),
            country,
            ip,
            per_minute: 4.0,
            offset_ms: 0,
            from_ms: start + i as i64 * 20_000,
            to_ms: end,
        });
    }
    play(&env, &streams, end).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let pages = hook.first_pages();
        if thieves
            .iter()
            .all(|k| pages.contains_key(&("cross_region".to_owned(), k.clone())))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pages = hook.first_pages();
    let log = std::fs::read_to_string(env.log_path("run")).unwrap_or_default();
    let travel: Vec<_> = pages
        .iter()
        .filter(|((d, _), _)| d == "cross_region")
        .collect();
    for key in &thieves {
        let (_, group_key, reason) = pages
            .get(&("cross_region".to_owned(), key.clone()))
            .unwrap_or_else(|| panic!("{key} was never paged: {travel:#?}\n{log}"));
        // Its own group, so it never waits for another key's group_interval.
        assert!(group_key.contains(key.as_str()), "{group_key}");
        assert_eq!(reason, "new", "{key}: {travel:#?}");
    }
    assert_eq!(travel.len(), thieves.len(), "{travel:#?}");
    // Nothing for the key with a habitual second region, nor for the quiet one.
    assert!(
        pages
            .keys()
            .all(|(_, k)| k != "k-two-regions" && k != "k-quiet"),
        "{pages:#?}"
    );
    for (_, body) in hook.got() {
        assert_eq!(body["version"], "4");
    }
}

/// Where the seconds go from a thief's first request to the page, at several paces of the
/// thief. Prints one line per incident and the percentiles; `TRIPLINE_MEASURE_RATES` (requests
/// per minute, comma-separated, default "1,2,4,6") and `TRIPLINE_MEASURE_REPEAT` (incidents
/// per rate, default 3) change the mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of several minutes: run by name"]
async fn measure_time_to_page() {
    let rates: Vec<f64> = std::env::var("TRIPLINE_MEASURE_RATES")
        .unwrap_or_else(|_| "1,2,4,6".into())
        .split(',')
        .map(|r| r.trim().parse().unwrap())
        .collect();
    let repeat: usize = std::env::var("TRIPLINE_MEASURE_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let env = TestEnv::new("travel_measure").await;
    let (hook, url) = Hook::start().await;
    let config = run_config(&env, &url, "");
    let incidents: Vec<(String, f64)> = rates
        .iter()
        .flat_map(|r| (0..repeat).map(move |i| (format!("k-r{r}-{i}"), *r)))
        .collect();
    let mut keys: Vec<String> = incidents.iter().map(|(k, _)| k.clone()).collect();
    keys.push("k-quiet".into());
    let _run = history_and_run(&env, &keys, &[], &config).await;

    // Onsets spread over four minutes at odd offsets within their minute; each thief goes on
    // for three minutes (long enough for two requests at the slowest pace) while the owner
    // goes on from home.
    let start = now_ms() + 2_000;
    let span = 240_000 / incidents.len().max(1) as i64;
    let mut streams = Vec::new();
    let mut onsets = BTreeMap::new();
    for (i, (key, rate)) in incidents.iter().enumerate() {
        let onset = start + i as i64 * span + (i as i64 * 7_919) % 13_000;
        let (country, ip) = FAR[i % FAR.len()];
        onsets.insert(key.clone(), (onset, *rate));
        streams.push(Stream {
            key: key.clone(),
            country,
            ip,
            per_minute: *rate,
            offset_ms: 0,
            from_ms: onset,
            to_ms: onset + 180_000,
        });
    }
    let end = onsets.values().map(|o| o.0).max().unwrap_or(start) + 180_000;
    for key in &keys {
        streams.push(Stream {
            key: key.clone(),
            country: "DE",
            ip: "91.0.0.7",
            per_minute: 6.0,
            offset_ms: 3_000,
            from_ms: start - 10_000,
            to_ms: end,
        });
    }
    play(&env, &streams, end).await;
    tokio::time::sleep(Duration::from_secs(20)).await;

    let pages = hook.first_pages();
    let decided: Vec<(String, i64)> = env
        .clickhouse()
        .query_raw(
            "SELECT api_key_id, toInt64(toUInt32(min(emitted_at))) * 1000 FROM alerts \
             WHERE detector = 'cross_region' AND status = 'firing' GROUP BY api_key_id",
        )
        .fetch_all()
        .await
        .unwrap_or_default();
    let decided: BTreeMap<String, i64> = decided.into_iter().collect();
    println!("key | thief req/min | 2nd far request s | decided s | paged s | group");
    let mut ttd = Vec::new();
    let mut missed = 0;
    for (key, (onset, rate)) in &onsets {
        let second = onset + (60_000.0 / rate) as i64;
        let page = pages.get(&("cross_region".to_owned(), key.clone()));
        let s = |t: i64| format!("{:.1}", (t - onset) as f64 / 1000.0);
        println!(
            "{key} | {rate} | {} | {} | {} | {}",
            s(second),
            decided.get(key).map_or("-".into(), |t| s(*t)),
            page.map_or("-".into(), |p| s(p.0)),
            page.map_or("", |p| p.2.as_str()),
        );
        match page {
            Some(p) => ttd.push((p.0 - onset) as f64 / 1000.0),
            None => missed += 1,
        }
    }
    ttd.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if ttd.is_empty() {
            f64::NAN
        } else {
            ttd[((q * (ttd.len() - 1) as f64).round() as usize).min(ttd.len() - 1)]
        }
    };
    println!(
        "paged {} of {} (missed {missed}); time to page p50 {:.1} s, p95 {:.1} s, max {:.1} s",
        ttd.len(),
        onsets.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
    let others: Vec<_> = pages
        .iter()
        .filter(|((d, _), _)| d != "cross_region")
        .collect();
    println!("other pages: {others:?}");
}
