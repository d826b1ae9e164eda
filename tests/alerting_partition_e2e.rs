//! Alerting with a standby, across hosts: each `tripline alert` runs in a network namespace of
//! its own (iproute2 `ip netns`), joined to this machine by two veth pairs, one that carries its
//! Kafka traffic and one for everything else (the receiver, ClickHouse, its API). Cutting the
//! active instance's Kafka link leaves it alive and able to reach the receiver, the case kill -9
//! cannot stage: it must stop paging within its session timeout, the standby must take over,
//! and once the link is back, what the cut-off instance still wrote must not win.
//!
//! The test runs its own tansu broker, which advertises an address each namespace routes over
//! its Kafka link. It needs root (CAP_NET_ADMIN), as CI and scripts/test.sh have.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ha::{key_of, pair_settled, AlertProcess, ACTIVE};
use common::hook::{alert_from, Hook, Received, Reply};
use common::proxy::Proxy;
use common::{clickhouse_url, free_port, produce, producer_on, wait_ready, TestEnv};
use tripline_core::alert::{Alert, AlertStatus};

const SESSION_TIMEOUT: Duration = Duration::from_millis(6_000);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root: CAP_NET_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host of its own: a namespace with a Kafka link and another link to this machine.
struct Host {
    ns: String,
    /// This machine's end of the Kafka link: set down to cut the host off Kafka.
    kafka_link: String,
    /// This machine's address on the Kafka link: the namespace's route to the broker.
    kafka_gateway: String,
    /// This machine's address on the other link (the receiver and ClickHouse proxy answer on
    /// every address).
    gateway: String,
    /// The host's own address on the other link: its API, and where its requests come from.
    address: String,
    broker_ip: String,
}

impl Host {
    /// Host `index` (0 or 1) of this test process, routing `broker_ip` over its Kafka link.
    fn new(index: u8, broker_ip: &str) -> Host {
        let id = std::process::id();
        let net = id % 250;
        let ns = format!("tl{id}h{index}");
        let kafka_link = format!("tlk{id}{index}");
        let other_link = format!("tlo{id}{index}");
        ip(&["netns", "add", &ns]);
        let host = Host {
            ns: ns.clone(),
            kafka_link: kafka_link.clone(),
            kafka_gateway: format!("10.{}.{net}.1", 211 + index),
            gateway: format!("10.{}.{net}.1", 221 + index),
            address: format!("10.{}.{net}.2", 221 + index),
            broker_ip: broker_ip.to_owned(),
        };
        for (link, octet) in [(&kafka_link, 211 + index), (&other_link, 221 + index)] {
            let inside = format!("{link}n");
            ip(&["link", "add", link, "type", "veth", "peer", "name", &inside]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&[
                "addr",
                "add",
                &format!("10.{octet}.{net}.1/30"),
                "dev",
                link,
            ]);
            ip(&["link", "set", link, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.{octet}.{net}.2/30"),
                "dev",
                &inside,
            ]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        host.route_to_broker();
        host
    }

    fn cut_kafka(&self) {
        ip(&["link", "set", &self.kafka_link, "down"]);
    }

    fn heal_kafka(&self) {
        ip(&["link", "set", &self.kafka_link, "up"]);
        self.route_to_broker();
    }

    fn route_to_broker(&self) {
        let broker = format!("{}/32", self.broker_ip);
        ip(&[
            "-n",
            &self.ns,
            "route",
            "replace",
            &broker,
            "via",
            &self.kafka_gateway,
        ]);
    }

    fn sent(&self, r: &Received) -> bool {
        r.from.ip() == self.address.parse::<IpAddr>().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pairs with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A tansu broker of this test's own on `ip:port`, reachable from every namespace.
struct Broker {
    child: Child,
    addr: String,
    ip: String,
}

impl Broker {
    async fn start(dir: &std::path::Path) -> Broker {
        let id = std::process::id();
        let ip = format!("10.209.{}.1", id % 250);
        ip_lo(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        let port = free_port();
        let addr = format!("{ip}:{port}");
        let bin = std::env::var("TRIPLINE_TANSU_BIN")
            .expect("TRIPLINE_TANSU_BIN (scripts/env.sh sets it; scripts/install.sh builds tansu)");
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let child = Command::new(bin)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://0.0.0.0:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{addr}"))
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on {addr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Broker { child, addr, ip }
    }
}

fn ip_lo(args: &[&str]) {
    // An address left over from an earlier run of this pid is fine.
    let _ = Command::new("ip").args(args).output();
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        ip_lo(&["addr", "del", &format!("{}/32", self.ip), "dev", "lo"]);
    }
}

/// One `tripline alert` in its host.
struct Instance {
    alert: AlertProcess,
    host: Host,
}

impl std::ops::Deref for Instance {
    type Target = AlertProcess;
    fn deref(&self) -> &AlertProcess {
        &self.alert
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut AlertProcess {
        &mut self.alert
    }
}

impl Instance {
    fn start(base: &TestEnv, host: Host, tag: &'static str, hook: SocketAddr, ch: &Proxy) -> Self {
        let mut env = base.another_worker(tag);
        env.netns = Some(host.ns.clone());
        env.listen = format!("{}:{}", host.address, free_port());
        let ch_port = ch.addr.rsplit(':').next().unwrap();
        env.tripline_clickhouse_url = format!("http://{}:{ch_port}", host.gateway);
        env.ingest_extra = format!(
            r#"
[alerting]
state_dir = "{dir}/state"

[alerting.ha]
enabled = true
instance = "{tag}"
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
url = "http://{gateway}:{hook_port}/hook"
secret_env = "E2E_WEBHOOK_SECRET"
"#,
            dir = env.dir.display(),
            group = base.group,
            alerts = base.alerts_topic,
            gateway = host.gateway,
            hook_port = hook.port(),
        );
        Instance {
            alert: AlertProcess::start(env, tag),
            host,
        }
    }
}

async fn roles_settled(instances: &[Instance; 2]) -> usize {
    pair_settled(&instances[0], &instances[1], Duration::from_secs(90)).await
}

async fn publish(brokers: &str, topic: &str, alerts: &[Alert]) {
    let producer = producer_on(brokers);
    for a in alerts {
        produce(
            &producer,
            topic,
            &a.fingerprint,
            &[serde_json::to_vec(a).unwrap()],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_kafka_stops_paging_within_its_session_timeout() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("alert_partition_{}", std::process::id()));
    let broker = Broker::start(&dir.join("tansu")).await;
    let hosts = [Host::new(0, &broker.ip), Host::new(1, &broker.ip)];
    let base = TestEnv::new_on("alert_partition", broker.addr.clone()).await;
    let (hook, hook_addr) = Hook::start_on("0.0.0.0:0", &[Reply::Status(503); 1000], false).await;
    let clickhouse = Proxy::start_on("0.0.0.0:0", clickhouse_url().replace("http://", "")).await;

    let [h0, h1] = hosts;
    let first = Instance::start(&base, h0, "h0", hook_addr, &clickhouse);
    assert!(
        wait_ready(&first.env, Duration::from_secs(60)).await,
        "h0 ready:\n{}",
        first.log()
    );
    first.wait_said(ACTIVE, 1, Duration::from_secs(60)).await;
    let second = Instance::start(&base, h1, "h1", hook_addr, &clickhouse);
    assert!(
        wait_ready(&second.env, Duration::from_secs(60)).await,
        "h1 ready:\n{}",
        second.log()
    );
    let mut instances = [first, second];
    let active = roles_settled(&instances).await;
    let standby = 1 - active;

    // A notification pending on a failing receiver, tried by the active host.
    publish(
        &base.brokers,
        &base.alerts_topic,
        &[alert_from("spend_spike", "key-1", AlertStatus::Firing)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while hook
        .received()
        .iter()
        .filter(|r| instances[active].host.sent(r))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the active host never tried twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cut the active host off Kafka; it can still reach the receiver.
    let stops_before = instances[active].said("alerting partition revoked: stopping");
    let actives_before = instances[standby].said(ACTIVE);
    instances[active].host.cut_kafka();
    let cut = Instant::now();
    instances[standby]
        .wait_said(ACTIVE, actives_before + 1, Duration::from_secs(40))
        .await;
    let took_over = cut.elapsed();
    instances[active]
        .wait_said(
            "alerting partition revoked: stopping",
            stops_before + 1,
            SESSION_TIMEOUT + Duration::from_secs(6),
        )
        .await;
    let stopped = cut.elapsed();
    println!("cut off: the standby took over after {took_over:?}; the cut-off host stopped after {stopped:?}");
    // Past its session timeout (and the drain of an attempt in flight), the cut-off host
    // sends nothing more, though the receiver keeps failing and it could reach it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let late: Vec<Duration> = hook
        .received()
        .iter()
        .filter(|r| instances[active].host.sent(r))
        .map(|r| r.at.saturating_duration_since(cut))
        .filter(|after| *after > SESSION_TIMEOUT + Duration::from_secs(3))
        .collect();
    assert!(
        late.is_empty(),
        "the cut-off host still paged {late:?} after the cut"
    );

    // The link comes back while the cut-off host's last state (written at its stop, 7 s after
    // the cut) is still queued in its Kafka client (30 s message timeout): it arrives now, and
    // every reader ignores it as an earlier term. The host rejoins, as a standby or handed the
    // active role with its successor's state.
    instances[active].host.heal_kafka();
    instances[standby]
        .wait_said("a state from an earlier term", 1, Duration::from_secs(40))
        .await;
    let now_active = roles_settled(&instances).await;

    // Whichever is active delivers once the receiver recovers (after its backoff, which can
    // reach a minute by now), with the notification's one webhook-id.
    hook.plan.lock().unwrap().clear();
    let recovered = hook.received().len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !hook.received()[recovered..]
        .iter()
        .any(|r| instances[now_active].host.sent(r) && key_of(r) == "key-1")
    {
        assert!(
            Instant::now() < deadline,
            "the active host never delivered:\n{}",
            instances[now_active].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: BTreeSet<String> = hook
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one notification throughout: {ids:?}");

    // Whichever is active is killed once it has stored the delivery (results are stored within
    // 200 ms): the other takes over with the last term's state, in which the notification was
    // delivered, and sends nothing again (the stale state still had it pending).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = 1 - now_active;
    let before = hook.received().len();
    let actives = instances[other].said(ACTIVE);
    instances[now_active].process.kill_9();
    instances[other]
        .wait_said(ACTIVE, actives + 1, Duration::from_secs(40))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again: Vec<String> = hook.received()[before..].iter().map(key_of).collect();
    assert!(
        again.is_empty(),
        "sent again after the second failover: {again:?}"
    );
    let last_active_line = instances[other]
        .log()
        .lines()
        .rfind(|l| l.contains(ACTIVE))
        .unwrap_or_default()
        .to_owned();
    assert!(
        last_active_line.contains("pending_notifications=0"),
        "{last_active_line}"
    );
}
