//! Alerting end to end, in the style of Alertmanager's acceptance tests: the real `tripline
//! alert` binary, a real broker and ClickHouse, and real HTTP receivers on 127.0.0.1 that record
//! what arrives and when, and answer as each test scripts (200, 500, 429 + Retry-After, or
//! hang). Alerts are published to the test's alerts topic as the detectors would. Every test
//! asserts the total number of requests its receiver got, so an extra notification fails it.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::hook::{
    alert_from, api, publish, spawn_alert, Hook, Received, Reply, API_TOKEN, SLOW_MS,
    WEBHOOK_SECRET,
};
use common::{clickhouse_url, produce, producer, proxy, wait_ready, TestEnv};
use tripline_alerting::receivers::webhook::{verify, WebhookSecret};
use tripline_core::alert::{Alert, AlertStatus, Severity};

/// `[alerting]` with one signed webhook receiver, appended to the test's config.
fn alerting_config(env: &TestEnv, url: &str, group_wait_ms: u64, group_interval_ms: u64) -> String {
    format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "hook"
group_by = ["detector"]
group_wait_ms = {group_wait_ms}
group_interval_ms = {group_interval_ms}
repeat_interval_s = 3600

[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
secret_env = "E2E_WEBHOOK_SECRET"
"#,
        dir = env.dir.display(),
    )
}

fn alert(key: &str, status: AlertStatus) -> Alert {
    alert_from("spend_spike", key, status)
}

fn assert_signed(r: &Received) {
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    verify(
        &secret,
        r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &r.body,
        SystemTime::now(),
        Duration::from_secs(300),
    )
    .expect("the signature verifies");
}

/// Rows in `notifications` with `status`.
async fn logged(env: &TestEnv, status: &str, expected: f64) -> f64 {
    env.wait_for(
        &format!("SELECT count() FROM notifications WHERE status = '{status}'"),
        expected,
        Duration::from_secs(15),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_wait_batches_then_resolves_signed() {
    let mut env = TestEnv::new("alert_group").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 2_000, 2_000);
    let _tripline = spawn_alert(&env, "alert");
    assert!(
        wait_ready(&env, Duration::from_secs(30)).await,
        "tripline alert is ready"
    );
    // Ready means the alerting service runs with a writable state, not only that it answers.
    let (_, readyz) = common::http_get(&env.listen, "/readyz").await.unwrap();
    assert!(readyz.contains(r#""alerting":true"#), "{readyz}");

    // Two alerts within group_wait: one notification with both.
    let published = Instant::now();
    publish(
        &env,
        &[
            alert("key-1", AlertStatus::Firing),
            alert("key-2", AlertStatus::Firing),
        ],
    )
    .await;
    let got = hook.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "one notification for the group");
    let first = &got[0];
    assert!(
        first.at.duration_since(published) >= Duration::from_millis(1_900),
        "sent after group_wait, not at once: {:?}",
        first.at.duration_since(published)
    );
    assert_signed(first);
    let body = first.json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["notification_reason"], "new");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["group_labels"]["detector"], "spend_spike");
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "{body}");
    let mut keys: Vec<&str> = alerts
        .iter()
        .map(|a| a["labels"]["api_key_id"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["key-1", "key-2"]);

    // Both resolve: one resolved notification at the next group_interval.
    publish(
        &env,
        &[
            alert("key-1", AlertStatus::Resolved),
            alert("key-2", AlertStatus::Resolved),
        ],
    )
    .await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "a resolved notification");
    let second = &got[1];
    assert_signed(second);
    assert_ne!(first.header("webhook-id"), second.header("webhook-id"));
    let body = second.json();
    assert_eq!(body["status"], "resolved", "{body}");
    assert_eq!(body["notification_reason"], "resolved");
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert!(alerts
        .iter()
        .all(|a| a["status"] == "resolved" && a["ends_at"].is_string()));

    // Nothing more: no repeat, no duplicate.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hook.received().len(), 2, "exactly two notifications");
    assert_eq!(logged(&env, "delivered", 2.0).await, 2.0);
    assert_eq!(
        env.scalar("SELECT count() FROM notifications").await,
        2.0,
        "no retries or failures logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_honoured_and_delivered_once() {
    let mut env = TestEnv::new("alert_429").await;
    let (hook, url) = Hook::start(&[Reply::TooMany(3)]).await;
    env.ingest_extra = alerting_config(&env, &url, 200, 2_000);
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    publish(&env, &[alert("key-9", AlertStatus::Firing)]).await;
    let got = hook.wait_for(2, Duration::from_secs(40)).await;
    assert_eq!(got.len(), 2, "the 429, then the retry");
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(2_900),
        "retried only after Retry-After: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "and not much later: {waited:?}"
    );
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "same webhook-id"
    );
    assert_ne!(got[0].header("webhook-id"), "");
    assert_signed(&got[1]);
    assert_eq!(got[1].json()["alerts"].as_array().unwrap().len(), 1);

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hook.received().len(), 2, "delivered once");
    assert_eq!(logged(&env, "delivered", 1.0).await, 1.0);
    assert_eq!(logged(&env, "retry", 1.0).await, 1.0);
    assert_eq!(
        env.scalar(
            "SELECT count() FROM notifications WHERE status = 'retry' AND error LIKE '%429%'"
        )
        .await,
        1.0
    );
    assert_eq!(
        env.scalar("SELECT max(attempts) FROM notifications").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_pending_notification_delivers_it_after_restart() {
    let mut env = TestEnv::new("alert_kill").await;
    // 500 first (a retry is scheduled), then the retry hangs: the process dies mid-attempt.
    let (hook, url) = Hook::start(&[Reply::Status(500), Reply::Hang]).await;
    env.ingest_extra = alerting_config(&env, &url, 200, 2_000);
    let mut tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    publish(&env, &[alert("key-3", AlertStatus::Firing)]).await;
    let got = hook.wait_for(2, Duration::from_secs(40)).await;
    assert_eq!(got.len(), 2, "the 500, then the retry that hangs");
    tripline.kill_9();

    let _restarted = spawn_alert(&env, "alert");
    let got = hook.wait_for(3, Duration::from_secs(40)).await;
    assert_eq!(got.len(), 3, "delivered after the restart");
    let id = got[0].header("webhook-id");
    assert!(!id.is_empty());
    assert!(
        got.iter().all(|r| r.header("webhook-id") == id),
        "one notification, one webhook-id"
    );
    assert_signed(&got[2]);

    // Redelivered Kafka messages (if their offsets were not committed) notify nothing new.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        hook.received().len(),
        3,
        "exactly one notification, tried three times"
    );
    assert_eq!(logged(&env, "delivered", 1.0).await, 1.0);
    assert_eq!(logged(&env, "retry", 1.0).await, 1.0);
}

/// aiosmtpd (from the venv scripts/install.sh builds) writing to a Maildir.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    async fn start(env: &TestEnv) -> SmtpServer {
        let python = std::env::var_os("TRIPLINE_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("TRIPLINE_CACHE")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::path::PathBuf::from(std::env::var("HOME").unwrap())
                            .join(".cache/tripline")
                    });
                cache.join("venv/bin/python")
            });
        assert!(
            python.exists(),
            "{} is missing: run scripts/install.sh (it installs aiosmtpd)",
            python.display()
        );
        let port = common::free_port();
        let maildir = env.dir.join("maildir");
        let log = std::fs::File::create(env.dir.join("smtp.log")).unwrap();
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let server = SmtpServer {
            child,
            port,
            maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start; see smtp.log"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// The messages in the Maildir's `new/`, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_as_multipart_with_the_right_subject() {
    let mut env = TestEnv::new("alert_email").await;
    let smtp = SmtpServer::start(&env).await;
    env.ingest_extra = format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "mail"
group_by = ["detector"]
group_wait_ms = 200
group_interval_ms = 1000

[[alerting.receivers]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
from = "Tripline <tripline@example.com>"
to = ["oncall@example.com"]
"#,
        dir = env.dir.display(),
        port = smtp.port,
    );
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    publish(&env, &[alert("key-5", AlertStatus::Firing)]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.messages().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&env, &[alert("key-5", AlertStatus::Resolved)]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.messages().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "a firing and a resolved mail, nothing else");
    let header = |mail: &str, name: &str| -> String {
        mail.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_owned()
    };
    let firing = &mails[0];
    let subject = header(firing, "Subject");
    assert!(subject.starts_with("[FIRING:1] spend_spike"), "{subject}");
    assert!(subject.contains("key-5"), "{subject}");
    assert!(
        header(firing, "Content-Type").starts_with("multipart/alternative"),
        "{firing}"
    );
    assert!(firing.contains("Content-Type: text/plain"), "{firing}");
    assert!(firing.contains("Content-Type: text/html"), "{firing}");
    assert!(header(firing, "To").contains("oncall@example.com"));
    let message_id = header(firing, "Message-ID");
    assert!(
        message_id.starts_with("<msg_") && message_id.ends_with("@example.com>"),
        "{message_id}"
    );
    let resolved = &mails[1];
    assert!(
        header(resolved, "Subject").starts_with("[RESOLVED:1] spend_spike"),
        "{resolved}"
    );
    // One thread per alert group.
    assert_eq!(header(firing, "References"), header(resolved, "References"));
    assert_ne!(header(resolved, "Message-ID"), message_id);

    assert_eq!(logged(&env, "delivered", 2.0).await, 2.0);
    assert_eq!(
        env.scalar("SELECT count() FROM notifications WHERE kind = 'email'")
            .await,
        2.0
    );
}

/// One HTTP/1.1 request over loopback with the API token (unless `token` is empty); returns
/// the status and the JSON body (`null` when empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_silences_survive_a_restart_and_test_notifications_and_reload_work() {
    let mut env = TestEnv::new("alert_api").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 200, 1_500);
    let mut tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    let addr = env.listen.clone();

    assert_eq!(
        api(&addr, "GET", "/api/v1/alerts", "", "").await.0,
        401,
        "no token"
    );
    assert_eq!(
        api(&addr, "GET", "/api/v1/alerts", "wrong-token-0123456789", "")
            .await
            .0,
        401
    );
    let (status, body) = api(&addr, "POST", "/api/v1/silences", API_TOKEN, r#"{"matchers":["api_key_id=\"key-s\""],"created_by":"e2e","comment":"planned batch job","duration_s":3600}"#).await;
    assert_eq!(status, 201, "{body}");
    let silence = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["state"], "active");
    let (status, body) = api(&addr, "POST", "/api/v1/silences", API_TOKEN, r#"{"matchers":["api_key_id=~\".*\""],"created_by":"e2e","comment":"everything","duration_s":60}"#).await;
    assert_eq!(
        status, 400,
        "a silence matching everything is refused: {body}"
    );

    // The silenced alert notifies nothing.
    publish(&env, &[alert("key-s", AlertStatus::Firing)]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, alerts) = api(&addr, "GET", "/api/v1/alerts", API_TOKEN, "").await;
        if alerts.as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(alerts[0]["labels"]["api_key_id"], "key-s");
            assert_eq!(alerts[0]["state"], "firing");
            assert_eq!(alerts[0]["silenced_by"][0], silence.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "the alert is listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.received().len(), 0, "silenced");

    // A restart keeps the silence (and the alert).
    assert!(tripline.terminate(Duration::from_secs(20)), "clean stop");
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    let (status, silences) = api(&addr, "GET", "/api/v1/silences", API_TOKEN, "").await;
    assert_eq!(status, 200);
    assert_eq!(silences.as_array().unwrap().len(), 1, "{silences}");
    assert_eq!(silences[0]["id"], silence.as_str());
    assert_eq!(silences[0]["state"], "active");
    assert_eq!(silences[0]["created_by"], "e2e");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.received().len(), 0, "still silenced after the restart");

    // Expired early: the alert is notified at the group's next interval.
    let (status, body) = api(
        &addr,
        "DELETE",
        &format!("/api/v1/silences/{silence}"),
        API_TOKEN,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "expired");
    assert_eq!(
        api(&addr, "DELETE", "/api/v1/silences/sil_nope", API_TOKEN, "")
            .await
            .0,
        404
    );
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["alerts"][0]["labels"]["api_key_id"], "key-s");

    // A test notification goes out once; an unknown receiver is a 404.
    let (status, body) = api(&addr, "POST", "/api/v1/receivers/hook/test", API_TOKEN, "").await;
    assert_eq!(status, 202, "{body}");
    let test_id = body["notification_id"].as_str().unwrap().to_owned();
    assert_eq!(
        api(&addr, "POST", "/api/v1/receivers/nope/test", API_TOKEN, "")
            .await
            .0,
        404
    );
    let got = hook.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].header("webhook-id"), test_id);
    assert_eq!(got[1].json()["alerts"][0]["labels"]["detector"], "test");
    assert_signed(&got[1]);

    // A reload keeps alerts and what the receiver was told: nothing is sent again.
    let (status, body) = api(&addr, "POST", "/api/v1/reload", API_TOKEN, "").await;
    assert_eq!(status, 200, "{body}");
    let (_, alerts) = api(&addr, "GET", "/api/v1/alerts", API_TOKEN, "").await;
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        hook.received().len(),
        2,
        "exactly the unsilenced alert and the test"
    );
    assert_eq!(logged(&env, "delivered", 2.0).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_does_not_duplicate_slack_which_is_paced() {
    let mut env = TestEnv::new("alert_slack").await;
    // 400 is a configuration error: reported once per notification, never retried.
    let (broken, broken_url) = Hook::start(&[Reply::Status(400), Reply::Status(400)]).await;
    let (slack, slack_url) = Hook::start(&[]).await;
    env.ingest_extra = format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "slack"
group_by = ["detector", "api_key_id"]
group_wait_ms = 300
group_interval_ms = 2000
repeat_interval_s = 3600

[[alerting.route.routes]]
matchers = ['detector="spend_spike"']
receiver = "broken"
continue = true

[[alerting.route.routes]]
matchers = ['detector="spend_spike"']
receiver = "slack"

[[alerting.receivers]]
name = "broken"
kind = "webhook"
url = "{broken_url}"

[[alerting.receivers]]
name = "slack"
kind = "slack"
url_env = "E2E_SLACK_URL"
"#,
        dir = env.dir.display(),
    );
    let group = format!("{}-alerting", env.group);
    let _tripline = env.spawn_with_env(
        "alert",
        "alert",
        &[
            ("E2E_SLACK_URL", slack_url.as_str()),
            ("TRIPLINE_ALERTING_GROUP_ID", group.as_str()),
        ],
    );
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    // Two groups (one per key) at once: two Slack messages, at most one per second.
    publish(
        &env,
        &[
            alert("key-a", AlertStatus::Firing),
            alert("key-b", AlertStatus::Firing),
        ],
    )
    .await;
    let got = slack.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "Slack is paced at 1/s: {gap:?}"
    );
    for r in &got {
        let body = r.json();
        assert!(
            body["blocks"].as_array().is_some_and(|b| !b.is_empty()),
            "{body}"
        );
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.contains("spend_spike")),
            "{body}"
        );
    }
    let failed = broken.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(failed.len(), 2, "one attempt per notification");

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        slack.received().len(),
        2,
        "the failing receiver causes no Slack duplicates"
    );
    assert_eq!(broken.received().len(), 2, "400 is not retried");
    assert_eq!(
        env.wait_for(
            "SELECT count() FROM notifications WHERE receiver = 'broken' AND status = 'failed' AND error LIKE '%configuration error%'",
            2.0,
            Duration::from_secs(15),
        )
        .await,
        2.0
    );
    assert_eq!(
        env.wait_for(
            "SELECT count() FROM notifications WHERE receiver = 'slack' AND status = 'delivered' AND kind = 'slack'",
            2.0,
            Duration::from_secs(15),
        )
        .await,
        2.0
    );
    assert_eq!(env.scalar("SELECT count() FROM notifications").await, 4.0);
    let metrics = env.metrics().await;
    let delivered = metrics
        .iter()
        .find(|(k, _)| {
            k.starts_with("tripline_alerting_delivery_attempts_total")
                && k.contains("receiver=\"slack\"")
                && k.contains("outcome=\"delivered\"")
        })
        .map(|(_, v)| *v);
    assert_eq!(delivered, Some(2.0), "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_replayed_after_a_restart_change_nothing() {
    let mut env = TestEnv::new("alert_replay").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 200, 1_000);
    let mut tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    publish(&env, &[alert("key-r", AlertStatus::Firing)]).await;
    assert_eq!(hook.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    publish(&env, &[alert("key-r", AlertStatus::Resolved)]).await;
    assert_eq!(hook.wait_for(2, Duration::from_secs(30)).await.len(), 2);
    assert!(tripline.terminate(Duration::from_secs(20)));

    // A new consumer group reads the topic from the start: every message comes again, as after
    // a lost commit. The state already holds them: the resolved alert must not fire again.
    let group = format!("{}-replay", env.group);
    let _tripline = env.spawn_with_env(
        "alert",
        "replay",
        &[
            ("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("TRIPLINE_ALERTING_GROUP_ID", group.as_str()),
        ],
    );
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = "tripline_alerting_redelivered_messages_total";
    while env.metrics().await.get(key).copied() != Some(2.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.metrics().await.get(key).copied(),
        Some(2.0),
        "both messages recognised"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.received().len(), 2, "nothing notified again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_alerts_wait_for_group_interval_repeats_follow_and_a_flap_sends_nothing() {
    let mut env = TestEnv::new("alert_timing").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 1_000, 2_000)
        .replace("repeat_interval_s = 3600", "repeat_interval_s = 5");
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    // A flap inside group_wait (its own group: another detector) sends nothing.
    publish(
        &env,
        &[alert_from("retry_storm", "key-f", AlertStatus::Firing)],
    )
    .await;
    publish(
        &env,
        &[alert_from("retry_storm", "key-f", AlertStatus::Resolved)],
    )
    .await;

    publish(&env, &[alert("key-1", AlertStatus::Firing)]).await;
    let got = hook.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["alerts"].as_array().unwrap().len(), 1);
    // A late alert joins the group: sent at the next group_interval, not at once.
    publish(&env, &[alert("key-2", AlertStatus::Firing)]).await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1_900),
        "group_interval: {gap:?}"
    );
    let body = got[1].json();
    assert_eq!(body["notification_reason"], "changed", "{body}");
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    // Unchanged: repeated after repeat_interval (5 s, looked at every group_interval).
    let got = hook.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3);
    let gap = got[2].at.duration_since(got[1].at);
    assert!(
        gap >= Duration::from_millis(4_900),
        "repeat_interval: {gap:?}"
    );
    assert_eq!(got[2].json()["notification_reason"], "repeat");
    assert_ne!(got[2].header("webhook-id"), got[1].header("webhook-id"));

    publish(
        &env,
        &[
            alert("key-1", AlertStatus::Resolved),
            alert("key-2", AlertStatus::Resolved),
        ],
    )
    .await;
    let got = hook.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].json()["status"], "resolved");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = hook.received();
    assert_eq!(
        got.len(),
        4,
        "no more repeats once resolved, nothing for the flap"
    );
    assert!(got
        .iter()
        .all(|r| r.json()["group_labels"]["detector"] == "spend_spike"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tripline_run_includes_alerting_and_inhibits_warnings_under_a_critical() {
    let mut env = TestEnv::new("alert_run").await;
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 1_000, 2_000).replace(
        "[[alerting.receivers]]",
        "[[alerting.inhibit_rules]]\nsource_matchers = ['severity=\"critical\"']\ntarget_matchers = ['severity=\"warning\"']\nequal = [\"api_key_id\"]\n\n[[alerting.receivers]]",
    );
    let _tripline = env.spawn_with_env(
        "run",
        "run",
        &[
            ("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET),
            (
                "TRIPLINE_ALERTING_GROUP_ID",
                format!("{}-alerting", env.group).as_str(),
            ),
        ],
    );
    assert!(
        wait_ready(&env, Duration::from_secs(60)).await,
        "tripline run is ready"
    );

    let mut critical = alert_from("spend_spike", "key-i", AlertStatus::Firing);
    critical.severity = Severity::Critical;
    let warning = alert_from("retry_storm", "key-i", AlertStatus::Firing);
    let other_key = alert_from("retry_storm", "key-j", AlertStatus::Firing);
    publish(&env, &[critical, warning, other_key]).await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got_all = hook.received();
    assert_eq!(
        got_all.len(),
        2,
        "the critical and the other key's warning: {got:?}"
    );
    let mut seen: Vec<(String, String)> = got_all
        .iter()
        .flat_map(|r| {
            r.json()["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["labels"]["detector"].as_str().unwrap().to_owned(),
                        a["labels"]["api_key_id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("retry_storm".to_owned(), "key-j".to_owned()),
            ("spend_spike".to_owned(), "key-i".to_owned())
        ],
        "the warning for key-i is inhibited by its critical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_change_reloads_routes_and_keeps_state() {
    let mut env = TestEnv::new("alert_reload").await;
    let (first, first_url) = Hook::start(&[]).await;
    let (second, second_url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &first_url, 200, 1_000);
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    publish(&env, &[alert("key-1", AlertStatus::Firing)]).await;
    assert_eq!(first.wait_for(1, Duration::from_secs(30)).await.len(), 1);

    // The receiver's URL changes and send_resolved goes off: the file is re-read by itself.
    let path = env.dir.join("tripline.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&first_url, &second_url)
        .replace(
            "secret_env = \"E2E_WEBHOOK_SECRET\"",
            "secret_env = \"E2E_WEBHOOK_SECRET\"\nsend_resolved = false",
        );
    std::fs::write(&path, text).unwrap();
    let log = env.log_path("alert");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("alerting config reloaded")
    {
        assert!(Instant::now() < deadline, "the config is reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the receiver was told survives: key-1 is not sent again; the new alert goes to the
    // new URL with key-1 still in its group.
    publish(&env, &[alert("key-2", AlertStatus::Firing)]).await;
    let got = second.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["notification_reason"], "changed", "{body}");
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    // send_resolved is off now: resolving sends nothing.
    publish(
        &env,
        &[
            alert("key-1", AlertStatus::Resolved),
            alert("key-2", AlertStatus::Resolved),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(first.received().len(), 1, "the old URL gets nothing more");
    assert_eq!(
        second.received().len(),
        1,
        "no resolved notification with send_resolved off"
    );
}

/// Measurement, not a check (run with `--ignored --nocapture`): time from an alert on Kafka to
/// its webhook request (group_wait 0, one group per alert), and notification throughput to a
/// fast receiver while a slow one (2 s per answer) gets the same notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_latency_and_throughput_with_a_slow_receiver() {
    let mut env = TestEnv::new("alert_bench").await;
    let (fast, fast_url) = Hook::start(&[]).await;
    let (slow, slow_url) = Hook::start_with(&[], true).await;
    SLOW_MS.store(2_000, std::sync::atomic::Ordering::Relaxed);
    env.ingest_extra = format!(
        r#"
[alerting]
state_dir = "{dir}/alerting-state"
[alerting.route]
receiver = "fast"
group_by = ["..."]
group_wait_ms = 0
group_interval_ms = 60000
[[alerting.route.routes]]
matchers = ['detector="spend_spike"']
receiver = "slow"
continue = true
[[alerting.route.routes]]
matchers = ['detector="spend_spike"']
receiver = "fast"
[[alerting.receivers]]
name = "fast"
kind = "webhook"
url = "{fast_url}"
[[alerting.receivers]]
name = "slow"
kind = "webhook"
url = "{slow_url}"
"#,
        dir = env.dir.display(),
    );
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    // Warm up: the consumer has joined once the first notification arrives.
    publish(&env, &[alert("warm-up", AlertStatus::Firing)]).await;
    assert_eq!(fast.wait_for(1, Duration::from_secs(30)).await.len(), 1);

    // Latency: one alert every 50 ms.
    let producer = producer();
    let mut sent = std::collections::HashMap::new();
    for i in 0..200 {
        let a = alert(&format!("lat-{i}"), AlertStatus::Firing);
        sent.insert(a.fingerprint.clone(), Instant::now());
        produce(
            &producer,
            &env.alerts_topic,
            &a.fingerprint,
            &[serde_json::to_vec(&a).unwrap()],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = fast.wait_for(201, Duration::from_secs(60)).await;
    let mut latencies: Vec<Duration> = got[1..]
        .iter()
        .filter_map(|r| {
            let fp = r.json()["alerts"][0]["fingerprint"].as_str()?.to_owned();
            Some(r.at.duration_since(sent[&fp]))
        })
        .collect();
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "latency kafka -> webhook over {} alerts: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        q(0.5),
        q(0.99),
        latencies[latencies.len() - 1]
    );

    // Throughput: 1,000 alerts at once.
    let before = fast.received().len();
    let burst: Vec<Alert> = (0..1000)
        .map(|i| alert(&format!("tp-{i}"), AlertStatus::Firing))
        .collect();
    let start = Instant::now();
    publish(&env, &burst).await;
    let published = start.elapsed();
    let got = fast.wait_for(before + 1000, Duration::from_secs(300)).await;
    let elapsed = got.last().unwrap().at.duration_since(start);
    println!(
        "throughput: {} notifications to the fast receiver in {:?} ({:.0}/s; publishing took {:?}); the slow one got {} meanwhile",
        got.len() - before,
        elapsed,
        (got.len() - before) as f64 / elapsed.as_secs_f64(),
        published,
        slow.received().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_stops_tripline_alert_with_its_reason() {
    let mut env = TestEnv::new("alert_corrupt").await;
    env.ingest_extra = alerting_config(&env, "http://127.0.0.1:9/hook", 200, 1_000);
    let state = env.dir.join("alerting-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), b"{half a file").unwrap();
    let mut tripline = spawn_alert(&env, "alert");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = tripline.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tripline alert keeps running without its state"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(env.log_path("alert")).unwrap();
    assert!(log.contains("is not readable state"), "{log}");
    // Nothing was overwritten: the operator decides what to do with the file.
    assert_eq!(
        std::fs::read(state.join("state.json")).unwrap(),
        b"{half a file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_out_while_clickhouse_is_down_and_are_logged_when_it_is_back() {
    let mut env = TestEnv::new("alert_ch_down").await;
    let proxy =
        proxy::Proxy::start(clickhouse_url().trim_start_matches("http://").to_owned()).await;
    proxy.go_down();
    env.tripline_clickhouse_url = format!("http://{}", proxy.addr);
    let (hook, url) = Hook::start(&[]).await;
    env.ingest_extra = alerting_config(&env, &url, 200, 1_000);
    let _tripline = spawn_alert(&env, "alert");
    assert!(wait_ready(&env, Duration::from_secs(30)).await);

    publish(&env, &[alert("key-d", AlertStatus::Firing)]).await;
    assert_eq!(
        hook.wait_for(1, Duration::from_secs(30)).await.len(),
        1,
        "sent without ClickHouse"
    );

    // Back: the schema is applied and the delivery log catches up.
    proxy.come_back();
    assert_eq!(logged(&env, "delivered", 1.0).await, 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.received().len(), 1);
    assert_eq!(env.scalar("SELECT count() FROM notifications").await, 1.0);
}
