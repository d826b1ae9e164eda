//! Cluster mode end to end: the real `tripline` binary ingesting into a real ClickHouse cluster
//! of 2 shards x 2 replicas with ZooKeeper (`scripts/cluster.sh up`, which `scripts/test.sh`
//! runs): the schema in its cluster form, exact counts read from any node, replicas that agree,
//! and a replica killed with SIGKILL during ingest that comes back with every row, none twice.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::dashboards::{query_names, query_sql};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
/// A replica killed with SIGKILL resumes replication once its old ZooKeeper session expires
/// (30 s by default), then fetches what it missed.
const CATCH_UP: Duration = Duration::from_secs(150);

fn cluster_name() -> String {
    std::env::var("TRIPLINE_CLUSTER_NAME").unwrap_or_else(|_| "tripline".into())
}

/// Node `n` (1..4): shard (n + 1) / 2. Its HTTP URL.
fn node_url(n: u16) -> String {
    let base: u16 = std::env::var("TRIPLINE_CLUSTER_HTTP_BASE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(18120);
    format!("http://127.0.0.1:{}", base + n)
}

fn node(n: u16, database: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(node_url(n))
        .with_database(database)
        .with_validation(false)
}

/// A single number from node `n` (None when it does not answer).
async fn scalar_on(n: u16, database: &str, sql: &str) -> Option<f64> {
    node(n, database)
        .query_raw(&format!("SELECT toFloat64(({sql}))"))
        .fetch_one::<f64>()
        .await
        .ok()
}

/// Waits until `sql` on node `n` returns `expected`; returns the last value seen.
async fn wait_on(n: u16, database: &str, sql: &str, expected: f64, timeout: Duration) -> f64 {
    wait_count(&node(n, database), sql, expected, timeout).await
}

/// A test environment whose tripline writes to the cluster through node 1.
async fn cluster_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    env.tripline_clickhouse_url = node_url(1);
    env.clickhouse_extra = format!("cluster = \"{}\"", cluster_name());
    env
}

/// `n` valid gateway events over 40 keys (both shards hold some), ids `{prefix}{i}`.
fn events(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let ts = now_ms() - 60_000;
    (0..n)
        .map(|i| {
            gateway_event(
                &format!("{prefix}{i}"),
                &format!("key-{}", i % 40),
                ts + i as i64,
                "",
            )
        })
        .collect()
}

/// Each shard's local rows, replica by replica: [[node1, node2], [node3, node4]].
async fn local_counts(database: &str, table: &str) -> [[f64; 2]; 2] {
    let mut counts = [[0.0; 2]; 2];
    for (shard, replicas) in counts.iter_mut().enumerate() {
        for (replica, count) in replicas.iter_mut().enumerate() {
            let n = (shard * 2 + replica + 1) as u16;
            *count = scalar_on(n, database, &format!("SELECT count() FROM {table}_local"))
                .await
                .unwrap_or(-1.0);
        }
    }
    counts
}

/// One test, its scenarios in turn: they share the cluster, and a replica taken away would stall
/// the other's `ON CLUSTER` statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode() {
    ingest_on_a_cluster_lands_exactly_on_every_node().await;
    every_dashboard_query_answers_as_on_one_server().await;
    a_replica_killed_during_ingest_comes_back_with_every_row().await;
}

/// The schema in cluster form; ingest's rows exact from every node, duplicates dropped,
/// rollups once per row, each shard's replicas equal.
async fn ingest_on_a_cluster_lands_exactly_on_every_node() {
    let env = cluster_env("cluster_mix").await;
    let db = env.database.clone();
    let mut tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let producer = producer();
    let valid = events("v", 400);
    produce(&producer, &env.gateway_topic, "k", &valid).await;
    produce(&producer, &env.gateway_topic, "k", &valid[..60]).await;

    // Each replica catches up on its own (a query may read either replica of a shard).
    for n in 1..=4 {
        assert_eq!(
            wait_on(n, &db, "SELECT count() FROM gateway_requests", 400.0, WAIT).await,
            400.0,
            "node {n}"
        );
        assert_eq!(
            wait_on(
                n,
                &db,
                "SELECT uniqExact(event_id) FROM gateway_requests",
                400.0,
                WAIT
            )
            .await,
            400.0,
            "node {n}"
        );
        assert_eq!(
            wait_on(
                n,
                &db,
                "SELECT countMerge(requests) FROM rollup_key_1m",
                400.0,
                WAIT
            )
            .await,
            400.0,
            "node {n}"
        );
        assert_eq!(
            wait_on(
                n,
                &db,
                "SELECT countMerge(requests) FROM rollup_model_1m",
                400.0,
                WAIT
            )
            .await,
            400.0,
            "node {n}"
        );
    }
    // Replicas of a shard converge; the shards split the keys between them.
    let deadline = Instant::now() + WAIT;
    let counts = loop {
        let counts = local_counts(&db, "gateway_requests").await;
        if counts[0][0] == counts[0][1] && counts[1][0] == counts[1][1] || Instant::now() > deadline
        {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(counts[0][0], counts[0][1], "{counts:?}");
    assert_eq!(counts[1][0], counts[1][1], "{counts:?}");
    assert_eq!(counts[0][0] + counts[1][0], 400.0, "{counts:?}");
    assert!(counts[0][0] > 0.0 && counts[1][0] > 0.0, "{counts:?}");
    // A key lives on one shard.
    let keys_per_shard = [
        scalar_on(
            1,
            &db,
            "SELECT uniqExact(api_key_id) FROM gateway_requests_local",
        )
        .await,
        scalar_on(
            3,
            &db,
            "SELECT uniqExact(api_key_id) FROM gateway_requests_local",
        )
        .await,
    ];
    assert_eq!(
        keys_per_shard[0].unwrap() + keys_per_shard[1].unwrap(),
        40.0,
        "{keys_per_shard:?}"
    );
    let metrics = env.metrics().await;
    assert_eq!(metrics.get("tripline_ingest_duplicates_total"), Some(&60.0));
    assert!(tripline.terminate(Duration::from_secs(20)), "clean exit");

    // Applying the migrations again (a second worker starting) changes nothing.
    let mut second = env.spawn("migrate", "again");
    assert!(second.wait_clean(WAIT), "tripline migrate failed again");
    assert_eq!(
        scalar_on(4, &db, "SELECT count() FROM gateway_requests").await,
        Some(400.0)
    );
}

/// SIGKILL one replica of shard 2 while ingest writes, bring it back: nothing lost, nothing
/// counted twice, its rows equal its peer's once it has caught up.
async fn a_replica_killed_during_ingest_comes_back_with_every_row() {
    let env = cluster_env("cluster_kill").await;
    let db = env.database.clone();
    let mut tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let producer = producer();
    let all = events("s", 3_000);
    let (first, rest) = all.split_at(1_000);
    produce(&producer, &env.gateway_topic, "k", first).await;
    assert_eq!(
        wait_on(
            1,
            &db,
            "SELECT count() FROM gateway_requests",
            1_000.0,
            WAIT
        )
        .await,
        1_000.0
    );

    kill_9_node(4);
    for chunk in rest.chunks(250) {
        produce(&producer, &env.gateway_topic, "k", chunk).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        wait_on(
            1,
            &db,
            "SELECT count() FROM gateway_requests",
            3_000.0,
            WAIT
        )
        .await,
        3_000.0,
        "shard 2 is served by its other replica while node 4 is down"
    );
    let status = std::process::Command::new(repo().join("scripts/cluster.sh"))
        .args(["start-node", "4"])
        .status()
        .expect("run scripts/cluster.sh");
    assert!(status.success(), "node 4 did not start again");

    let node3 = scalar_on(3, &db, "SELECT count() FROM gateway_requests_local")
        .await
        .unwrap();
    assert_eq!(
        wait_on(
            4,
            &db,
            "SELECT count() FROM gateway_requests_local",
            node3,
            CATCH_UP
        )
        .await,
        node3,
        "node 4 caught up with node 3"
    );
    for n in 1..=4 {
        assert_eq!(
            wait_on(
                n,
                &db,
                "SELECT count() FROM gateway_requests",
                3_000.0,
                WAIT
            )
            .await,
            3_000.0,
            "node {n}"
        );
        assert_eq!(
            scalar_on(n, &db, "SELECT uniqExact(event_id) FROM gateway_requests").await,
            Some(3_000.0),
            "node {n}"
        );
        assert_eq!(
            scalar_on(n, &db, "SELECT countMerge(requests) FROM rollup_key_1m").await,
            Some(3_000.0),
            "node {n}"
        );
    }
    assert!(tripline.terminate(Duration::from_secs(20)), "clean exit");
}

/// Mixed traffic (40 keys in 4 projects, two models, errors and retries, costs, addresses)
/// ingested into one server and into the cluster, the same alerts written to both: every
/// dashboard query gives the same rows on both (floats to 9 significant digits: sums add up in
/// another order across shards).
async fn every_dashboard_query_answers_as_on_one_server() {
    let single = TestEnv::new("cluster_dash_single").await;
    let cluster = cluster_env("cluster_dash").await;
    let ts = now_ms() - 30 * 60_000;
    let gateway: Vec<Vec<u8>> = (0..1_200)
        .map(|i| {
            let status = [200, 200, 200, 429, 500, 401][i % 6];
            let extra = format!(
                r#","project":"p{}","client_ip":"203.0.113.{}","attempt":{},"cost_usd":{},"latency_ms":{}"#,
                i % 4,
                i % 7,
                1 + i % 3,
                // Every key its own price: the top-N queries cut no ties (summed
                // in another order, equal floats rank apart).
                0.0001 * ((i % 40) + 1) as f64,
                100 + i % 900
            );
            let model = if i % 3 == 0 { "claude-sonnet-4-5" } else { "gpt-4o-mini" };
            String::from_utf8(gateway_event(
                &format!("d{i}"),
                &format!("key-{}", i % 40),
                ts + (i as i64) * 1_000,
                &extra,
            ))
            .unwrap()
            .replace(r#""status":200"#, &format!(r#""status":{status}"#))
            .replace("gpt-4o-mini", model)
            .into_bytes()
        })
        .collect();
    let attempts: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            format!(
                r#"{{"event_id":"a{i}","ts":{},"request_id":"r{i}","api_key_id":"key-{}","provider":"openai","model":"gpt-4o-mini","attempt":{},"status":{}}}"#,
                ts + (i as i64) * 3_000,
                i % 40,
                1 + i % 2,
                if i % 3 == 0 { 503 } else { 200 }
            )
            .into_bytes()
        })
        .collect();
    let alerts = format!(
        "INSERT INTO alerts (emitted_at, fingerprint, detector, status, severity, api_key_id, \
         project, summary) VALUES \
         (toDateTime({t}), 'f1', 'spend_spike', 'firing', 'warning', 'key-1', 'p1', 'one'), \
         (toDateTime({t}), 'f2', 'leaked_key', 'firing', 'critical', 'key-2', 'p2', 'two'), \
         (toDateTime({u}), 'f1', 'spend_spike', 'resolved', 'warning', 'key-1', 'p1', 'one')",
        t = ts / 1000 + 300,
        u = ts / 1000 + 900
    );
    let producer = producer();
    for env in [&single, &cluster] {
        let mut tripline = env.spawn("ingest", "main");
        assert!(wait_ready(env, WAIT).await, "tripline never became ready");
        produce(&producer, &env.gateway_topic, "k", &gateway).await;
        produce(&producer, &env.provider_topic, "k", &attempts).await;
        let client = node_or_single(env);
        for (table, rows) in [("gateway_requests", 1_200.0), ("provider_attempts", 300.0)] {
            let sql = format!("SELECT count() FROM {table}");
            assert_eq!(wait_count(&client, &sql, rows, WAIT).await, rows, "{table}");
        }
        client.query_raw(&alerts).execute().await.unwrap();
        assert!(tripline.terminate(Duration::from_secs(20)), "clean exit");
    }

    let from = format!("toDateTime({})", ts / 1000 - 600);
    let to = format!("toDateTime({})", ts / 1000 + 3_600);
    for name in query_names() {
        let mut answers = Vec::new();
        for env in [&single, &cluster] {
            let params = [
                ("db", env.database.as_str()),
                ("from", &from),
                ("to", &to),
                ("api_key_id", "key-1"),
                ("project", "p1"),
                ("model", "gpt-4o-mini"),
                ("bucket_s", "60"),
            ];
            let sql = query_sql(&name, &params);
            answers.push(canonical_rows(&node_or_single(env), &sql).await);
        }
        assert!(
            !answers[0].is_empty() || name == "notification_health",
            "{name}: no rows"
        );
        assert_eq!(
            answers[0], answers[1],
            "{name}: one server, then the cluster"
        );
    }

    // The detectors read the same: a backtest (the detector engine replaying the rollups and
    // raw events) decides the same alerts on both.
    let from = tripline_core::time::format_ms(ts - 60_000);
    let to = tripline_core::time::format_ms(ts + 25 * 60_000);
    let decided: Vec<Vec<String>> = [&single, &cluster]
        .iter()
        .map(|env| backtest_alerts(env, &from, &to))
        .collect();
    assert!(!decided[0].is_empty(), "the traffic raises some alert");
    assert_eq!(decided[0], decided[1], "one server, then the cluster");
}

/// The alerts `tripline backtest` decides over `[from, to)` with the running config, as
/// "detector entity severity" lines, sorted.
fn backtest_alerts(env: &TestEnv, from: &str, to: &str) -> Vec<String> {
    let config = env.config_path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["backtest", "--config"])
        .arg(&config)
        .arg("--running")
        .arg(&config)
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
        // The config file says where: no override from the test runner's environment.
        .env_remove("TRIPLINE_CLICKHOUSE_URL")
        .env_remove("TRIPLINE_CLICKHOUSE_CLUSTER")
        .env_remove("TRIPLINE_KAFKA_BROKERS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut alerts: Vec<String> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {} {}", a["detector"], a["entity"], a["severity"]))
        .collect();
    alerts.sort();
    alerts
}

/// The client `env`'s tripline writes through: node 1 of the cluster, or the single server.
fn node_or_single(env: &TestEnv) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&env.tripline_clickhouse_url)
        .with_database(&env.database)
        .with_validation(false)
}

/// Waits until `sql` on `client` returns `expected`; returns the last value seen (-1 while it
/// does not answer).
async fn wait_count(
    client: &clickhouse::Client,
    sql: &str,
    expected: f64,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = client
            .query_raw(&format!("SELECT toFloat64(({sql}))"))
            .fetch_one::<f64>()
            .await
            .unwrap_or(-1.0);
        if (value - expected).abs() < 1e-9 || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A query's rows, each as JSON with numbers to 9 significant digits, sorted.
async fn canonical_rows(client: &clickhouse::Client, sql: &str) -> Vec<String> {
    let bytes = client
        .query_raw(sql)
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|err| panic!("{err}\n{sql}"));
    let mut rows: Vec<String> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| round(serde_json::from_str(line).unwrap()).to_string())
        .collect();
    rows.sort();
    rows
}

fn round(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => Value::String(format!("{f:.9e}")),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(round).collect()),
        Value::Object(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, round(v))).collect())
        }
        other => other,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// SIGKILL cluster node `n` (its pid file is in scripts/cluster.sh's run directory).
fn kill_9_node(n: u16) {
    let run = std::env::var("TRIPLINE_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".run"));
    let pid_file = run.join(format!("cluster/node{n}/clickhouse.pid"));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 node {n}");
}
