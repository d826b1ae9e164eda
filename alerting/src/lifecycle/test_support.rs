//! Shared by the unit tests of the alerting stages: messages as the detectors publish them,
//! and configs parsed the way `tripline` parses them.

use tripline_core::alert::{
    fingerprint, Alert, AlertStatus, Evidence, Severity, ALERT_CONTRACT_VERSION,
};
use tripline_core::config::{AlertingConfig, Config};

use crate::matcher::Labels;

/// Seconds to the milliseconds every stage works in.
pub(crate) const fn s(seconds: i64) -> i64 {
    seconds * 1000
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A message about `detector` on API key `key`, emitted at `at`.
pub(crate) fn message(
    detector: &str,
    key: &str,
    status: AlertStatus,
    severity: Severity,
    at: i64,
) -> Alert {
    let labels = labels(&[("detector", detector), ("api_key_id", key)]);
    Alert {
        version: ALERT_CONTRACT_VERSION,
        fingerprint: fingerprint(&labels),
        detector: detector.to_owned(),
        status,
        severity,
        labels,
        summary: format!("{detector} on {key}"),
        description: String::new(),
        observed: 2.0,
        expected: 1.0,
        upper: 1.5,
        score: 0.99,
        window_start: at - 60_000,
        window_end: at,
        starts_at: at,
        ends_at: (status == AlertStatus::Resolved).then_some(at),
        emitted_at: at,
        evidence: Evidence::default(),
    }
}

pub(crate) fn firing(detector: &str, key: &str, at: i64) -> Alert {
    message(detector, key, AlertStatus::Firing, Severity::Warning, at)
}

pub(crate) fn resolved(detector: &str, key: &str, at: i64) -> Alert {
    message(detector, key, AlertStatus::Resolved, Severity::Warning, at)
}

pub(crate) fn critical(detector: &str, key: &str, at: i64) -> Alert {
    message(detector, key, AlertStatus::Firing, Severity::Critical, at)
}

/// `[alerting]` from TOML text (the section header is added), validated.
pub(crate) fn alerting_config(body: &str) -> AlertingConfig {
    let text = format!("[alerting]\n{body}");
    Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("{e:#?}"))
        .alerting
}
