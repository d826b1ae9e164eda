//! The built-in console: a small web page served by Tripline's own HTTP server (no build step,
//! no CDN), and the one API call it needs beyond the alerting API.
//!
//! Served with the alerting API (same process, same `server.listen`, same bearer token from
//! `TRIPLINE_ALERTING_API_TOKEN`; without a token neither is served):
//!
//! | request | does |
//! |---|---|
//! | `GET /ui/` (`/` redirects there) | the page: HTML, `app.js`, `style.css`, compiled into the binary |
//! | `GET /api/v1/keys/{api_key_id}/series?from=…&to=…` | per-minute spend and requests of one key, each with its baseline band, and the key's alert rows (findings) |
//!
//! The page is a static shell that holds no data, so it loads without the token; it asks for the
//! token, keeps it in `sessionStorage` (gone when the tab closes), sends it as
//! `Authorization: Bearer …` on every API call, and asks again on a 401. It shows the alerts
//! (firing first, with what silences or inhibits them), the silences (create, expire) and, for
//! an alert with an `api_key_id`, the key's spend and request rate against their bands with the
//! findings marked. Every value from the API is put on the page as text (`textContent`), never
//! as markup, and the page is served with a Content-Security-Policy that allows only its own
//! script and style files and API calls to its own origin.
//!
//! The series: `from`/`to` are RFC 3339 or epoch seconds (or milliseconds); the default is the
//! last 3 hours, at most 24 hours are returned. The spend band is the spend_spike detector's own:
//! the key's minutes go through the detector crate's fold (`tripline_detector::engine::
//! fold_key_minute`, params from the config as the config watcher holds it now, the version
//! the detectors run, and the key's or project's `min_abs_usd` override), from the key's
//! first minute with traffic, idle minutes as zero, `detect.history_hours` of warm-up before
//! `from` (at most 48). Each minute is shown with the expectation the model had before it and
//! the sustained rule's evidence after it. One difference, said in the JSON: the detector also
//! scales a key's expectation by how busy the other keys are (the crowd), which a chart of one
//! key cannot know, so the chart's evidence is the key's alone. The request-rate
//! band has no detector behind it and is for orientation only: an exponentially weighted mean
//! (same half-life) ± 3 × max(its standard deviation, √mean), the Poisson spread of a count
//! being the floor. Keys are the fingerprinted ids the pipeline stores; nothing else about a key
//! is read.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;
use tripline_core::config::{Config, DetectConfig};
use tripline_core::models::ewma::{alpha_from_half_life, Ewma};
use tripline_core::models::seasonal::hour_of_week;
use tripline_core::models::spend::{SpendModel, SpendParams};
use tripline_core::models::sustained::SustainedConfig;
use tripline_detector::engine::{fold_key_minute, Crowding, Evidence};

use crate::problem;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// Only the page's own files and API; no inline script or style, no framing, no forms posting
/// elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MINUTE_S: i64 = 60;
/// Without `from`: this long before `to`.
const DEFAULT_RANGE_S: i64 = 3 * 3600;
/// The longest range returned (1,440 minutes).
const MAX_RANGE_S: i64 = 24 * 3600;
/// The longest warm-up folded before `from`, whatever `detect.history_hours` says.
const MAX_WARMUP_S: i64 = 48 * 3600;
/// Width of the request-rate band, in spreads.
const REQUEST_BAND_K: f64 = 3.0;
/// Findings returned at most (the newest).
const MAX_FINDINGS: u64 = 500;

/// What the console's API needs.
#[derive(Clone)]
pub struct Console {
    /// The alerting API's bearer token (its digest).
    pub token: tripline_core::auth::TokenDigest,
    pub clickhouse: clickhouse::Client,
    /// The config as the file says now (the binary's config watcher): the chart folds with
    /// the running `[detect]`.
    pub live: watch::Receiver<Arc<Config>>,
}

pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::temporary("/ui/") }))
        .route(
            "/ui/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/v1/keys/{api_key_id}/series", get(series))
        .with_state(console)
}

/// A static file of the page with its security headers.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SeriesQuery {
    from: Option<String>,
    to: Option<String>,
}

/// One minute of a series, with the band the minute was judged against (`None` before the
/// key's first traffic and, for spend, before the detector's warm-up ends: it could not fire).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub minute: String,
    pub value: f64,
    pub expected: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// Spend only: the sustained rule's evidence after this minute (it alarms from
    /// `detect.spend_spike.sustained.threshold`), for this key alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Series {
    /// How the band is computed, for the reader of the JSON.
    band: &'static str,
    points: Vec<Point>,
}

/// A row of the ClickHouse `alerts` table for the key: one state change of one alert.
#[derive(Debug, Serialize, Deserialize, clickhouse::Row)]
struct Finding {
    #[serde(skip_serializing)]
    emitted_s: u32,
    #[serde(skip_serializing)]
    window_start_s: u32,
    #[serde(skip_serializing)]
    window_end_s: u32,
    #[serde(skip_serializing)]
    starts_s: u32,
    fingerprint: String,
    detector: String,
    status: String,
    severity: String,
    observed: f64,
    expected: f64,
    upper: f64,
    score: f64,
    summary: String,
}

#[derive(Debug, Serialize)]
struct FindingView {
    emitted_at: String,
    window_start: String,
    window_end: String,
    starts_at: String,
    #[serde(flatten)]
    row: Finding,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct MinuteRow {
    minute: u32,
    project: String,
    requests: u64,
    cost_usd: f64,
}

async fn series(
    State(console): State<Console>,
    headers: HeaderMap,
    key: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    if !crate::bearer_ok(&console.token, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let key = match key {
        Ok(UrlPath(key)) => key,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("api_key_id: {e}")),
    };
    if let Err(e) = check_key(&key) {
        return problem(StatusCode::BAD_REQUEST, e);
    }
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let now_s = tripline_core::time::now_ms() / 1000;
    let (from_s, to_s) = match range(query.from.as_deref(), query.to.as_deref(), now_s) {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let detect = live_detect(&console);
    let warmup_s = i64::try_from(detect.history_hours.saturating_mul(3600))
        .unwrap_or(MAX_WARMUP_S)
        .min(MAX_WARMUP_S);
    let minutes = match key_minutes(&console.clickhouse, &key, from_s - warmup_s, to_s).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let findings = match findings(&console.clickhouse, &key, from_s, to_s).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let project = minutes
        .iter()
        .rev()
        .find(|m| !m.project.is_empty())
        .map_or(String::new(), |m| m.project.clone());
    let base = match detect.spend_spike.model.validate() {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut judged = base.clone();
    if let Some(floor) = detect
        .override_for(&key, &project)
        .and_then(|o| o.min_abs_usd)
    {
        judged.config.min_abs_usd = floor;
    }
    let values: Vec<(i64, f64, u64)> = minutes
        .iter()
        .map(|m| (i64::from(m.minute), m.cost_usd, m.requests))
        .collect();
    let sustained = detect.spend_spike.sustained;
    let (spend, requests) = bands(&values, from_s, to_s, &base, &judged, &sustained);
    let body = serde_json::json!({
        "api_key_id": key,
        "project": project,
        "from": tripline_core::time::format_ms(from_s * 1000),
        "to": tripline_core::time::format_ms(to_s * 1000),
        "step_s": MINUTE_S,
        "spend_usd": Series {
            band: "spend_spike: the detector's own fold (SpendModel and sustained evidence) with the \
                   live [detect.spend_spike] settings (expected, upper = expected + band; null \
                   before its warm-up; evidence: the sustained rule's sum for this key alone)",
            points: spend,
        },
        "requests": Series {
            band: "orientation only: EWMA mean ± 3 × max(sd, √mean), same half-life",
            points: requests,
        },
        "findings": findings,
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

fn unavailable(err: clickhouse::error::Error) -> Response {
    warn!(%err, "console: clickhouse query failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("clickhouse query failed: {err}"),
    )
}

/// `[detect]` as the config file says now (as the detectors follow it).
fn live_detect(console: &Console) -> DetectConfig {
    console.live.borrow().detect.clone()
}

/// An id as the pipeline stores it: 1 to 256 bytes, no control characters, not blank.
pub fn check_key(key: &str) -> Result<(), String> {
    let max = tripline_core::event::limits::MAX_ID_LEN;
    if key.trim().is_empty() {
        return Err("api_key_id is empty".into());
    }
    if key.len() > max {
        return Err(format!("api_key_id is longer than {max} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err("api_key_id contains control characters".into());
    }
    Ok(())
}

/// Epoch seconds from RFC 3339, epoch seconds or epoch milliseconds (above 10^11).
fn parse_time(field: &str, text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(if n.abs() >= 100_000_000_000 {
            n / 1000
        } else {
            n
        });
    }
    tripline_core::time::parse_rfc3339_ms(text)
        .map(|ms| ms.div_euclid(1000))
        .ok_or_else(|| format!("{field} {text:?} is neither RFC 3339 nor epoch seconds"))
}

/// `[from, to)` in whole minutes: `to` defaults to the end of the current minute, `from` to 3
/// hours before `to`; at most 24 hours.
fn range(from: Option<&str>, to: Option<&str>, now_s: i64) -> Result<(i64, i64), String> {
    let ceil = |s: i64| (s + MINUTE_S - 1).div_euclid(MINUTE_S) * MINUTE_S;
    let to_s = match to {
        Some(t) => ceil(parse_time("to", t)?),
        None => ceil(now_s + 1),
    };
    let from_s = match from {
        Some(f) => parse_time("from", f)?.div_euclid(MINUTE_S) * MINUTE_S,
        None => to_s - DEFAULT_RANGE_S,
    };
    if from_s >= to_s {
        return Err("from must be before to".into());
    }
    if to_s - from_s > MAX_RANGE_S {
        return Err(format!(
            "the range is longer than {} hours",
            MAX_RANGE_S / 3600
        ));
    }
    if from_s < 0 || to_s > i64::from(u32::MAX) {
        return Err("the range is outside 1970..2106".into());
    }
    Ok((from_s, to_s))
}

async fn key_minutes(
    client: &clickhouse::Client,
    key: &str,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<MinuteRow>, clickhouse::error::Error> {
    client
        .query(
            "SELECT toUInt32(minute) AS m, anyLastMerge(project), countMerge(requests), \
             sumMerge(cost_usd) FROM rollup_key_1m \
             WHERE api_key_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY m ORDER BY m",
        )
        .bind(key)
        .bind(from_s.max(0) as u32)
        .bind(to_s as u32)
        .fetch_all()
        .await
}

async fn findings(
    client: &clickhouse::Client,
    key: &str,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<FindingView>, clickhouse::error::Error> {
    let mut rows: Vec<Finding> = client
        .query(
            "SELECT toUInt32(emitted_at), toUInt32(window_start), toUInt32(window_end), \
             toUInt32(starts_at), fingerprint, detector, toString(status), toString(severity), \
             observed, expected, upper, score, summary FROM alerts \
             WHERE api_key_id = ? AND window_start < toDateTime(?) AND window_end > toDateTime(?) \
             ORDER BY emitted_at DESC LIMIT ?",
        )
        .bind(key)
        .bind(to_s as u32)
        .bind(from_s as u32)
        .bind(MAX_FINDINGS)
        .fetch_all()
        .await?;
    rows.reverse();
    let at = |s: u32| tripline_core::time::format_ms(i64::from(s) * 1000);
    Ok(rows
        .into_iter()
        .map(|row| FindingView {
            emitted_at: at(row.emitted_s),
            window_start: at(row.window_start_s),
            window_end: at(row.window_end_s),
            starts_at: at(row.starts_s),
            row,
        })
        .collect())
}

/// Spend and request points for the minutes in `[from_s, to_s)`, from the key's minutes
/// `(minute_s, cost_usd, requests)` sorted by minute (warm-up included). Folded as the detector
/// folds: from the first minute with traffic, idle minutes as zero, with `fold` (the detector
/// folds with the global params); each minute is judged with `judged` (the key's floor) against
/// the model as it was before that minute.
pub fn bands(
    minutes: &[(i64, f64, u64)],
    from_s: i64,
    to_s: i64,
    fold: &SpendParams,
    judged: &SpendParams,
    sustained: &SustainedConfig,
) -> (Vec<Point>, Vec<Point>) {
    let by_minute: HashMap<i64, (f64, u64)> =
        minutes.iter().map(|&(m, c, r)| (m, (c, r))).collect();
    let first = minutes.first().map_or(from_s, |m| m.0.min(from_s));
    let started = minutes.first().map(|m| m.0);
    let mut spend_model = SpendModel::new(fold);
    let mut evidence = Evidence::default();
    let mut requests_season = None;
    let mut rate = Ewma::new();
    let alpha = alpha_from_half_life(fold.config.half_life_windows);
    let (mut spend, mut requests) = (Vec::new(), Vec::new());
    let mut minute = first;
    while minute < to_s {
        let (cost, count) = by_minute.get(&minute).copied().unwrap_or((0.0, 0));
        let active = started.is_some_and(|s| minute >= s);
        let how = hour_of_week(minute * 1000);
        // What the detector expected of this minute, before it.
        let e = spend_model.expectation(judged, how);
        let ready = active && e.ready;
        let known = active && rate.n > 0;
        let spread = rate.var.max(0.0).sqrt().max(rate.mean.max(0.0).sqrt());
        let rate_before = rate.mean;
        if active {
            // The detector's own fold; the crowd is 1: the chart sees this key alone.
            let row = (count > 0 || cost > 0.0).then_some((cost, count, 0));
            fold_key_minute(
                &mut spend_model,
                &mut evidence,
                &mut requests_season,
                &Ewma::new(),
                fold,
                sustained,
                row,
                how,
                Crowding::ALONE,
            );
            // Equal weights while young, as the spend model does.
            rate.update(count as f64, alpha.max(1.0 / (rate.n as f64 + 1.0)));
        }
        if minute >= from_s {
            let at = tripline_core::time::format_ms(minute * 1000);
            spend.push(Point {
                minute: at.clone(),
                value: cost,
                expected: ready.then_some(e.expected),
                lower: ready.then_some(e.lower.max(0.0)),
                upper: ready.then_some(e.upper),
                evidence: ready.then_some(evidence.spend_evidence()),
            });
            requests.push(Point {
                minute: at,
                value: count as f64,
                expected: known.then_some(rate_before),
                lower: known.then_some((rate_before - REQUEST_BAND_K * spread).max(0.0)),
                upper: known.then_some(rate_before + REQUEST_BAND_K * spread),
                evidence: None,
            });
        }
        minute += MINUTE_S;
    }
    (spend, requests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::models::spend::SpendModelConfig;

    #[test]
    fn times_and_ranges() {
        assert_eq!(parse_time("to", "1795687200"), Ok(1_795_687_200));
        assert_eq!(parse_time("to", "1795687200123"), Ok(1_795_687_200));
        assert_eq!(parse_time("to", "2026-11-26T10:00:00Z"), Ok(1_795_687_200));
        assert!(parse_time("to", "yesterday").is_err());
        let now = 1_795_687_230;
        assert_eq!(
            range(None, None, now),
            Ok((1_795_687_260 - 3 * 3600, 1_795_687_260))
        );
        assert_eq!(
            range(Some("1795687200"), Some("1795687201"), now),
            Ok((1_795_687_200, 1_795_687_260))
        );
        assert!(range(Some("1795687200"), Some("1795687200"), now).is_err());
        assert!(range(Some("1795600000"), Some("1795687200"), now).is_err());
    }

    #[test]
    fn key_ids() {
        assert!(check_key("fp_0123456789abcdef01234567").is_ok());
        assert!(check_key("key-7").is_ok());
        assert!(check_key(" ").is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key(&"k".repeat(257)).is_err());
    }

    /// The band is the model's expectation before each minute, as the detector assesses it.
    #[test]
    fn spend_band_matches_the_model() {
        let params = SpendModelConfig::default().validate().unwrap();
        let t0 = 1_795_680_000;
        let minutes: Vec<(i64, f64, u64)> = (0..40)
            .filter(|m| m % 7 != 3) // some idle minutes: zero-filled
            .map(|m| (t0 + m * 60, 0.1, 20))
            .chain([(t0 + 45 * 60, 40.0, 400)])
            .collect();
        let (spend, requests) = bands(
            &minutes,
            t0 + 30 * 60,
            t0 + 50 * 60,
            &params,
            &params,
            &SustainedConfig::default(),
        );
        assert_eq!(spend.len(), 20);
        let mut model = SpendModel::new(&params);
        for m in 0..45 {
            let cost = if m % 7 == 3 || m >= 40 { 0.0 } else { 0.1 };
            model.update(&params, cost, hour_of_week((t0 + m * 60) * 1000));
        }
        let e = model.expectation(&params, hour_of_week((t0 + 45 * 60) * 1000));
        let spike = &spend[15];
        assert_eq!(spike.value, 40.0);
        assert_eq!(spike.upper, Some(e.upper));
        assert_eq!(spike.expected, Some(e.expected));
        assert!(40.0 > e.upper);
        assert_eq!(requests[15].value, 400.0);
        assert!(requests[15].upper.unwrap() < 400.0);
    }

    /// The chart's evidence is the detector's: it reaches the threshold in the minute the
    /// engine raises its sustained alert for the same key.
    #[test]
    fn spend_evidence_is_the_detectors_judgement() {
        use tripline_core::config::DetectConfig;
        use tripline_detector::data::{CycleData, KeyMinute};
        use tripline_detector::engine::Engine;

        let t0: u32 = 1_795_680_000;
        // A small key: 0-3 requests of $0.0015 a minute, x3 from minute 125.
        let minute_of = |i: u32| {
            let requests = u64::from((i * 7 + i / 3) % 4);
            let times = if i >= 125 { 3.0 } else { 1.0 };
            (requests, requests as f64 * 0.0015 * times)
        };
        let config = DetectConfig {
            allowed_lateness_s: 0,
            ..DetectConfig::default()
        };
        let mut engine = Engine::new(config.clone()).unwrap();
        let mut alarmed = None;
        for i in 0..150 {
            let minute = t0 + i * 60;
            let (requests, cost) = minute_of(i);
            let data = CycleData {
                keys: vec![KeyMinute {
                    api_key_id: "k".into(),
                    minute,
                    project: "p".into(),
                    requests,
                    cost_usd: cost,
                    ..KeyMinute::default()
                }],
                ..CycleData::default()
            };
            let mut found = engine.cycle(&data, minute + 60, false);
            // What pages with no yesterday known: the chart draws the model's own judgement.
            tripline_detector::routine::judge(
                &mut found,
                2.0,
                |_| tripline_detector::routine::Crowd::UNKNOWN,
                |_| None,
            );
            if alarmed.is_none() && found.iter().any(|c| c.detector == "spend_spike") {
                alarmed = Some(i);
            }
        }
        let alarmed = alarmed.expect("the engine found the x3");
        let minutes: Vec<(i64, f64, u64)> = (0..150)
            .map(|i| {
                let (requests, cost) = minute_of(i);
                (i64::from(t0 + i * 60), cost, requests)
            })
            .filter(|m| m.2 > 0)
            .collect();
        let params = config.spend_spike.model.validate().unwrap();
        let sustained = config.spend_spike.sustained;
        let start = i64::from(t0);
        let (spend, _) = bands(
            &minutes,
            start,
            start + 150 * 60,
            &params,
            &params,
            &sustained,
        );
        let first_over = spend
            .iter()
            .position(|p| p.evidence.is_some_and(|e| e >= sustained.threshold))
            .expect("the chart's evidence reaches the threshold");
        assert_eq!(first_over as u32, alarmed);
    }

    #[test]
    fn no_band_before_traffic_or_warmup() {
        let params = SpendModelConfig::default().validate().unwrap();
        let t0 = 1_795_680_000;
        let minutes = [(t0 + 600, 1.0, 3)];
        let (spend, requests) = bands(
            &minutes,
            t0,
            t0 + 1200,
            &params,
            &params,
            &SustainedConfig::default(),
        );
        assert_eq!(spend.len(), 20);
        assert!(
            spend.iter().all(|p| p.upper.is_none()),
            "warm-up: 30 minutes"
        );
        assert!(requests[..11].iter().all(|p| p.upper.is_none()));
        assert!(requests[11].upper.is_some());
    }
}
