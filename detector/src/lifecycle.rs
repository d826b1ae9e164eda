//! From candidates to alerts: an alert fires the first time its fingerprint is flagged, fires
//! again only if its severity rises, and resolves once it has not been flagged for
//! `resolve_after_s`. The set of firing alerts is reloaded from ClickHouse at start-up, so a
//! restart neither re-pages what is already firing nor forgets to resolve it.
//!
//! A sustained spend alert is about a run of evidence, and its candidates say where the run
//! began. Once it has resolved, a candidate whose run began before that is the incident already
//! told, not a new one: the evidence of a x20 burst drains over a few minutes after it ends, and
//! an ordinary busy minute meanwhile paged again with the burst's ratio (DEV seeds 1 and 6).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use tripline_core::alert::{fingerprint, Alert, AlertStatus, Evidence, ALERT_CONTRACT_VERSION};

use crate::engine::Candidate;

#[derive(Debug, Clone)]
struct Active {
    alert: Alert,
    last_flagged_s: u32,
}

#[derive(Debug, Default)]
pub struct Lifecycle {
    active: HashMap<String, Active>,
    /// When each fingerprint's last run-based alert resolved (kept a day).
    told_until: HashMap<String, u32>,
}

/// How long a resolved alert's time is remembered: longer than any run of evidence lasts.
const TOLD_KEPT_S: u32 = 86_400;

/// Whether an alert or candidate of `detector` with these facts is about a run of evidence that
/// began at its window start (the sustained spend rules).
fn run_based(
    detector: &str,
    facts: &std::collections::BTreeMap<String, serde_json::Value>,
) -> bool {
    detector == "spend_spike"
        && facts
            .get("rule")
            .and_then(|r| r.as_str())
            .is_some_and(|r| r.starts_with("sustained"))
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

    /// Observes one cycle's candidates, one per alert: the most severe of those sharing a
    /// fingerprint (the first of equals). A cycle judges a key's closed minute and its open
    /// one together, and a retry storm straddling the minute boundary was critical in the one
    /// and a warning in the other: observed in turn, the warning fired and the critical fired
    /// again as its escalation, two pages in one cycle (`detector_group_e2e`, once in ten
    /// runs). Returns the alerts to publish as firing, in the candidates' order.
    pub fn observe_cycle(&mut self, candidates: &[Candidate], now_s: u32) -> Vec<Alert> {
        let mut strongest: Vec<&Candidate> = Vec::with_capacity(candidates.len());
        let mut at: HashMap<String, usize> = HashMap::with_capacity(candidates.len());
        for candidate in candidates {
            match at.entry(fingerprint(&candidate.labels)) {
                Entry::Occupied(seen) => {
                    let kept = &mut strongest[*seen.get()];
                    if candidate.severity > kept.severity {
                        *kept = candidate;
                    }
                }
                Entry::Vacant(new) => {
                    new.insert(strongest.len());
                    strongest.push(candidate);
                }
            }
        }
        strongest
            .into_iter()
            .filter_map(|candidate| match self.observe(candidate, now_s) {
                Step::Fire(alert) => Some(*alert),
                Step::Ongoing => None,
            })
            .collect()
    }

    pub fn observe(&mut self, candidate: &Candidate, now_s: u32) -> Step {
        let id = fingerprint(&candidate.labels);
        if let Some(active) = self.active.get_mut(&id) {
            active.last_flagged_s = now_s;
            if candidate.severity <= active.alert.severity {
                return Step::Ongoing;
            }
            let mut alert = to_alert(candidate, &id, now_s);
            alert.starts_at = active.alert.starts_at;
            active.alert = alert.clone();
            return Step::Fire(Box::new(alert));
        }
        let told = self.told_until.get(&id).copied();
        if told.is_some_and(|until| candidate.window_start_s < until)
            && run_based(candidate.detector.as_str(), &candidate.facts)
        {
            return Step::Ongoing;
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
        self.told_until
            .retain(|_, until| now_s.saturating_sub(*until) < TOLD_KEPT_S);
        stale
            .into_iter()
            .filter_map(|id| self.active.remove(&id))
            .map(|active| {
                let mut alert = active.alert;
                if run_based(&alert.detector, &alert.evidence.facts) {
                    self.told_until.insert(alert.fingerprint.clone(), now_s);
                }
                alert.status = AlertStatus::Resolved;
                alert.ends_at = Some(i64::from(active.last_flagged_s) * 1000);
                alert.emitted_at = i64::from(now_s) * 1000;
                alert
            })
            .collect()
    }
}

fn to_alert(c: &Candidate, id: &str, now_s: u32) -> Alert {
    let now = i64::from(now_s) * 1000;
    Alert {
        version: ALERT_CONTRACT_VERSION,
        fingerprint: id.to_owned(),
        detector: c.detector.as_str().to_owned(),
        status: AlertStatus::Firing,
        severity: c.severity,
        labels: c.labels.clone(),
        summary: c.summary.clone(),
        description: describe(c),
        observed: c.observed,
        expected: c.expected,
        upper: c.upper,
        score: c.score,
        window_start: i64::from(c.window_start_s) * 1000,
        window_end: i64::from(c.window_end_s) * 1000,
        starts_at: now,
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
            detector: tripline_core::config::Detector::SpendSpike,
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

    /// One cycle holding a storm's open minute at warning and its closed minute at critical
    /// pages once, at critical, whichever comes first; observed one by one they paged twice.
    #[test]
    fn a_cycle_pages_each_alert_once_at_its_worst() {
        let open = candidate(Severity::Warning);
        let closed = Candidate {
            window_start_s: 0,
            window_end_s: 60,
            ..candidate(Severity::Critical)
        };
        for cycle in [
            [open.clone(), closed.clone()],
            [closed.clone(), open.clone()],
        ] {
            let mut lifecycle = Lifecycle::default();
            let fired = lifecycle.observe_cycle(&cycle, 100);
            assert_eq!(fired.len(), 1);
            assert_eq!(fired[0].severity, Severity::Critical);
            assert_eq!(fired[0].window_start, 0);
            assert!(lifecycle.observe_cycle(&cycle, 105).is_empty());
        }
        let mut one_by_one = Lifecycle::default();
        let fires = [open, closed]
            .iter()
            .filter(|c| matches!(one_by_one.observe(c, 100), Step::Fire(_)))
            .count();
        assert_eq!(fires, 2, "the failure this guards against");
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
        assert_eq!(escalated.starts_at, 100_000, "keeps its start");
        assert!(lifecycle.resolve_stale(300, 300).is_empty());
        let resolved = lifecycle.resolve_stale(410, 300);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].ends_at, Some(110_000));
        assert_eq!(lifecycle.firing(), 0);
        // Flagged again later: a new firing.
        assert!(matches!(
            lifecycle.observe(&candidate(Severity::Warning), 500),
            Step::Fire(_)
        ));
    }

    /// A sustained spend alert that resolved is not fired again for the run it was about; a
    /// run that begins after it resolved is a new incident.
    #[test]
    fn a_run_already_told_does_not_page_again() {
        let mut lifecycle = Lifecycle::default();
        let mut run = candidate(Severity::Warning);
        run.facts
            .insert("rule".into(), serde_json::json!("sustained"));
        run.window_start_s = 60;
        assert!(matches!(lifecycle.observe(&run, 300), Step::Fire(_)));
        assert_eq!(lifecycle.resolve_stale(700, 300).len(), 1);
        // The same run, still draining, flagged again after the alert resolved: not paged.
        assert!(matches!(lifecycle.observe(&run, 760), Step::Ongoing));
        assert_eq!(lifecycle.firing(), 0);
        // Other detectors' windows are not runs: flagged again, they fire again.
        let mut other = candidate(Severity::Warning);
        other.window_start_s = 60;
        assert!(matches!(lifecycle.observe(&other, 770), Step::Fire(_)));
        assert_eq!(lifecycle.resolve_stale(1_100, 300).len(), 1);
        // A run that began after the alert resolved: a new incident.
        run.window_start_s = 720;
        assert!(matches!(lifecycle.observe(&run, 1_200), Step::Fire(_)));
    }
}
