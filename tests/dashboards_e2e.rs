//! Dashboard queries end to end: known traffic goes through Kafka and the real `tripline ingest`
//! into a fresh ClickHouse database (so the materialized views fill the rollups exactly as in
//! production), alerts are written directly, and every query in `dashboards/queries/` runs with
//! its `{parameters}` substituted and must return the numbers the traffic implies. The Grafana
//! dashboard is checked to run exactly those queries.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::dashboards::*;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// 2026-11-26 08:00:00 UTC; the queries look at [09:00, 11:00).
const T0_MS: i64 = 1_795_680_000_000;
const MINUTE_MS: i64 = 60_000;
const FROM: &str = "toDateTime('2026-11-26 09:00:00', 'UTC')";
const TO: &str = "toDateTime('2026-11-26 11:00:00', 'UTC')";

fn params<'a>(db: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("db", db), ("from", FROM), ("to", TO)];
    all.extend_from_slice(extra);
    all
}

/// Runs a dashboard query; rows as JSON objects (ClickHouse quotes 64-bit integers: see `num`).
async fn rows(env: &TestEnv, name: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let sql = query_sql(name, params);
    let bytes = env
        .clickhouse()
        .query_raw(&sql)
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|err| panic!("{name}.sql failed: {err}\n{sql}"));
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn num(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {s}")),
        other => panic!("not a number: {other}"),
    }
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

#[track_caller]
fn approx(actual: &Value, expected: f64) {
    let got = num(actual);
    assert!(
        (got - expected).abs() < 1e-6,
        "expected {expected}, got {got}"
    );
}

fn find<'a>(rows: &'a [Value], column: &str, value: &str) -> &'a Value {
    rows.iter()
        .find(|r| r[column].as_str() == Some(value))
        .unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:#?}"))
}

/// A gateway request at `ms` (epoch milliseconds) with a stated cost.
#[allow(clippy::too_many_arguments)]
fn request(
    id: &str,
    ms: i64,
    key: &str,
    project: &str,
    model: (&str, &str),
    status: u16,
    cost: f64,
    extra: &str,
) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ms},"api_key_id":"{key}","project":"{project}","provider":"{}","model":"{}","status":{status},"cost_usd":{cost}{extra}}}"#,
        model.0, model.1
    )
    .into_bytes()
}

const MINI: (&str, &str) = ("openai", "gpt-4o-mini");
const SONNET: (&str, &str) = ("anthropic", "claude-sonnet-4-5");

/// The known traffic (times from 08:00 = T0):
/// - key-a (search): 1 request at 08:00 and 1 a minute 09:30-10:29, $0.10 each, from Germany;
///   then 10 × $0.50 at 10:30 from 8.8.8.8 (US, AS15169): $5.00 in that minute.
/// - key-b (search): 8 × $1 at 09:10. key-c (search): 4 × $0.50 at 10:40 plus 2 × 401, a 500 and
///   a retried 429 at no cost. key-d (chat, claude-sonnet-4-5): 5 × $0.20 at 10:15.
/// - provider attempts at 10:15: 10 chains of 429, 429, 200 on openai/gpt-4o-mini (30 attempts,
///   10 successes) and 5 successes on anthropic/claude-sonnet-4-5.
fn traffic() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let at = |minute: i64| T0_MS + minute * MINUTE_MS;
    let de = r#","client_ip":"91.0.0.1","client_country":"DE""#;
    let mut gateway = vec![request(
        "a-early",
        at(0),
        "key-a",
        "search",
        MINI,
        200,
        0.1,
        de,
    )];
    for m in 90..150 {
        gateway.push(request(
            &format!("a-{m}"),
            at(m),
            "key-a",
            "search",
            MINI,
            200,
            0.1,
            de,
        ));
    }
    for i in 0..10 {
        let extra = r#","client_ip":"8.8.8.8""#;
        gateway.push(request(
            &format!("a-burst-{i}"),
            at(150) + i * 100,
            "key-a",
            "search",
            MINI,
            200,
            0.5,
            extra,
        ));
    }
    for i in 0..8 {
        gateway.push(request(
            &format!("b-{i}"),
            at(70) + i * 1000,
            "key-b",
            "search",
            MINI,
            200,
            1.0,
            "",
        ));
    }
    for i in 0..4 {
        gateway.push(request(
            &format!("c-{i}"),
            at(160) + i * 1000,
            "key-c",
            "search",
            MINI,
            200,
            0.5,
            "",
        ));
    }
    for (i, status) in [401u16, 401, 500, 429].into_iter().enumerate() {
        let extra = if status == 429 { r#","attempt":2"# } else { "" };
        gateway.push(request(
            &format!("c-err-{i}"),
            at(160) + 5000 + i as i64,
            "key-c",
            "search",
            MINI,
            status,
            0.0,
            extra,
        ));
    }
    for i in 0..5 {
        gateway.push(request(
            &format!("d-{i}"),
            at(135) + i * 1000,
            "key-d",
            "chat",
            SONNET,
            200,
            0.2,
            "",
        ));
    }
    let mut attempts = Vec::new();
    let attempt = |id: String, ms: i64, request: &str, model: (&str, &str), n: u16, status: u16| {
        format!(
            r#"{{"event_id":"{id}","ts":{ms},"request_id":"{request}","api_key_id":"key-a","provider":"{}","model":"{}","attempt":{n},"status":{status},"latency_ms":100}}"#,
            model.0, model.1
        )
        .into_bytes()
    };
    for chain in 0..10 {
        for n in 1..=3u16 {
            let status = if n < 3 { 429 } else { 200 };
            attempts.push(attempt(
                format!("p-{chain}-{n}"),
                at(135) + chain * 1000 + i64::from(n),
                &format!("r-{chain}"),
                MINI,
                n,
                status,
            ));
        }
    }
    for i in 0..5 {
        attempts.push(attempt(
            format!("q-{i}"),
            at(135) + i * 1000,
            &format!("s-{i}"),
            SONNET,
            1,
            200,
        ));
    }
    (gateway, attempts)
}

/// Alert rows as the detector writes them: (emitted, fingerprint, detector, status, api_key_id,
/// project, provider/model, observed, expected, upper, window start, window seconds).
const ALERTS: &str = "INSERT INTO alerts (emitted_at, fingerprint, detector, status, severity, api_key_id, project, provider, model, entity, observed, expected, upper, score, window_start, window_end, starts_at, summary) VALUES
 ('2026-11-26 10:30:20', 'fp-key', 'spend_spike', 'firing', 'warning', 'key-a', 'search', '', '', 'api_key_id=key-a,project=search', 5, 0.1, 1.1, 0.99, '2026-11-26 10:30:00', '2026-11-26 10:31:00', '2026-11-26 10:30:20', 'key key-a spent $5.00 in a minute'),
 ('2026-11-26 10:45:00', 'fp-key', 'spend_spike', 'resolved', 'warning', 'key-a', 'search', '', '', 'api_key_id=key-a,project=search', 5, 0.1, 1.1, 0.99, '2026-11-26 10:30:00', '2026-11-26 10:31:00', '2026-11-26 10:30:20', 'key key-a spent $5.00 in a minute'),
 ('2026-11-26 10:50:00', 'fp-budget', 'spend_spike', 'firing', 'critical', 'key-a', 'search', '', '', 'api_key_id=key-a,budget=hourly,project=search', 8, 7, 7, 1, '2026-11-26 10:00:00', '2026-11-26 11:00:00', '2026-11-26 10:50:00', 'over its hourly budget'),
 ('2026-11-26 10:30:20', 'fp-project', 'spend_spike', 'firing', 'warning', '', 'search', '', '', 'project=search', 5, 0.2, 1.3, 0.99, '2026-11-26 10:30:00', '2026-11-26 10:31:00', '2026-11-26 10:30:20', 'project search spent $5.00 in a minute'),
 ('2026-11-26 10:30:10', 'fp-leak', 'leaked_key', 'firing', 'warning', 'key-a', 'search', '', '', 'api_key_id=key-a,project=search', 10, 0, 1, 0.9, '2026-11-26 10:30:00', '2026-11-26 10:31:00', '2026-11-26 10:30:10', 'new country US'),
 ('2026-11-26 10:15:30', 'fp-retry', 'retry_storm', 'firing', 'critical', '', '', 'openai', 'gpt-4o-mini', 'model=gpt-4o-mini,provider=openai', 3, 1, 2, 0.66, '2026-11-26 10:15:00', '2026-11-26 10:16:00', '2026-11-26 10:15:30', 'openai/gpt-4o-mini: 3.0 attempts per success'),
 ('2026-11-26 08:00:00', 'fp-old-firing', 'cross_region', 'firing', 'warning', 'key-b', 'search', '', '', 'api_key_id=key-b,project=search', 9000, 900, 900, 0.9, '2026-11-26 08:00:00', '2026-11-26 08:01:00', '2026-11-26 08:00:00', 'impossible travel'),
 ('2026-11-26 08:00:00', 'fp-old-done', 'cross_region', 'firing', 'warning', 'key-d', 'chat', '', '', 'api_key_id=key-d,project=chat', 9000, 900, 900, 0.9, '2026-11-26 08:00:00', '2026-11-26 08:01:00', '2026-11-26 08:00:00', 'impossible travel'),
 ('2026-11-26 08:30:00', 'fp-old-done', 'cross_region', 'resolved', 'warning', 'key-d', 'chat', '', '', 'api_key_id=key-d,project=chat', 9000, 900, 900, 0.9, '2026-11-26 08:00:00', '2026-11-26 08:01:00', '2026-11-26 08:00:00', 'impossible travel')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_returns_the_seeded_numbers() {
    let env = TestEnv::new("dash").await;
    let mut tripline = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let (gateway, attempts) = traffic();
    let producer = producer();
    produce(&producer, &env.gateway_topic, "k", &gateway).await;
    produce(&producer, &env.provider_topic, "k", &attempts).await;
    let stored = env
        .wait_for(
            "SELECT count() FROM gateway_requests",
            gateway.len() as f64,
            WAIT,
        )
        .await;
    assert_eq!(stored, gateway.len() as f64);
    let stored = env
        .wait_for(
            "SELECT count() FROM provider_attempts",
            attempts.len() as f64,
            WAIT,
        )
        .await;
    assert_eq!(stored, attempts.len() as f64);
    env.clickhouse().query_raw(ALERTS).execute().await.unwrap();
    let db = env.database.clone();

    // Spend per key: $5.00 in the burst minute against a $0.10 baseline, band $1.10, and the
    // detector's own figures at that minute only (not the hourly budget alert, not the project's).
    let key = rows(&env, "spend_key", &params(&db, &[("api_key_id", "key-a")])).await;
    let burst = find(&key, "minute", "2026-11-26 10:30:00");
    approx(&burst["spend"], 5.0);
    approx(&burst["baseline"], 0.1);
    approx(&burst["band_upper"], 1.1);
    approx(&burst["alert_observed"], 5.0);
    approx(&burst["alert_expected"], 0.1);
    approx(&burst["alert_upper"], 1.1);
    approx(&find(&key, "minute", "2026-11-26 10:29:00")["spend"], 0.1);
    assert_eq!(
        key.iter().filter(|r| !r["alert_upper"].is_null()).count(),
        1,
        "{key:#?}"
    );
    assert!(key
        .iter()
        .all(|r| text(&r["minute"]) >= "2026-11-26 09:00:00"
            && text(&r["minute"]) < "2026-11-26 11:00:00"));

    let project = rows(
        &env,
        "spend_project",
        &params(&db, &[("project", "search")]),
    )
    .await;
    let burst = find(&project, "minute", "2026-11-26 10:30:00");
    approx(&burst["spend"], 5.0);
    approx(&burst["baseline"], 0.1);
    approx(&burst["alert_expected"], 0.2);
    approx(&burst["alert_upper"], 1.3);
    approx(
        &find(&project, "minute", "2026-11-26 10:40:00")["spend"],
        2.0,
    );
    approx(
        &find(&project, "minute", "2026-11-26 09:10:00")["spend"],
        8.0,
    );

    let model = rows(
        &env,
        "spend_model",
        &params(&db, &[("model", "gpt-4o-mini")]),
    )
    .await;
    approx(&find(&model, "minute", "2026-11-26 10:30:00")["spend"], 5.0);
    approx(&find(&model, "minute", "2026-11-26 09:10:00")["spend"], 8.0);
    // key-d's $1 on claude-sonnet-4-5 at 10:15 is another model: only key-a's $0.10 counts.
    approx(&find(&model, "minute", "2026-11-26 10:15:00")["spend"], 0.1);

    // Top spenders in [09:00, 11:00): a $11 (60 × 0.10 + 5), b $8, c $2, d $1 of $22.
    let top = rows(&env, "top_spenders", &params(&db, &[])).await;
    let order: Vec<&str> = top.iter().map(|r| text(&r["api_key_id"])).collect();
    assert_eq!(order, ["key-a", "key-b", "key-c", "key-d"]);
    approx(&top[0]["spend_usd"], 11.0);
    approx(&top[0]["share"], 0.5);
    approx(&top[0]["requests"], 70.0);
    approx(&top[2]["error_rate"], 0.5);
    assert_eq!(top[3]["project"], "chat");

    // Fastest risers, last hour [10:00, 11:00) against [09:00, 10:00): key-b fell, so it is out.
    let risers = rows(&env, "fastest_risers", &params(&db, &[])).await;
    let order: Vec<&str> = risers.iter().map(|r| text(&r["api_key_id"])).collect();
    assert_eq!(order, ["key-a", "key-c", "key-d"]);
    approx(&risers[0]["spend_this_hour"], 8.0);
    approx(&risers[0]["spend_previous_hour"], 3.0);
    approx(&risers[0]["rise_usd"], 5.0);
    approx(&risers[0]["rise_ratio"], 8.0 / 3.0);
    assert!(risers[1]["rise_ratio"].is_null());

    // Upstream: 30 attempts for 10 successes is an amplification of 3.
    let upstream = rows(&env, "provider_retries", &params(&db, &[])).await;
    assert_eq!(upstream.len(), 2);
    let mini = &upstream[0];
    assert_eq!((text(&mini["provider"]), text(&mini["model"])), MINI);
    approx(&mini["attempts"], 30.0);
    approx(&mini["successes"], 10.0);
    approx(&mini["requests"], 10.0);
    approx(&mini["amplification"], 3.0);
    approx(&mini["retry_share"], 20.0 / 30.0);
    approx(&mini["rate_limited_rate"], 20.0 / 30.0);
    approx(&mini["server_error_rate"], 0.0);
    approx(&mini["latency_p95_ms"], 100.0);
    approx(&upstream[1]["amplification"], 1.0);

    for (bucket, time) in [
        ("60", "2026-11-26 10:15:00"),
        ("3600", "2026-11-26 10:00:00"),
    ] {
        let series = rows(
            &env,
            "amplification_over_time",
            &params(&db, &[("bucket_s", bucket)]),
        )
        .await;
        assert_eq!(series.len(), 2, "{series:#?}");
        assert!(series.iter().all(|r| r["time"] == time));
        approx(
            &find(&series, "series", "openai/gpt-4o-mini")["amplification"],
            3.0,
        );
        approx(
            &find(&series, "series", "anthropic/claude-sonnet-4-5")["amplification"],
            1.0,
        );
    }

    // The gateway's view: 86 requests on gpt-4o-mini, 2 auth errors, a 429, a 500, one retry.
    let errors = rows(&env, "model_errors", &params(&db, &[])).await;
    let mini = &errors[0];
    assert_eq!(text(&mini["model"]), "gpt-4o-mini");
    approx(&mini["requests"], 86.0);
    approx(&mini["error_rate"], 4.0 / 86.0);
    approx(&mini["auth_error_rate"], 2.0 / 86.0);
    approx(&mini["rate_limited_rate"], 1.0 / 86.0);
    approx(&mini["server_error_rate"], 1.0 / 86.0);
    approx(&mini["client_error_rate"], 0.0);
    approx(&mini["retry_rate"], 1.0 / 86.0);
    approx(&mini["keys"], 3.0);
    approx(&mini["spend_usd"], 21.0);
    approx(
        &find(&errors, "model", "claude-sonnet-4-5")["error_rate"],
        0.0,
    );

    // Where key-a is used from: Germany since 08:00 (known), the US first at 10:30 (new).
    let key_a = [("api_key_id", "key-a")];
    let countries = rows(&env, "key_countries", &params(&db, &key_a)).await;
    assert_eq!(countries.len(), 2, "{countries:#?}");
    let de = find(&countries, "country", "DE");
    assert_eq!(
        (text(&de["first_seen"]), num(&de["new_in_range"])),
        ("2026-11-26 08:00:00", 0.0)
    );
    approx(&de["requests"], 60.0);
    let us = find(&countries, "country", "US");
    assert_eq!(
        (text(&us["first_seen"]), num(&us["new_in_range"])),
        ("2026-11-26 10:30:00", 1.0)
    );
    approx(&us["requests"], 10.0);
    approx(&us["ips"], 1.0);

    let asns = rows(&env, "key_asns", &params(&db, &key_a)).await;
    assert_eq!(asns.len(), 2, "{asns:#?}");
    let google = asns
        .iter()
        .find(|r| num(&r["asn"]) == 15169.0)
        .expect("AS15169");
    assert_eq!(
        (text(&google["first_seen"]), num(&google["new_in_range"])),
        ("2026-11-26 10:30:00", 1.0)
    );
    assert_eq!(text(&google["countries"]), "US");
    // 91.0.0.1 is Deutsche Telekom's AS3320 in data/geo/asn.mmdb.
    let german = asns
        .iter()
        .find(|r| num(&r["asn"]) == 3320.0)
        .expect("AS3320");
    assert_eq!(
        (text(&german["first_seen"]), num(&german["new_in_range"])),
        ("2026-11-26 08:00:00", 0.0)
    );

    let markers = rows(&env, "key_first_seen", &params(&db, &key_a)).await;
    assert_eq!(markers.len(), 2, "{markers:#?}");
    assert!(markers.iter().all(|r| r["time"] == "2026-11-26 10:30:00"));
    assert_eq!(
        text(&find(&markers, "tags", "country")["text"]),
        "new country US"
    );
    assert!(text(&find(&markers, "tags", "asn")["text"]).starts_with("new network AS15169"));

    // Alert timeline: per minute, and per hour.
    let timeline = rows(&env, "alert_timeline", &params(&db, &[("bucket_s", "60")])).await;
    let got: Vec<(&str, &str, f64)> = timeline
        .iter()
        .map(|r| (text(&r["time"]), text(&r["series"]), num(&r["alerts"])))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-11-26 10:15:00", "retry_storm firing", 1.0),
            ("2026-11-26 10:30:00", "leaked_key firing", 1.0),
            ("2026-11-26 10:30:00", "spend_spike firing", 2.0),
            ("2026-11-26 10:45:00", "spend_spike resolved", 1.0),
            ("2026-11-26 10:50:00", "spend_spike firing", 1.0),
        ]
    );
    let hourly = rows(
        &env,
        "alert_timeline",
        &params(&db, &[("bucket_s", "3600")]),
    )
    .await;
    approx(
        &find(&hourly, "series", "spend_spike firing")["alerts"],
        3.0,
    );
    assert_eq!(hourly.len(), 4);

    // The alert list: changed in the range, or still firing from before it (fp-old-done is out).
    let list = rows(&env, "alert_list", &params(&db, &[])).await;
    let order: Vec<&str> = list.iter().map(|r| text(&r["fingerprint"])).collect();
    assert_eq!(
        order,
        [
            "fp-budget",
            "fp-key",
            "fp-project",
            "fp-leak",
            "fp-retry",
            "fp-old-firing"
        ]
    );
    assert_eq!(text(&list[1]["state"]), "resolved");
    assert_eq!(text(&list[0]["peak_severity"]), "critical");
    assert_eq!(text(&list[5]["state"]), "firing");

    // Template variables: biggest spender first.
    let keys = rows(&env, "var_api_keys", &params(&db, &[])).await;
    let keys: Vec<&str> = keys.iter().map(|r| text(&r["api_key_id"])).collect();
    assert_eq!(keys, ["key-a", "key-b", "key-c", "key-d"]);
    let projects = rows(&env, "var_projects", &params(&db, &[])).await;
    assert_eq!(
        projects
            .iter()
            .map(|r| text(&r["project"]))
            .collect::<Vec<_>>(),
        ["search", "chat"]
    );
    let models = rows(&env, "var_models", &params(&db, &[])).await;
    assert_eq!(
        models.iter().map(|r| text(&r["model"])).collect::<Vec<_>>(),
        ["gpt-4o-mini", "claude-sonnet-4-5"]
    );

    assert!(tripline.terminate(Duration::from_secs(20)), "clean exit");
}

/// The planned delivery log of the alerting service, until a migration creates `notifications`
/// (then this statement does nothing and the test runs on the real table).
const PLANNED_NOTIFICATIONS: &str = "CREATE TABLE IF NOT EXISTS notifications (sent_at DateTime('UTC'), receiver String, status Enum8('delivered' = 1, 'retry' = 2, 'failed' = 3), attempts UInt16, latency_ms UInt32, error String) ENGINE = MergeTree ORDER BY (receiver, sent_at)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_health_on_the_planned_table() {
    let env = TestEnv::new("dash_notify").await;
    let client = env.clickhouse();
    tripline_store::migrate(&client, &env.database, None)
        .await
        .unwrap();
    client
        .query_raw(PLANNED_NOTIFICATIONS)
        .execute()
        .await
        .unwrap();
    client
        .query_raw(
            "INSERT INTO notifications (sent_at, receiver, status, attempts, latency_ms, error) VALUES
             ('2026-11-26 10:01:00', 'slack', 'delivered', 1, 100, ''),
             ('2026-11-26 10:02:00', 'slack', 'delivered', 3, 300, ''),
             ('2026-11-26 10:03:00', 'slack', 'retry', 1, 5000, 'HTTP 429'),
             ('2026-11-26 10:04:00', 'webhook', 'failed', 8, 10000, 'HTTP 503'),
             ('2026-11-26 10:05:00', 'webhook', 'delivered', 2, 200, ''),
             ('2026-11-26 08:00:00', 'email', 'failed', 1, 1, 'before the range')",
        )
        .execute()
        .await
        .unwrap();
    let health = rows(&env, "notification_health", &params(&env.database, &[])).await;
    let receivers: Vec<&str> = health.iter().map(|r| text(&r["receiver"])).collect();
    assert_eq!(
        receivers,
        ["webhook", "slack"],
        "lowest delivery rate first; email is outside the range"
    );
    let webhook = &health[0];
    approx(&webhook["delivery_rate"], 0.5);
    approx(&webhook["failed"], 1.0);
    assert_eq!(text(&webhook["last_error"]), "HTTP 503");
    assert_eq!(text(&webhook["last_failure"]), "2026-11-26 10:04:00");
    let slack = &health[1];
    approx(&slack["rows"], 3.0);
    approx(&slack["delivered"], 2.0);
    approx(&slack["retried"], 1.0);
    approx(&slack["delivery_rate"], 1.0);
    approx(&slack["avg_attempts"], 2.0);
    approx(&slack["p95_latency_ms"], 300.0);
    assert!(slack["last_failure"].is_null());
}

/// Every query documents each of its parameters in its header comment.
#[test]
fn every_query_documents_its_parameters() {
    for name in query_names() {
        let text = std::fs::read_to_string(query_path(&name)).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("Parameters"),
            "{name}.sql: no Parameters section"
        );
        assert!(header.contains("Columns"), "{name}.sql: no Columns section");
        for param in placeholders(&strip_comments(&text)) {
            assert!(
                header.contains(&format!("{{{param}}}")),
                "{name}.sql: {{{param}}} is not documented"
            );
        }
    }
}

/// Grafana's macros and template variables back to the query files' `{parameters}`.
fn normalise_grafana(sql: &str) -> String {
    let mut out = sql
        .replace("$__fromTime", "{from}")
        .replace("$__toTime", "{to}")
        .replace("$__interval_s", "{bucket_s}");
    for var in ["db", "api_key_id", "project", "model"] {
        out = out.replace(&format!("${{{var}}}"), &format!("{{{var}}}"));
    }
    assert!(
        !out.contains('$'),
        "unmapped Grafana macro or variable in {out}"
    );
    squash(&out)
}

fn squash(sql: &str) -> String {
    strip_comments(sql)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every panel, variable and annotation of every dashboard runs one of the tested query files
/// verbatim (after mapping the parameters back), the data source is the provisioned one, and
/// every query file is used.
#[test]
fn grafana_panels_run_the_tested_queries() {
    let files: Vec<(String, String)> = query_names()
        .into_iter()
        .map(|n| {
            let sql = squash(&std::fs::read_to_string(query_path(&n)).unwrap());
            (n, sql)
        })
        .collect();
    let provisioning = std::fs::read_to_string(
        repo().join("dashboards/grafana/provisioning/datasources/clickhouse.yaml"),
    )
    .unwrap();
    for needle in [
        "type: grafana-clickhouse-datasource",
        "uid: tripline-clickhouse",
        "host: clickhouse",
        "port: 9000",
        "protocol: native",
    ] {
        assert!(
            provisioning.contains(needle),
            "datasource provisioning lacks {needle:?}"
        );
    }
    let provider = std::fs::read_to_string(
        repo().join("dashboards/grafana/provisioning/dashboards/tripline.yaml"),
    )
    .unwrap();
    assert!(provider.contains("path: /etc/grafana/dashboards/tripline"));
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    for needle in [
        "grafana/grafana-oss",
        "GF_INSTALL_PLUGINS: grafana-clickhouse-datasource",
        "./dashboards/grafana/dashboards:/etc/grafana/dashboards/tripline",
        "\"3000:3000\"",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml lacks {needle:?}"
        );
    }

    let mut used = BTreeSet::new();
    let mut dashboards = 0;
    for entry in std::fs::read_dir(repo().join("dashboards/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        dashboards += 1;
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut sqls: Vec<(String, &Value)> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            if panel["type"] == "row" {
                continue;
            }
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("panel without targets: {panel}"));
            assert!(!targets.is_empty());
            for target in targets {
                sqls.push((format!("panel {:?}", panel["title"]), target));
            }
        }
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            if var["type"] == "query" {
                sqls.push((format!("variable {}", var["name"]), &var["query"]));
                assert_eq!(var["datasource"]["uid"], "tripline-clickhouse");
            }
        }
        for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
            if annotation["datasource"]["type"] == "grafana-clickhouse-datasource" {
                sqls.push((
                    format!("annotation {}", annotation["name"]),
                    &annotation["target"],
                ));
            }
        }
        assert!(
            sqls.len() >= 10,
            "{}: only {} queries",
            path.display(),
            sqls.len()
        );
        for (what, target) in sqls {
            let raw = target["rawSql"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no rawSql"));
            if let Some(ds) = target.get("datasource") {
                assert_eq!(ds["uid"], "tripline-clickhouse", "{what}");
            }
            assert_eq!(target["editorType"], "sql", "{what}");
            let normalised = normalise_grafana(raw);
            let (name, _) = files
                .iter()
                .find(|(_, sql)| *sql == normalised)
                .unwrap_or_else(|| {
                    panic!(
                        "{what} in {} runs SQL that is no tested query file:\n{normalised}",
                        path.display()
                    )
                });
            used.insert(name.clone());
        }
    }
    assert!(dashboards >= 1, "no dashboard JSON");
    let unused: Vec<&String> = files
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(
        unused.is_empty(),
        "query files no dashboard uses: {unused:?}"
    );
}
