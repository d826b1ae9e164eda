//! The HTTP collector end to end: the real `tripline run` between HTTP clients (a real LiteLLM
//! proxy among them) and a real broker and ClickHouse.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::*;
use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::io::BufReader;

const WAIT: Duration = Duration::from_secs(60);
const OTHER_TOKEN: &str = "e2e-collector-token-other-4567";
const SAMPLE: &str = include_str!("../collector/tests/fixtures/litellm_generic_api_sample.ndjson");

/// Starts `tripline run` with the collector on, tokens for the sources `litellm` and `other`.
/// `brokers` replaces the shared broker (outage tests); `extra` is appended to the config.
fn spawn_collector(env: &TestEnv, collector: &str, brokers: Option<&str>, extra: &str) -> Tripline {
    let mut text = std::fs::read_to_string(env.config_path()).unwrap();
    if let Some(replacement) = brokers {
        text = text.replace(
            &format!("brokers = \"{}\"", common::brokers()),
            &format!("brokers = \"{replacement}\""),
        );
    }
    text.push_str(&format!(
        "\n[collector]\n{collector}\n\n[collector.token_env]\nlitellm = \"E2E_TOKEN_LITELLM\"\nother = \"E2E_TOKEN_OTHER\"\n{extra}\n"
    ));
    let path = env.dir.join("tripline-collector.toml");
    std::fs::write(&path, text).unwrap();
    let log = std::fs::File::create(env.log_path("collector")).unwrap();
    // TRIPLINE_BENCH_BIN: another build of the binary (e.g. target/release/tripline) to measure.
    let bin = std::env::var_os("TRIPLINE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tripline")));
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
        .env("E2E_TOKEN_LITELLM", TOKEN)
        .env("E2E_TOKEN_OTHER", OTHER_TOKEN)
        .env("RUST_LOG", "info,tripline_collector=debug")
        .env_remove("TRIPLINE_KAFKA_BROKERS")
        .env_remove("TRIPLINE_CLICKHOUSE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start tripline");
    Tripline { child }
}

/// `n` valid NDJSON gateway events `{prefix}{i}`, a few keys, a stated cost each.
fn ndjson_events(prefix: &str, n: usize, ts: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(&gateway_event(
            &format!("{prefix}{i}"),
            &format!("key-{}", i % 4),
            ts + i as i64,
            r#","cost_usd":0.001,"client_ip":"203.0.113.7""#,
        ));
        out.push(b'\n');
    }
    out
}

/// Every message now on `topic` (stops after `idle` without a new one).
async fn read_topic(topic: &str, idle: Duration) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{topic}-{}", now_ms()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    // The first message waits for the group join; later ones only for `idle`.
    let mut wait = Duration::from_secs(15);
    while let Ok(Ok(message)) = tokio::time::timeout(wait, consumer.recv()).await {
        out.push(message.payload().unwrap_or_default().to_vec());
        wait = idle;
    }
    tripline_kafka::close_consumer(consumer, Duration::from_secs(3)).await;
    out
}

/// Each format of both endpoints, auth, size limits, and a mixed batch whose bad items go to
/// the dead-letter topic while the good ones are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_auth_limits_and_mixed_batches() {
    let env = TestEnv::new("collector").await;
    let _tripline = spawn_collector(
        &env,
        "max_body_bytes = 200000\nmax_batch_events = 50",
        None,
        "",
    );
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let addr = env.listen.as_str();
    let auth = bearer(TOKEN);
    let other = bearer(OTHER_TOKEN);
    let json = ("Content-Type", "application/json");
    let ts = now_ms() - 60_000;

    // Auth: no token, a wrong one, another scheme.
    let events = ndjson_events("a", 3, ts);
    for headers in [
        vec![json],
        vec![json, ("Authorization", "Bearer not-the-token-at-all-xx")],
        vec![json, ("Authorization", "Basic ZTJlOnRva2Vu")],
    ] {
        let reply = post(addr, "/v1/events", &headers, &events).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
    }

    // /v1/events: NDJSON (10), a JSON array (10), one object, gzip NDJSON (10), attempts (5).
    let ndjson = ndjson_events("n", 10, ts);
    let array = format!(
        "[{}]",
        String::from_utf8(ndjson_events("j", 10, ts))
            .unwrap()
            .trim_end()
            .replace('\n', ",")
    );
    let single = gateway_event("s0", "key-0", ts, "");
    let gz = gzip(&ndjson_events("z", 10, ts));
    let attempts: String = (0..5)
        .map(|i| format!(r#"{{"event_id":"p{i}","ts":{ts},"request_id":"n{i}","api_key_id":"key-0","provider":"openai","model":"gpt-4o-mini","attempt":{},"status":{}}}"#, 1 + i % 2, if i % 2 == 0 { 429 } else { 200 }) + "\n")
        .collect();
    let auth_h = ("Authorization", auth.as_str());
    let other_h = ("Authorization", other.as_str());
    for (body, headers, path, accepted) in [
        (ndjson.clone(), vec![json, auth_h], "/v1/events", 10),
        (array.into_bytes(), vec![json, other_h], "/v1/events", 10),
        (single, vec![json, auth_h], "/v1/events", 1),
        (
            gz,
            vec![json, auth_h, ("Content-Encoding", "gzip")],
            "/v1/events",
            10,
        ),
        (
            attempts.into_bytes(),
            vec![auth_h],
            "/v1/events?kind=provider_attempt",
            5,
        ),
    ] {
        let reply = post(addr, path, &headers, &body).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let answer = reply.json();
        assert_eq!(answer["accepted"], accepted, "{answer}");
        assert_eq!(answer["rejected"], serde_json::json!([]));
    }

    // A mixed batch: good neighbours stored, bad items refused with index and reason.
    let mixed = [
        String::from_utf8(gateway_event("m0", "key-1", ts, "")).unwrap(),
        r#"{"event_id":"m1","ts":1795687100000,"model":"m","status":200}"#.to_owned(),
        String::from_utf8(gateway_event("m2", "key-1", ts, r#","latency_ms":-5"#)).unwrap(),
        "{not json".to_owned(),
        String::from_utf8(gateway_event("m4", "key-1", ts, "")).unwrap(),
        format!(
            r#"{{"event_id":"m5","ts":{},"api_key_id":"k","model":"m","status":200}}"#,
            now_ms() + 3_600_000
        ),
        String::from_utf8(gateway_event("m6", "key-1", ts, "")).unwrap(),
    ]
    .join("\n");
    let reply = post(addr, "/v1/events", &[auth_h], mixed.as_bytes()).await;
    assert_eq!(reply.status, 200);
    let answer = reply.json();
    assert_eq!(answer["accepted"], 3, "{answer}");
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "missing_field".to_owned()),
            (2, "invalid_value".to_owned()),
            (3, "invalid_json".to_owned()),
            (5, "future_timestamp".to_owned())
        ]
    );
    assert!(answer["rejected"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("api_key_id"));

    // LiteLLM: the real sample in each log_format, with the call ids made distinct per format.
    let lines: Vec<String> = SAMPLE.lines().map(str::to_owned).collect();
    let retag = |tag: &str, line: &str| {
        line.replace(
            "\"litellm_call_id\": \"",
            &format!("\"litellm_call_id\": \"{tag}-"),
        )
    };
    let as_ndjson: String = lines.iter().map(|l| retag("nd", l) + "\n").collect();
    let as_array = format!(
        "[{}]",
        lines
            .iter()
            .map(|l| retag("ar", l))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let litellm_ua = ("User-Agent", "litellm/1.106.12");
    for body in [as_ndjson, as_array] {
        let reply = post(
            addr,
            "/v1/logs/litellm",
            &[json, auth_h, litellm_ua],
            body.as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["accepted"], 3);
    }
    for line in &lines {
        let body = retag("si", line);
        let reply = post(
            addr,
            "/v1/logs/litellm",
            &[json, auth_h, litellm_ua],
            body.as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["accepted"], 1);
    }

    // Limits: a body over max_body_bytes, a gzip body inflating past it, too many events.
    let big = vec![b' '; 250_000];
    let reply = post(addr, "/v1/events", &[auth_h], &big).await;
    assert_eq!(reply.status, 413);
    let reply = post(
        addr,
        "/v1/events",
        &[auth_h, ("Content-Encoding", "gzip")],
        &gzip(&big),
    )
    .await;
    assert_eq!(reply.status, 413);
    let reply = post(addr, "/v1/events", &[auth_h], &ndjson_events("t", 51, ts)).await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("51 events"));
    let reply = post(
        addr,
        "/v1/events",
        &[auth_h, ("Content-Encoding", "br")],
        b"x",
    )
    .await;
    assert_eq!(reply.status, 415);
    let reply = post(
        addr,
        "/v1/events",
        &[auth_h],
        b"[{\"a\": 1}, {\"b\": \"unterminated",
    )
    .await;
    assert_eq!(reply.status, 400);

    // Stored: 10 + 10 + 1 + 10 + 3 contract events and 9 LiteLLM calls; 5 + 9 attempts.
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 43.0, WAIT)
            .await,
        43.0
    );
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", 14.0, WAIT)
            .await,
        14.0
    );
    let litellm_rows = "FROM gateway_requests WHERE api_key_id = 'litellm_proxy_master_key'";
    assert_eq!(
        env.scalar(&format!("SELECT count() {litellm_rows}")).await,
        9.0
    );
    assert_eq!(
        env.scalar(&format!("SELECT countIf(user = 'u_42' AND client_ip = '127.0.0.1' AND model = 'gpt-4o-mini' AND provider = 'openai' AND status = 200 AND prompt_tokens = 10 AND completion_tokens = 20 AND cost_source = 'event') {litellm_rows}")).await,
        9.0
    );
    let cost = env
        .scalar(&format!("SELECT sum(cost_usd) {litellm_rows}"))
        .await;
    assert!((cost - 9.0 * 1.35e-05).abs() < 1e-12, "{cost}");
    let stated = env
        .scalar("SELECT sum(cost_usd) FROM gateway_requests WHERE match(event_id, '^n[0-9]+$')")
        .await;
    assert!((stated - 0.01).abs() < 1e-12, "{stated}");

    // Dead letters: the four refused items of the mixed batch, and the malformed body.
    let letters = env.dead_letters(5, WAIT).await;
    assert_eq!(letters.len(), 5, "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter["source_topic"], "http:/v1/events");
        assert_eq!(letter["source_partition"], -1);
    }
    let mut offsets: Vec<(i64, String)> = letters
        .iter()
        .map(|l| {
            (
                l["source_offset"].as_i64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    offsets.sort();
    assert_eq!(
        offsets,
        [
            (0, "invalid_json".to_owned()),
            (1, "missing_field".to_owned()),
            (2, "invalid_value".to_owned()),
            (3, "invalid_json".to_owned()),
            (5, "future_timestamp".to_owned())
        ]
    );

    // Metrics: accepted and rejected items per source, answers per status.
    let metrics = env.metrics().await;
    let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    assert_eq!(
        get(
            r#"tripline_collector_events_total{endpoint="events",source="litellm",outcome="accepted"}"#
        ),
        29.0,
        "{metrics:#?}"
    );
    assert_eq!(
        get(
            r#"tripline_collector_events_total{endpoint="events",source="other",outcome="accepted"}"#
        ),
        10.0
    );
    assert_eq!(
        get(
            r#"tripline_collector_events_total{endpoint="litellm",source="litellm",outcome="accepted"}"#
        ),
        9.0
    );
    assert_eq!(
        get(r#"tripline_collector_requests_total{endpoint="events",status="401"}"#),
        3.0
    );
    assert_eq!(
        get(r#"tripline_collector_requests_total{endpoint="events",status="413"}"#),
        3.0
    );
}

/// Kafka unreachable: the batch is answered 503 with Retry-After, nothing is acknowledged, and
/// once Kafka is back the resent batch lands exactly once.
///
/// A private broker advertises a cuttable proxy, so all Kafka traffic (the collector's and
/// ingest's) goes through it and the shared broker is never disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_answers_503_and_loses_nothing() {
    let env = TestEnv::new("collector_outage").await;
    let broker_port = free_port();
    let proxy = proxy::Proxy::start(format!("127.0.0.1:{broker_port}")).await;
    let _broker = PrivateBroker::start(&env, broker_port, &proxy.addr);
    let kafka = tripline_core::config::KafkaConfig {
        brokers: proxy.addr.clone(),
        ..Default::default()
    };
    let topics = [&env.gateway_topic, &env.provider_topic, &env.dlq_topic];
    let deadline = Instant::now() + WAIT;
    while let Err(err) =
        tripline_kafka::ensure_topics(&kafka, |_| None, &topics.map(String::as_str), 2).await
    {
        assert!(
            Instant::now() < deadline,
            "private broker never answered: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _tripline = spawn_collector(
        &env,
        "produce_timeout_ms = 2000\nretry_after_s = 1",
        Some(&proxy.addr),
        "",
    );
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let addr = env.listen.as_str();
    let auth = bearer(TOKEN);
    let headers = [("Authorization", auth.as_str())];
    let ts = now_ms() - 60_000;

    let first = ndjson_events("before", 100, ts);
    let reply = post(addr, "/v1/events", &headers, &first).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    proxy.go_down();
    let second = ndjson_events("during", 100, ts);
    let started = Instant::now();
    let reply = post(addr, "/v1/events", &headers, &second).await;
    assert_eq!(
        reply.status,
        503,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The gateway's behaviour: resend after Retry-After until the batch is acknowledged.
    proxy.come_back();
    let deadline = Instant::now() + WAIT;
    let mut resends = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        resends += 1;
        let reply = post(addr, "/v1/events", &headers, &second).await;
        if reply.status == 200 {
            assert_eq!(reply.json()["accepted"], 100);
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(Instant::now() < deadline, "kafka never came back");
    }
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 200.0, WAIT)
            .await,
        200.0,
        "after {resends} resend(s)"
    );
    // Give a late duplicate (a partly written attempt) time to show, then check it did not count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        200.0
    );
    assert_eq!(
        env.scalar(
            "SELECT uniqExact(event_id) FROM gateway_requests WHERE event_id LIKE 'during%'"
        )
        .await,
        100.0
    );
    let metrics = env.metrics().await;
    assert!(
        metrics
            .get("tripline_collector_kafka_failures_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "{metrics:#?}"
    );
}

/// A tansu broker of the test's own, memory-backed, advertising `advertised` (a proxy).
struct PrivateBroker {
    child: Child,
}

impl PrivateBroker {
    fn start(env: &TestEnv, port: u16, advertised: &str) -> PrivateBroker {
        let bin = tansu_bin();
        let log = std::fs::File::create(env.dir.join("tansu.log")).unwrap();
        let child = Command::new(&bin)
            .current_dir(&env.dir)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/install.sh)", bin.display()));
        PrivateBroker { child }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("TRIPLINE_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("tansu-0.6.0/bin/tansu"))
}

/// Real chat completions through a real LiteLLM proxy land in ClickHouse, mapped field by
/// field, with no prompt or completion anywhere in Kafka; a burst over the key's budget raises a
/// spend finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_proxy_end_to_end() {
    let env = TestEnv::new("collector_litellm").await;
    // Without a database LiteLLM logs every request under its master key's placeholder hash;
    // a small hourly budget on it turns the burst below into a spend finding.
    let _tripline = spawn_collector(
        &env,
        "",
        None,
        "\n[detect]\neval_interval_ms = 1000\n\n[detect.keys.\"litellm_proxy_master_key\"]\nhourly_budget_usd = 0.0001\n",
    );
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let litellm = LiteLlm::start(&env, &env.listen).await;
    let marker = format!("zebra-prompt-{}", now_ms());

    // 4 users x 5 successes, 3 rate-limited and 2 server errors, one streamed success.
    let mut calls = Vec::new();
    for round in 0..5 {
        for user in 1..=4 {
            calls.push(("gpt-4o-mini", format!("u_{user}"), 200, false, round));
        }
    }
    for (model, status, n) in [("rate-limited", 429, 3), ("broken", 500, 2)] {
        for i in 0..n {
            calls.push((model, format!("u_{}", 1 + i), status, false, 0));
        }
    }
    calls.push(("gpt-4o-mini", "u_stream".to_owned(), 200, true, 0));
    // LiteLLM 1.106.12's generic_api logger clears its queue when a send ends, dropping what was
    // logged meanwhile (see the README). Its batch size is 2 here and the timer is off, so send
    // two calls, then wait for their batch to be acknowledged before the next two.
    let accepted = r#"tripline_collector_events_total{endpoint="litellm",source="litellm",outcome="accepted"}"#;
    let (mut prompt_tokens, mut completion_tokens, mut cost) = (0u64, 0u64, 0.0f64);
    for (i, (model, user, status, stream, round)) in calls.iter().enumerate() {
        let reply = litellm
            .chat(model, user, &format!("{marker} {round}"), *stream)
            .await;
        assert_eq!(
            reply.status,
            *status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        if *status == 200 && !stream {
            let usage = &reply.json()["usage"];
            prompt_tokens += usage["prompt_tokens"].as_u64().unwrap();
            completion_tokens += usage["completion_tokens"].as_u64().unwrap();
            cost += reply
                .header("x-litellm-response-cost")
                .expect("litellm states the cost")
                .parse::<f64>()
                .unwrap();
        }
        if *stream {
            assert!(String::from_utf8_lossy(&reply.body).contains("data:"));
        }
        if i % 2 == 1 {
            let deadline = Instant::now() + WAIT;
            while env.metrics().await.get(accepted).copied().unwrap_or(0.0) < (i + 1) as f64 {
                assert!(
                    Instant::now() < deadline,
                    "litellm's log of call {i} never arrived; see {}",
                    env.dir.join("litellm.log").display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Every call is stored once, with what LiteLLM knew about it.
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 26.0, WAIT)
            .await,
        26.0,
        "see {}",
        env.dir.join("litellm.log").display()
    );
    let q = |sql: &str| format!("SELECT {sql} FROM gateway_requests");
    assert_eq!(env.scalar(&q("countIf(status = 200)")).await, 21.0);
    assert_eq!(
        env.scalar(&q("countIf(status = 429 AND error_type = 'rate_limit')"))
            .await,
        3.0
    );
    assert_eq!(
        env.scalar(&q("countIf(status = 500 AND error_type = 'server_error')"))
            .await,
        2.0
    );
    assert_eq!(env.scalar(&q("uniqExact(user)")).await, 5.0);
    assert_eq!(env.scalar(&q("countIf(user = 'u_1')")).await, 7.0);
    assert_eq!(
        env.scalar(&q("countIf(api_key_id = 'litellm_proxy_master_key')"))
            .await,
        26.0
    );
    assert_eq!(
        env.scalar(&q("countIf(client_ip = '127.0.0.1' AND user_agent = 'tripline-e2e/1.0' AND provider = 'openai')"))
            .await,
        26.0
    );
    assert_eq!(
        env.scalar(&q("countIf(stream = 1 AND user = 'u_stream')"))
            .await,
        1.0
    );
    let plain = "WHERE status = 200 AND stream = 0";
    assert_eq!(
        env.scalar(&format!(
            "SELECT sum(prompt_tokens) FROM gateway_requests {plain}"
        ))
        .await,
        prompt_tokens as f64
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT sum(completion_tokens) FROM gateway_requests {plain}"
        ))
        .await,
        completion_tokens as f64
    );
    let stored = env
        .scalar(&format!(
            "SELECT sum(cost_usd) FROM gateway_requests {plain}"
        ))
        .await;
    assert!(
        cost > 0.0 && (stored - cost).abs() < 1e-12,
        "stored {stored}, litellm {cost}"
    );
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests WHERE status != 200 AND cost_usd != 0")
            .await,
        0.0
    );
    // Every payload named its deployment (model_id): one attempt per call.
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", 26.0, WAIT)
            .await,
        26.0
    );
    assert_eq!(
        env.scalar(
            "SELECT countIf(model = 'openai/gpt-4o' AND status = 500) FROM provider_attempts"
        )
        .await,
        2.0
    );

    // No prompt, no completion, anywhere Tripline wrote.
    for topic in [&env.gateway_topic, &env.provider_topic] {
        let messages = read_topic(topic, Duration::from_secs(2)).await;
        assert_eq!(messages.len(), 26, "{topic}");
        for message in messages {
            let text = String::from_utf8_lossy(&message);
            assert!(
                !text.contains(&marker) && !text.contains("Hello from a mock"),
                "{text}"
            );
        }
    }
    assert!(env.dead_letters(1, Duration::from_secs(5)).await.is_empty());

    // The burst went over the key's hourly budget: a spend finding.
    let finding = env
        .wait_for(
            "SELECT count() > 0 FROM alerts WHERE detector = 'spend_spike' AND api_key_id = 'litellm_proxy_master_key' AND status = 'firing'",
            1.0,
            WAIT,
        )
        .await;
    assert_eq!(finding, 1.0, "no spend finding for the LiteLLM burst");
}

/// One NDJSON batch of `n` realistic contract events (about 330 bytes each).
fn bench_batch(tag: &str, n: usize, ts: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 340);
    for i in 0..n {
        out.extend_from_slice(format!(
            r#"{{"event_id":"{tag}-{i}","ts":{},"api_key_id":"key-{}","key_hint":"sk-...9f2c","project":"search","team":"core","user":"u-{}","provider":"openai","model":"gpt-4o-mini","status":200,"prompt_tokens":1200,"completion_tokens":180,"latency_ms":950,"client_ip":"203.0.113.7","user_agent":"openai-python/1.52.0","request_id":"req-{tag}-{i}","attempt":1}}"#,
            ts + i as i64,
            i % 50,
            i % 200
        ).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The same `n` requests as [`bench_batch`], as one OTLP/HTTP protobuf export of GenAI spans,
/// each with the attributes an instrumented client sends.
fn bench_otlp_batch(tag: &str, n: usize, ts: i64) -> Vec<u8> {
    use prost::Message;
    use tripline_collector::otlp::proto::*;
    let text = |key: &str, value: String| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::String(value)),
        }),
    };
    let int = |key: &str, value: i64| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::Int(value)),
        }),
    };
    let spans = (0..n)
        .map(|i| {
            let start = (ts + i as i64) as u64 * 1_000_000;
            Span {
                trace_id: format!("{tag:>8}{i:08}").into_bytes(),
                span_id: (i as u64).to_be_bytes().to_vec(),
                name: "chat gpt-4o-mini".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 950_000_000,
                attributes: vec![
                    text("gen_ai.operation.name", "chat".into()),
                    text("gen_ai.provider.name", "openai".into()),
                    text("gen_ai.request.model", "gpt-4o-mini".into()),
                    text("gen_ai.response.id", format!("req-{tag}-{i}")),
                    int("gen_ai.usage.input_tokens", 1200),
                    int("gen_ai.usage.output_tokens", 180),
                    text("tripline.api_key", format!("key-{}", i % 50)),
                    text("user.id", format!("u-{}", i % 200)),
                    text("client.address", "203.0.113.7".into()),
                    text("user_agent.original", "openai-python/1.52.0".into()),
                ],
                status: None,
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "search".into())],
            }),
            scope_spans: vec![ScopeSpans { spans }],
        }],
    }
    .encode_to_vec()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Collector throughput and added latency. Settings: TRIPLINE_BENCH_SECS (20),
/// TRIPLINE_BENCH_CONNECTIONS (4), TRIPLINE_BENCH_BATCH (1000), TRIPLINE_BENCH_ENDPOINT (`events`
/// for contract-v1 NDJSON on /v1/events, `otlp` for protobuf GenAI spans on /v1/traces),
/// TRIPLINE_BENCH_BIN (the binary to measure; this test's own debug build by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --test collector_e2e -- --ignored --nocapture collector_benchmark"]
async fn collector_benchmark() {
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = setting("TRIPLINE_BENCH_SECS", 20);
    let connections = setting("TRIPLINE_BENCH_CONNECTIONS", 4) as usize;
    let batch = setting("TRIPLINE_BENCH_BATCH", 1000) as usize;
    let ts = now_ms() - 60_000;
    let otlp = std::env::var("TRIPLINE_BENCH_ENDPOINT").is_ok_and(|e| e == "otlp");
    let (path, content_type) = if otlp {
        ("/v1/traces", "application/x-protobuf")
    } else {
        ("/v1/events", "application/x-ndjson")
    };
    let body_of = move |tag: &str| {
        if otlp {
            bench_otlp_batch(tag, batch, ts)
        } else {
            bench_batch(tag, batch, ts)
        }
    };
    let env = TestEnv::new("collector_bench").await;
    let _tripline = spawn_collector(&env, "max_batch_events = 100000", None, "");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let auth = bearer(TOKEN);

    // 1. Latency of one batch at a time: through the collector, and straight to Kafka.
    let producer = producer();
    let direct_topic = format!("{}.direct", env.gateway_topic);
    let kafka = tripline_core::config::KafkaConfig {
        brokers: brokers(),
        ..Default::default()
    };
    tripline_kafka::ensure_topics(&kafka, |_| None, &[&direct_topic], 2)
        .await
        .unwrap();
    let (mut http, mut direct) = (Vec::new(), Vec::new());
    for round in 0..30 {
        let tag = format!("lat{round}");
        let started = Instant::now();
        let reply = post(
            &env.listen,
            path,
            &[("Authorization", &auth), ("Content-Type", content_type)],
            &body_of(&tag),
        )
        .await;
        assert_eq!(reply.status, 200);
        http.push(started.elapsed());
        // The same requests as contract events, produced by a client of Kafka's own.
        let payloads: Vec<Vec<u8>> = bench_batch(&tag, batch, ts)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let started = Instant::now();
        produce(&producer, &direct_topic, "key-1", &payloads).await;
        direct.push(started.elapsed());
    }
    http.sort();
    direct.sort();

    // 2. Sustained: `connections` keep-alive clients posting batches back to back.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let addr = env.listen.clone();
        let auth = auth.clone();

        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut conn = BufReader::new(stream);
            let (mut events, mut bytes, mut latencies) = (0usize, 0usize, Vec::new());
            let mut n = 0;
            while Instant::now() < deadline {
                let body = body_of(&format!("s{c}-{n}"));
                n += 1;
                let sent = Instant::now();
                send_request(
                    &mut conn,
                    &addr,
                    path,
                    &[("Authorization", &auth), ("Content-Type", content_type)],
                    &body,
                    false,
                )
                .await;
                let reply = read_reply(&mut conn).await.expect("reply");
                assert_eq!(
                    reply.status,
                    200,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                latencies.push(sent.elapsed());
                events += batch;
                bytes += body.len();
            }
            (events, bytes, latencies)
        }));
    }
    let (mut events, mut bytes, mut latencies) = (0, 0, Vec::new());
    for task in tasks {
        let (e, b, l) = task.await.unwrap();
        events += e;
        bytes += b;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "collector benchmark: {path}, batch {batch} events ({:.0} B/event), {connections} connections, {secs} s",
        bytes as f64 / events as f64
    );
    println!(
        "  sustained: {events} events acknowledged by Kafka in {elapsed:.1} s = {:.0} events/s ({:.1} MB/s); batch latency p50 {:.1} ms, p95 {:.1} ms",
        events as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
    );
    println!(
        "  one batch at a time: collector p50 {:.1} ms p95 {:.1} ms; direct produce (acks=all) p50 {:.1} ms p95 {:.1} ms; added p50 {:.1} ms",
        ms(percentile(&http, 0.5)),
        ms(percentile(&http, 0.95)),
        ms(percentile(&direct, 0.5)),
        ms(percentile(&direct, 0.95)),
        ms(percentile(&http, 0.5)) - ms(percentile(&direct, 0.5)),
    );
}

/// 200,000 bytes of 0x01 escape to about 1.2 MB as a dead letter: the broker refused it and the
/// collector answered 503 on every retry, so the gateway re-sent it for ever. Now the dead letter
/// is cut to fit, and the answer refuses the item with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_body_is_refused_once_not_retried_for_ever() {
    let env = TestEnv::new("poison_body").await;
    let _tripline = spawn_collector(&env, "max_body_bytes = 1000000", None, "");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let auth = bearer(TOKEN);
    let headers = [
        ("Content-Type", "application/x-ndjson"),
        ("Authorization", auth.as_str()),
    ];
    for _ in 0..2 {
        let reply = post(&env.listen, "/v1/events", &headers, &vec![0x01; 200_000]).await;
        // Answered like any refused item (200, with its reason), never 503 "send it again".
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.json()["rejected"][0]["reason"], "oversize");
    }
    let letters = env.dead_letters(2, WAIT).await;
    assert_eq!(letters.len(), 2);
    for letter in letters {
        assert_eq!(letter["payload_truncated"], true, "{letter}");
        assert!(serde_json::to_vec(&letter).unwrap().len() <= 1_000_000);
    }
}
