//! Receivers for the alerting tests: a webhook on 127.0.0.1 that records what arrives and
//! when, and answers as each test scripts (200, 500, 429 + Retry-After, or hang); and a plain
//! HTTP client for the alerting API.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tripline_core::alert::{fingerprint, Alert, AlertStatus, Evidence, Severity};

use super::{TestEnv, Tripline};

/// The signing secret of the tests' webhook receivers (`secret_env = "E2E_WEBHOOK_SECRET"`).
pub const WEBHOOK_SECRET: &str = "e2e-webhook-signing-secret-0123456789";
pub const API_TOKEN: &str = "e2e-alerting-api-token-0123456789";

/// Starts `tripline alert` with the receivers' secret, the API token and an alerting consumer
/// group of the test's own.
pub fn spawn_alert(env: &TestEnv, tag: &str) -> Tripline {
    let group = format!("{}-alerting", env.group);
    env.spawn_with_env(
        "alert",
        tag,
        &[
            ("E2E_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("TRIPLINE_ALERTING_GROUP_ID", group.as_str()),
            ("TRIPLINE_ALERTING_API_TOKEN", API_TOKEN),
        ],
    )
}

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Never answers (the sender times out or dies first).
    Hang,
}

/// Every reply is delayed this long (a slow receiver); 0 = answer at once.
pub static SLOW_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// Who sent it.
    pub from: SocketAddr,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A webhook receiver on 127.0.0.1; replies follow `plan`, then 200.
#[derive(Clone, Default)]
pub struct Hook {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub plan: Arc<Mutex<VecDeque<Reply>>>,
    /// Replies wait `SLOW_MS`.
    slow: bool,
}

impl Hook {
    pub async fn start(plan: &[Reply]) -> (Hook, String) {
        Hook::start_with(plan, false).await
    }

    pub async fn start_with(plan: &[Reply], slow: bool) -> (Hook, String) {
        let (hook, addr) = Hook::start_on("127.0.0.1:0", plan, slow).await;
        (hook, format!("http://{addr}/hook"))
    }

    /// A receiver listening on `bind` (e.g. "0.0.0.0:0" for other network namespaces); its
    /// address, to which add the path `/hook`.
    pub async fn start_on(bind: &str, plan: &[Reply], slow: bool) -> (Hook, SocketAddr) {
        let hook = Hook {
            slow,
            ..Hook::default()
        };
        hook.plan.lock().unwrap().extend(plan.iter().copied());
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook.clone());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        (hook, addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived (or `timeout`); returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.received.lock().unwrap().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received()
    }
}

async fn receive(
    State(hook): State<Hook>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hook.received.lock().unwrap().push(Received {
        at: Instant::now(),
        from,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    });
    let reply = hook.plan.lock().unwrap().pop_front();
    if hook.slow {
        let ms = SLOW_MS.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match reply {
        None | Some(Reply::Status(200)) => StatusCode::OK.into_response(),
        Some(Reply::Status(code)) => {
            (StatusCode::from_u16(code).unwrap(), "scripted failure").into_response()
        }
        Some(Reply::TooMany(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// One request to the alerting API; the status and the JSON body (Null when empty).
pub async fn api(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to tripline");
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned()))
    };
    (status, json)
}

/// An alert as a detector would publish it, about `key`.
pub fn alert_from(detector: &str, key: &str, status: AlertStatus) -> Alert {
    let labels: std::collections::BTreeMap<String, String> = [
        ("detector".to_owned(), detector.to_owned()),
        ("api_key_id".to_owned(), key.to_owned()),
    ]
    .into();
    let now = super::now_ms();
    Alert {
        version: 1,
        fingerprint: fingerprint(&labels),
        detector: detector.into(),
        status,
        severity: Severity::Warning,
        labels,
        summary: format!("spend of {key} is 10x its usual"),
        description: "a spike".into(),
        observed: 10.0,
        expected: 1.0,
        upper: 2.0,
        score: 0.99,
        window_start: now,
        window_end: now,
        starts_at: now,
        ends_at: (status == AlertStatus::Resolved).then_some(now),
        emitted_at: now,
        evidence: Evidence::default(),
    }
}

pub async fn publish(env: &TestEnv, alerts: &[Alert]) {
    let producer = super::producer();
    for a in alerts {
        let json = serde_json::to_vec(a).unwrap();
        super::produce(&producer, &env.alerts_topic, &a.fingerprint, &[json]).await;
    }
}
