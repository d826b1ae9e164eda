//! Test data shared by the receivers' unit tests.

use std::collections::BTreeMap;

use tripline_core::alert::{
    Alert, AlertStatus, Counted, Evidence, Severity, ALERT_CONTRACT_VERSION,
};

use super::{reason, Message};

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(crate) fn counted(pairs: &[(&str, u64)]) -> Vec<Counted> {
    pairs
        .iter()
        .map(|(value, count)| Counted {
            value: (*value).to_owned(),
            count: *count,
        })
        .collect()
}

/// A realistic finding on `key` from `detector`.
pub(crate) fn alert(detector: &str, key: &str, status: AlertStatus) -> Alert {
    let labels = labels(&[
        ("detector", detector),
        ("api_key_id", key),
        ("project", "search"),
    ]);
    let mut evidence = Evidence {
        top_ips: counted(&[("203.0.113.7", 1200), ("198.51.100.4", 300)]),
        countries: counted(&[("US", 1400), ("NL", 100)]),
        models: counted(&[("gpt-4o", 1500)]),
        user_agents: counted(&[("openai-python/1.52.0", 1500)]),
        request_ids: vec!["req-88".into()],
        ..Evidence::default()
    };
    evidence
        .facts
        .insert("amplification".into(), serde_json::json!(4.2));
    Alert {
        version: ALERT_CONTRACT_VERSION,
        fingerprint: tripline_core::alert::fingerprint(&labels),
        detector: detector.to_owned(),
        status,
        severity: Severity::Critical,
        labels,
        summary: format!("{detector} on {key}: $42.10 in 5 min (expected $3.20)"),
        description: format!("Spend on {key} is 13x its usual rate."),
        observed: 42.1,
        expected: 3.2,
        upper: 9.0,
        score: 0.999,
        window_start: 1_795_687_200_000, // 2026-11-26T10:00:00Z
        window_end: 1_795_687_500_000,   // 10:05:00
        starts_at: 1_795_687_502_000,    // 10:05:02
        ends_at: (status == AlertStatus::Resolved).then_some(1_795_689_000_000), // 10:30:00
        emitted_at: 1_795_687_502_000,
        evidence,
    }
}

/// A notification to receiver `ops` for a group of `alerts` grouped by detector.
pub(crate) fn message(alerts: Vec<Alert>) -> Message {
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    let detector = alerts
        .first()
        .map(|a| a.detector.clone())
        .unwrap_or_default();
    let mut common = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
    common.retain(|k, v| alerts.iter().all(|a| a.labels.get(k) == Some(v)));
    Message {
        receiver: "ops".into(),
        group_key: format!("{{}}:{{detector=\"{detector}\"}}"),
        group_labels: labels(&[("detector", &detector)]),
        common_labels: common,
        reason: if status == AlertStatus::Firing {
            reason::NEW
        } else {
            reason::RESOLVED
        }
        .into(),
        status,
        alerts,
        external_url: Some("https://tripline.example.com".into()),
    }
}
