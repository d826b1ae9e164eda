//! The outbox in ClickHouse: an `alerts` row per decided change (the durable record, and the
//! dashboards' history) and an `alert_publications` row once Kafka acknowledged it. A change
//! is identified by (fingerprint, emitted_at, status, severity), all four stored in both.

use std::collections::HashSet;

use clickhouse::Client;
use tripline_core::alert::{Alert, AlertStatus, Severity};

use super::{decided_s, seconds};
use crate::data::Shard;
use tripline_store::sql_string;

/// Pending changes older than this are not reloaded at start-up: a page a week late helps no
/// one (they stay in `alerts` for the record).
pub const RELOAD_HORIZON_S: u32 = 7 * 86_400;

#[derive(clickhouse::Row, serde::Serialize)]
struct AlertRow<'a> {
    emitted_at: u32,
    fingerprint: &'a str,
    detector: &'a str,
    status: i8,
    severity: i8,
    api_key_id: &'a str,
    project: &'a str,
    provider: &'a str,
    model: &'a str,
    entity: String,
    observed: f64,
    expected: f64,
    upper: f64,
    score: f64,
    window_start: u32,
    window_end: u32,
    starts_at: u32,
    summary: &'a str,
    alert_json: &'a str,
}

/// An acknowledgement: which change Kafka has.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize)]
pub struct Publication {
    pub fingerprint: String,
    pub emitted_at: u32,
    pub status: i8,
    pub severity: i8,
    pub published_at: u32,
}

impl Publication {
    pub fn of(alert: &Alert, published_at: u32) -> Self {
        Self {
            fingerprint: alert.fingerprint.clone(),
            emitted_at: decided_s(alert),
            status: status_code(alert.status),
            severity: severity_code(alert.severity),
            published_at,
        }
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Json {
    alert_json: String,
}

fn status_code(status: AlertStatus) -> i8 {
    match status {
        AlertStatus::Firing => 1,
        AlertStatus::Resolved => 2,
    }
}

fn severity_code(severity: Severity) -> i8 {
    match severity {
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

fn row<'a>(alert: &'a Alert, json: &'a str) -> AlertRow<'a> {
    let label = |name: &str| alert.labels.get(name).map_or("", String::as_str);
    let entity = alert
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "detector")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    AlertRow {
        emitted_at: decided_s(alert),
        fingerprint: &alert.fingerprint,
        detector: &alert.detector,
        status: status_code(alert.status),
        severity: severity_code(alert.severity),
        api_key_id: label("api_key_id"),
        project: label("project"),
        provider: label("provider"),
        model: label("model"),
        entity,
        observed: alert.observed,
        expected: alert.expected,
        upper: alert.upper,
        score: alert.score,
        window_start: seconds(alert.window_start),
        window_end: seconds(alert.window_end),
        starts_at: seconds(alert.starts_at),
        summary: &alert.summary,
        alert_json: json,
    }
}

/// A change as both tables identify it: fingerprint, emitted_at, status and severity. Read
/// back from `alerts` by [`recorded`] (under other names: an alias named like its column would
/// shadow the column in the query's WHERE).
#[derive(Debug, PartialEq, Eq, Hash, clickhouse::Row, serde::Deserialize)]
pub struct Change {
    fingerprint: String,
    #[serde(rename = "decided_s")]
    emitted_at: u32,
    #[serde(rename = "status_code")]
    status: i8,
    #[serde(rename = "severity_code")]
    severity: i8,
}

impl Change {
    pub fn of(alert: &Alert) -> Self {
        Self {
            fingerprint: alert.fingerprint.clone(),
            emitted_at: decided_s(alert),
            status: status_code(alert.status),
            severity: severity_code(alert.severity),
        }
    }
}

/// Fingerprints per query of [`recorded`]: well within ClickHouse's 256 KiB query text.
const FINGERPRINTS_PER_QUERY: usize = 2_000;

/// Which of the `pending` changes already have their `alerts` row. An insert whose answer
/// was lost (a connection cut, a timeout) may have landed all the same; retried blindly, it
/// wrote each change twice, and the dashboards that count rows of `alerts` counted it twice.
/// Not a guarantee: an insert still running on the server after our timeout, or a replica
/// that has not fetched the part yet, is not seen (the detector's own reads take each change
/// once anyway).
pub async fn recorded(
    client: &Client,
    pending: &[(Alert, String)],
) -> Result<HashSet<Change>, clickhouse::error::Error> {
    let Some(since) = pending.iter().map(|(a, _)| decided_s(a)).min() else {
        return Ok(HashSet::new());
    };
    let mut fingerprints: Vec<&str> = pending
        .iter()
        .map(|(a, _)| a.fingerprint.as_str())
        .collect();
    fingerprints.sort_unstable();
    fingerprints.dedup();
    let mut found = HashSet::new();
    for chunk in fingerprints.chunks(FINGERPRINTS_PER_QUERY) {
        let list = chunk
            .iter()
            .map(|f| sql_string(f))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<Change> = client
            .query_raw(&format!(
                "SELECT fingerprint, toUInt32(emitted_at) AS decided_s, \
                 CAST(status AS Int8) AS status_code, CAST(severity AS Int8) AS severity_code \
                 FROM alerts WHERE emitted_at >= toDateTime({since}) AND fingerprint IN ({list})"
            ))
            .fetch_all()
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Writes the `alerts` rows of decided changes, in one insert.
pub async fn insert_alerts(
    client: &Client,
    alerts: &[(Alert, String)],
) -> Result<(), clickhouse::error::Error> {
    if alerts.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<AlertRow<'_>>("alerts").await?;
    for (alert, json) in alerts {
        insert.write(&row(alert, json)).await?;
    }
    insert.end().await
}

/// Writes acknowledgements, in one insert.
pub async fn insert_publications(
    client: &Client,
    rows: &[Publication],
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<Publication>("alert_publications").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// The alerts of this shard whose latest change is firing: what the lifecycle starts from.
/// Of two changes in the same second (an escalation), the more severe is the latest.
pub async fn firing_alerts(
    client: &Client,
    shard: Shard,
) -> Result<Vec<Alert>, clickhouse::error::Error> {
    let rows: Vec<Json> = client
        .query_raw(&format!(
            "SELECT argMax(alert_json, (emitted_at, severity)) FROM alerts WHERE {} \
             GROUP BY fingerprint HAVING argMax(status, (emitted_at, severity)) = 'firing'",
            shard.alerts_filter()
        ))
        .fetch_all()
        .await?;
    Ok(parse(rows))
}

/// This shard's changes decided since `now_s - RELOAD_HORIZON_S` that Kafka never acknowledged,
/// oldest first, at most `limit`, each once (a retried insert may have stored a row twice).
/// `GLOBAL`: on a cluster both tables are `Distributed`, and the publications are gathered once
/// and sent to every shard (ClickHouse refuses a distributed subquery of a distributed query).
pub async fn pending_alerts(
    client: &Client,
    shard: Shard,
    now_s: u32,
    limit: usize,
) -> Result<Vec<Alert>, clickhouse::error::Error> {
    let since = now_s.saturating_sub(RELOAD_HORIZON_S);
    let rows: Vec<Json> = client
        .query_raw(&format!(
            "SELECT alert_json FROM alerts WHERE emitted_at >= toDateTime({since}) AND {shard} \
             AND (fingerprint, emitted_at, status, severity) GLOBAL NOT IN ( \
               SELECT fingerprint, emitted_at, status, severity FROM alert_publications \
               WHERE emitted_at >= toDateTime({since})) \
             ORDER BY emitted_at, status, severity \
             LIMIT 1 BY fingerprint, emitted_at, status, severity LIMIT {limit}",
            shard = shard.alerts_filter()
        ))
        .fetch_all()
        .await?;
    Ok(parse(rows))
}

fn parse(rows: Vec<Json>) -> Vec<Alert> {
    rows.into_iter()
        .filter_map(|r| match serde_json::from_str(&r.alert_json) {
            Ok(alert) => Some(alert),
            Err(err) => {
                tracing::warn!(%err, "an alerts row holds no readable alert; skipped");
                None
            }
        })
        .collect()
}
