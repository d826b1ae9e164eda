//! Detector workers sharing the keys by Kafka group membership (`[detect.group]`), on the real
//! broker and ClickHouse: three `tripline detect` processes split the shards among themselves;
//! one is killed with SIGKILL while an alert it fired is still firing; a survivor takes its
//! shards over within 30 s, evaluates their keys (a new incident there alerts), does not page
//! again for the alert already firing, and resolves it when the incident ends. Then one worker
//! stops cleanly and the last takes every shard.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SHARDS: u32 = 6;
const KEYS: usize = 12;

fn key(i: usize) -> String {
    format!("k-{i:02}")
}

/// A request of `key` from Germany; `status` and `extra` fields as given.
fn request(id: &str, key: &str, ts: i64, status: u16, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"group","model":"gpt-4o-mini","provider":"openai","status":{status},"prompt_tokens":100,"completion_tokens":20,"cost_usd":0.002,"client_ip":"91.0.0.9","client_country":"DE","user_agent":"openai-python/1.52.0"{extra}}}"#
    )
    .into_bytes()
}

/// A client re-sending one idempotency key without backoff, answered 429 twice: a retry
/// storm on `key`, sent every 500 ms until `until` is cleared.
fn storm(topic: &str, key: &str, until: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (topic, key) = (topic.to_owned(), key.to_owned());
    tokio::spawn(async move {
        let producer = producer();
        let mut chain = 0;
        while until.load(Ordering::Relaxed) {
            let t = now_ms();
            let attempts: Vec<Vec<u8>> = (1..=3)
                .map(|attempt| {
                    let status = if attempt < 3 { 429 } else { 200 };
                    request(
                        &format!("storm-{key}-{chain}-{attempt}"),
                        &key,
                        t + attempt * 40,
                        status,
                        &format!(r#","idempotency_key":"idem-{key}-{chain}","attempt":{attempt}"#),
                    )
                })
                .collect();
            produce(&producer, &topic, &key, &attempts).await;
            chain += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The firing retry-storm rows of `key`, one per line: when, at what severity, which worker's
/// summary (for a failure message).
async fn firing_rows(env: &TestEnv, key: &str) -> String {
    env.clickhouse()
        .query_raw(&format!(
            "SELECT toString(emitted_at), toString(severity), toString(starts_at), summary FROM alerts \
             WHERE status = 'firing' AND detector = 'retry_storm' AND api_key_id = '{key}' \
             ORDER BY emitted_at"
        ))
        .fetch_all::<(String, String, String, String)>()
        .await
        .map(|rows| format!("{rows:#?}"))
        .unwrap_or_else(|e| e.to_string())
}

/// The shards a worker's log says it holds now (its last assignment), if any yet.
fn assigned(env: &TestEnv, tag: &str) -> Option<BTreeSet<u32>> {
    let log = std::fs::read_to_string(env.log_path(tag)).ok()?;
    let line = log
        .lines()
        .rfind(|l| l.contains("detector shards assigned"))?;
    let list = line.split("shards=[").nth(1)?.split(']').next()?;
    Some(
        list.split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
    )
}

/// How many times a worker's log says a shard's detectors were ready.
fn ready_count(env: &TestEnv, tag: &str, shard: u32) -> usize {
    let needle = format!("shard={shard} of={SHARDS}");
    std::fs::read_to_string(env.log_path(tag))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("detectors ready") && l.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_shards_are_taken_over_and_nothing_pages_twice() {
    let env = TestEnv::new("group").await;
    let _ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, Duration::from_secs(60)).await);
    let producer = producer();

    // 30 minutes of ordinary history: 20 requests a minute on each key.
    let now = now_ms();
    let mut history = Vec::new();
    for minute in (2..32).rev() {
        for k in 0..KEYS {
            for i in 0..20 {
                let id = format!("h-{k}-{minute}-{i}");
                history.push(request(
                    &id,
                    &key(k),
                    now - minute * 60_000 + i * 3_000,
                    200,
                    "",
                ));
            }
        }
    }
    env.store_history(&producer, "h", &history).await;

    // Two keys in one shard: the incident before the kill and the one after.
    let mut by_shard = std::collections::BTreeMap::<u32, Vec<String>>::new();
    for k in 0..KEYS {
        let shard = env
            .scalar(&format!("SELECT cityHash64('{}') % {SHARDS}", key(k)))
            .await as u32;
        by_shard.entry(shard).or_default().push(key(k));
    }
    let (&shard, keys) = by_shard
        .iter()
        .find(|(_, keys)| keys.len() >= 2)
        .expect("12 keys in 6 shards: one holds two");
    let (first, second) = (keys[0].clone(), keys[1].clone());

    let config = env.dir.join("detect.toml");
    let base = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 1
resolve_after_s = 20

[detect.group]
enabled = true
shards = {SHARDS}
topic = \"{}.shards\"
group_id = \"{}.detectors\"
",
            env.gateway_topic, env.group
        ),
    )
    .unwrap();

    // Three workers joining one after another: each join rebalances.
    let tags = ["w0", "w1", "w2"];
    let mut workers = Vec::new();
    for tag in tags {
        workers.push(spawn_detect(&env, &config, tag));
        wait_log(
            &env.log_path(tag),
            "detector shards assigned",
            Duration::from_secs(60),
        )
        .await;
    }
    // Until the shards are split three ways, each worker ready on its own.
    let deadline = Instant::now() + Duration::from_secs(90);
    let split = loop {
        let sets: Vec<BTreeSet<u32>> = tags.iter().filter_map(|t| assigned(&env, t)).collect();
        let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        let mut ready = true;
        for (_, listen) in &workers {
            ready &= matches!(http_get(listen, "/readyz").await, Some((200, _)));
        }
        let disjoint = sets.iter().map(BTreeSet::len).sum::<usize>() == union.len();
        if sets.len() == 3 && disjoint && union.len() == SHARDS as usize && ready {
            break sets;
        }
        assert!(
            Instant::now() < deadline,
            "the shards were never split among three ready workers: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(split.iter().all(|s| !s.is_empty()), "{split:?}");
    let first_log = std::fs::read_to_string(env.log_path("w0")).unwrap();
    assert!(
        first_log.contains("shards=[0, 1, 2, 3, 4, 5] of=6"),
        "the first worker alone held every shard:\n{first_log}"
    );
    let victim = split.iter().position(|s| s.contains(&shard)).unwrap();

    // An incident on the victim's shard: its retry storm pages once.
    let storming = Arc::new(AtomicBool::new(true));
    let first_storm = storm(&env.gateway_topic, &first, storming.clone());
    let firing_on = |k: &str| {
        format!(
            "SELECT count() FROM alerts WHERE status = 'firing' AND detector = 'retry_storm' AND api_key_id = '{k}'"
        )
    };
    let fired = env
        .wait_for(&firing_on(&first), 1.0, Duration::from_secs(60))
        .await;
    assert_eq!(fired, 1.0, "no storm alert on {first}");

    // SIGKILL: no goodbye to the group; it notices after the session timeout.
    let survivors: Vec<&str> = tags
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, t)| *t)
        .collect();
    let before: Vec<usize> = survivors
        .iter()
        .map(|t| ready_count(&env, t, shard))
        .collect();
    workers[victim].0.kill_9();
    let killed = Instant::now();
    let second_storm = storm(&env.gateway_topic, &second, storming.clone());

    let deadline = killed + Duration::from_secs(30);
    let taken_over = loop {
        let now: Vec<usize> = survivors
            .iter()
            .map(|t| ready_count(&env, t, shard))
            .collect();
        if now != before {
            break killed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} not evaluated again within 30 s of the kill:\n{}\n{}",
            std::fs::read_to_string(env.log_path(survivors[0])).unwrap_or_default(),
            std::fs::read_to_string(env.log_path(survivors[1])).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("shard {shard} taken over {taken_over:?} after the kill");
    // The survivors hold every shard between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let union: BTreeSet<u32> = survivors
            .iter()
            .filter_map(|t| assigned(&env, t))
            .flatten()
            .collect();
        if union.len() == SHARDS as usize {
            break;
        }
        assert!(Instant::now() < deadline, "shards lost: {union:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Its keys are evaluated: the new incident there pages.
    let fired = env
        .wait_for(&firing_on(&second), 1.0, Duration::from_secs(45))
        .await;
    assert_eq!(
        fired,
        1.0,
        "one storm alert on {second} after the takeover: {}",
        firing_rows(&env, &second).await
    );
    eprintln!("{second} paged {:?} after the kill", killed.elapsed());

    // The first storm went on for all that time: still one page for it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    storming.store(false, Ordering::Relaxed);
    first_storm.await.unwrap();
    second_storm.await.unwrap();
    assert_eq!(
        env.scalar(&firing_on(&first)).await,
        1.0,
        "{}",
        firing_rows(&env, &first).await
    );
    let firing = env
        .scalar("SELECT count() FROM alerts WHERE status = 'firing'")
        .await;
    let distinct = env
        .scalar("SELECT uniqExact(fingerprint, severity) FROM alerts WHERE status = 'firing'")
        .await;
    assert_eq!(firing, distinct, "an alert fired twice");

    // The new owner carries the alert on: it resolves once the storm is over.
    let resolved = env
        .wait_for(
            &format!(
                "SELECT count() FROM alerts WHERE status = 'resolved' AND detector = 'retry_storm' AND api_key_id = '{first}'"
            ),
            1.0,
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(resolved, 1.0, "the storm on {first} never resolved");

    // Scaling in: a worker stopped cleanly leaves the group, and the last one takes every shard.
    let (leaving, staying) = (
        tags.iter().position(|t| *t == survivors[0]).unwrap(),
        survivors[1],
    );
    assert!(
        workers[leaving].0.terminate(Duration::from_secs(30)),
        "clean exit"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&env, staying).is_none_or(|s| s.len() != SHARDS as usize) {
        assert!(
            Instant::now() < deadline,
            "{staying} never took every shard:\n{}",
            std::fs::read_to_string(env.log_path(staying)).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = tags.iter().position(|t| *t == staying).unwrap();
    assert!(
        workers[last].0.terminate(Duration::from_secs(30)),
        "clean exit"
    );
}
