//! From candidates to alerts: an alert fires the first time its fingerprint is flagged, fires
//! again only if its severity rises, and resolves once it has not been flagged for
//! `resolve_after_s`. The set of firing alerts is reloaded from ClickHouse at start-up, so a
//! restart neither re-pages what is already firing nor forgets to resolve it.

use std::collections::HashMap;

use tripline_core::alert::{fingerprint, Alert, AlertStatus, Evidence, ALERT_CONTRACT_VERSION};
use tripline_core::time::format_ms;

use crate::engine::Candidate;

#[derive(Debug, Clone)]
struct Active {
    alert: Alert,
    last_flagged_s: u32,
}

#[derive(Debug, Default)]
pub struct Lifecycle {
    active: HashMap<String, Active>,
}

/// What to do with one candidate.
pub enum Step {
    /// New or escalated: publish as firing (after attaching evidence).
    Fire(Box<Alert>),
    /// Already firing at this severity: nothing to publish.
    Ongoing,
}

impl Lifecycle {
    /// Restores a firing alert (from the `alerts` table at start-up).
    pub fn restore(&mut self, alert: Alert, now_s: u32) {
        self.active.insert(
            alert.fingerprint.clone(),
            Active {
                alert,
                last_flagged_s: now_s,
            },
        );
    }

    pub fn firing(&self) -> usize {
        self.active.len()
    }

    pub fn observe(&mut self, candidate: &Candidate, now_s: u32) -> Step {
        let id = fingerprint(&candidate.labels);
        if let Some(active) = self.active.get_mut(&id) {
            active.last_flagged_s = now_s;
            if candidate.severity <= active.alert.severity {
                return Step::Ongoing;
            }
            let mut alert = to_alert(candidate, &id, now_s);
            alert.starts_at = active.alert.starts_at.clone();
            active.alert = alert.clone();
            return Step::Fire(Box::new(alert));
        }
        let alert = to_alert(candidate, &id, now_s);
        self.active.insert(
            id,
            Active {
                alert: alert.clone(),
                last_flagged_s: now_s,
            },
        );
        Step::Fire(Box::new(alert))
    }

    /// Records the evidence attached to a fired alert, so that its resolution carries it too.
    pub fn attach(&mut self, alert: &Alert) {
        if let Some(active) = self.active.get_mut(&alert.fingerprint) {
            active.alert.evidence = alert.evidence.clone();
        }
    }

    /// Alerts not flagged for `resolve_after_s`, now resolved.
    pub fn resolve_stale(&mut self, now_s: u32, resolve_after_s: u32) -> Vec<Alert> {
        let stale: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| now_s.saturating_sub(a.last_flagged_s) >= resolve_after_s)
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.active.remove(&id))
            .map(|active| {
                let mut alert = active.alert;
                alert.status = AlertStatus::Resolved;
                alert.ends_at = Some(format_ms(i64::from(active.last_flagged_s) * 1000));
                alert.emitted_at = format_ms(i64::from(now_s) * 1000);
                alert
            })
            .collect()
    }
}

fn to_alert(c: &Candidate, id: &str, now_s: u32) -> Alert {
    let now = format_ms(i64::from(now_s) * 1000);
    Alert {
        version: ALERT_CONTRACT_VERSION,
        fingerprint: id.to_owned(),
        detector: c.detector.to_owned(),
        status: AlertStatus::Firing,
        severity: c.severity,
        labels: c.labels.clone(),
        summary: c.summary.clone(),
        description: describe(c),
        observed: c.observed,
        expected: c.expected,
        upper: c.upper,
        score: c.score,
        window_start: format_ms(i64::from(c.window_start_s) * 1000),
        window_end: format_ms(i64::from(c.window_end_s) * 1000),
        starts_at: now.clone(),
        ends_at: None,
        emitted_at: now,
        evidence: Evidence {
            facts: c.facts.clone(),
            ..Evidence::default()
        },
    }
}

fn describe(c: &Candidate) -> String {
    format!(
        "{}: observed {:.3}, expected {:.3}, threshold {:.3}, score {:.2}",
        c.detector, c.observed, c.expected, c.upper, c.score
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tripline_core::alert::Severity;

    fn candidate(severity: Severity) -> Candidate {
        let mut labels = BTreeMap::new();
        labels.insert("detector".to_owned(), "spend_spike".to_owned());
        labels.insert("api_key_id".to_owned(), "k".to_owned());
        Candidate {
            detector: "spend_spike",
            labels,
            severity,
            observed: 10.0,
            expected: 1.0,
            upper: 2.0,
            score: 0.99,
            window_start_s: 60,
            window_end_s: 120,
            summary: "s".into(),
            facts: BTreeMap::new(),
        }
    }

    #[test]
    fn fires_once_escalates_then_resolves() {
        let mut lifecycle = Lifecycle::default();
        assert!(matches!(
            lifecycle.observe(&candidate(Severity::Warning), 100),
            Step::Fire(_)
        ));
        assert!(matches!(
            lifecycle.observe(&candidate(Severity::Warning), 105),
            Step::Ongoing
        ));
        let Step::Fire(escalated) = lifecycle.observe(&candidate(Severity::Critical), 110) else {
            panic!("escalation fires again");
        };
        assert_eq!(escalated.starts_at, format_ms(100_000), "keeps its start");
        assert!(lifecycle.resolve_stale(300, 300).is_empty());
        let resolved = lifecycle.resolve_stale(410, 300);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(
            resolved[0].ends_at.as_deref(),
            Some(format_ms(110_000).as_str())
        );
        assert_eq!(lifecycle.firing(), 0);
        // Flagged again later: a new firing.
        assert!(matches!(
            lifecycle.observe(&candidate(Severity::Warning), 500),
            Step::Fire(_)
        ));
    }
}
