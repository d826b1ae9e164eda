//! Late data end to end: history backfilled into a running detector (events hours in the past,
//! for minutes its models have long folded) reaches the models without a restart, and nothing
//! in that history raises an alert, not even the spend spike and the far-away use it holds.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DETECT: &str = r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 6
resolve_after_s = 300
rewarm_min_late_events = 500
"#;

const KEYS: [&str; 5] = ["k-0", "k-1", "k-2", "k-3", "k-4"];

/// An ordinary request of `key` from Germany.
fn event(id: &str, key: &str, ts: i64, cost_usd: f64, country: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"backfill","model":"gpt-4o-mini","provider":"openai","status":200,"prompt_tokens":100,"completion_tokens":20,"cost_usd":{cost_usd},"client_ip":"91.0.0.7","client_country":"{country}","user_agent":"openai-python/1.52.0"}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_history_reaches_the_running_models_quietly() {
    let env = TestEnv::new("backfill").await;
    let _ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, Duration::from_secs(60)).await);

    // The detector starts on an empty database: nothing to learn from.
    let config = env.dir.join("detect.toml");
    let base = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(&config, format!("{base}{DETECT}")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(env.log_path("detect")).unwrap();
    let _detect = Tripline {
        child: Command::new(env!("CARGO_BIN_EXE_tripline"))
            .args(["detect", "--config"])
            .arg(&config)
            .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
            .env("TRIPLINE_LISTEN", &listen)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    };
    assert_eq!(
        wait_metric(&listen, "tripline_detector_keys", 0.0, 90).await,
        0.0
    );

    // Three hours of history, from four hours ago to one hour ago: five keys, three requests
    // a minute from Germany; in the middle, k-0 spends $50 in a minute and k-1 is used from
    // Japan. Live, either would alert.
    let now = now_ms();
    let mut history = Vec::new();
    for minute in (60..240).rev() {
        let start = now - minute * 60_000;
        for key in KEYS {
            for i in 0..3 {
                let id = format!("h-{key}-{minute}-{i}");
                history.push(event(&id, key, start + i * 15_000, 0.01, "DE"));
            }
        }
        if minute == 120 {
            for i in 0..20 {
                let id = format!("spike-{i}");
                history.push(event(&id, "k-0", start + i * 1_000, 2.5, "DE"));
            }
            for i in 0..3 {
                let id = format!("far-{i}");
                history.push(event(&id, "k-1", start + 50_000 + i, 0.01, "JP"));
            }
        }
    }
    produce(&producer(), &env.gateway_topic, "history", &history).await;
    let stored = env
        .wait_for(
            "SELECT count() FROM gateway_requests",
            history.len() as f64,
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(stored, history.len() as f64);

    // No restart: the running detector counts the late events, re-warms and knows the keys.
    let keys = wait_metric(&listen, "tripline_detector_keys", KEYS.len() as f64, 180).await;
    let text = std::fs::read_to_string(env.log_path("detect")).unwrap();
    assert_eq!(keys, KEYS.len() as f64, "{text}");
    assert!(
        text.contains("models re-warmed on history, late events included"),
        "{text}"
    );
    let metrics = parse_metrics(&http_get(&listen, "/metrics").await.unwrap().1);
    assert!(metrics["tripline_detector_late_events_total"] >= 500.0);
    assert!(metrics["tripline_detector_rewarms_total"] >= 1.0);

    // Quietly: a few more cycles, and no alert for anything in the history.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alerts: Vec<String> = env
        .clickhouse()
        .query_raw("SELECT summary FROM alerts")
        .fetch_all()
        .await
        .unwrap_or_default();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

/// Waits until metric `name` reads `expected`; returns the last value (-1 when absent).
async fn wait_metric(listen: &str, name: &str, expected: f64, timeout_s: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        let (_, body) = http_get(listen, "/metrics").await.unwrap_or_default();
        let value = parse_metrics(&body).get(name).copied().unwrap_or(-1.0);
        if value == expected || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
