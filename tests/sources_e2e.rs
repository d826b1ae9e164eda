//! `[[sources]]` end to end: Kong's log entries read from a Kafka topic (as `kafka-log` writes
//! them), Envoy AI Gateway access-log lines from another topic and APISIX log entries posted to
//! a configured path, both through the mappings shipped in sources/, land in ClickHouse through
//! the real `tripline ingest`; a broken record is dead-lettered with its topic, partition and
//! offset, and the readers' offsets hold over a restart (nothing read twice is stored twice).

mod common;

use std::time::Duration;

use common::collector::*;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const KONG: &str = include_str!("../collector/tests/fixtures/kong_http_log_ai.json");
const APISIX: &str = include_str!("../collector/tests/fixtures/apisix_kafka_logger_ai.json");

fn shipped(file: &str) -> String {
    std::fs::read_to_string(format!("{}/sources/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn kong_entry(id: &str, now: i64) -> Vec<u8> {
    let mut log: Value = serde_json::from_str(KONG).unwrap();
    log["request"]["id"] = json!(id);
    log["started_at"] = json!(now);
    log["tries"][0]["balancer_start"] = json!(now + 1);
    log.to_string().into_bytes()
}

fn envoy_line(id: &str, now: i64) -> Vec<u8> {
    let at = chrono::DateTime::from_timestamp_millis(now)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(r#"{{"start_time":"{at}","response_code":200,"duration":"640","request_id":"{id}","client_ip":"198.51.100.40","user_agent":"openai-node/4.67.0","api_key":"Bearer sk-proj-EnvoyE2eKeyAbcdefghij0123456789","model":"gpt-4o-mini","backend":"openai","input_tokens":"300","output_tokens":"40"}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_and_http_sources_become_events() {
    let env = TestEnv::new("sources").await;
    let kong_topic = format!("{}.kong-logs", env.gateway_topic);
    let envoy_topic = format!("{}.envoy-logs", env.gateway_topic);
    let kafka = tripline_core::config::KafkaConfig {
        brokers: env.brokers.clone(),
        ..Default::default()
    };
    tripline_kafka::ensure_topics(&kafka, |_| None, &[&kong_topic, &envoy_topic], 2)
        .await
        .unwrap();

    // The shipped Envoy mapping on this test's topic; the shipped APISIX one on a path.
    let envoy = shipped("envoy-ai-gateway.toml")
        .replace("\"envoy-ai-access-logs\"", &format!("\"{envoy_topic}\""));
    let apisix = shipped("apisix-ai-proxy.toml").replace(
        "kafka_topic = \"apisix-llm-logs\"",
        "http_path = \"/v1/logs/apisix\"",
    );
    let config = config_with(
        &env,
        "sources.toml",
        &format!(
            "[collector.token_env]\napisix = \"E2E_TOKEN_APISIX\"\n\n[[sources]]\nname = \"kong\"\nformat = \"kong\"\nkafka_topic = \"{kong_topic}\"\n\n{envoy}\n{apisix}"
        ),
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let vars = [("E2E_TOKEN_APISIX", TOKEN)];
    let mut ingest = spawn_role(&env, "ingest", &config, "ingest", &vars);
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");

    // Kong's kafka-log: three entries and a record that is no JSON.
    let now = now_ms() - 10_000;
    let producer = producer();
    let mut kong: Vec<Vec<u8>> = (0..3)
        .map(|i| kong_entry(&format!("kong-req-{i}"), now + i))
        .collect();
    kong.push(b"{not json".to_vec());
    produce(&producer, &kong_topic, "k", &kong).await;
    let envoy_lines: Vec<Vec<u8>> = (0..2)
        .map(|i| envoy_line(&format!("envoy-req-{i}"), now + i))
        .collect();
    produce(&producer, &envoy_topic, "e", &envoy_lines).await;

    // APISIX's http-logger: a batch of two entries.
    let mut second: Value = serde_json::from_str(APISIX).unwrap();
    second["request"]["headers"]["x-request-id"] = json!("apisix-req-2");
    let mut first: Value = serde_json::from_str(APISIX).unwrap();
    first["start_time"] = json!(now);
    second["start_time"] = json!(now + 1);
    let auth = bearer(TOKEN);
    let reply = post(
        &env.listen,
        "/v1/logs/apisix",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        json!([first, second]).to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["accepted"], 2);

    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 7.0, WAIT)
            .await,
        7.0,
        "3 Kong + 2 Envoy + 2 APISIX"
    );
    assert_eq!(
        env.scalar("SELECT countIf(startsWith(event_id, 'kong-kong-req-') AND model = 'gpt-4o-mini' AND prompt_tokens = 117 AND status = 200) FROM gateway_requests").await,
        3.0
    );
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", 3.0, WAIT)
            .await,
        3.0,
        "one balancer try per Kong entry"
    );
    assert_eq!(
        env.scalar("SELECT countIf(startsWith(api_key_id, 'fp_') AND model = 'gpt-4o-mini' AND provider = 'openai' AND prompt_tokens = 300 AND completion_tokens = 40 AND latency_ms = 640 AND client_ip = '198.51.100.40') FROM gateway_requests WHERE startsWith(event_id, 'envoy-req-')").await,
        2.0
    );
    assert_eq!(
        env.scalar("SELECT countIf(api_key_id = 'alice' AND model = 'gpt-4-0613' AND provider = 'openai' AND prompt_tokens = 23 AND latency_ms = 1530) FROM gateway_requests WHERE startsWith(event_id, 'apisix-')").await,
        2.0
    );

    let letters = env.dead_letters(1, WAIT).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["source_topic"], kong_topic.as_str());
    assert_eq!(letters[0]["reason"], "invalid_json");
    assert!(letters[0]["source_partition"].as_i64().unwrap() >= 0);
    assert_eq!(
        letters[0]["payload"], "",
        "a gateway's log may hold a prompt"
    );

    // A restart resumes after the committed offsets: one more entry, nothing stored twice.
    assert!(
        ingest.terminate(Duration::from_secs(30)),
        "ingest did not stop"
    );
    produce(
        &producer,
        &kong_topic,
        "k",
        &[kong_entry("kong-req-3", now + 3)],
    )
    .await;
    let _ingest = spawn_role(&env, "ingest", &config, "ingest-2", &vars);
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 8.0, WAIT)
            .await,
        8.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        8.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        8.0
    );

    // No raw key, no payload.
    let text = table_text(&env, "gateway_requests").await;
    for secret in ["EnvoyE2eKey", "KongHeaderKey", "alice-key", "secret prompt"] {
        assert!(!text.contains(secret), "{secret:?} stored");
    }
}
