//! Ingest end to end: the real `tripline` binary between a real broker and a real ClickHouse.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A known mix of valid, duplicate and malformed events lands exactly: counts, sums, rollups,
/// dead letters with reasons and source offsets, and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_mix_lands_exactly() {
    let env = TestEnv::new("mix").await;
    let mut tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let producer = producer();
    let ts = now_ms() - 60_000;

    // 300 valid events over 3 keys: 100 with a stated cost, 200 priced from the table.
    let mut valid = Vec::new();
    for i in 0..300 {
        let extra = if i < 100 { r#","cost_usd":0.01"# } else { "" };
        valid.push(gateway_event(
            &format!("v{i}"),
            &format!("key-{}", i % 3),
            ts + i,
            extra,
        ));
    }
    produce(&producer, &env.gateway_topic, "k", &valid).await;
    // 50 duplicates of the first 50, re-sent later.
    produce(&producer, &env.gateway_topic, "k", &valid[..50]).await;
    // 6 malformed events, one per reason.
    let malformed: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"event_id":"m1","ts":1795687100000,"model":"m","status":200}"#.to_vec(),
        br#"{"event_id":"m2","ts":1795687100000,"api_key_id":"k","model":"m","status":"ok"}"#.to_vec(),
        format!(r#"{{"event_id":"m3","ts":{ts},"api_key_id":"k","model":"m","status":200,"prompt_tokens":-1}}"#).into_bytes(),
        format!(r#"{{"event_id":"m4","ts":{},"api_key_id":"k","model":"m","status":200}}"#, now_ms() + 3_600_000).into_bytes(),
        vec![b'x'; 70_000],
    ];
    produce(&producer, &env.gateway_topic, "bad", &malformed).await;
    // Provider attempts: 20 valid, one malformed.
    let mut attempts: Vec<Vec<u8>> = (0..20)
        .map(|i| format!(r#"{{"event_id":"p{i}","ts":{},"request_id":"r{i}","api_key_id":"key-0","provider":"openai","model":"gpt-4o-mini","attempt":{},"status":{}}}"#, ts + i, 1 + i % 2, if i % 2 == 0 { 429 } else { 200 }).into_bytes())
        .collect();
    attempts.push(br#"{"event_id":"p-bad","ts":1795687100000}"#.to_vec());
    produce(&producer, &env.provider_topic, "k", &attempts).await;

    let rows = env
        .wait_for("SELECT count() FROM gateway_requests", 300.0, WAIT)
        .await;
    assert_eq!(rows, 300.0);
    assert_eq!(
        env.wait_for("SELECT count() FROM provider_attempts", 20.0, WAIT)
            .await,
        20.0
    );
    let letters = env.dead_letters(7, WAIT).await;
    // Give a late duplicate time to show up, then check nothing changed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        300.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        300.0
    );
    assert_eq!(
        env.scalar("SELECT sum(prompt_tokens) FROM gateway_requests")
            .await,
        30_000.0
    );

    // Costs: stated ones kept; the rest from the price table (gpt-4o-mini is priced).
    let stated = env
        .scalar("SELECT sum(cost_usd) FROM gateway_requests WHERE cost_source = 'event'")
        .await;
    assert!((stated - 1.0).abs() < 1e-9, "{stated}");
    let priced = env
        .scalar(
            "SELECT countIf(cost_usd > 0) FROM gateway_requests WHERE cost_source = 'price_table'",
        )
        .await;
    assert_eq!(priced, 200.0);

    // Rollups see each event once.
    assert_eq!(
        env.scalar("SELECT countMerge(requests) FROM rollup_key_1m")
            .await,
        300.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(api_key_id) FROM rollup_key_1m")
            .await,
        3.0
    );
    let rollup_cost = env
        .scalar("SELECT sumMerge(cost_usd) FROM rollup_key_1m")
        .await;
    let raw_cost = env
        .scalar("SELECT sum(cost_usd) FROM gateway_requests")
        .await;
    assert!((rollup_cost - raw_cost).abs() < 1e-9);
    assert_eq!(
        env.scalar("SELECT countMerge(attempts) FROM rollup_provider_1m")
            .await,
        20.0
    );
    assert_eq!(
        env.scalar("SELECT sumMerge(errors_rate_limited) FROM rollup_provider_1m")
            .await,
        10.0
    );

    // Dead letters: one per malformed message, with reason and source.
    assert_eq!(letters.len(), 7, "{letters:#?}");
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "future_timestamp",
            "invalid_json",
            "invalid_value",
            "missing_field",
            "missing_field",
            "oversize",
            "wrong_type"
        ]
    );
    for letter in &letters {
        let topic = letter["source_topic"].as_str().unwrap();
        assert!(topic == env.gateway_topic || topic == env.provider_topic);
        assert!(letter["source_offset"].as_i64().unwrap() >= 0);
        assert!(!letter["detail"].as_str().unwrap().is_empty());
    }
    let not_json = letters
        .iter()
        .find(|l| l["reason"] == "invalid_json")
        .unwrap();
    assert_eq!(not_json["payload"], "{not json");

    // Metrics agree.
    let metrics = env.metrics().await;
    let consumed: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("tripline_ingest_messages_consumed_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(consumed, 300.0 + 50.0 + 6.0 + 21.0);
    assert_eq!(metrics.get("tripline_ingest_duplicates_total"), Some(&50.0));
    assert_eq!(
        metrics.get(r#"tripline_ingest_dead_letters_total{reason="oversize"}"#),
        Some(&1.0)
    );
    assert_eq!(
        metrics.get(r#"tripline_ingest_rows_inserted_total{table="gateway_requests"}"#),
        Some(&300.0)
    );
    assert!(metrics
        .keys()
        .any(|k| k.starts_with("tripline_ingest_consumer_lag_messages")));
    assert!(tripline.terminate(Duration::from_secs(20)), "clean exit");
}

/// Every column written is read back as sent: the row types match the live schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_and_is_enriched() {
    let env = TestEnv::new("fields").await;
    let _tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let event = br#"{"event_id":"full-1","ts":"2026-11-26T10:00:00.123Z","api_key_id":"key-9","model":"claude-sonnet-4-5","status":429,"key_hint":"sk-...9f2c","project":"search","team":"core","user":"u-7","provider":"anthropic","error_type":"rate_limit","prompt_tokens":1200,"completion_tokens":3,"latency_ms":85,"client_ip":"8.8.8.8","gateway_region":"eu-west-1","user_agent":"openai-python/1.52.0","request_id":"r-9","idempotency_key":"idem-1","attempt":3,"stream":true}"#;
    produce(&producer(), &env.gateway_topic, "k", &[event.to_vec()]).await;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 1.0, WAIT)
            .await,
        1.0
    );
    let row: String = env
        .clickhouse()
        .query_raw(
            "SELECT concat(event_id,'|',toString(ts_ms),'|',api_key_id,'|',model,'|',toString(status),'|',key_hint,'|',project,'|',team,'|',user,'|',provider,'|',error_type,'|',toString(prompt_tokens),'|',toString(completion_tokens),'|',toString(latency_ms),'|',client_ip,'|',client_country,'|',toString(client_asn),'|',gateway_region,'|',user_agent,'|',request_id,'|',idempotency_key,'|',toString(attempt),'|',toString(stream),'|',toString(cost_source)) FROM gateway_requests",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        row,
        "full-1|1795687200123|key-9|claude-sonnet-4-5|429|sk-...9f2c|search|core|u-7|anthropic|rate_limit|1200|3|85|8.8.8.8|US|15169|eu-west-1|openai-python/1.52.0|r-9|idem-1|3|1|price_table"
    );
    let ts = env
        .scalar("SELECT toUInt32(ts) FROM gateway_requests")
        .await;
    assert_eq!(ts, 1_795_687_200.0);
}

/// A raw API key appears in no table, no log line and no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_keys_are_never_stored_logged_or_dead_lettered() {
    let env = TestEnv::new("secrets").await;
    let mut tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let key = "sk-proj-RAWSECRETabcdefghijklmnop0123456789";
    let other = "AIzaSyRAWSECRET_abcdefghijklmnopqrstuvw";
    let ts = now_ms() - 1000;
    let events: Vec<Vec<u8>> = vec![
        // The key as `api_key` (its fingerprint becomes the id), and echoed in free text.
        format!(r#"{{"event_id":"s1","ts":{ts},"api_key":"{key}","model":"gpt-4o","status":200,"user_agent":"bot {key}"}}"#).into_bytes(),
        // A key-shaped value where an id belongs.
        format!(r#"{{"event_id":"s2","ts":{ts},"api_key_id":"{other}","model":"gpt-4o","status":200,"user":"{key}"}}"#).into_bytes(),
        // Malformed, with the key inside: goes to the DLQ, redacted.
        format!(r#"{{"event_id":"s3","api_key":"{key}", oops"#).into_bytes(),
        format!(r#"{{"event_id":"s4","ts":{ts},"model":"m","status":200,"note":"{other}"}}"#).into_bytes(),
    ];
    produce(&producer(), &env.gateway_topic, "k", &events).await;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 2.0, WAIT)
            .await,
        2.0
    );
    let letters = env.dead_letters(2, WAIT).await;
    assert_eq!(letters.len(), 2);
    assert!(tripline.terminate(Duration::from_secs(20)));

    let ids: Vec<String> = env
        .clickhouse()
        .query_raw("SELECT api_key_id FROM gateway_requests ORDER BY event_id")
        .fetch_all()
        .await
        .unwrap();
    assert!(ids.iter().all(|id| id.starts_with("fp_")), "{ids:?}");

    let mut haystacks = vec![
        (
            "dead letters".to_owned(),
            serde_json::to_string(&letters).unwrap(),
        ),
        (
            "log".to_owned(),
            std::fs::read_to_string(env.log_path("main")).unwrap(),
        ),
    ];
    let tables: Vec<String> = env
        .clickhouse()
        .query_raw(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' AND engine NOT LIKE '%View%'",
            env.database
        ))
        .fetch_all()
        .await
        .unwrap();
    assert!(tables.len() >= 6, "{tables:?}");
    for table in tables {
        let dump: Vec<u8> = env
            .clickhouse()
            .query_raw(&format!("SELECT * FROM {table}"))
            .fetch_bytes("TSV")
            .unwrap()
            .collect()
            .await
            .unwrap()
            .to_vec();
        haystacks.push((table, String::from_utf8_lossy(&dump).into_owned()));
    }
    for (place, text) in haystacks {
        for secret in [key, other, "RAWSECRET"] {
            assert!(!text.contains(secret), "raw key found in {place}");
        }
    }
}

/// ClickHouse unreachable for a minute: ingest pauses, retries, keeps memory bounded, loses
/// nothing and resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_pauses_then_resumes_without_loss() {
    let mut env = TestEnv::new("outage").await;
    let proxy =
        proxy::Proxy::start(clickhouse_url().trim_start_matches("http://").to_owned()).await;
    env.tripline_clickhouse_url = format!("http://{}", proxy.addr);
    env.ingest_extra = "batch_max_rows = 500".into();
    let _tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let producer = producer();
    let ts = now_ms() - 1000;
    let first: Vec<Vec<u8>> = (0..1_000)
        .map(|i| gateway_event(&format!("a{i}"), "key-1", ts, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "k", &first).await;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 1_000.0, WAIT)
            .await,
        1_000.0
    );

    proxy.go_down();
    let during: Vec<Vec<u8>> = (0..5_000)
        .map(|i| gateway_event(&format!("b{i}"), "key-1", ts, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "k", &during).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = http_get(&env.listen, "/readyz").await.unwrap();
    assert_eq!(status, 503, "not ready while ClickHouse is unreachable");
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        1_000.0
    );
    let failures = env
        .metrics()
        .await
        .get("tripline_ingest_insert_failures_total")
        .copied()
        .unwrap_or(0.0);
    assert!(
        failures >= 3.0,
        "retried with backoff, saw {failures} failures"
    );
    // Capped backoff (2 s max here): about 30 tries a minute, not thousands.
    assert!(
        failures <= 60.0,
        "{failures} failures in a minute: backoff not applied"
    );

    proxy.come_back();
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 6_000.0, WAIT)
            .await,
        6_000.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        6_000.0
    );
    assert_eq!(
        env.scalar("SELECT countMerge(requests) FROM rollup_key_1m")
            .await,
        6_000.0
    );
    assert!(wait_ready(&env, Duration::from_secs(10)).await);
}

/// kill -9 mid-stream, then restart: nothing lost, nothing counted twice, and events re-sent
/// after the restart are still recognised as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_and_double_counts_nothing() {
    let mut env = TestEnv::new("kill9").await;
    env.ingest_extra = "batch_max_rows = 2000".into();
    let mut tripline = env.spawn("ingest", "first");
    assert!(wait_ready(&env, WAIT).await);
    let producer = producer();
    let ts = now_ms() - 1000;
    let events: Vec<Vec<u8>> = (0..40_000)
        .map(|i| {
            gateway_event(
                &format!("k{i}"),
                &format!("key-{}", i % 7),
                ts + i % 1000,
                "",
            )
        })
        .collect();
    let sender = {
        let producer = producer.clone();
        let topic = env.gateway_topic.clone();
        let events = events.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(2_000) {
                produce(&producer, &topic, "k", chunk).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Kill once part of the stream is stored, while batches are in flight.
    let mut stored = 0.0;
    for _ in 0..600 {
        stored = env.scalar("SELECT count() FROM gateway_requests").await;
        if stored >= 6_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tripline.kill_9();
    assert!(stored > 0.0 && stored < 40_000.0, "killed at {stored} rows");
    sender.await.unwrap();

    let _second = env.spawn("ingest", "second");
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 40_000.0, WAIT)
            .await,
        40_000.0
    );
    // Re-sent events (a gateway retrying its log shipping) are still duplicates after restart.
    produce(&producer, &env.gateway_topic, "k", &events[..1_000]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        40_000.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        40_000.0
    );
    assert_eq!(
        env.scalar("SELECT sum(prompt_tokens) FROM gateway_requests")
            .await,
        4_000_000.0
    );
    assert_eq!(
        env.scalar("SELECT countMerge(requests) FROM rollup_key_1m")
            .await,
        40_000.0
    );
}

/// SIGTERM with a batch still open: it is stored and committed before exit, so a restart
/// neither loses nor re-reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_and_commits() {
    let mut env = TestEnv::new("graceful").await;
    env.ingest_extra = "batch_max_rows = 100000".into();
    // A long batch age so that only the shutdown flush can store the events.
    let config = env.config_path();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("batch_max_age_ms = 200", "batch_max_age_ms = 60000");
    std::fs::write(&config, &text).unwrap();
    let mut tripline = spawn_with_config(&env, &text, "first");
    assert!(wait_ready(&env, WAIT).await);
    let ts = now_ms() - 1000;
    let events: Vec<Vec<u8>> = (0..500)
        .map(|i| gateway_event(&format!("g{i}"), "key-1", ts, ""))
        .collect();
    produce(&producer(), &env.gateway_topic, "k", &events).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        0.0,
        "batch still open"
    );
    assert!(tripline.terminate(Duration::from_secs(30)), "clean exit");
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        500.0
    );

    let mut second = spawn_with_config(&env, &text, "second");
    assert!(wait_ready(&env, WAIT).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(second.terminate(Duration::from_secs(30)));
    let log = std::fs::read_to_string(env.log_path("second")).unwrap();
    assert!(
        !log.contains("batch stored"),
        "offsets were committed: nothing re-read\n{log}"
    );
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        500.0
    );
}

fn spawn_with_config(env: &TestEnv, text: &str, tag: &str) -> Tripline {
    let path = env.dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    let log = std::fs::File::create(env.log_path(tag)).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["ingest", "--config"])
        .arg(&path)
        .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
        .env("RUST_LOG", "info,tripline_ingest=debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Tripline { child }
}
