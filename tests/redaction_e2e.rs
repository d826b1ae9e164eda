//! Raw secrets end to end: `tripline run` (ingest, detectors, alerting with a webhook receiver
//! on 127.0.0.1) is fed events carrying every key of the fake-key corpus
//! (`core/src/secret/corpus.rs`) in every position it can be caught in: valid events, the same
//! events refused (a wrong type, or cut short: invalid JSON) so that they go to the dead-letter
//! topic, and a key scan from one IP (401s on six keys) that raises an alert with evidence
//! drawn from those requests. Then everything the process wrote is searched for a distinctive
//! middle slice of each key: every row of every table of the test's ClickHouse database, the
//! dead-letter and alerts topics, every file under the test's directory (the process log,
//! alerting's state) and the notifications the webhook received. No slice may be anywhere.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use common::{now_ms, produce, producer, wait_ready, TestEnv};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

#[path = "../core/src/secret/corpus.rs"]
#[allow(dead_code)] // what the unit tests check (positions, fingerprints) is not used here
mod corpus;

use corpus::{placements, FakeKey, Shape, KEYS};

const API_TOKEN: &str = "e2e-redaction-api-token-0123456789";
/// The key scanner's address (TEST-NET-2): not used by any other event of this test.
const SCANNER: &str = "198.51.100.77";
const WAIT: Duration = Duration::from_secs(90);

/// Fast detectors: a cycle a second, an alert stays firing for the test.
const DETECT: &str = r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 2
resolve_after_s = 900
"#;

fn alerting(env: &TestEnv, hook_url: &str) -> String {
    format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "hook"
group_by = ["detector"]
group_wait_ms = 500
group_interval_ms = 1000
repeat_interval_s = 3600

[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "{hook_url}"
"#,
        dir = env.dir.display(),
    )
}

/// A webhook receiver that keeps every body it gets.
async fn start_hook() -> (Arc<Mutex<Vec<Vec<u8>>>>, String) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(bodies): State<Arc<Mutex<Vec<Vec<u8>>>>>, body: Bytes| async move {
                    bodies.lock().unwrap().push(body.to_vec());
                    "ok"
                },
            ),
        )
        .with_state(bodies.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bodies, url)
}

/// An event with the corpus members in place of the base fields they set.
fn event(id: &str, ts: i64, status: &str, members: &str, replaced: &[&str]) -> String {
    let base = [
        ("event_id", format!("\"{id}\"")),
        ("ts", ts.to_string()),
        ("api_key_id", "\"key-redaction\"".to_owned()),
        ("model", "\"gpt-4o-mini\"".to_owned()),
        ("provider", "\"openai\"".to_owned()),
        ("status", status.to_owned()),
        ("prompt_tokens", "100".to_owned()),
        ("completion_tokens", "20".to_owned()),
        ("client_ip", "\"91.0.0.9\"".to_owned()),
        ("client_country", "\"DE\"".to_owned()),
        ("user_agent", "\"openai-python/1.52.0\"".to_owned()),
        ("request_id", format!("\"req-{id}\"")),
        ("user", "\"u-1\"".to_owned()),
    ];
    let mut fields: Vec<String> = base
        .iter()
        .filter(|(name, _)| !replaced.contains(name))
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    fields.push(members.to_owned());
    format!("{{{}}}", fields.join(","))
}

/// Every message of `topic`, raw, until `count` arrived or `idle` passed without one.
async fn read_topic(env: &TestEnv, topic: &str, count: usize, idle: Duration) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::brokers())
        .set("group.id", format!("{}-{topic}-reader", env.group))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < count && last.elapsed() < idle {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            out.push(message.payload().unwrap_or_default().to_vec());
            last = Instant::now();
        }
    }
    tripline_kafka::close_consumer(consumer, Duration::from_secs(3)).await;
    out
}

/// Every row of every table (and view) of the test's database, as TabSeparated text.
async fn dump_database(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let client = env.clickhouse();
    let tables: Vec<String> = client
        .query_raw(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
            env.database
        ))
        .fetch_all()
        .await
        .unwrap();
    assert!(tables.iter().any(|t| t == "gateway_requests"), "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let rows = client
            .query_raw(&format!(
                "SELECT * FROM `{}`.`{table}` FORMAT TabSeparated",
                env.database
            ))
            .fetch_bytes("TabSeparated")
            .unwrap()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("SELECT * FROM {table}: {err}"));
        out.push((format!("table {table}"), rows.to_vec()));
    }
    out
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((format!("file {}", path.display()), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_keys_reach_no_table_topic_file_or_notification() {
    let mut env = TestEnv::new("redaction").await;
    let (received, hook_url) = start_hook().await;
    env.ingest_extra = format!("{}{DETECT}", alerting(&env, &hook_url));
    let group = format!("{}-alerting", env.group);
    let mut run = env.spawn_with_env(
        "run",
        "run",
        &[
            ("TRIPLINE_ALERTING_API_TOKEN", API_TOKEN),
            ("TRIPLINE_ALERTING_GROUP_ID", group.as_str()),
            // Everything Tripline's own crates log, debug included.
            (
                "RUST_LOG",
                "info,tripline=debug,tripline_ingest=debug,tripline_detector=debug,\
                 tripline_alerting=debug,tripline_collector=debug",
            ),
        ],
    );
    assert!(wait_ready(&env, WAIT).await, "tripline run is ready");

    // Every key in every position: valid events, the same with a wrong type, and cut short.
    let ts = now_ms() - 1_000;
    let mut valid = Vec::new();
    let mut refused = Vec::new();
    for (k, key) in KEYS.iter().enumerate() {
        for (p, placement) in placements(key).into_iter().enumerate() {
            let id = format!("k{k}-p{p}");
            let fields = &placement.fields;
            valid.push(event(&id, ts, "200", &placement.members, fields).into_bytes());
            let wrong = event(
                &format!("{id}-w"),
                ts,
                "\"teapot\"",
                &placement.members,
                fields,
            );
            refused.push(wrong.into_bytes());
            let cut = event(&format!("{id}-c"), ts, "200", &placement.members, fields);
            refused.push(cut.as_bytes()[..cut.len() - 1].to_vec());
        }
    }
    // A key scan: one new address failing authentication on six keys, the raw keys sent as
    // `api_key`, more keys in the model, user agent and request id, which alert evidence shows.
    let tokens: Vec<&FakeKey> = KEYS.iter().filter(|k| k.shape == Shape::Token).collect();
    let mut scan = Vec::new();
    for i in 0..6 {
        let (key, other) = (tokens[i].key, tokens[(i + 7) % tokens.len()].key);
        scan.push(format!(
            r#"{{"event_id":"scan-{i}","ts":{},"api_key":"{key}","model":"{other}","status":401,"client_ip":"{SCANNER}","user_agent":"scanner/1.0 Bearer {other}","request_id":"/v1/models?key={key}"}}"#,
            ts + i as i64 * 100
        ).into_bytes());
    }
    let producer = producer();
    produce(&producer, &env.gateway_topic, "valid", &valid).await;
    produce(&producer, &env.gateway_topic, "refused", &refused).await;
    produce(&producer, &env.gateway_topic, "scan", &scan).await;

    let stored = (valid.len() + scan.len()) as f64;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", stored, WAIT)
            .await,
        stored,
        "every valid event is stored"
    );
    let letters = read_topic(&env, &env.dlq_topic, refused.len(), Duration::from_secs(30)).await;
    assert_eq!(
        letters.len(),
        refused.len(),
        "every refused event is a dead letter"
    );
    let entity = format!("client_ip={SCANNER},pattern=key_scanning");
    assert_eq!(
        env.wait_for(
            &format!("SELECT count() > 0 FROM alerts WHERE entity = '{entity}'"),
            1.0,
            WAIT
        )
        .await,
        1.0,
        "the key scan raises an alert"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notifications = received.lock().unwrap().clone();
    assert!(!notifications.is_empty(), "the webhook got the alert");
    assert!(
        notifications
            .iter()
            .any(|body| contains(body, "key_scanning")),
        "the notification is the key scan's"
    );
    let alerts = read_topic(&env, &env.alerts_topic, usize::MAX, Duration::from_secs(5)).await;
    assert!(!alerts.is_empty(), "the alert is on the alerts topic");
    assert!(
        run.terminate(Duration::from_secs(30)),
        "tripline run stops cleanly"
    );

    // Everything written anywhere, searched for every key.
    let mut haystacks = dump_database(&env).await;
    haystacks.extend(letters.into_iter().map(|l| ("dead letter".to_owned(), l)));
    haystacks.extend(alerts.into_iter().map(|a| ("alerts topic".to_owned(), a)));
    haystacks.extend(
        notifications
            .into_iter()
            .map(|n| ("notification".to_owned(), n)),
    );
    haystacks.extend(files(&env.dir));
    assert!(
        haystacks
            .iter()
            .any(|(name, _)| name.ends_with("tripline-run.log")),
        "the log is searched"
    );
    // The search sees redacted data: the scan's first key is in the table as its fingerprint.
    let fingerprinter =
        tripline_core::secret::Fingerprinter::new(common::SECRET.as_bytes()).unwrap();
    let first = fingerprinter.fingerprint(tokens[0].key.as_bytes());
    assert!(
        haystacks
            .iter()
            .any(|(name, h)| name == "table gateway_requests" && contains(h, &first)),
        "the scan's first key is stored as {first}"
    );
    let mut searched = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for (name, haystack) in &haystacks {
        let entry = searched.entry(name.as_str()).or_default();
        entry.0 += 1;
        entry.1 += haystack.len();
    }
    for (name, (count, bytes)) in searched {
        eprintln!("searched {name}: {count} x, {bytes} bytes");
    }
    let mut leaks = std::collections::BTreeMap::<(&str, &str), usize>::new();
    for key in KEYS {
        for (name, haystack) in &haystacks {
            if contains(haystack, key.needle()) {
                *leaks.entry((key.provider, name.as_str())).or_default() += 1;
            }
        }
    }
    let leaks: Vec<String> = leaks
        .into_iter()
        .map(|((provider, name), count)| format!("{provider} in {name} ({count}x)"))
        .collect();
    assert!(leaks.is_empty(), "raw keys found:\n{}", leaks.join("\n"));
}
