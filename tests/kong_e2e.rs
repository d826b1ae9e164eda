//! Kong AI Gateway logs end to end: `http-log` batches (JSON arrays of Kong's documented log
//! entry) posted to the real `tripline ingest` land as gateway requests and, one per balancer
//! try, provider attempts in ClickHouse; entries of other routes are ignored, a broken entry is
//! dead-lettered alone, and no prompt or raw key is stored.

mod common;

use std::time::Duration;

use common::collector::*;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const SAMPLE: &str = include_str!("../collector/tests/fixtures/kong_http_log_ai.json");

/// The documented entry, now, with its own request id, `tries` and `upstream_status`.
fn entry(id: &str, statuses: &[u16]) -> Value {
    let mut log: Value = serde_json::from_str(SAMPLE).unwrap();
    let now = now_ms();
    log["request"]["id"] = json!(id);
    log["started_at"] = json!(now - 5_000);
    log["tries"] = statuses
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"balancer_start": now - 5_000 + i as i64 * 300, "ip": "34.237.204.224", "port": 443, "balancer_latency": 0}))
        .collect();
    let last = *statuses.last().unwrap();
    log["upstream_status"] = json!(statuses
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", "));
    log["response"]["status"] = json!(last);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_http_log_batches_become_requests_and_attempts() {
    let env = TestEnv::new("kong").await;
    let config = config_with(
        &env,
        "kong.toml",
        "[collector.token_env]\nkong = \"E2E_TOKEN_KONG\"\n",
    );
    let _ingest = spawn_role(
        &env,
        "ingest",
        &config,
        "ingest",
        &[("E2E_TOKEN_KONG", TOKEN)],
    );
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");

    // An http-log batch (max_batch_size > 1 posts a JSON array): three AI calls, one of them
    // retried twice, a route without AI plugins, and an entry that is not an object.
    let mut plain: Value = serde_json::from_str(SAMPLE).unwrap();
    plain.as_object_mut().unwrap().remove("ai");
    let batch = json!([
        entry("req-ok-1", &[200]),
        entry("req-ok-2", &[200]),
        entry("req-retried", &[429, 503, 200]),
        plain,
        "not an entry",
    ]);
    let auth = bearer(TOKEN);
    let reply = post(
        &env.listen,
        "/v1/logs/kong",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = reply.json();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 4, "{answer}");
    assert_eq!(answer["ignored"], 1, "{answer}");

    let key = "8c1f7e2a-5d4b-4c3a-9e8f-7a6b5c4d3e2f";
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 3.0, WAIT)
            .await,
        3.0
    );
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", 5.0, WAIT)
            .await,
        5.0
    );
    assert_eq!(
        env.scalar(&format!("SELECT countIf(api_key_id = '{key}' AND key_hint = 'search-team' AND project = 'openai-service' AND model = 'gpt-4o-mini' AND provider = 'openai' AND status = 200 AND prompt_tokens = 117 AND completion_tokens = 76 AND abs(cost_usd - 0.005) < 1e-12 AND cost_source = 'event' AND latency_ms = 2672 AND client_ip = '192.168.65.1' AND user_agent = 'OpenAI/Python 1.52.0') FROM gateway_requests")).await,
        3.0
    );
    let attempts: Vec<(u16, u16, String)> = env
        .clickhouse()
        .query("SELECT attempt, status, error_type FROM provider_attempts WHERE request_id = 'req-retried' ORDER BY attempt")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        attempts,
        [
            (1, 429, "rate_limit".to_owned()),
            (2, 503, "server_error".to_owned()),
            (3, 200, String::new())
        ]
    );

    let letters = env.dead_letters(1, WAIT).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["source_topic"], "http:/v1/logs/kong");
    assert_eq!(letters[0]["reason"], "wrong_type");
    let metrics = env.metrics().await;
    assert_eq!(
        metrics
            .get(r#"tripline_collector_events_total{endpoint="kong",source="kong",outcome="ignored"}"#)
            .copied(),
        Some(1.0),
        "{metrics:#?}"
    );

    // Kong's payload logging and request headers never reach storage.
    for table in ["gateway_requests", "provider_attempts"] {
        let text = table_text(&env, table).await;
        for secret in ["kong secret", "KongHeaderKey"] {
            assert!(!text.contains(secret), "{secret:?} stored in {table}");
        }
    }
}
