//! The alert store: findings from `tripline.alerts` become alerts keyed by fingerprint, with
//! states pending → firing → resolved.
//!
//! - **`for`**: an alert is *pending* until it has been firing `for_ms` (since its first firing
//!   message was received); resolved before that, it never notifies. Routes may use their own
//!   `for`: [`TrackedAlert::phase`] answers for any value.
//! - **`keep_firing_for`**: a resolved message ends the alert `keep_firing_for_ms` later; a
//!   firing message before then continues the same alert (no new page).
//! - **resolve timeout**: a firing alert whose detector sends nothing for `resolve_timeout_ms`
//!   resolves. Off (0) by default, because the detectors send a message only when a state
//!   changes (firing, escalation, resolved) and never repeat a firing alert; with them, only an
//!   explicit resolved message resolves. Set it for producers that re-send while firing.
//! - **flapping**: an alert that ends and fires again so often that `flips` firing↔resolved
//!   flips fall within `window_ms` is held firing and marked flapping from that re-fire on; it
//!   is summarised once (see `grouping`) instead of paging on every flip. A dip bridged by
//!   `keep_firing_for` is no flip. While flapping, every change the detector reports counts,
//!   and the alert settles in its last reported state once none came for `window_ms`.
//!
//! Everything is a pure function of the messages and the `now` passed in (epoch milliseconds).
//! Time-driven changes (pending → firing, keep-firing expiry, timeouts, settling) are reported
//! by [`AlertStore::tick`]; [`AlertStore::next_wakeup`] says when the next one is due.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tripline_core::alert::{fingerprint, Alert, AlertStatus};
use tripline_core::config::AlertingConfig;
use tripline_core::time::format_ms;

use crate::matcher::Labels;

/// The lifecycle settings, from `[alerting]`, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// 0: off.
    pub resolve_timeout_ms: i64,
    /// Resolved alerts are forgotten this long after they resolved.
    pub resolved_retention_ms: i64,
    pub flapping: Option<FlappingPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlappingPolicy {
    pub flips: u32,
    pub window_ms: i64,
}

fn ms(value: u64, unit: u64) -> i64 {
    i64::try_from(value.saturating_mul(unit)).unwrap_or(i64::MAX)
}

impl LifecycleConfig {
    pub fn from_config(c: &AlertingConfig) -> LifecycleConfig {
        LifecycleConfig {
            for_ms: ms(c.for_ms, 1),
            keep_firing_for_ms: ms(c.keep_firing_for_ms, 1),
            resolve_timeout_ms: ms(c.resolve_timeout_s, 1000),
            resolved_retention_ms: ms(c.resolved_retention_s, 1000),
            flapping: (c.flapping.enabled && c.flapping.flips > 0).then(|| FlappingPolicy {
                flips: c.flapping.flips,
                window_ms: ms(c.flapping.window_s, 1000),
            }),
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig::from_config(&AlertingConfig::default())
    }
}

/// An alert's state as listed by the API (with the global `for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    /// Held firing because it flips too often.
    Flapping,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Flapping => "flapping",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert's state for a given `for`: what a route notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Firing, but not for `for` yet.
    Pending,
    Firing,
    /// Ended after having fired.
    Resolved,
    /// Ended without ever having fired for `for`: never notified.
    Inactive,
}

/// Why an alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveCause {
    /// The detector sent a resolved message.
    Message,
    /// Nothing from the detector for `resolve_timeout`.
    Timeout,
}

/// One alert and its history, as stored (and snapshotted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedAlert {
    pub fingerprint: String,
    /// The contract labels plus `detector` and `severity`: what matchers see.
    pub labels: Labels,
    /// The latest message.
    pub alert: Alert,
    /// When this firing episode's first message arrived (`for` counts from here).
    pub active_since_ms: i64,
    /// The detector's `starts_at` for this episode (else `active_since_ms`).
    pub starts_at_ms: i64,
    pub last_message_ms: i64,
    /// When the episode ends or ended; `None` while firing. May lie ahead (keep_firing_for).
    pub resolved_at_ms: Option<i64>,
    pub resolved_by: Option<ResolveCause>,
    /// The detector's latest word (firing or resolved), which flapping may be holding back.
    pub reported_firing: bool,
    /// Recent flips (ends and re-fires; every reported change while flapping), oldest first,
    /// within the flapping window.
    pub flips_ms: Vec<i64>,
    pub flapping_since_ms: Option<i64>,
    /// The state last reported in a [`Change`].
    pub state: AlertState,
}

/// The labels matchers see for a message: its labels plus `detector` and `severity`.
pub fn routing_labels(alert: &Alert) -> Labels {
    let mut labels = alert.labels.clone();
    labels
        .entry("detector".to_owned())
        .or_insert_with(|| alert.detector.clone());
    labels.insert("severity".to_owned(), alert.severity.as_str().to_owned());
    labels
}

impl TrackedAlert {
    /// The alert's phase for a route with this `for`.
    pub fn phase(&self, now: i64, for_ms: i64) -> Phase {
        match self.resolved_at_ms {
            Some(end) if end <= now => {
                if end.saturating_sub(self.active_since_ms) >= for_ms {
                    Phase::Resolved
                } else {
                    Phase::Inactive
                }
            }
            _ if now.saturating_sub(self.active_since_ms) >= for_ms => Phase::Firing,
            _ => Phase::Pending,
        }
    }

    /// The state with this `for` (the store's is [`AlertStore::state`]).
    pub fn state_at(&self, now: i64, for_ms: i64) -> AlertState {
        match self.phase(now, for_ms) {
            Phase::Pending => AlertState::Pending,
            Phase::Firing if self.flapping_since_ms.is_some() => AlertState::Flapping,
            Phase::Firing => AlertState::Firing,
            Phase::Resolved | Phase::Inactive => AlertState::Resolved,
        }
    }

    pub fn is_flapping(&self) -> bool {
        self.flapping_since_ms.is_some()
    }

    /// The alert as a notification shows it: status and `ends_at` as of `phase`, the
    /// episode's `starts_at`, and flapping summarised in the evidence facts (`flapping`,
    /// `flips`, `flapping_since`).
    pub fn notified(&self, phase: Phase) -> Alert {
        let mut alert = self.alert.clone();
        alert.fingerprint = self.fingerprint.clone();
        alert.starts_at = self.starts_at_ms;
        if matches!(phase, Phase::Resolved | Phase::Inactive) {
            alert.status = AlertStatus::Resolved;
            alert.ends_at = self.resolved_at_ms;
        } else {
            alert.status = AlertStatus::Firing;
            alert.ends_at = None;
        }
        if let Some(since) = self.flapping_since_ms {
            let facts = &mut alert.evidence.facts;
            facts.insert("flapping".into(), serde_json::Value::Bool(true));
            facts.insert("flips".into(), self.flips_ms.len().into());
            facts.insert("flapping_since".into(), format_ms(since).into());
        }
        alert
    }

    /// Records flips (times, ascending); past the threshold the alert is flapping from the
    /// last of them.
    fn record_flips(&mut self, at: &[i64], policy: Option<FlappingPolicy>) {
        let (Some(policy), Some(&last)) = (policy, at.last()) else {
            return;
        };
        self.flips_ms.extend_from_slice(at);
        let horizon = last.saturating_sub(policy.window_ms);
        self.flips_ms.retain(|t| *t > horizon);
        if self.flapping_since_ms.is_none() && self.flips_ms.len() >= policy.flips as usize {
            self.flapping_since_ms = Some(last);
        }
    }

    /// The detector's word turns to resolved at `at` (a resolved message or a timeout); the
    /// alert ends at `end`, unless it is flapping: then it is held firing.
    fn report_resolved(
        &mut self,
        at: i64,
        end: i64,
        cause: ResolveCause,
        config: &LifecycleConfig,
    ) {
        if !self.reported_firing {
            return;
        }
        self.reported_firing = false;
        if self.flapping_since_ms.is_some() {
            self.record_flips(&[at], config.flapping);
        } else {
            self.resolved_at_ms = Some(end);
            self.resolved_by = Some(cause);
        }
    }

    /// Applies what time alone does up to `now`: the resolve timeout and flapping settling.
    fn settle(&mut self, now: i64, config: &LifecycleConfig) {
        if config.resolve_timeout_ms > 0 && self.reported_firing {
            let deadline = self
                .last_message_ms
                .saturating_add(config.resolve_timeout_ms);
            if deadline <= now {
                self.report_resolved(deadline, deadline, ResolveCause::Timeout, config);
            }
        }
        if self.flapping_since_ms.is_some() {
            let window = config.flapping.map_or(0, |p| p.window_ms);
            let quiet_at = self
                .flips_ms
                .last()
                .map_or(now, |t| t.saturating_add(window));
            if quiet_at <= now {
                self.flapping_since_ms = None;
                self.flips_ms.clear();
                if !self.reported_firing {
                    self.resolved_at_ms = Some(quiet_at);
                    self.resolved_by = self.resolved_by.or(Some(ResolveCause::Message));
                }
            }
        }
    }
}

/// A change of one alert: pass the alert to grouping for every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub fingerprint: String,
    /// `None` for a new alert.
    pub from: Option<AlertState>,
    pub to: AlertState,
    /// When the new state began (epoch ms).
    pub at_ms: i64,
}

impl Change {
    /// False for a message that updated an alert without changing its state.
    pub fn is_transition(&self) -> bool {
        self.from != Some(self.to)
    }
}

/// All alerts by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct AlertStore {
    config: LifecycleConfig,
    alerts: BTreeMap<String, TrackedAlert>,
}

/// The store's state, for persistence across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertStoreSnapshot {
    pub version: u32,
    pub alerts: Vec<TrackedAlert>,
}

pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported snapshot version {0} (this build reads version {SNAPSHOT_VERSION})")]
pub struct SnapshotVersionError(pub u32);

impl AlertStore {
    pub fn new(config: LifecycleConfig) -> AlertStore {
        AlertStore {
            config,
            alerts: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// Replaces the settings (config reload); alerts keep their history.
    pub fn set_config(&mut self, config: LifecycleConfig) {
        self.config = config;
    }

    /// Takes one message from `tripline.alerts`. `None` when it changes nothing: a resolved
    /// message for an alert this store does not know.
    pub fn ingest(&mut self, message: Alert, now: i64) -> Option<Change> {
        let fp = if message.fingerprint.is_empty() {
            fingerprint(&message.labels)
        } else {
            message.fingerprint.clone()
        };
        let config = self.config.clone();
        let labels = routing_labels(&message);
        let starts_at = message.starts_at;
        let firing = message.status == AlertStatus::Firing;
        let Some(alert) = self.alerts.get_mut(&fp) else {
            if !firing {
                return None;
            }
            let alert = TrackedAlert {
                fingerprint: fp.clone(),
                labels,
                alert: message,
                active_since_ms: now,
                starts_at_ms: starts_at,
                last_message_ms: now,
                resolved_at_ms: None,
                resolved_by: None,
                reported_firing: true,
                flips_ms: Vec::new(),
                flapping_since_ms: None,
                state: AlertState::Pending,
            };
            let state = alert.state_at(now, config.for_ms);
            self.alerts
                .insert(fp.clone(), TrackedAlert { state, ..alert });
            return Some(Change {
                fingerprint: fp,
                from: None,
                to: state,
                at_ms: now,
            });
        };
        alert.settle(now, &config);
        let from = alert.state;
        if firing {
            let ended = alert.resolved_at_ms.filter(|end| *end <= now);
            if alert.flapping_since_ms.is_some() {
                if !alert.reported_firing {
                    alert.record_flips(&[now], config.flapping);
                }
            } else if let Some(end) = ended {
                // It ended and fires again: two flips, and a new episode.
                alert.record_flips(&[end, now], config.flapping);
                alert.active_since_ms = now;
                alert.starts_at_ms = starts_at;
            }
            alert.reported_firing = true;
            alert.resolved_at_ms = None;
            alert.resolved_by = None;
        } else {
            let end = now.saturating_add(config.keep_firing_for_ms);
            alert.report_resolved(now, end, ResolveCause::Message, &config);
        }
        alert.last_message_ms = now;
        alert.labels = labels;
        alert.alert = message;
        alert.state = alert.state_at(now, config.for_ms);
        Some(Change {
            fingerprint: fp,
            from: Some(from),
            to: alert.state,
            at_ms: now,
        })
    }

    /// Applies time: timeouts, keep-firing expiry, pending → firing, flapping settling, and
    /// forgets alerts resolved longer than the retention. Returns the state changes.
    pub fn tick(&mut self, now: i64) -> Vec<Change> {
        let config = self.config.clone();
        let mut changes = Vec::new();
        for alert in self.alerts.values_mut() {
            alert.settle(now, &config);
            let to = alert.state_at(now, config.for_ms);
            if to != alert.state {
                let at_ms = match (alert.state, to) {
                    (_, AlertState::Resolved) => alert.resolved_at_ms.unwrap_or(now),
                    (AlertState::Pending, _) => alert.active_since_ms.saturating_add(config.for_ms),
                    _ => now,
                };
                changes.push(Change {
                    fingerprint: alert.fingerprint.clone(),
                    from: Some(alert.state),
                    to,
                    at_ms,
                });
                alert.state = to;
            }
        }
        let retention = config.resolved_retention_ms;
        self.alerts.retain(|_, a| {
            a.state != AlertState::Resolved
                || a.resolved_at_ms
                    .is_none_or(|end| end.saturating_add(retention) > now)
        });
        changes
    }

    /// The earliest time at which [`tick`](Self::tick) has something to do.
    pub fn next_wakeup(&self) -> Option<i64> {
        let c = &self.config;
        self.alerts
            .values()
            .flat_map(|a| {
                let timeout = (c.resolve_timeout_ms > 0 && a.reported_firing)
                    .then(|| a.last_message_ms.saturating_add(c.resolve_timeout_ms));
                let settle = a.flapping_since_ms.and_then(|_| {
                    let window = c.flapping.map_or(0, |p| p.window_ms);
                    a.flips_ms.last().map(|t| t.saturating_add(window))
                });
                let pending = (a.state == AlertState::Pending)
                    .then(|| a.active_since_ms.saturating_add(c.for_ms));
                let end = a.resolved_at_ms.map(|end| {
                    if a.state == AlertState::Resolved {
                        end.saturating_add(c.resolved_retention_ms)
                    } else {
                        end
                    }
                });
                [timeout, settle, pending, end]
            })
            .flatten()
            .min()
    }

    pub fn get(&self, fingerprint: &str) -> Option<&TrackedAlert> {
        self.alerts.get(fingerprint)
    }

    /// All alerts, by fingerprint.
    pub fn alerts(&self) -> impl Iterator<Item = &TrackedAlert> {
        self.alerts.values()
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// An alert's state at `now` with the global `for` (what the API lists).
    pub fn state(&self, fingerprint: &str, now: i64) -> Option<AlertState> {
        self.alerts
            .get(fingerprint)
            .map(|a| a.state_at(now, self.config.for_ms))
    }

    /// Alerts firing (or flapping) at `now` with the global `for`: inhibition sources.
    pub fn firing(&self, now: i64) -> impl Iterator<Item = &TrackedAlert> {
        let for_ms = self.config.for_ms;
        self.alerts
            .values()
            .filter(move |a| a.phase(now, for_ms) == Phase::Firing)
    }

    pub fn snapshot(&self) -> AlertStoreSnapshot {
        AlertStoreSnapshot {
            version: SNAPSHOT_VERSION,
            alerts: self.alerts.values().cloned().collect(),
        }
    }

    pub fn restore(
        config: LifecycleConfig,
        snapshot: AlertStoreSnapshot,
    ) -> Result<AlertStore, SnapshotVersionError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotVersionError(snapshot.version));
        }
        Ok(AlertStore {
            config,
            alerts: snapshot
                .alerts
                .into_iter()
                .map(|a| (a.fingerprint.clone(), a))
                .collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
