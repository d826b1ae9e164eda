//! Publishing alerts: Kafka `tripline.alerts` (keyed by fingerprint, acks=all) for alerting, and
//! the ClickHouse `alerts` table for dashboards and for reloading state at start-up.

use std::time::Duration;

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{info, warn};
use tripline_core::alert::Alert;
use tripline_core::config::KafkaConfig;

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    clickhouse: Client,
}

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
    alert_json: String,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Latest {
    alert_json: String,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig, clickhouse: Client) -> Result<Self, crate::DetectError> {
        Ok(Self {
            producer: tripline_kafka::producer_config(kafka, tripline_kafka::process_env)?
                .create()?,
            topic: kafka.alerts_topic.clone(),
            clickhouse,
        })
    }

    pub async fn publish(&self, alert: &Alert) {
        let json = serde_json::to_string(alert).expect("alerts serialize");
        info!(
            detector = %alert.detector,
            status = alert.status.as_str(),
            severity = alert.severity.as_str(),
            fingerprint = %alert.fingerprint,
            "{}", alert.summary
        );
        metrics::counter!("tripline_detector_alerts_total", "detector" => alert.detector.clone(), "status" => alert.status.as_str())
            .increment(1);
        for attempt in 1..=5 {
            let record = FutureRecord::to(&self.topic)
                .key(&alert.fingerprint)
                .payload(&json);
            let sent = match tripline_kafka::enqueue(&self.producer, record).await {
                Ok(delivery) => tripline_kafka::delivered(delivery.await),
                Err(err) => Err(err.to_string()),
            };
            match sent {
                Ok(()) => break,
                Err(err) => {
                    warn!(%err, attempt, "publishing an alert to kafka failed");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        for attempt in 1..=5 {
            match self.insert(alert, &json).await {
                Ok(()) => break,
                Err(err) => {
                    warn!(%err, attempt, "recording an alert in clickhouse failed");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
    }

    async fn insert(&self, alert: &Alert, json: &str) -> Result<(), clickhouse::error::Error> {
        let seconds =
            |text: &str| (tripline_core::time::parse_rfc3339_ms(text).unwrap_or(0) / 1000) as u32;
        let label = |name: &str| alert.labels.get(name).map_or("", String::as_str);
        let entity = alert
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "detector")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let row = AlertRow {
            emitted_at: seconds(&alert.emitted_at),
            fingerprint: &alert.fingerprint,
            detector: &alert.detector,
            status: match alert.status {
                tripline_core::alert::AlertStatus::Firing => 1,
                tripline_core::alert::AlertStatus::Resolved => 2,
            },
            severity: match alert.severity {
                tripline_core::alert::Severity::Info => 1,
                tripline_core::alert::Severity::Warning => 2,
                tripline_core::alert::Severity::Critical => 3,
            },
            api_key_id: label("api_key_id"),
            project: label("project"),
            provider: label("provider"),
            model: label("model"),
            entity,
            observed: alert.observed,
            expected: alert.expected,
            upper: alert.upper,
            score: alert.score,
            window_start: seconds(&alert.window_start),
            window_end: seconds(&alert.window_end),
            starts_at: seconds(&alert.starts_at),
            summary: &alert.summary,
            alert_json: json.to_owned(),
        };
        let mut insert = self.clickhouse.insert::<AlertRow<'_>>("alerts").await?;
        insert.write(&row).await?;
        insert.end().await
    }

    /// Alerts whose latest state is firing.
    pub async fn firing_alerts(&self) -> Result<Vec<Alert>, clickhouse::error::Error> {
        let rows: Vec<Latest> = self
            .clickhouse
            .query_raw(
                "SELECT argMax(alert_json, emitted_at) FROM alerts GROUP BY fingerprint \
                 HAVING argMax(status, emitted_at) = 'firing'",
            )
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str(&r.alert_json).ok())
            .collect())
    }

    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
