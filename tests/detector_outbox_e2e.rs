//! The detectors' outbox end to end: an alert decided while Kafka is down is not lost. Ingest
//! runs on the shared broker, so events keep arriving; the detectors and alerting talk to a
//! tansu broker of this test's own (SQLite storage in the test's directory, so its topics and
//! alerting's committed offsets survive a restart), which the test stops and starts again
//! without disturbing other tests. The incident is key scanning (one IP failing authentication
//! on twelve keys), which needs no history; the page is a signed webhook on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use common::*;

const WEBHOOK_SECRET: &str = "e2e-webhook-signing-secret-0123456789";
const SCANNER: &str = "198.51.100.7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_decided_while_kafka_is_down_reaches_the_webhook_after_it_returns() {
    let mut setup = Setup::start("outbox_outage").await;
    let mut detect = setup.spawn("detect", "detect");
    let _alert = setup.spawn("alert", "alert");
    wait_log(
        &setup.env.log_path("detect"),
        "detectors ready",
        Duration::from_secs(90),
    )
    .await;
    assert!(wait_http_ok(&setup.alert_listen, "/readyz", 60).await);

    let outage = Instant::now();
    setup.broker.stop();
    setup.scan().await;
    let decided = setup
        .env
        .wait_for(
            "SELECT count() FROM alerts WHERE status = 'firing' AND entity LIKE '%key_scanning%'",
            1.0,
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(decided, 1.0, "the detector decided and recorded the alert");
    assert_eq!(
        wait_metric(
            &setup.detect_listen,
            "tripline_detector_outbox_pending",
            1.0,
            30
        )
        .await,
        1.0,
        "pending while Kafka is down"
    );

    // Kafka stays down for 60 s; the cycles go on and the detector stays ready.
    let mut samples = Vec::new();
    while outage.elapsed() < Duration::from_secs(60) {
        samples.push(http_get(&setup.detect_listen, "/readyz").await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let metrics = metrics_of(&setup.detect_listen).await;
    assert!(
        samples
            .iter()
            .all(|s| matches!(s, Some((200, body)) if body.contains(r#""detector":true"#))),
        "{samples:?}"
    );
    assert_eq!(metrics["tripline_detector_outbox_pending"], 1.0);
    assert!(metrics["tripline_detector_outbox_oldest_pending_seconds"] >= 10.0);
    assert_eq!(setup.hook.count(), 0, "nothing could be sent");

    setup.broker.start();
    let got = setup.hook.wait_for(1, 180).await;
    assert_eq!(got.len(), 1, "the page arrives once Kafka is back");
    assert_scan_page(&got[0]);
    assert_eq!(
        wait_metric(
            &setup.detect_listen,
            "tripline_detector_outbox_pending",
            0.0,
            60
        )
        .await,
        0.0
    );
    let acknowledged = setup
        .env
        .wait_for(
            "SELECT count() FROM alert_publications WHERE status = 'firing'",
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(acknowledged, 1.0, "the acknowledgement is recorded");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(setup.hook.count(), 1, "and it pages once");
    assert!(detect.terminate(Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_an_alert_is_pending_still_delivers_it_once() {
    let mut setup = Setup::start("outbox_restart").await;
    let mut detect = setup.spawn("detect", "detect");
    let _alert = setup.spawn("alert", "alert");
    wait_log(
        &setup.env.log_path("detect"),
        "detectors ready",
        Duration::from_secs(90),
    )
    .await;
    assert!(wait_http_ok(&setup.alert_listen, "/readyz", 60).await);

    setup.broker.stop();
    setup.scan().await;
    assert_eq!(
        wait_metric(
            &setup.detect_listen,
            "tripline_detector_outbox_pending",
            1.0,
            90
        )
        .await,
        1.0,
        "decided, recorded, pending"
    );
    assert!(detect.terminate(Duration::from_secs(30)));
    wait_log(
        &setup.env.log_path("detect"),
        "stay pending for the next start",
        Duration::from_secs(5),
    )
    .await;

    // The new process reloads it (and knows it is firing: it is not decided again).
    let _detect = setup.spawn("detect", "detect-again");
    wait_log(
        &setup.env.log_path("detect-again"),
        "detectors ready",
        Duration::from_secs(180),
    )
    .await;
    wait_log(
        &setup.env.log_path("detect-again"),
        "alerts decided but never published, sending: 1",
        Duration::from_secs(10),
    )
    .await;
    setup.broker.start();
    let got = setup.hook.wait_for(1, 180).await;
    assert_eq!(got.len(), 1, "delivered after the restart");
    assert_scan_page(&got[0]);
    let acknowledged = setup
        .env
        .wait_for(
            "SELECT count() FROM alert_publications",
            1.0,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(acknowledged, 1.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(setup.hook.count(), 1, "once");
    assert_eq!(
        setup
            .env
            .scalar("SELECT count() FROM alerts WHERE status = 'firing'")
            .await,
        1.0,
        "decided once"
    );
}

/// An `alerts` insert whose answer is lost (the rows landed, the connection dropped before the
/// outbox heard so) is retried without writing a change twice, and without leaving out a
/// change decided meanwhile. The outbox runs in the test, its ClickHouse behind a proxy: down
/// while more changes are decided than one duplicate check asks about (2,000 fingerprints),
/// so that the lost insert holds them all, then up, losing that insert's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_whose_answer_was_lost_is_not_written_twice() {
    use tripline_core::alert::AlertStatus;
    use tripline_detector::data::Shard;
    use tripline_detector::outbox::Outbox;
    const DECIDED: usize = 2_100;

    let env = TestEnv::new("outbox_lost_answer").await;
    tripline_store::migrate(&env.clickhouse(), &env.database, None)
        .await
        .unwrap();
    let proxy =
        proxy::Proxy::start(clickhouse_url().trim_start_matches("http://").to_owned()).await;
    proxy.go_down();
    let kafka = tripline_core::config::KafkaConfig {
        brokers: env.brokers.clone(),
        alerts_topic: env.alerts_topic.clone(),
        ..Default::default()
    };
    let clickhouse = clickhouse::Client::default()
        .with_url(format!("http://{}", proxy.addr))
        .with_database(&env.database)
        .with_validation(false);
    let outbox = Outbox::start(
        Outbox::producer(&kafka).unwrap(),
        &kafka,
        clickhouse,
        Shard { index: 0, count: 1 },
    );
    let firing = |key: &str| hook::alert_from("spend_spike", key, AlertStatus::Firing);
    for i in 0..DECIDED {
        outbox
            .decided(firing(&format!("key-lost-answer-{i}")))
            .await;
    }
    // The worker takes what the channel still holds, failing to write it meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.lose_answer_to("INSERT INTO `alerts`");
    proxy.come_back();
    let lost_by = tokio::time::Instant::now() + Duration::from_secs(60);
    while proxy.answers_lost() == 0 && tokio::time::Instant::now() < lost_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.answers_lost(),
        1,
        "no answer was lost: nothing was tested"
    );
    // Decided during the backoff after the lost answer: not recorded, so it must be written.
    outbox.decided(firing("key-decided-meanwhile")).await;
    let acknowledged = env
        .wait_for(
            "SELECT count() FROM alert_publications",
            (DECIDED + 1) as f64,
            Duration::from_secs(90),
        )
        .await;
    outbox.close().await;
    assert_eq!(acknowledged, (DECIDED + 1) as f64);
    assert_eq!(
        env.scalar("SELECT count() FROM alerts").await,
        (DECIDED + 1) as f64,
        "one row per change"
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(fingerprint) FROM alerts")
            .await,
        (DECIDED + 1) as f64
    );
}

/// The servers of one test: ingest on the shared broker, a broker of its own for the detectors
/// and alerting, a webhook receiver.
struct Setup {
    env: TestEnv,
    broker: PrivateBroker,
    hook: Hook,
    /// The config of `detect` and `alert` (the private broker).
    config: PathBuf,
    detect_listen: String,
    alert_listen: String,
    _ingest: Tripline,
}

impl Setup {
    async fn start(name: &str) -> Setup {
        let env = TestEnv::new(name).await;
        let mut broker = PrivateBroker::new(&env);
        broker.start();
        let hook = Hook::start().await;
        let shared = std::fs::read_to_string(env.config_path()).unwrap();
        let config = env.dir.join("private.toml");
        let text = shared.replace(
            &format!("brokers = \"{}\"", brokers()),
            &format!("brokers = \"{}\"", broker.address),
        ) + &extra_config(&env.dir, &hook.url);
        std::fs::write(&config, text).unwrap();
        let ingest = env.spawn("ingest", "ingest");
        assert!(wait_ready(&env, Duration::from_secs(60)).await);
        Setup {
            env,
            broker,
            hook,
            config,
            detect_listen: format!("127.0.0.1:{}", free_port()),
            alert_listen: format!("127.0.0.1:{}", free_port()),
            _ingest: ingest,
        }
    }

    /// `tripline <role>` on the private broker, logging to `log_path(tag)`.
    fn spawn(&self, role: &str, tag: &str) -> Tripline {
        let listen = if role == "alert" {
            &self.alert_listen
        } else {
            &self.detect_listen
        };
        let log = std::fs::File::create(self.env.log_path(tag)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tripline"))
            .args([role, "--config"])
            .arg(&self.config)
            .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
            .env("TRIPLINE_LISTEN", listen)
            .env("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env(
                "TRIPLINE_ALERTING_GROUP_ID",
                format!("{}-alerting", self.env.group),
            )
            .env("RUST_LOG", "info")
            .env_remove("TRIPLINE_KAFKA_BROKERS")
            .env_remove("TRIPLINE_CLICKHOUSE_URL")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start tripline");
        Tripline { child }
    }

    /// One IP failing authentication on twelve keys, now, through the shared broker.
    async fn scan(&self) {
        let t = now_ms();
        let events: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                format!(r#"{{"event_id":"scan-{i}","ts":{},"api_key_id":"guess-{i}","model":"gpt-4o","status":401,"client_ip":"{SCANNER}"}}"#, t + i * 100)
                    .into_bytes()
            })
            .collect();
        produce(&producer(), &self.env.gateway_topic, "scan", &events).await;
    }
}

fn extra_config(dir: &Path, url: &str) -> String {
    format!(
        r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 1
resolve_after_s = 3600

[alerting]
state_dir = "{dir}/alerting-state"

[alerting.route]
receiver = "hook"
group_by = ["detector"]
group_wait_ms = 500
group_interval_ms = 1000
repeat_interval_s = 3600

[[alerting.receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
secret_env = "E2E_WEBHOOK_SECRET"
"#,
        dir = dir.display()
    )
}

fn assert_scan_page(page: &serde_json::Value) {
    let alerts = page["alerts"].as_array().expect("alerts in the page");
    assert_eq!(alerts.len(), 1, "{page}");
    assert_eq!(alerts[0]["labels"]["client_ip"], SCANNER, "{page}");
    assert_eq!(alerts[0]["labels"]["pattern"], "key_scanning", "{page}");
    assert_eq!(alerts[0]["status"], "firing", "{page}");
}

/// A tansu broker of this test's own on a free port; its SQLite file (relative to its working
/// directory, as tansu wants it) keeps topics and committed offsets across `stop`/`start`.
struct PrivateBroker {
    address: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    fn new(env: &TestEnv) -> PrivateBroker {
        let dir = env.dir.join("tansu");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        PrivateBroker {
            address: format!("127.0.0.1:{}", free_port()),
            dir,
            child: None,
        }
    }

    /// Starts the broker and waits until it takes requests (the alerts topic is created on the
    /// first start; alerting subscribes to it).
    fn start(&mut self) {
        let bin = tansu_bin();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let url = format!("tcp://{}", self.address);
        let child = Command::new(&bin)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/install.sh)", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(Instant::now() < deadline, "private broker did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("TRIPLINE_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("TRIPLINE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tripline")
                });
            cache.join("tansu-0.6.0/bin/tansu")
        })
}

/// A webhook receiver on loopback recording each request's JSON body.
#[derive(Clone)]
struct Hook {
    url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = Hook {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        hook
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    async fn wait_for(&self, count: usize, timeout_s: u64) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        while self.count() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.received.lock().unwrap().clone()
    }
}

async fn receive(State(hook): State<Hook>, body: Bytes) -> &'static str {
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    hook.received.lock().unwrap().push(json);
    "ok"
}

async fn metrics_of(listen: &str) -> std::collections::BTreeMap<String, f64> {
    let (_, body) = http_get(listen, "/metrics").await.unwrap_or_default();
    parse_metrics(&body)
}

/// Waits until metric `name` reads `expected`; returns the last value (-1 when absent).
async fn wait_metric(listen: &str, name: &str, expected: f64, timeout_s: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        let value = metrics_of(listen).await.get(name).copied().unwrap_or(-1.0);
        if value == expected || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_http_ok(listen: &str, path: &str, timeout_s: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(listen, path).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
