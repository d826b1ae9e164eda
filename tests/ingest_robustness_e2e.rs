//! What arrives cannot stop, blind or fool ingest: a poison message, colliding event ids, a
//! materialized view failing mid-insert, a backfill over hundreds of days, a rebalance while
//! ClickHouse is away. Each against the real binary, broker and ClickHouse.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// 200,000 bytes of 0x01 escape to about 1.2 MB of JSON: its dead letter once exceeded the
/// broker's limit and was retried for ever, and no later event of any partition was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_never_holds_its_partition() {
    let env = TestEnv::new("poison").await;
    let _tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await, "tripline never became ready");
    let producer = producer();
    let ts = now_ms() - 10_000;
    // Same key, so the same partition: the events after the poison wait behind it.
    produce(&producer, &env.gateway_topic, "k", &[vec![0x01; 200_000]]).await;
    let after: Vec<Vec<u8>> = (0..100)
        .map(|i| gateway_event(&format!("after-{i}"), "key-1", ts + i, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "k", &after).await;

    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 100.0, WAIT)
            .await,
        100.0,
        "events after the poison message were not stored"
    );
    let letters = env.dead_letters(1, WAIT).await;
    assert_eq!(letters.len(), 1, "the poison message was not dead-lettered");
    let letter = &letters[0];
    assert_eq!(letter["reason"], "oversize");
    assert_eq!(letter["payload_bytes"], 200_000);
    assert_eq!(letter["payload_truncated"], true);
    let text = serde_json::to_vec(letter).unwrap();
    assert!(
        text.len() <= 1_000_000,
        "dead letter of {} bytes",
        text.len()
    );

    let metrics = env.metrics().await;
    assert_eq!(
        metrics.get("tripline_ingest_dead_letters_lost_total"),
        Some(&0.0)
    );
    assert_eq!(metrics.get("tripline_ingest_stalled_seconds"), Some(&0.0));
    assert!(wait_ready(&env, Duration::from_secs(10)).await);
}

/// Identity is the id with the content: three different requests under one client-set id are
/// three events (one stored row each), a true redelivery is still one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_ids_are_all_counted_and_redeliveries_are_not() {
    let env = TestEnv::new("collide").await;
    let _tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let producer = producer();
    let ts = now_ms() - 10_000;
    let shared: Vec<Vec<u8>> = (0..3)
        .map(|i| gateway_event("evt-1", &format!("key-{i}"), ts + i, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "k", &shared).await;
    // A redelivery of the first, and another gateway that also numbers from evt-1.
    produce(&producer, &env.gateway_topic, "k", &shared[..1]).await;
    let other = gateway_event("evt-1", "key-0", ts + 500, r#","project":"other-gw""#);
    produce(&producer, &env.gateway_topic, "k", &[other]).await;

    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 4.0, WAIT)
            .await,
        4.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        4.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_digest) FROM gateway_requests")
            .await,
        4.0
    );
    assert_eq!(
        env.scalar("SELECT countMerge(requests) FROM rollup_key_1m")
            .await,
        4.0
    );
    let metrics = env.metrics().await;
    assert_eq!(
        metrics.get("tripline_ingest_id_collisions_total"),
        Some(&3.0)
    );
    assert_eq!(metrics.get("tripline_ingest_duplicates_total"), Some(&1.0));

    // After a restart the filter is refilled with ids and digests: the same five messages
    // again are all duplicates.
    drop(_tripline);
    let _again = env.spawn("ingest", "again");
    assert!(wait_ready(&env, WAIT).await);
    produce(&producer, &env.gateway_topic, "k", &shared).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.scalar("SELECT count() FROM gateway_requests").await,
        4.0
    );
}

/// An INSERT whose materialized views fail part-way stores the raw rows and reports an error;
/// the retry must not send them again, and the rollups must still come to equal them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_raw_rows_after_a_view_fails() {
    let env = TestEnv::new("views").await;
    let tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let ch = env.clickhouse();
    // A view named to run before the rollup views, which fails while `flag` holds a row.
    for sql in [
        "CREATE TABLE flag (f UInt8) ENGINE = Memory",
        "CREATE TABLE sink (x UInt8) ENGINE = Null",
        "CREATE MATERIALIZED VIEW a_failing_mv TO sink AS \
         SELECT throwIf((SELECT count() FROM flag) > 0) AS x FROM gateway_requests",
        "INSERT INTO flag VALUES (1)",
    ] {
        ch.query(sql).execute().await.unwrap();
    }
    let producer = producer();
    let ts = now_ms() - 120_000;
    let events: Vec<Vec<u8>> = (0..500)
        .map(|i| {
            let extra = format!(r#","project":"p{}""#, i % 4);
            gateway_event(
                &format!("v{i}"),
                &format!("key-{}", i % 7),
                ts + i * 200,
                &extra,
            )
        })
        .collect();
    produce(&producer, &env.gateway_topic, "k", &events).await;

    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 500.0, WAIT)
            .await,
        500.0
    );
    for (rollup, column) in [
        ("rollup_key_1m", "requests"),
        ("rollup_project_1m", "requests"),
        ("rollup_model_1m", "requests"),
    ] {
        let sql = format!("SELECT countMerge({column}) FROM {rollup}");
        assert_eq!(env.wait_for(&sql, 500.0, WAIT).await, 500.0, "{rollup}");
    }
    // Per cell too, not just in total: the key rollup against the raw rows, minute by minute.
    let cells = "SELECT count() FROM (SELECT api_key_id, toStartOfMinute(ts) AS minute, count() AS n \
                 FROM gateway_requests GROUP BY api_key_id, minute) AS raw \
                 ANY LEFT JOIN (SELECT api_key_id, minute, countMerge(requests) AS r FROM rollup_key_1m \
                 GROUP BY api_key_id, minute) AS rolled USING (api_key_id, minute) WHERE n != r";
    assert_eq!(env.scalar(cells).await, 0.0);
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        500.0
    );
    let metrics = env.metrics().await;
    let repaired = |table: &str| {
        metrics
            .get(&format!(
                "tripline_ingest_rollup_repairs_total{{table=\"{table}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        repaired("rollup_key_1m") >= 500.0,
        "the rollups were not short, so nothing was proven: {metrics:?}"
    );
    assert!(metrics["tripline_ingest_insert_failures_total"] >= 1.0);

    // Healthy again: later batches go in whole, with no repair.
    ch.query("TRUNCATE TABLE flag").execute().await.unwrap();
    let later: Vec<Vec<u8>> = (0..50)
        .map(|i| gateway_event(&format!("w{i}"), "key-1", ts + i, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "k", &later).await;
    assert_eq!(
        env.wait_for(
            "SELECT countMerge(requests) FROM rollup_key_1m",
            550.0,
            WAIT
        )
        .await,
        550.0
    );
    drop(tripline);
}

/// One batch spanning 400 days: ClickHouse 19+ refuses an INSERT touching more than 100
/// partitions, so ingest splits it; every event is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_400_days_is_stored_exactly() {
    let env = TestEnv::new("backfill").await;
    let _tripline = env.spawn("ingest", "main");
    assert!(wait_ready(&env, WAIT).await);
    let producer = producer();
    let day_ms = 86_400_000;
    let start = now_ms() - 401 * day_ms;
    let events: Vec<Vec<u8>> = (0..2_000)
        .map(|i| {
            gateway_event(
                &format!("d{i}"),
                "key-1",
                start + (i % 400) * day_ms + i,
                "",
            )
        })
        .collect();
    produce(&producer, &env.gateway_topic, "k", &events).await;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 2_000.0, WAIT)
            .await,
        2_000.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(toYYYYMMDD(ts)) FROM gateway_requests")
            .await,
        400.0
    );
    assert_eq!(
        env.scalar("SELECT countMerge(requests) FROM rollup_key_1m")
            .await,
        2_000.0
    );
}

/// A rebalance while ClickHouse is away used to end the process (the duplicate filter's
/// refill failed with `?`); now both workers wait for ClickHouse and then store everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_clickhouse_outage_ends_no_process() {
    let mut env = TestEnv::new("rebalance").await;
    let proxy =
        proxy::Proxy::start(clickhouse_url().trim_start_matches("http://").to_owned()).await;
    env.tripline_clickhouse_url = format!("http://{}", proxy.addr);
    let mut first = env.spawn("ingest", "first");
    assert!(wait_ready(&env, WAIT).await);
    let producer = producer();
    let ts = now_ms() - 10_000;
    let events: Vec<Vec<u8>> = (0..400)
        .map(|i| gateway_event(&format!("r{i}"), &format!("key-{}", i % 5), ts + i, ""))
        .collect();
    produce(&producer, &env.gateway_topic, "a", &events[..200]).await;
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 200.0, WAIT)
            .await,
        200.0
    );

    proxy.go_down();
    // A second worker joins the group: both rebalance, and both must refill from ClickHouse.
    let mut second = env.another_worker("second").spawn("ingest", "second");
    produce(&producer, &env.gateway_topic, "b", &events[200..]).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first worker exited"
    );
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "the second worker exited"
    );

    proxy.come_back();
    assert_eq!(
        env.wait_for("SELECT count() FROM gateway_requests", 400.0, WAIT)
            .await,
        400.0
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM gateway_requests")
            .await,
        400.0
    );
    // Both stopped at once, as a deployment stops: one after the other, the second would be
    // stopping in the middle of the rebalance the first one's leaving started.
    first.send_term();
    second.send_term();
    assert!(first.wait_clean(Duration::from_secs(20)));
    assert!(second.wait_clean(Duration::from_secs(20)));
}
