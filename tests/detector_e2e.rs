//! Detectors end to end: history through real Kafka and ClickHouse, then one incident of each
//! kind, each of which must raise exactly its alert (and nothing on the quiet key), with
//! evidence, on Kafka and in ClickHouse; a restart must not page again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

const DETECT: &str = r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 2
resolve_after_s = 30

[detect.cross_region]
per_user = true
"#;

/// An ordinary request of `key` from Germany costing `cost_usd`.
fn event(id: &str, key: &str, ts: i64, cost_usd: f64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":200,"prompt_tokens":100,"completion_tokens":20,"cost_usd":{cost_usd},"client_ip":"91.0.0.{}","client_country":"DE","user_agent":"openai-python/1.52.0"}}"#,
        id.len() % 200 + 1
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_incident_raises_its_alert_once() {
    let env = TestEnv::new("detect").await;
    let _ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, Duration::from_secs(60)).await);
    let producer = producer();

    // 40 minutes of ordinary history for five keys: 20 requests a minute from Germany.
    let now = now_ms();
    let keys = ["k-spend", "k-leak", "k-retry", "k-travel", "k-quiet"];
    let mut history = Vec::new();
    for minute in (2..42).rev() {
        for key in keys {
            for i in 0..20 {
                let ts = now - minute * 60_000 + i * 2_000;
                history.push(event(&format!("h-{key}-{minute}-{i}"), key, ts, 0.005));
            }
        }
    }
    // An end user, alice, who always comes through k-user-a from Germany.
    for minute in (2..42).rev() {
        for i in 0..3 {
            history.push(format!(r#"{{"event_id":"h-alice-{minute}-{i}","ts":{},"api_key_id":"k-user-a","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":200,"cost_usd":0.001,"client_ip":"91.0.1.1","client_country":"DE","user":"alice","user_agent":"openai-python/1.52.0"}}"#, now - minute * 60_000 + i * 15_000).into_bytes());
        }
    }
    env.store_history(&producer, "h", &history).await;

    // The detectors start on that history (warm at once), with fast evaluation.
    // Without the IP databases (and, see `spawn_detect`, the fingerprint secret): only ingest
    // uses them.
    let config = env.dir.join("detect.toml");
    let base = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("data/geo/", "data/geo/missing-");
    std::fs::write(&config, format!("{base}{DETECT}")).unwrap();
    let (mut detect, detect_listen) = spawn_detect(&env, &config, "detect");
    wait_log(
        &env.log_path("detect"),
        "detectors ready",
        Duration::from_secs(60),
    )
    .await;
    // Ready once a cycle has succeeded: /readyz says so for the detector.
    let deadline = Instant::now() + Duration::from_secs(20);
    let readyz = loop {
        let answer = http_get(&detect_listen, "/readyz").await;
        if matches!(answer, Some((200, _))) || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, body) = readyz.expect("detect serves /readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""detector":true"#), "{body}");

    // The incidents, all now.
    let t = now_ms();
    let mut incidents = Vec::new();
    for i in 0..400 {
        incidents.push(event(&format!("spend-{i}"), "k-spend", t + i, 0.1));
    }
    for i in 0..6 {
        incidents.push(
            format!(r#"{{"event_id":"leak-{i}","ts":{},"api_key_id":"k-leak","project":"e2e","model":"claude-opus-4-5","provider":"anthropic","status":200,"cost_usd":0.02,"client_ip":"203.0.113.50","client_country":"US","user_agent":"python-requests/2.31.0"}}"#, t + i * 100)
                .into_bytes(),
        );
    }
    for chain in 0..20 {
        for attempt in 1..=3 {
            let status = if attempt < 3 { 429 } else { 200 };
            incidents.push(
                format!(r#"{{"event_id":"retry-{chain}-{attempt}","ts":{},"api_key_id":"k-retry","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":{status},"cost_usd":0.001,"client_country":"DE","idempotency_key":"idem-{chain}","attempt":{attempt}}}"#, t + chain * 200 + attempt * 50)
                    .into_bytes(),
            );
        }
    }
    for i in 0..3 {
        incidents.push(
            format!(r#"{{"event_id":"travel-{i}","ts":{},"api_key_id":"k-travel","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":200,"cost_usd":0.005,"client_country":"JP","user_agent":"openai-python/1.52.0"}}"#, t + i * 500)
                .into_bytes(),
        );
    }
    // alice, now through another key from Brazil: the key is new, the user is not.
    for i in 0..3 {
        incidents.push(
            format!(r#"{{"event_id":"alice-br-{i}","ts":{},"api_key_id":"k-user-b","project":"e2e","model":"gpt-4o-mini","provider":"openai","status":200,"cost_usd":0.001,"client_country":"BR","user":"alice","user_agent":"openai-python/1.52.0"}}"#, t + i * 300)
                .into_bytes(),
        );
    }
    for i in 0..12 {
        incidents.push(
            format!(r#"{{"event_id":"scan-{i}","ts":{},"api_key_id":"guess-{i}","model":"gpt-4o","status":401,"client_ip":"198.51.100.7"}}"#, t + i * 100)
                .into_bytes(),
        );
    }
    for i in 0..20 {
        incidents.push(event(
            &format!("quiet-{i}"),
            "k-quiet",
            t + i * 2_000,
            0.005,
        ));
    }
    produce(&producer, &env.gateway_topic, "i", &incidents).await;

    let expected = [
        ("spend_spike", "k-spend"),
        ("leaked_key", "k-leak"),
        ("retry_storm", "k-retry"),
        ("cross_region", "k-travel"),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let found = env.scalar(&format!(
            "SELECT count() FROM (SELECT DISTINCT detector, api_key_id FROM alerts WHERE status = 'firing' AND (detector, api_key_id) IN ({}))",
            expected.iter().map(|(d, k)| format!("('{d}', '{k}')")).collect::<Vec<_>>().join(",")
        )).await;
        let scans = env.scalar("SELECT count() FROM alerts WHERE entity = 'client_ip=198.51.100.7,pattern=key_scanning'").await;
        let user = env
            .scalar("SELECT count() FROM alerts WHERE entity = 'user=alice'")
            .await;
        if (found == 4.0 && scans >= 1.0 && user >= 1.0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows: Vec<(String, String, String, String)> = env
        .clickhouse()
        .query_raw("SELECT detector, entity, toString(severity), summary FROM alerts WHERE status = 'firing' ORDER BY detector, entity")
        .fetch_all()
        .await
        .unwrap();
    let log = std::fs::read_to_string(env.log_path("detect")).unwrap();
    for (detector, key) in expected {
        assert!(
            rows.iter()
                .any(|r| r.0 == detector && r.1.contains(&format!("api_key_id={key}"))),
            "no {detector} alert for {key}: {rows:#?}\n{log}"
        );
    }
    assert!(
        rows.iter().any(|r| r.1.contains("pattern=key_scanning")),
        "{rows:#?}"
    );
    // alice's jump is impossible travel of the user; neither of her keys travelled.
    let alice = rows
        .iter()
        .find(|r| r.0 == "cross_region" && r.1 == "user=alice")
        .unwrap_or_else(|| panic!("no cross_region alert for user alice: {rows:#?}"));
    assert!(
        alice.3.contains("user alice used from DE and BR"),
        "{alice:?}"
    );
    assert!(rows.iter().all(|r| !r.1.contains("k-user-")), "{rows:#?}");
    // Nothing on the quiet key, and each alert once (no re-firing at the same severity).
    assert!(rows.iter().all(|r| !r.1.contains("k-quiet")), "{rows:#?}");
    let firing = env
        .scalar("SELECT count() FROM alerts WHERE status = 'firing'")
        .await;
    let distinct = env
        .scalar("SELECT uniqExact(fingerprint, severity) FROM alerts WHERE status = 'firing'")
        .await;
    assert_eq!(firing, distinct, "{rows:#?}");
    let retry = rows
        .iter()
        .find(|r| r.0 == "retry_storm" && r.1.contains("k-retry"))
        .unwrap();
    assert_eq!(
        retry.2, "critical",
        "retries without backoff page: {retry:?}"
    );

    // Evidence explains the leak: the new country, user agent and model.
    let leak_json: String = env
        .clickhouse()
        .query_raw("SELECT alert_json FROM alerts WHERE detector = 'leaked_key' AND api_key_id = 'k-leak' LIMIT 1")
        .fetch_one()
        .await
        .unwrap();
    let leak: serde_json::Value = serde_json::from_str(&leak_json).unwrap();
    let evidence = leak["evidence"].to_string();
    for needle in [
        "US",
        "python-requests/2.31.0",
        "claude-opus-4-5",
        "203.0.113.50",
    ] {
        assert!(
            evidence.contains(needle),
            "{needle} missing from {evidence}"
        );
    }
    assert!(leak["summary"].as_str().unwrap().contains("new country US"));

    // The same alerts are on Kafka, keyed by fingerprint.
    let on_kafka = read_alerts(&env, rows.len()).await;
    assert!(
        on_kafka.len() >= rows.len(),
        "{} on kafka, {} in clickhouse",
        on_kafka.len(),
        rows.len()
    );
    for (key, value) in &on_kafka {
        assert_eq!(key, value["fingerprint"].as_str().unwrap());
    }

    // A restart replays history and reloads what is firing: no new page.
    assert!(detect.terminate(Duration::from_secs(20)));
    let before = env
        .scalar("SELECT count() FROM alerts WHERE status = 'firing'")
        .await;
    let (_again, _) = spawn_detect(&env, &config, "detect-again");
    wait_log(
        &env.log_path("detect-again"),
        "detectors ready",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM alerts WHERE status = 'firing'")
            .await,
        before
    );

    // A broken config file is refused and the running thresholds stay.
    std::fs::write(
        &config,
        format!("{base}{DETECT}\n[detect.retry_storm]\nretry_share = 7\n"),
    )
    .unwrap();
    wait_log(
        &env.log_path("detect-again"),
        "config reload refused",
        Duration::from_secs(15),
    )
    .await;
    let log = std::fs::read_to_string(env.log_path("detect-again")).unwrap();
    assert!(log.contains("detect.retry_storm.retry_share"), "{log}");

    // Once the incidents stop, the alerts resolve.
    let resolved = env
        .wait_for(
            "SELECT uniqExact(fingerprint) >= 5 FROM alerts WHERE status = 'resolved'",
            1.0,
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(resolved, 1.0, "alerts resolve after resolve_after_s");
}

async fn read_alerts(env: &TestEnv, count: usize) -> Vec<(String, serde_json::Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}-alerts", env.group))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.alerts_topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    tripline_kafka::close_consumer(consumer, Duration::from_secs(3)).await;
    out
}
