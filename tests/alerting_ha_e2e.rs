//! Alerting with a standby (`[alerting.ha]`) end to end: two real `tripline alert` processes on
//! a real broker, one active and one standing by, a real webhook receiver on 127.0.0.1 that
//! fails until the test lets it recover, and kill -9 of the active process while its
//! notifications are pending.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::ha::{key_of, pair_settled, AlertProcess, ACTIVE, STANDING_BY};
use common::hook::{alert_from, api, publish, Hook, Received, Reply, API_TOKEN};
use common::{wait_ready, TestEnv};
use tripline_core::alert::{Alert, AlertStatus};

/// `[alerting]` with HA on, one group per key, one signed webhook receiver.
fn ha_config(env: &TestEnv, url: &str, instance: &str) -> String {
    format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state-{instance}"

[alerting.ha]
enabled = true
instance = "{instance}"
group_id = "{group}-leader"
leader_topic = "{alerts}.leader"
state_topic = "{alerts}.state"
silences_topic = "{alerts}.silences"

[alerting.route]
receiver = "hook"
group_by = ["api_key_id"]
group_wait_ms = 200
group_interval_ms = 2000
repeat_interval_s = 3600

[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
secret_env = "E2E_WEBHOOK_SECRET"
"#,
        dir = env.dir.display(),
        group = env.group,
        alerts = env.alerts_topic,
    )
}

fn alert(key: &str, status: AlertStatus) -> Alert {
    alert_from("spend_spike", key, status)
}

async fn roles_settled(instances: &[AlertProcess; 2]) -> usize {
    pair_settled(&instances[0], &instances[1], Duration::from_secs(30)).await
}

fn tries_per_key(received: &[Received]) -> BTreeMap<String, usize> {
    received.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(key_of(r)).or_default() += 1;
        m
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_instance_hands_its_pending_notifications_to_the_standby() {
    let mut env = TestEnv::new("alert_ha").await;
    // The receiver fails until the test clears its plan.
    let (hook, url) = Hook::start(&[Reply::Status(503); 500]).await;
    env.ingest_extra = ha_config(&env, &url, "a");
    let mut env_b = env.another_worker("b");
    env_b.ingest_extra = ha_config(&env, &url, "b");
    let alerts_env = env.another_worker("producer");

    let a = AlertProcess::start(env, "a");
    assert!(wait_ready(&a.env, Duration::from_secs(60)).await, "a ready");
    a.wait_said(ACTIVE, 1, Duration::from_secs(60)).await;
    let b = AlertProcess::start(env_b, "b");
    assert!(wait_ready(&b.env, Duration::from_secs(60)).await, "b ready");
    // B's joining rebalances the group: either instance may come out active.
    let mut instances = [a, b];
    let active = roles_settled(&instances).await;
    let standby = 1 - active;

    // A silence created on the standby applies on the active instance.
    let (status, body) = api(&instances[standby].env.listen, "POST", "/api/v1/silences", API_TOKEN, r#"{"matchers":["api_key_id=\"key-quiet\""],"created_by":"e2e","comment":"planned batch job","duration_s":3600}"#).await;
    assert_eq!(status, 201, "{body}");
    let silence = body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, listed) = api(
            &instances[active].env.listen,
            "GET",
            "/api/v1/silences",
            API_TOKEN,
            "",
        )
        .await;
        if listed.to_string().contains(&silence) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the active instance never listed {silence}: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = api(
        &instances[standby].env.listen,
        "POST",
        "/api/v1/receivers/hook/test",
        API_TOKEN,
        "",
    )
    .await;
    assert_eq!(status, 503, "a standby sends no test notification: {body}");

    let keys = ["key-1", "key-2", "key-3"];
    let mut alerts: Vec<Alert> = keys.iter().map(|k| alert(k, AlertStatus::Firing)).collect();
    alerts.push(alert("key-quiet", AlertStatus::Firing));
    publish(&alerts_env, &alerts).await;
    // Every group has failed at least twice: its notification is pending, with a backoff.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let tried = tries_per_key(&hook.received());
        if keys
            .iter()
            .all(|k| tried.get(*k).copied().unwrap_or(0) >= 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every group was tried twice: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        instances[standby].role(),
        Some(STANDING_BY),
        "no handover yet"
    );

    instances[active].process.kill_9();
    let killed = Instant::now();
    let failed_before = hook.received().len();
    hook.plan.lock().unwrap().clear();

    // The standby takes over and delivers every pending notification within 30 s.
    let deadline = killed + Duration::from_secs(30);
    let delivered = loop {
        let after: Vec<Received> = hook.received()[failed_before..].to_vec();
        let keys_after: BTreeSet<String> = after.iter().map(key_of).collect();
        if keys.iter().all(|k| keys_after.contains(*k)) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 30 s of the kill: {keys_after:?}\n{}",
            instances[standby].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = delivered.last().unwrap().at - killed;
    println!("failover: every pending notification delivered {took:?} after the kill");
    assert_eq!(instances[standby].role(), Some(ACTIVE));
    assert!(
        instances[standby].log().contains("pending_notifications=3"),
        "the pending notifications came from the shared state, not from alerts read again"
    );

    // Nothing more arrives; each group is one notification with one webhook-id throughout,
    // delivered at most twice (one duplicate per failover).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = hook.received();
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &all {
        ids.entry(key_of(r))
            .or_default()
            .insert(r.header("webhook-id").to_owned());
    }
    assert!(!ids.contains_key("key-quiet"), "the silence held: {ids:?}");
    let delivered = tries_per_key(&all[failed_before..]);
    for key in keys {
        assert_eq!(
            ids[key].len(),
            1,
            "{key}: one notification, one webhook-id: {ids:?}"
        );
        assert!(
            (1..=2).contains(&delivered[key]),
            "{key}: delivered {} times after the failover",
            delivered[key]
        );
    }

    // The restarted instance stands by and answers the API from the shared state.
    let killed_one = &mut instances[active];
    let standing_before = killed_one.said(STANDING_BY);
    killed_one.restart();
    assert!(
        wait_ready(&killed_one.env, Duration::from_secs(60)).await,
        "restarted"
    );
    killed_one
        .wait_said(STANDING_BY, standing_before + 1, Duration::from_secs(30))
        .await;
    // Its joining may hand it the active role: wait until the roles are settled again.
    let active = roles_settled(&instances).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for instance in &instances {
        loop {
            let (status, listed) =
                api(&instance.env.listen, "GET", "/api/v1/alerts", API_TOKEN, "").await;
            assert_eq!(status, 200, "{listed}");
            let firing = listed
                .as_array()
                .map_or(0, |a| a.iter().filter(|v| v["state"] == "firing").count());
            if firing == 4 {
                break;
            }
            assert!(Instant::now() < deadline, "{} lists {listed}", instance.tag);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A graceful stop of the active one hands over at once: the other resolves what the
    // stopped one fired.
    let staying = 1 - active;
    let active_before = instances[staying].said(ACTIVE);
    instances[active].process.send_term();
    instances[staying]
        .wait_said(ACTIVE, active_before + 1, Duration::from_secs(30))
        .await;
    assert!(
        instances[active]
            .process
            .wait_clean(Duration::from_secs(30)),
        "stops cleanly"
    );
    let before = hook.received().len();
    publish(&alerts_env, &[alert("key-1", AlertStatus::Resolved)]).await;
    let got = hook.wait_for(before + 1, Duration::from_secs(30)).await;
    let resolved = &got[before];
    assert_eq!(key_of(resolved), "key-1");
    assert_eq!(resolved.json()["status"], "resolved", "{}", resolved.json());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        hook.received().len(),
        before + 1,
        "one resolved notification"
    );
}

/// A benchmark, not a check (run it with `--ignored --nocapture`): `KILLS` times (10 by
/// default), a notification is made pending on a failing receiver, the active instance is
/// killed with SIGKILL, the receiver recovers, and the time until the notification arrives is
/// measured; the killed instance is started again and the roles settle before the next kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --test alerting_ha_e2e -- --ignored --nocapture"]
async fn measure_failover_over_repeated_kills() {
    let kills: usize = std::env::var("KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    let mut env = TestEnv::new("alert_ha_bench").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = ha_config(&env, &url, "a");
    let mut env_b = env.another_worker("b");
    env_b.ingest_extra = ha_config(&env, &url, "b");
    let alerts_env = env.another_worker("producer");
    let mut instances = [
        AlertProcess::start(env, "a"),
        AlertProcess::start(env_b, "b"),
    ];
    let mut took = Vec::new();
    for kill in 0..kills {
        for instance in &instances {
            assert!(wait_ready(&instance.env, Duration::from_secs(60)).await);
        }
        let active = roles_settled(&instances).await;
        let key = format!("bench-{kill}");
        hook.plan.lock().unwrap().extend([Reply::Status(503); 500]);
        let before = hook.received().len();
        publish(&alerts_env, &[alert(&key, AlertStatus::Firing)]).await;
        let deadline = Instant::now() + Duration::from_secs(40);
        while tries_per_key(&hook.received()[before..])
            .get(&key)
            .copied()
            .unwrap_or(0)
            < 2
        {
            assert!(Instant::now() < deadline, "{key} was not tried twice");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        instances[active].process.kill_9();
        let killed = Instant::now();
        let failed = hook.received().len();
        hook.plan.lock().unwrap().clear();
        let deadline = killed + Duration::from_secs(60);
        let arrived = loop {
            if let Some(r) = hook.received()[failed..].iter().find(|r| key_of(r) == key) {
                break r.at;
            }
            assert!(Instant::now() < deadline, "{key} not delivered within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seconds = (arrived - killed).as_secs_f64();
        println!("kill {}: delivered {seconds:.2} s after the kill", kill + 1);
        took.push(seconds);
        let standing = instances[active].said(STANDING_BY);
        instances[active].restart();
        instances[active]
            .wait_said(STANDING_BY, standing + 1, Duration::from_secs(60))
            .await;
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!(
        "alerting failover over {} kills: min {:.1} s, median {:.1} s, p90 {:.1} s, max {:.1} s",
        took.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}
