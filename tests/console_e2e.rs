//! The built-in console end to end, in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with fantoccini).
//!
//! A firing alert is made the honest way: 40 minutes of ordinary traffic for one key go
//! through Kafka and `tripline ingest` into ClickHouse, then `tripline run` (ingest, detectors
//! and alerting with its API and the console) starts on that history and a spend spike is
//! produced: the detector fires, alerting tracks the alert. The test then checks the API (401
//! without the token; the series endpoint's spend and band against the detector's own figures)
//! and drives the page: a wrong token shows an error and no data; the right one lists the alert;
//! its chart shows the band and the finding at the spend the detector saw; a silence created
//! with the form appears and mutes the alert (checked through the API too), and expiring it
//! shows it expired. Screenshots go to `target/test-output/console/`.
//!
//! Without chromium or chromedriver the test fails when `CI=true` and is skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const API_TOKEN: &str = "e2e-console-api-token-0123456789";
const KEY: &str = "k-console";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SPIKE_REQUESTS: i64 = 400;
const SPIKE_COST: f64 = 0.1;

/// Fast detectors; the alert stays firing for the length of the test.
const DETECT: &str = r#"
[detect]
eval_interval_ms = 1000
allowed_lateness_s = 5
history_hours = 2
resolve_after_s = 900
"#;

fn alerting(env: &TestEnv, hook_url: &str) -> String {
    format!(
        r#"
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
url = "{hook_url}"
"#,
        dir = env.dir.display(),
    )
}

/// A webhook receiver that accepts everything (the notifications are not under test here).
async fn start_hook() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An ordinary request of `key` costing `cost_usd`.
fn event(id: &str, key: &str, ts: i64, cost_usd: f64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","ts":{ts},"api_key_id":"{key}","project":"console","model":"gpt-4o-mini","provider":"openai","status":200,"prompt_tokens":100,"completion_tokens":20,"cost_usd":{cost_usd},"client_ip":"91.0.0.7","client_country":"DE","user_agent":"openai-python/1.52.0"}}"#
    )
    .into_bytes()
}

/// One HTTP/1.1 request over loopback: (status, headers in lower case, body).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

async fn get_json(addr: &str, path: &str) -> Value {
    let (status, _, body) = http(addr, "GET", path, Some(API_TOKEN), None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Where the test's screenshots go: `<target>/test-output/console/`.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-output/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` (skip) when the browser is missing and not on CI; on CI a missing browser fails.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "console e2e needs {} (Debian packages chromium and chromium-driver; scripts/install.sh installs them)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

async fn start_driver(env: &TestEnv) -> Driver {
    let port = free_port();
    let log = std::fs::File::create(env.dir.join("chromedriver.log")).unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Listening is enough: chromedriver keeps connections open, even with `Connection: close`.
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn open_browser(driver: &Driver, env: &TestEnv) -> Client {
    let profile = env.dir.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,2000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
}

async fn click(browser: &Client, css: &str) {
    let element = browser.find(Locator::Css(css)).await.unwrap();
    element.click().await.unwrap();
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let element = browser.find(Locator::Css(css)).await.unwrap();
    element.send_keys(text).await.unwrap();
}

async fn shown(browser: &Client, css: &str) -> bool {
    let element = browser.find(Locator::Css(css)).await.unwrap();
    element.is_displayed().await.unwrap()
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn screenshot(browser: &Client, name: &str) -> PathBuf {
    let png = browser.screenshot().await.unwrap();
    let path = output_dir().join(name);
    std::fs::write(&path, png).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_a_firing_alert_its_chart_and_silences() {
    let started = Instant::now();
    if !browser_available() {
        return;
    }
    let mut env = TestEnv::new("console").await;
    let hook = start_hook().await;
    env.ingest_extra = format!("{}{DETECT}", alerting(&env, &hook));

    // 40 minutes of history: 20 requests a minute at $0.005 each ($0.10 a minute).
    let mut ingest = env.spawn("ingest", "ingest");
    assert!(wait_ready(&env, Duration::from_secs(60)).await);
    let producer = producer();
    let now = now_ms();
    let mut history = Vec::new();
    for minute in (2..42).rev() {
        for i in 0..20 {
            let ts = now - minute * 60_000 + i * 2_000;
            history.push(event(&format!("h-{minute}-{i}"), KEY, ts, 0.005));
        }
    }
    env.store_history(&producer, KEY, &history).await;
    assert!(ingest.terminate(Duration::from_secs(20)));

    // Everything, with the alerting API and the console.
    let group = format!("{}-alerting", env.group);
    let _run = env.spawn_with_env(
        "run",
        "run",
        &[
            ("TRIPLINE_ALERTING_API_TOKEN", API_TOKEN),
            ("TRIPLINE_ALERTING_GROUP_ID", group.as_str()),
        ],
    );
    wait_log(
        &env.log_path("run"),
        "detectors ready",
        Duration::from_secs(60),
    )
    .await;
    assert!(wait_ready(&env, Duration::from_secs(30)).await);
    let addr = env.listen.clone();

    // The spike: 400 requests at $0.10 within one minute, sent once the minute before it is
    // closed and folded by the detector (lateness 5 s, a cycle a second), so that it is judged
    // against the band of every earlier minute, which is what the series endpoint recomputes.
    loop {
        let second = now_ms() / 1000 % 60;
        if (15..40).contains(&second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t = now_ms();
    let spike_minute_ms = t / 60_000 * 60_000;
    let spike: Vec<Vec<u8>> = (0..SPIKE_REQUESTS)
        .map(|i| event(&format!("spike-{i}"), KEY, t + i, SPIKE_COST))
        .collect();
    produce(&producer, &env.gateway_topic, KEY, &spike).await;

    // The detector fires and alerting tracks the alert.
    let deadline = Instant::now() + Duration::from_secs(60);
    let fingerprint = loop {
        let alerts = get_json(&addr, "/api/v1/alerts").await;
        let firing = alerts.as_array().unwrap().iter().find(|a| {
            a["state"] == "firing"
                && a["labels"]["api_key_id"] == KEY
                && a["labels"]["detector"] == "spend_spike"
        });
        if let Some(a) = firing {
            break a["fingerprint"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no firing spend_spike alert for {KEY}: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // The API refuses requests without the token, or with another one.
    for path in [
        "/api/v1/alerts",
        "/api/v1/silences",
        &format!("/api/v1/keys/{KEY}/series"),
    ] {
        let (status, _, _) = http(&addr, "GET", path, None, None).await;
        assert_eq!(status, 401, "GET {path} without a token");
        let (status, _, _) = http(&addr, "GET", path, Some("not-the-token-0123456789"), None).await;
        assert_eq!(status, 401, "GET {path} with a wrong token");
    }
    let (status, _, body) = http(
        &addr,
        "GET",
        &format!("/api/v1/keys/{KEY}/series?from=yesterday"),
        Some(API_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("\"error\""), "{body}");
    let (status, _, _) = http(
        &addr,
        "GET",
        "/api/v1/keys/a%0Ab/series",
        Some(API_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400, "a control character in the key id");

    // The series: the spike's spend, and the band the detector judged it against. The finding
    // the detector stored last for the spike carries its expected and upper.
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = loop {
        let series = get_json(&addr, &format!("/api/v1/keys/{KEY}/series")).await;
        let spent: f64 = series["spend_usd"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                tripline_core::time::parse_rfc3339_ms(p["minute"].as_str().unwrap()).unwrap()
                    >= spike_minute_ms
            })
            .map(|p| num(&p["value"]))
            .sum();
        let found = series["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["status"] == "firing" && f["detector"] == "spend_spike");
        if (spent - SPIKE_REQUESTS as f64 * SPIKE_COST).abs() < 1e-6 && found {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "series never showed the spike: {series}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let spike_minute = tripline_core::time::format_ms(spike_minute_ms);
    let point = series["spend_usd"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["minute"] == spike_minute.as_str())
        .unwrap_or_else(|| panic!("no point at {spike_minute}"));
    assert!((num(&point["value"]) - 40.0).abs() < 1e-6, "{point}");
    let finding = series["findings"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|f| f["status"] == "firing" && f["detector"] == "spend_spike")
        .unwrap()
        .clone();
    assert_eq!(finding["window_start"], spike_minute.as_str(), "{finding}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    for field in ["expected", "upper"] {
        assert!(
            close(num(&point[field]), num(&finding[field])),
            "the band's {field} is the detector's: {point} vs {finding}"
        );
    }
    assert!(num(&point["upper"]) < 40.0);
    let requests = series["requests"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["minute"] == spike_minute.as_str())
        .unwrap();
    assert_eq!(num(&requests["value"]), SPIKE_REQUESTS as f64);
    assert!(
        num(&requests["upper"]) < SPIKE_REQUESTS as f64,
        "{requests}"
    );
    // The same rows are in ClickHouse.
    let stored_observed = env
        .scalar(&format!(
            "SELECT max(observed) FROM alerts WHERE api_key_id = '{KEY}' AND status = 'firing'"
        ))
        .await;
    let max_observed = series["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| num(&f["observed"]))
        .fold(0.0, f64::max);
    assert!(close(stored_observed, max_observed));

    // The page: a static shell with a strict CSP, served without the token.
    let (status, head, _) = http(&addr, "GET", "/ui/", None, None).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );

    let driver = start_driver(&env).await;
    let browser = open_browser(&driver, &env).await;
    browser.goto(&format!("http://{addr}/")).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Tripline");
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/ui/"));

    // A wrong token: an error, no data.
    let token = wait_for(&browser, "#token").await;
    token.send_keys("a-wrong-token-0123456789").await.unwrap();
    click(&browser, "#token-submit").await;
    let error = wait_for(&browser, "#token-error:not(.hidden)").await;
    assert!(error.text().await.unwrap().contains("401"));
    assert!(!shown(&browser, "#app").await);
    assert_eq!(count(&browser, "tr.alert").await, 0);
    assert_eq!(count(&browser, "tr.silence").await, 0);

    // The right one: the alert is listed, firing.
    let token = wait_for(&browser, "#token").await;
    token.send_keys(API_TOKEN).await.unwrap();
    click(&browser, "#token-submit").await;
    let row_css = format!("tr.alert[data-fingerprint=\"{fingerprint}\"]");
    let row = wait_for(&browser, &format!("{row_css}[data-state=\"firing\"]")).await;
    let text = row.text().await.unwrap();
    assert!(text.contains(&format!("api_key_id={KEY}")), "{text}");
    assert!(text.contains("spend_spike"), "{text}");
    assert!(!shown(&browser, "#token-error").await);

    // Its chart: the band, the observed line, and the finding at the spend the detector saw.
    row.find(Locator::Css("td.summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&browser, "svg#spend-chart path.band").await;
    wait_for(&browser, "svg#spend-chart path.series").await;
    wait_for(&browser, "svg#requests-chart path.band").await;
    let marker = wait_for(
        &browser,
        &format!("svg#spend-chart circle.finding[data-minute=\"{spike_minute}\"]"),
    )
    .await;
    let observed: f64 = marker
        .attr("data-observed")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let upper: f64 = marker
        .attr("data-upper")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        series["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| close(num(&f["observed"]), observed)),
        "the marker is at a finding's observed spend ({observed})"
    );
    assert!(close(upper, num(&finding["upper"])));
    let band = browser
        .find(Locator::Css("svg#spend-chart path.band"))
        .await
        .unwrap()
        .attr("d")
        .await
        .unwrap()
        .unwrap();
    assert!(band.starts_with('M') && band.contains('Z'), "{band}");
    let peak = browser.find(Locator::Css("#spend-peak")).await.unwrap();
    assert!(peak.text().await.unwrap().contains("$40.00"));
    assert_eq!(
        count(&browser, "#findings tr.finding-row").await,
        series["findings"].as_array().unwrap().len()
    );
    assert_eq!(
        browser
            .find(Locator::Css("#chart-key"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        KEY
    );

    // A silence from the form (its matchers prefilled from the alert).
    click(&browser, &format!("{row_css} button.silence-alert")).await;
    let matchers = browser
        .find(Locator::Css("#silence-matchers"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(matchers, format!("api_key_id=\"{KEY}\""));
    type_into(&browser, "#silence-created-by", "e2e").await;
    type_into(&browser, "#silence-comment", "<b>console</b> test").await;
    click(&browser, "#silence-submit").await;
    let silence = wait_for(&browser, "tr.silence[data-state=\"active\"]").await;
    let silence_id = silence.attr("data-id").await.unwrap().unwrap();
    let text = silence.text().await.unwrap();
    // User text is shown as text, never as markup.
    assert!(text.contains("<b>console</b> test"), "{text}");
    assert_eq!(count(&browser, "tr.silence td.comment b").await, 0);
    assert!(text.contains(&format!("api_key_id=\"{KEY}\"")), "{text}");

    // Through the API: the silence exists and mutes the alert.
    let alerts = get_json(&addr, "/api/v1/alerts").await;
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fingerprint"] == fingerprint.as_str())
        .unwrap();
    assert_eq!(alert["silenced_by"], json!([silence_id]), "{alert}");
    // The page says so too (it re-read the alerts after creating the silence).
    wait_for(&browser, &format!("{row_css} .silenced")).await;
    let shot = screenshot(&browser, "console.png").await;

    // Expire it.
    click(
        &browser,
        &format!("tr.silence[data-id=\"{silence_id}\"] button.expire"),
    )
    .await;
    wait_for(
        &browser,
        &format!("tr.silence[data-id=\"{silence_id}\"][data-state=\"expired\"]"),
    )
    .await;
    assert_eq!(
        count(
            &browser,
            &format!("tr.silence[data-id=\"{silence_id}\"] button.expire")
        )
        .await,
        0
    );
    let silences = get_json(&addr, "/api/v1/silences").await;
    let expired = silences
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == silence_id.as_str())
        .unwrap();
    assert_eq!(expired["state"], "expired");
    let alerts = get_json(&addr, "/api/v1/alerts").await;
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fingerprint"] == fingerprint.as_str())
        .unwrap();
    assert_eq!(alert["silenced_by"], json!([]), "{alert}");
    assert_eq!(count(&browser, &format!("{row_css} .silenced")).await, 0);
    screenshot(&browser, "console-expired.png").await;

    // Signing out forgets the token and the data.
    click(&browser, "#sign-out").await;
    wait_for(&browser, "#login:not(.hidden)").await;
    assert_eq!(count(&browser, "tr.alert").await, 0);
    let stored_token = browser
        .execute("return sessionStorage.length;", vec![])
        .await
        .unwrap();
    assert_eq!(stored_token, json!(0));

    browser.close().await.unwrap();
    drop(driver);
    eprintln!(
        "console e2e: screenshot {} ({:.1} s)",
        shot.display(),
        started.elapsed().as_secs_f64()
    );
}
