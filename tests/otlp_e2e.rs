//! OpenTelemetry GenAI spans end to end: real OTLP/HTTP clients (the Python SDK's exporter with
//! the official openai-v2 instrumentation around the real `openai` client, and LiteLLM's own
//! `otel` callback) post to the real `tripline ingest`; rows land in ClickHouse field by field,
//! no prompt anywhere, bad bodies are refused with a reason and lose nothing else, and a burst
//! of spans on one key raises a spend alert from the real detector.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::collector::*;
use common::*;
use tripline_core::secret::Fingerprinter;

const WAIT: Duration = Duration::from_secs(90);
/// Raw-key-shaped identities: Tripline must store only their fingerprints.
const APP_KEY: &str = "sk-proj-e2eAppKeyAbcdefghijklmnop0123";
const BURST_KEY: &str = "sk-proj-e2eBurstKeyAbcdefghijklmno4567";

const DETECT: &str = r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 2
"#;

fn fingerprint(raw: &str) -> String {
    Fingerprinter::new(SECRET.as_bytes())
        .unwrap()
        .fingerprint(raw.as_bytes())
}

fn python() -> PathBuf {
    std::env::var_os("TRIPLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv"))
        .join("bin/python")
}

/// Runs tests/otlp_client.py (`mode` and its arguments) to the end; panics with its output.
fn otlp_client(env: &TestEnv, args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_client.py");
    let endpoint = format!("http://{}/v1/traces", env.listen);
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .args(["--endpoint", &endpoint, "--token", TOKEN])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .expect("run tests/otlp_client.py (scripts/install.sh sets up its venv)");
    assert!(
        out.status.success(),
        "otlp_client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ordinary request of the burst key, as history (its fingerprint, as stored).
fn history_event(id: &str, key_id: &str, ts: i64) -> Vec<u8> {
    gateway_event(
        id,
        key_id,
        ts,
        r#","cost_usd":0.005,"client_ip":"203.0.113.10""#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_spans_from_real_clients_become_requests_and_alerts() {
    let env = TestEnv::new("otlp").await;
    let config = config_with(
        &env,
        "otlp.toml",
        &format!("{DETECT}\n[collector.token_env]\notel = \"E2E_TOKEN_OTEL\"\n"),
    );
    let _ingest = spawn_role(
        &env,
        "ingest",
        &config,
        "ingest",
        &[("E2E_TOKEN_OTEL", TOKEN)],
    );
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");

    // 40 minutes of the burst key's ordinary traffic: 10 requests a minute at $0.005.
    let burst_id = fingerprint(BURST_KEY);
    let now = now_ms();
    let mut history = Vec::new();
    for minute in (2..42).rev() {
        for i in 0..10 {
            let ts = now - minute * 60_000 + i * 6_000;
            history.push(history_event(&format!("h-{minute}-{i}"), &burst_id, ts));
        }
    }
    env.store_history(&producer(), "h", &history).await;
    let stored = history.len() as f64;
    let (_detect, _) = spawn_detect(&env, &config, "detect");
    wait_log(&env.log_path("detect"), "detectors ready", WAIT).await;

    // LiteLLM's own `otel` callback, message logging on: its spans carry the prompt.
    let otel_headers = format!("Authorization=Bearer {TOKEN}");
    let otel_endpoint = format!("http://{}/v1/traces", env.listen);
    let litellm = LiteLlm::start_with(
        &env,
        "  callbacks: [\"otel\"]\n",
        &[
            ("OTEL_EXPORTER", "otlp_http"),
            ("OTEL_ENDPOINT", &otel_endpoint),
            ("OTEL_HEADERS", &otel_headers),
        ],
    )
    .await;
    let marker = format!("zebra-prompt-{}", now_ms());

    // The instrumented openai client: 5 chats and 1 rate-limited call through the proxy.
    let base_url = format!("http://{}/v1", litellm.addr);
    otlp_client(
        &env,
        &[
            "app",
            "--key",
            APP_KEY,
            "--openai-base",
            &base_url,
            "--openai-key",
            MASTER_KEY,
            "--prompt",
            &marker,
            "--chats",
            "5",
            "--failures",
            "1",
        ],
    );
    let app_id = fingerprint(APP_KEY);
    let app_rows = format!("FROM gateway_requests WHERE api_key_id = '{app_id}'");
    assert_eq!(
        env.wait_for(&format!("SELECT count() {app_rows}"), 6.0, WAIT)
            .await,
        6.0
    );
    // openai-v2 spans: the model asked for, the provider, tokens from the response, the end
    // user; no cost attribute, so the price table prices them.
    assert_eq!(
        env.scalar(&format!("SELECT countIf(model = 'gpt-4o-mini' AND provider = 'openai' AND status = 200 AND error_type = '' AND prompt_tokens = 10 AND completion_tokens = 20 AND startsWith(event_id, 'otel-') AND request_id != '' AND cost_source = 'price_table' AND cost_usd > 0) {app_rows}")).await,
        5.0
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT countIf(status = 429 AND error_type = 'rate_limit') {app_rows}"
        ))
        .await,
        1.0
    );

    // LiteLLM's `litellm_request` spans: its key hash (fingerprinted), stated cost, caller.
    let proxy_id = fingerprint("litellm_proxy_master_key");
    let proxy_rows = format!("FROM gateway_requests WHERE api_key_id = '{proxy_id}'");
    assert_eq!(
        env.wait_for(&format!("SELECT count() {proxy_rows}"), 6.0, WAIT)
            .await,
        6.0,
        "LiteLLM's spans: see {}",
        env.dir.join("litellm.log").display()
    );
    assert_eq!(
        env.scalar(&format!("SELECT countIf(model = 'gpt-4o-mini' AND provider = 'openai' AND status = 200 AND user = 'u_42' AND client_ip = '127.0.0.1' AND prompt_tokens = 10 AND completion_tokens = 20 AND cost_source = 'event' AND abs(cost_usd - 1.35e-05) < 1e-12) {proxy_rows}")).await,
        5.0
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT countIf(status = 429 AND error_type = 'rate_limit') {proxy_rows}"
        ))
        .await,
        1.0
    );

    // Bad bodies: a reason each, and the good export right after them still lands.
    let addr = env.listen.as_str();
    let auth = bearer(TOKEN);
    let auth_h = ("Authorization", auth.as_str());
    let protobuf = ("Content-Type", "application/x-protobuf");
    let json = ("Content-Type", "application/json");
    let reply = post(addr, "/v1/traces", &[protobuf], b"\x0a\x02").await;
    assert_eq!(reply.status, 401);
    let reply = post(
        addr,
        "/v1/traces",
        &[auth_h, ("Content-Type", "text/plain")],
        b"x",
    )
    .await;
    assert_eq!(reply.status, 415);
    let reply = post(addr, "/v1/traces", &[auth_h, protobuf], b"\x0a\x05ab").await;
    assert_eq!(reply.status, 400);
    let reason = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(reason.contains("invalid_protobuf"), "{reason}");
    let reply = post(
        addr,
        "/v1/traces",
        &[auth_h, json],
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}"#,
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"].as_str().unwrap().contains("hex"),
        "{:?}",
        reply.json()
    );
    let ts_ns = (now_ms() as u128) * 1_000_000;
    let export = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-app"}}}}]}},"scopeSpans":[{{"spans":[
        {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"{ts_ns}","endTimeUnixNano":"{}","attributes":[
          {{"key":"gen_ai.operation.name","value":{{"stringValue":"chat"}}}},{{"key":"gen_ai.provider.name","value":{{"stringValue":"anthropic"}}}},
          {{"key":"gen_ai.request.model","value":{{"stringValue":"claude-sonnet-4-5"}}}},{{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"1200"}}}},
          {{"key":"gen_ai.usage.output_tokens","value":{{"intValue":300}}}},{{"key":"client.address","value":{{"stringValue":"198.51.100.23"}}}}]}},
        {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","startTimeUnixNano":"{ts_ns}","attributes":[
          {{"key":"http.request.method","value":{{"stringValue":"POST"}}}}]}}]}}]}}]}}"#,
        ts_ns + 1_500_000_000
    );
    let reply = post(addr, "/v1/traces", &[auth_h, json], export.as_bytes()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json(), serde_json::json!({}));
    let json_row = "FROM gateway_requests WHERE event_id = 'otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174'";
    assert_eq!(
        env.wait_for(&format!("SELECT count() {json_row}"), 1.0, WAIT)
            .await,
        1.0
    );
    assert_eq!(
        env.scalar(&format!("SELECT countIf(api_key_id = '{}' AND model = 'claude-sonnet-4-5' AND provider = 'anthropic' AND prompt_tokens = 1200 AND completion_tokens = 300 AND latency_ms = 1500 AND client_ip = '198.51.100.23') {json_row}", fingerprint("json-app"))).await,
        1.0
    );

    // A burst on the burst key: 300 spans stating $0.10 each, 60x its usual minute.
    otlp_client(
        &env,
        &[
            "burst", "--key", BURST_KEY, "--spans", "300", "--cost", "0.1", "--prompt", &marker,
        ],
    );
    let alert = format!(
        "SELECT count() FROM alerts WHERE detector = 'spend_spike' AND status = 'firing' AND api_key_id = '{burst_id}'"
    );
    let deadline = Instant::now() + WAIT;
    while env.scalar(&alert).await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        env.scalar(&alert).await >= 1.0,
        "no spend alert on the burst key; see {}",
        env.log_path("detect").display()
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT count() FROM gateway_requests WHERE api_key_id = '{burst_id}'"
        ))
        .await,
        stored + 300.0
    );

    // Nothing else became an event: the proxy's HTTP and routing spans, the JSON export's HTTP
    // span, are ignored and counted.
    let metrics = env.metrics().await;
    let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    assert_eq!(
        get(r#"tripline_collector_events_total{endpoint="otlp",source="otel",outcome="accepted"}"#),
        6.0 + 6.0 + 1.0 + 300.0,
        "{metrics:#?}"
    );
    assert!(
        get(r#"tripline_collector_events_total{endpoint="otlp",source="otel",outcome="ignored"}"#)
            >= 7.0,
        "{metrics:#?}"
    );
    assert_eq!(
        get(r#"tripline_collector_requests_total{endpoint="otlp",status="400"}"#),
        2.0
    );

    // No prompt, no raw key: not in any table, dead letter or log.
    for tag in ["ingest", "detect"] {
        let log = std::fs::read_to_string(env.log_path(tag)).unwrap();
        for secret in [marker.as_str(), APP_KEY, BURST_KEY] {
            assert!(!log.contains(secret), "{secret:?} in the {tag} log");
        }
    }
    let letters = env.dead_letters(1, Duration::from_secs(5)).await;
    assert_eq!(letters.len(), 1, "only the bad protobuf body: {letters:#?}");
    assert_eq!(letters[0]["payload"], "");
    let tables = env
        .clickhouse()
        .query_raw("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all::<String>()
        .await
        .unwrap();
    assert!(tables.iter().any(|t| t == "gateway_requests"), "{tables:?}");
    for table in tables {
        let text = table_text(&env, &table).await;
        for secret in [marker.as_str(), APP_KEY, BURST_KEY, "zebra-prompt"] {
            assert!(!text.contains(secret), "{secret:?} stored in {table}");
        }
    }
}
