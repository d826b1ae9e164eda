//! Aggregation groups and the notification scheduler.
//!
//! Each route splits its alerts into groups by the values of its `group_by` labels. A group
//! is keyed by receiver and group key and decides, given `now`, whether its receiver must be
//! told something. Alertmanager's semantics:
//!
//! - a new group waits `group_wait` (from when its first alert fires for the route's `for`)
//!   and then notifies its firing alerts at once (reason `new`);
//! - after that the group is looked at every `group_interval`: new firing alerts (or an alert
//!   whose severity rose, or that started flapping) are sent (`changed`), alerts that resolved
//!   are sent when the receiver has `send_resolved` (`changed`, or `resolved` when none is
//!   left firing), and an unchanged firing group is sent again after `repeat_interval`
//!   (`repeat`);
//! - alerts are only ever reported resolved to a receiver that was told they fired, so an
//!   alert that fires and resolves within `group_wait` (a flap) sends nothing;
//! - muted alerts (silences, inhibition) are left out when the group is flushed. Fixed here:
//!   an alert muted while the receiver knew it is forgotten, so that it is notified again
//!   when the silence ends.
//!
//! A notification is considered sent when it is produced: the caller hands it to a durable
//! outbox whose delivery retries on its own budget, so a failing receiver neither delays the
//! group nor is re-sent the same change at the next interval.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tripline_core::alert::{Alert, AlertStatus, Severity};

use crate::lifecycle::{Phase, TrackedAlert};
use crate::matcher::Labels;
use crate::routing::{Route, RouteTree};

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationReason {
    /// The group fires for the first time (or again after it was all resolved).
    New,
    /// Alerts were added, escalated, started flapping or resolved.
    Changed,
    /// Nothing changed but `repeat_interval` elapsed.
    Repeat,
    /// Every alert of the group resolved.
    Resolved,
}

impl NotificationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationReason::New => "new",
            NotificationReason::Changed => "changed",
            NotificationReason::Repeat => "repeat",
            NotificationReason::Resolved => "resolved",
        }
    }
}

/// One notification for one receiver and one alert group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    /// Stable across notifications and restarts: `{route key}:{group labels}`.
    pub group_key: String,
    pub group_labels: Labels,
    /// Labels (with `severity`) that every alert of the notification has.
    pub common_labels: Labels,
    /// Firing alerts first, then resolved ones; each by start time. Status and `ends_at` are
    /// as notified (keep-firing and timeouts applied); a flapping alert has `flapping`,
    /// `flips` and `flapping_since` in its evidence facts.
    pub alerts: Vec<Alert>,
    pub reason: NotificationReason,
    /// A counter over every notification produced (1, 2, …), persisted with the groups and
    /// never reused, so no two notifications share it (see `receivers::notification_id`).
    pub sequence: u64,
    pub created_at_ms: i64,
}

impl Notification {
    /// Firing while any alert fires.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }
}

/// A route's settings as a group applies them (refreshed on every observe and reload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettings {
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub for_ms: i64,
    pub send_resolved: bool,
}

impl GroupSettings {
    /// The settings `route` gives the group with these group labels.
    pub fn of(route: &Route, group_labels: &Labels) -> GroupSettings {
        GroupSettings {
            group_wait_ms: route.group_wait_for(group_labels),
            group_interval_ms: route.group_interval_ms.max(1),
            repeat_interval_ms: route.repeat_interval_ms.max(1),
            for_ms: route.for_ms,
            send_resolved: route.send_resolved,
        }
    }
}

/// What the receiver was last told about a firing alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    pub severity: Severity,
    pub flapping: bool,
}

/// One aggregation group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub receiver: String,
    pub route_key: String,
    pub group_key: String,
    pub group_labels: Labels,
    pub settings: GroupSettings,
    /// The group's alerts (copies, refreshed by `observe`), by fingerprint.
    pub alerts: BTreeMap<String, TrackedAlert>,
    /// Firing alerts the receiver knows about, from the notifications sent.
    pub notified: BTreeMap<String, Notified>,
    pub last_flush_ms: Option<i64>,
    pub last_sent_ms: Option<i64>,
}

impl Group {
    /// When the group must be flushed next.
    pub fn next_flush_ms(&self) -> Option<i64> {
        let s = &self.settings;
        let after_interval = self
            .last_flush_ms
            .map(|t| t.saturating_add(s.group_interval_ms));
        if !self.notified.is_empty() {
            return after_interval;
        }
        // Nothing outstanding: wait group_wait from the first alert that fires.
        let first_firing = self
            .alerts
            .values()
            .map(|a| a.active_since_ms.saturating_add(s.for_ms))
            .min()?;
        let after_wait = first_firing.saturating_add(s.group_wait_ms);
        Some(after_interval.map_or(after_wait, |t| t.max(after_wait)))
    }

    fn flush(
        &mut self,
        now: i64,
        muted: &dyn Fn(&TrackedAlert) -> bool,
        sequence: &mut u64,
    ) -> Option<Notification> {
        let s = self.settings.clone();
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        let mut muted_firing = BTreeSet::new();
        for (fp, alert) in &self.alerts {
            match alert.phase(now, s.for_ms) {
                Phase::Firing if muted(alert) => {
                    muted_firing.insert(fp.clone());
                }
                Phase::Firing => firing.push(alert),
                Phase::Resolved if self.notified.contains_key(fp) => resolved.push(alert),
                _ => {}
            }
        }
        let changed = firing
            .iter()
            .any(|a| match self.notified.get(&a.fingerprint) {
                None => true,
                Some(n) => a.alert.severity > n.severity || (a.is_flapping() && !n.flapping),
            });
        let resolved_news = s.send_resolved && !resolved.is_empty();
        let reason = if self.notified.is_empty() {
            (!firing.is_empty()).then_some(NotificationReason::New)
        } else if changed {
            Some(NotificationReason::Changed)
        } else if firing.is_empty() {
            resolved_news.then_some(NotificationReason::Resolved)
        } else if resolved_news {
            Some(NotificationReason::Changed)
        } else {
            let repeat_due = self
                .last_sent_ms
                .is_none_or(|t| now >= t.saturating_add(s.repeat_interval_ms));
            repeat_due.then_some(NotificationReason::Repeat)
        };

        let notification = reason.map(|reason| {
            let key = |a: &&TrackedAlert| (a.starts_at_ms, a.fingerprint.clone());
            firing.sort_by_key(key);
            resolved.sort_by_key(key);
            let mut shown: Vec<&TrackedAlert> = firing.clone();
            if s.send_resolved {
                shown.extend(&resolved);
            }
            *sequence += 1;
            self.last_sent_ms = Some(now);
            Notification {
                receiver: self.receiver.clone(),
                group_key: self.group_key.clone(),
                group_labels: self.group_labels.clone(),
                common_labels: common_labels(&shown),
                alerts: shown
                    .iter()
                    .map(|a| a.notified(a.phase(now, s.for_ms)))
                    .collect(),
                reason,
                sequence: *sequence,
                created_at_ms: now,
            }
        });
        let none_firing = firing.is_empty();
        let told: BTreeMap<String, Notified> = firing
            .iter()
            .map(|a| {
                let n = Notified {
                    severity: a.alert.severity,
                    flapping: a.is_flapping(),
                };
                (a.fingerprint.clone(), n)
            })
            .collect();
        // Resolved alerts have been told (or need not be): they leave the group.
        self.alerts
            .retain(|_, a| matches!(a.phase(now, s.for_ms), Phase::Pending | Phase::Firing));
        if notification.is_some() || none_firing {
            // The receiver now knows exactly these (or, all resolved or muted, nothing).
            self.notified = told;
        } else {
            // Forget what is muted or gone, so that it is news when it comes back.
            let alerts = &self.alerts;
            self.notified
                .retain(|fp, _| alerts.contains_key(fp) && !muted_firing.contains(fp));
        }
        self.last_flush_ms = Some(now);
        notification
    }
}

fn common_labels(alerts: &[&TrackedAlert]) -> Labels {
    let Some((first, rest)) = alerts.split_first() else {
        return Labels::new();
    };
    let mut common = first.labels.clone();
    common.retain(|k, v| rest.iter().all(|a| a.labels.get(k) == Some(v)));
    common
}

/// Identifies a group: receiver and group key.
pub type GroupId = (String, String);

/// All aggregation groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grouper {
    groups: BTreeMap<GroupId, Group>,
    /// The last notification's sequence number.
    sequence: u64,
}

/// The groups, for persistence across restarts (notified sets included, so that a restart
/// neither repeats nor loses a notification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrouperSnapshot {
    pub version: u32,
    pub groups: Vec<Group>,
    pub sequence: u64,
}

pub const SNAPSHOT_VERSION: u32 = 1;

impl Grouper {
    pub fn new() -> Grouper {
        Grouper::default()
    }

    /// Puts an alert (new or changed: every `lifecycle::Change`) in the groups of the routes
    /// that take it, and takes it out of the groups it no longer belongs to (its labels
    /// changed). An alert that has already ended only updates the groups that hold it.
    pub fn observe(&mut self, tree: &RouteTree, alert: &TrackedAlert, now: i64) {
        let mut targets = BTreeSet::new();
        for route in tree.match_routes(&alert.labels) {
            let group_labels = route.group_labels(&alert.labels);
            let id = (route.receiver.clone(), route.group_key(&group_labels));
            targets.insert(id.clone());
            let settings = GroupSettings::of(route, &group_labels);
            let live = matches!(
                alert.phase(now, settings.for_ms),
                Phase::Pending | Phase::Firing
            );
            let known = self
                .groups
                .get(&id)
                .is_some_and(|g| g.alerts.contains_key(&alert.fingerprint));
            if !live && !known {
                continue;
            }
            let group = self.groups.entry(id.clone()).or_insert_with(|| Group {
                receiver: id.0.clone(),
                route_key: route.key.clone(),
                group_key: id.1.clone(),
                group_labels,
                settings: settings.clone(),
                alerts: BTreeMap::new(),
                notified: BTreeMap::new(),
                last_flush_ms: None,
                last_sent_ms: None,
            });
            group.settings = settings;
            group
                .alerts
                .insert(alert.fingerprint.clone(), alert.clone());
        }
        for (id, group) in &mut self.groups {
            if !targets.contains(id) {
                group.alerts.remove(&alert.fingerprint);
            }
        }
    }

    /// After a config reload: re-routes every alert, refreshes each group's settings, and
    /// drops the groups whose route or receiver is gone. Groups that survive keep what their
    /// receiver was told.
    pub fn reload<'a>(
        &mut self,
        tree: &RouteTree,
        alerts: impl IntoIterator<Item = &'a TrackedAlert>,
        now: i64,
    ) {
        for alert in alerts {
            self.observe(tree, alert, now);
        }
        let routes: BTreeMap<&str, &Route> = tree
            .routes()
            .into_iter()
            .map(|r| (r.key.as_str(), r))
            .collect();
        self.groups
            .retain(|_, g| match routes.get(g.route_key.as_str()) {
                Some(route) if route.receiver == g.receiver => {
                    g.settings = GroupSettings::of(route, &g.group_labels);
                    true
                }
                _ => false,
            });
    }

    /// Flushes every group due at `now` and returns the notifications to send, in group
    /// order. `muted` says whether a firing alert is silenced or inhibited now.
    pub fn flush(&mut self, now: i64, muted: &dyn Fn(&TrackedAlert) -> bool) -> Vec<Notification> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            let due = group.next_flush_ms().is_some_and(|t| t <= now);
            if due {
                out.extend(group.flush(now, muted, &mut self.sequence));
            }
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        out
    }

    /// When [`flush`](Self::flush) has something to do next.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.groups.values().filter_map(Group::next_flush_ms).min()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn get(&self, receiver: &str, group_key: &str) -> Option<&Group> {
        self.groups
            .get(&(receiver.to_owned(), group_key.to_owned()))
    }

    pub fn snapshot(&self) -> GrouperSnapshot {
        GrouperSnapshot {
            version: SNAPSHOT_VERSION,
            groups: self.groups.values().cloned().collect(),
            sequence: self.sequence,
        }
    }

    /// Restores groups; call [`reload`](Self::reload) next if the config may have changed.
    pub fn restore(
        snapshot: GrouperSnapshot,
    ) -> Result<Grouper, crate::lifecycle::SnapshotVersionError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(crate::lifecycle::SnapshotVersionError(snapshot.version));
        }
        Ok(Grouper {
            groups: snapshot
                .groups
                .into_iter()
                .map(|g| ((g.receiver.clone(), g.group_key.clone()), g))
                .collect(),
            sequence: snapshot.sequence,
        })
    }
}

#[cfg(test)]
mod tests;
