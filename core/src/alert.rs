//! The alert contract (v1) between the detectors and alerting: one JSON object per message on
//! Kafka topic `tripline.alerts`, keyed by `fingerprint`, and one row per state change in the
//! ClickHouse `alerts` table.
//!
//! A finding is identified by its detector and entity labels; the fingerprint is a stable hash of
//! those, so the same anomaly on the same key is one alert from `firing` to `resolved`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time;

pub const ALERT_CONTRACT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// A value seen in the evidence and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counted {
    pub value: String,
    pub count: u64,
}

/// What makes an alert explain itself: the top values behind the anomaly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_ips: Vec<Counted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<Counted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asns: Vec<Counted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<Counted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_agents: Vec<Counted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
    /// Detector-specific facts, e.g. `new_countries`, `implied_speed_kmh`, `amplification`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// One alert state change, as published on `tripline.alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub version: u32,
    pub fingerprint: String,
    pub detector: String,
    pub status: AlertStatus,
    pub severity: Severity,
    /// Entity labels: always `detector`, plus `api_key_id`, `project`, `provider`, `model`,
    /// `user` or `client_ip` as relevant.
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub observed: f64,
    pub expected: f64,
    /// Upper edge of the expected range (the threshold crossed).
    pub upper: f64,
    /// Anomaly score in 0..=1.
    pub score: f64,
    /// The window evaluated, epoch milliseconds (RFC 3339 in JSON, as every time below).
    #[serde(with = "time::rfc3339")]
    pub window_start: i64,
    #[serde(with = "time::rfc3339")]
    pub window_end: i64,
    /// When this alert started firing, and (resolved only) when it ended.
    #[serde(with = "time::rfc3339")]
    pub starts_at: i64,
    #[serde(
        default,
        with = "time::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ends_at: Option<i64>,
    #[serde(with = "time::rfc3339")]
    pub emitted_at: i64,
    pub evidence: Evidence,
}

/// The stable id of an alert: detector plus sorted entity labels.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in labels {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fingerprint_depends_on_every_label_and_not_on_order() {
        let a = fingerprint(&labels(&[
            ("detector", "spend_spike"),
            ("api_key_id", "k1"),
        ]));
        let b = fingerprint(&labels(&[
            ("api_key_id", "k1"),
            ("detector", "spend_spike"),
        ]));
        let c = fingerprint(&labels(&[
            ("detector", "spend_spike"),
            ("api_key_id", "k2"),
        ]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
        // Label boundaries matter: ("ab","c") is not ("a","bc").
        assert_ne!(
            fingerprint(&labels(&[("ab", "c")])),
            fingerprint(&labels(&[("a", "bc")]))
        );
    }

    #[test]
    fn alert_json_round_trips() {
        let alert = Alert {
            version: ALERT_CONTRACT_VERSION,
            fingerprint: "f".into(),
            detector: "retry_storm".into(),
            status: AlertStatus::Firing,
            severity: Severity::Critical,
            labels: labels(&[("detector", "retry_storm"), ("api_key_id", "k")]),
            summary: "s".into(),
            description: "d".into(),
            observed: 4.0,
            expected: 1.1,
            upper: 2.0,
            score: 0.99,
            window_start: 1_795_687_200_000,
            window_end: 1_795_687_260_000,
            starts_at: 1_795_687_260_000,
            ends_at: None,
            emitted_at: 1_795_687_262_000,
            evidence: Evidence::default(),
        };
        let json = serde_json::to_string(&alert).unwrap();
        assert!(json.contains(r#""status":"firing""#) && json.contains(r#""severity":"critical""#));
        // Times are RFC 3339 text on the wire, integers inside.
        assert!(json.contains(r#""window_start":"2026-11-26T10:00:00.000Z""#));
        assert!(json.contains(r#""emitted_at":"2026-11-26T10:01:02.000Z""#));
        assert!(!json.contains("ends_at"), "absent while firing: {json}");
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), alert);
        let resolved = Alert {
            status: AlertStatus::Resolved,
            ends_at: Some(1_795_687_500_000),
            ..alert
        };
        let json = serde_json::to_string(&resolved).unwrap();
        assert!(json.contains(r#""ends_at":"2026-11-26T10:05:00.000Z""#));
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), resolved);
        // Any offset is read; a time that is not one is refused with its text.
        let offset = json.replace("2026-11-26T10:05:00.000Z", "2026-11-26T11:05:00+01:00");
        assert_eq!(serde_json::from_str::<Alert>(&offset).unwrap(), resolved);
        let bad = json.replace("2026-11-26T10:05:00.000Z", "later");
        let err = serde_json::from_str::<Alert>(&bad).unwrap_err().to_string();
        assert!(err.contains(r#""later" is not an RFC 3339 time"#), "{err}");
    }
}
