//! `tripline backtest` on stored history: a stricter dollar floor removes the small spike's
//! alert and keeps the large one; a looser config adds an alert on a mild bump.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn request(id: &str, key: &str, ts: i64, cost: f64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"bt","model":"gpt-4o-mini","provider":"openai","status":200,"cost_usd":{cost},"client_country":"DE","user_agent":"openai-python/1.52.0"}}"#
    )
    .into_bytes()
}

fn backtest(
    env: &TestEnv,
    candidate: &str,
    running: &std::path::Path,
    from: &str,
    to: &str,
) -> serde_json::Value {
    let path = env.dir.join(format!("candidate-{}.toml", candidate.len()));
    let base = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(&path, format!("{base}{candidate}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["backtest", "--config"])
        .arg(&path)
        .arg("--running")
        .arg(running)
        .args([
            "--from",
            from,
            "--to",
            to,
            "--warmup-minutes",
            "0",
            "--json",
            "-",
        ])
        .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(100 %)"), "progress is shown: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn changes(report: &serde_json::Value, change: &str) -> Vec<String> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["change"] == change)
        .map(|a| {
            format!(
                "{} {}",
                a["detector"].as_str().unwrap(),
                a["entity"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stricter_removes_small_spikes_and_looser_adds_alerts() {
    let env = TestEnv::new("backtest").await;
    let _ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, Duration::from_secs(60)).await);
    // 50 minutes of history, on whole minutes: 20 requests a minute, $0.08-$0.14 a minute.
    let start = (now_ms() / 60_000 - 55) * 60_000;
    let mut events = Vec::new();
    for minute in 0..50i64 {
        for key in ["k-small", "k-large", "k-quiet"] {
            let mut per_request = 0.004 + 0.003 * ((minute * 7 + key.len() as i64) % 3) as f64;
            if minute >= 45 && key == "k-small" {
                per_request = 0.15; // $3 a minute: over the $1 floor, under a $10 one
            }
            if minute >= 45 && key == "k-large" {
                per_request = 1.5; // $30 a minute
            }
            if minute == 46 && key == "k-quiet" {
                per_request = 0.02; // $0.40: a bump no default alert cares about
            }
            for i in 0..20 {
                let ts = start + minute * 60_000 + i * 2_500;
                events.push(request(
                    &format!("{key}-{minute}-{i}"),
                    key,
                    ts,
                    per_request,
                ));
            }
        }
    }
    produce(&producer(), &env.gateway_topic, "k", &events).await;
    let stored = env
        .wait_for(
            "SELECT count() FROM gateway_requests",
            events.len() as f64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(stored, events.len() as f64);

    let running = env.config_path();
    let from = tripline_core::time::format_ms(start);
    let to = tripline_core::time::format_ms(start + 50 * 60_000);
    let strict = backtest(
        &env,
        // The sustained rule would find $3 a minute on a key of $0.10 too: off in this candidate.
        "\n[detect.spend_spike.model]\nmin_abs_usd = 10.0\n\n[detect.spend_spike.sustained]\nenabled = false\n",
        &running,
        &from,
        &to,
    );
    let removed = changes(&strict, "removed");
    let unchanged = changes(&strict, "unchanged");
    assert!(
        removed
            .iter()
            .any(|a| a.starts_with("spend_spike") && a.contains("api_key_id=k-small")),
        "{strict:#}"
    );
    assert!(
        unchanged
            .iter()
            .any(|a| a.starts_with("spend_spike") && a.contains("api_key_id=k-large")),
        "{strict:#}"
    );
    assert!(changes(&strict, "added").is_empty(), "{strict:#}");

    let loose = backtest(
        &env,
        "\n[detect.spend_spike.model]\nmin_abs_usd = 0.05\nmin_rel_increase = 0.1\ntail_probability = 0.2\n",
        &running,
        &from,
        &to,
    );
    let added = changes(&loose, "added");
    assert!(
        added
            .iter()
            .any(|a| a.starts_with("spend_spike") && a.contains("api_key_id=k-quiet")),
        "{loose:#}"
    );
    assert!(changes(&loose, "removed").is_empty(), "{loose:#}");
    assert_eq!(
        loose["summary"]["spend_spike"]["added"].as_u64().unwrap() as usize,
        added
            .iter()
            .filter(|a| a.starts_with("spend_spike"))
            .count()
    );
}
