//! `tripline simulate` feeds the real pipeline: everything it sends lands, valid and priced.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_traffic_lands_complete_and_priced() {
    let env = TestEnv::new("sim").await;
    let start = tripline_core::time::format_ms(now_ms() - 3_600_000);
    let output = simulate(&env, &start);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "simulated N gateway requests and M provider attempts in ..."
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let gateway: f64 = words[1].parse().unwrap();
    let provider: f64 = words[5].parse().unwrap();
    assert!((15_000.0..=21_000.0).contains(&gateway), "{stdout}");
    assert!(provider >= gateway * 0.9, "{stdout}");

    let _tripline = env.spawn("ingest", "main");
    let wait = Duration::from_secs(90);
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", gateway, wait)
            .await,
        gateway
    );
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", provider, wait)
            .await,
        provider
    );
    // Every simulated model is in the price table, so nothing is unpriced.
    assert_eq!(
        env.scalar("SELECT countIf(cost_source = 'unpriced') FROM gateway_requests")
            .await,
        0.0
    );
    assert!(
        env.scalar("SELECT sum(cost_usd) FROM gateway_requests")
            .await
            > 0.0
    );
    // Background failures and client retries are present but rare.
    let failed = env
        .scalar("SELECT countIf(status >= 400) / count() FROM gateway_requests")
        .await;
    assert!((0.002..0.08).contains(&failed), "failure share {failed}");
    assert!(
        env.scalar("SELECT countIf(attempt > 1) FROM gateway_requests")
            .await
            > 0.0
    );
    assert!(
        env.scalar("SELECT uniqExact(api_key_id) FROM gateway_requests")
            .await
            >= 20.0
    );
    assert_eq!(
        env.scalar("SELECT countIf(client_country = '') FROM gateway_requests")
            .await,
        0.0
    );
    let metrics = env.metrics().await;
    // Every reason's counter exists from the start (at 0), so sum them.
    let dead_letters: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("tripline_ingest_dead_letters_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(dead_letters, 0.0, "no dead letters");

    // Same seed and start: the same events, so a second run adds nothing.
    let again = simulate(&env, &start);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .split_whitespace()
            .nth(1),
        Some(words[1])
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        gateway
    );
}

/// Runs `tripline simulate` for one minute of event time from `start`, as fast as it goes.
fn simulate(env: &TestEnv, start: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args([
            "simulate",
            "--fast",
            "--rate",
            "300",
            "--duration-s",
            "60",
            "--seed",
            "11",
        ])
        .args(["--keys", "40", "--start", start, "--config"])
        .arg(env.config_path())
        .output()
        .unwrap()
}
