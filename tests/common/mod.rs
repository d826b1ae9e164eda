//! Shared harness for the end-to-end tests: real broker, real ClickHouse, the real `tripline`
//! binary. Every test gets its own database, topics and consumer group, so tests run in parallel
//! without seeing each other's data.
#![allow(dead_code)]

pub mod collector;
pub mod dashboards;
pub mod ha;
pub mod hook;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SECRET: &str = "e2e-fingerprint-secret-0123456789";

pub fn brokers() -> String {
    std::env::var("TRIPLINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("TRIPLINE_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// One test's private slice of the servers.
pub struct TestEnv {
    pub name: String,
    pub database: String,
    pub gateway_topic: String,
    pub provider_topic: String,
    pub dlq_topic: String,
    pub alerts_topic: String,
    pub group: String,
    pub dir: PathBuf,
    pub listen: String,
    /// ClickHouse URL tripline is given (a proxy in outage tests).
    pub tripline_clickhouse_url: String,
    /// Extra `[ingest]` lines for the config.
    pub ingest_extra: String,
    /// Extra `[clickhouse]` lines for the config (a cluster, say).
    pub clickhouse_extra: String,
    /// The Kafka brokers tripline and the test's topics use (the shared broker unless a test
    /// runs its own).
    pub brokers: String,
    /// A network namespace tripline runs in (`ip netns exec`), for tests that cut hosts off.
    pub netns: Option<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        TestEnv::new_on(name, brokers()).await
    }

    /// Like [`TestEnv::new`], on the broker at `brokers`.
    pub async fn new_on(name: &str, brokers: String) -> TestEnv {
        let unique = format!(
            "{name}_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 100_000
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&unique);
        std::fs::create_dir_all(&dir).unwrap();
        let env = TestEnv {
            name: name.into(),
            database: format!("t_{unique}"),
            gateway_topic: format!("t.{unique}.gateway"),
            provider_topic: format!("t.{unique}.provider"),
            dlq_topic: format!("t.{unique}.dlq"),
            alerts_topic: format!("t.{unique}.alerts"),
            group: format!("g.{unique}"),
            dir,
            listen: format!("127.0.0.1:{}", free_port()),
            tripline_clickhouse_url: clickhouse_url(),
            ingest_extra: String::new(),
            clickhouse_extra: String::new(),
            brokers,
            netns: None,
        };
        let kafka = tripline_core::config::KafkaConfig {
            brokers: env.brokers.clone(),
            ..Default::default()
        };
        tripline_kafka::ensure_topics(
            &kafka,
            |_| None,
            &[
                &env.gateway_topic,
                &env.provider_topic,
                &env.dlq_topic,
                &env.alerts_topic,
            ],
            2,
        )
        .await
        .expect("create test topics");
        env
    }

    /// Another worker on the same topics, group and database, with its own port and files.
    pub fn another_worker(&self, tag: &str) -> TestEnv {
        let dir = self.dir.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        TestEnv {
            name: format!("{}-{tag}", self.name),
            database: self.database.clone(),
            gateway_topic: self.gateway_topic.clone(),
            provider_topic: self.provider_topic.clone(),
            dlq_topic: self.dlq_topic.clone(),
            alerts_topic: self.alerts_topic.clone(),
            group: self.group.clone(),
            dir,
            listen: format!("127.0.0.1:{}", free_port()),
            tripline_clickhouse_url: self.tripline_clickhouse_url.clone(),
            ingest_extra: self.ingest_extra.clone(),
            clickhouse_extra: self.clickhouse_extra.clone(),
            brokers: self.brokers.clone(),
            netns: self.netns.clone(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = format!(
            r#"[server]
listen = "{listen}"

[kafka]
brokers = "{brokers}"
ingest_group_id = "{group}"
gateway_topic = "{gateway}"
provider_topic = "{provider}"
dlq_topic = "{dlq}"
alerts_topic = "{alerts}"

[clickhouse]
url = "{ch}"
database = "{db}"
{ch_extra}

[ingest]
batch_max_age_ms = 200
retry_initial_ms = 100
retry_max_ms = 2000
{extra}

[enrich]
country_db = "{repo}/data/geo/country.mmdb"
asn_db = "{repo}/data/geo/asn.mmdb"
"#,
            listen = self.listen,
            brokers = self.brokers,
            group = self.group,
            gateway = self.gateway_topic,
            provider = self.provider_topic,
            dlq = self.dlq_topic,
            alerts = self.alerts_topic,
            ch = self.tripline_clickhouse_url,
            db = self.database,
            extra = self.ingest_extra,
            ch_extra = self.clickhouse_extra,
            repo = repo.display(),
        );
        let path = self.dir.join("tripline.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `tripline <role>` with this test's config; its log goes to `log_path(tag)`.
    pub fn spawn(&self, role: &str, tag: &str) -> Tripline {
        let log = std::fs::File::create(self.log_path(tag)).unwrap();
        let child = tripline_command(
            role,
            &self.config_path(),
            log,
            "info,tripline_ingest=debug",
            None,
        )
        .spawn()
        .expect("start tripline");
        Tripline { child }
    }

    pub fn log_path(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("tripline-{tag}.log"))
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(clickhouse_url())
            .with_database(&self.database)
            .with_validation(false)
    }

    /// Produces `history` to the gateway topic and waits until ClickHouse holds every event
    /// (the test's table holding nothing else yet).
    pub async fn store_history(&self, producer: &FutureProducer, key: &str, history: &[Vec<u8>]) {
        produce(producer, &self.gateway_topic, key, history).await;
        let stored = self
            .wait_for(
                "SELECT count() FROM gateway_requests",
                history.len() as f64,
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(stored, history.len() as f64, "history not stored");
    }

    /// A single number from ClickHouse (0 when the table does not exist yet).
    pub async fn scalar(&self, sql: &str) -> f64 {
        self.clickhouse()
            .query_raw(&format!("SELECT toFloat64(({sql}))"))
            .fetch_one::<f64>()
            .await
            .unwrap_or(0.0)
    }

    /// Waits until `sql` returns `expected`; returns the last value seen.
    pub async fn wait_for(&self, sql: &str, expected: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.scalar(sql).await;
            if (value - expected).abs() < 1e-9 || Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let (_, body) = http_get(&self.listen, "/metrics").await.unwrap_or_default();
        parse_metrics(&body)
    }

    /// Reads `count` dead letters (or what arrives before `timeout`).
    pub async fn dead_letters(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-dlq-reader", self.group))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .unwrap();
        consumer.subscribe(&[&self.dlq_topic]).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < count && Instant::now() < deadline {
            if let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
            {
                out.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
            }
        }
        tripline_kafka::close_consumer(consumer, Duration::from_secs(3)).await;
        out
    }
}

pub fn producer() -> FutureProducer {
    producer_on(&brokers())
}

pub fn producer_on(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Produces every payload (keyed by `key`) and waits for the broker to acknowledge each.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payloads: &[Vec<u8>]) {
    let mut deliveries = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        deliveries.push(
            tripline_kafka::enqueue(producer, record)
                .await
                .expect("enqueued"),
        );
    }
    for delivery in deliveries {
        tripline_kafka::delivered(delivery.await).expect("broker acknowledged");
    }
}

/// A running `tripline` process, killed if the test ends without stopping it.
pub struct Tripline {
    pub child: Child,
}

impl Tripline {
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.send_term();
        self.wait_clean(timeout)
    }

    /// SIGTERM, without waiting: to stop several processes at once, as a deployment does.
    pub fn send_term(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// Waits up to `timeout` for the process to exit; whether it exited 0 (killed if not).
    pub fn wait_clean(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_9();
        false
    }
}

impl Drop for Tripline {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_9();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET over loopback; returns (status, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Waits until tripline's `/readyz` answers 200.
pub async fn wait_ready(env: &TestEnv, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(&env.listen, "/readyz").await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `name{labels} value` lines → map (series with labels keep them in the key).
pub fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A valid gateway event.
pub fn gateway_event(id: &str, key: &str, ts_ms: i64, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts_ms},"api_key_id":"{key}","model":"gpt-4o-mini","provider":"openai","status":200,"prompt_tokens":100,"completion_tokens":20{extra}}}"#
    )
    .into_bytes()
}

impl TestEnv {
    /// Like [`TestEnv::spawn`], with extra environment variables (receiver secrets, the
    /// alerting consumer group); the log is appended to, so a restart keeps the first run's.
    pub fn spawn_with_env(&self, role: &str, tag: &str, vars: &[(&str, &str)]) -> Tripline {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(tag))
            .unwrap();
        let mut command = tripline_command(
            role,
            &self.config_path(),
            log,
            "info,tripline_alerting=debug",
            self.netns.as_deref(),
        );
        for (name, value) in vars {
            command.env(name, value);
        }
        Tripline {
            child: command.spawn().expect("start tripline"),
        }
    }
}

/// `tripline <role> --config <config>` with the test secret, logging to `log`, and none of the
/// `TRIPLINE_*` server addresses the test script exports (the config says where to go).
/// In `netns` when given (`ip netns exec` becomes tripline: the child is tripline's pid).
fn tripline_command(
    role: &str,
    config: &Path,
    log: std::fs::File,
    rust_log: &str,
    netns: Option<&str>,
) -> Command {
    let bin = env!("CARGO_BIN_EXE_tripline");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    command
        .args([role, "--config"])
        .arg(config)
        .env("TRIPLINE_FINGERPRINT_SECRET", SECRET)
        .env("RUST_LOG", rust_log)
        .env_remove("TRIPLINE_KAFKA_BROKERS")
        .env_remove("TRIPLINE_CLICKHOUSE_URL")
        .env_remove("TRIPLINE_CLICKHOUSE_CLUSTER")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    command
}

/// Waits until the log at `path` contains `needle`; panics with the log after `timeout`.
pub async fn wait_log(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(needle)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{needle:?} never appeared in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// Starts `tripline detect` on `config` with its HTTP server on a port of its own (ingest has
/// the config's); returns the process and that address.
pub fn spawn_detect(env: &TestEnv, config: &Path, tag: &str) -> (Tripline, String) {
    let log = std::fs::File::create(env.log_path(tag)).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // A detect-only worker neither fingerprints nor enriches: it must start without the secret.
    let child = tripline_command("detect", config, log, "info", None)
        .env("TRIPLINE_LISTEN", &listen)
        .env_remove("TRIPLINE_FINGERPRINT_SECRET")
        .spawn()
        .unwrap();
    (Tripline { child }, listen)
}
