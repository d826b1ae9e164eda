//! Receivers: what each kind of notification looks like and how its delivery is retried.
//!
//! The input is a [`Message`]: one notification for one alert group, built by the integration
//! from the grouping stage's output. Everything that decides what is sent is pure and unit
//! tested: the webhook payload and its Standard Webhooks signature ([`webhook`]), the Slack Block
//! Kit message ([`slack`]), the email ([`email`]) and the retry / rate-limit policy
//! ([`delivery`]). The transports are thin: [`http::HttpSender`] posts one request and
//! [`email::EmailReceiver::send`] hands one message to SMTP; each returns one attempt's result,
//! which [`delivery::RetryPolicy::decide`] turns into an [`delivery::Outcome`].
//!
//! Identity: a notification is identified by [`notification_id`] (its group, reason, content
//! and a sequence number the caller persists with it). The same id is the webhook's
//! `webhook-id` and the email's `Message-ID`, so a retry after a timeout or a restart is
//! recognisable as a duplicate by the receiver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tripline_core::alert::{Alert, AlertStatus};
use tripline_core::time::format_ms;

pub mod delivery;
pub mod email;
pub mod http;
pub mod slack;
pub mod webhook;

/// Why a notification is sent (`Message::reason`).
pub mod reason {
    /// The group fires for the first time (or again after it resolved).
    pub const NEW: &str = "new";
    /// The group's set of alerts or their states changed.
    pub const CHANGED: &str = "changed";
    /// Nothing changed but `repeat_interval` elapsed.
    pub const REPEAT: &str = "repeat";
    /// Every alert of the group resolved.
    pub const RESOLVED: &str = "resolved";
}

/// One notification for one receiver and one alert group: the receivers' input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The receiver's name from the config.
    pub receiver: String,
    /// The group's stable key (route + `group_by` label values).
    pub group_key: String,
    /// The `group_by` labels and their values.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert of the notification shares.
    pub common_labels: BTreeMap<String, String>,
    /// `"new"`, `"changed"`, `"repeat"` or `"resolved"` (see [`reason`]).
    pub reason: String,
    /// `firing` while any alert of the group fires, `resolved` when none does.
    pub status: AlertStatus,
    pub alerts: Vec<Alert>,
    /// Where Tripline's UI/API is reachable, for links in the messages.
    pub external_url: Option<String>,
}

impl Message {
    pub fn firing_count(&self) -> usize {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count()
    }

    pub fn resolved_count(&self) -> usize {
        self.alerts.len() - self.firing_count()
    }

    /// The number shown next to the status (`[FIRING:2]`): alerts in the notification's status.
    pub fn status_count(&self) -> usize {
        match self.status {
            AlertStatus::Firing => self.firing_count(),
            AlertStatus::Resolved => self.resolved_count(),
        }
    }

    /// Annotations (`summary`, `description`) shared by every alert, Alertmanager's
    /// `CommonAnnotations`. Empty when there are no alerts.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(first) = self.alerts.first() else {
            return out;
        };
        if self.alerts.iter().all(|a| a.summary == first.summary) {
            out.insert("summary".to_owned(), first.summary.clone());
        }
        if self
            .alerts
            .iter()
            .all(|a| a.description == first.description)
        {
            out.insert("description".to_owned(), first.description.clone());
        }
        out
    }

    /// The detector name when every alert comes from one detector, else `"N detectors"`.
    pub fn detector_text(&self) -> String {
        if let Some(d) = self.common_labels.get("detector") {
            return d.clone();
        }
        let mut detectors: Vec<&str> = self.alerts.iter().map(|a| a.detector.as_str()).collect();
        detectors.sort_unstable();
        detectors.dedup();
        match detectors.as_slice() {
            [] => "no alerts".to_owned(),
            [one] => (*one).to_owned(),
            many => format!("{} detectors", many.len()),
        }
    }

    /// The highest severity among the alerts of the notification's status (all alerts if none).
    pub fn max_severity(&self) -> Option<tripline_core::alert::Severity> {
        let in_status = self.alerts.iter().filter(|a| a.status == self.status);
        in_status
            .map(|a| a.severity)
            .max()
            .or_else(|| self.alerts.iter().map(|a| a.severity).max())
    }
}

/// The id of one notification: `msg_` and 32 hex digits, stable across retries and restarts.
///
/// It hashes the receiver, group key, reason, status, every alert's fingerprint, status and
/// start/end, and `sequence`. The caller picks `sequence` when it creates the notification
/// (e.g. the group's notification counter) and persists it with the pending notification;
/// two distinct notifications of a group must not share it, otherwise two `repeat`s with the
/// same content would share an id. Retrying, or rebuilding the same [`Message`] after a
/// restart, gives the same id.
pub fn notification_id(msg: &Message, sequence: u64) -> String {
    let mut h = Sha256::new();
    for part in [
        "tripline-notification-v1",
        &msg.receiver,
        &msg.group_key,
        &msg.reason,
        msg.status.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(sequence.to_be_bytes());
    let mut alerts: Vec<&Alert> = msg.alerts.iter().collect();
    alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for a in alerts {
        // Times hashed as their RFC 3339 text, as when alerts held them so: ids stay the same.
        let starts_at = format_ms(a.starts_at);
        let ends_at = a.ends_at.map(format_ms).unwrap_or_default();
        for part in [
            a.fingerprint.as_str(),
            a.status.as_str(),
            starts_at.as_str(),
            ends_at.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    format!("msg_{}", hex(&h.finalize()[..16]))
}

/// The id of an alert group's conversation (email threading): 32 hex digits of a hash of the
/// receiver and the group key, the same for every notification of the group.
pub fn group_thread_id(receiver: &str, group_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tripline-group-v1\0");
    h.update(receiver.as_bytes());
    h.update([0]);
    h.update(group_key.as_bytes());
    hex(&h.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels shown first, in this order; the rest follow alphabetically.
const KEY_LABELS: [&str; 7] = [
    "api_key_id",
    "project",
    "provider",
    "model",
    "user",
    "client_ip",
    "team",
];

/// An alert's labels in display order, without `detector` (shown separately).
pub(crate) fn display_labels(labels: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = KEY_LABELS
        .iter()
        .filter_map(|k| labels.get(*k).map(|v| (*k, v.as_str())))
        .collect();
    out.extend(
        labels
            .iter()
            .filter(|(k, _)| k.as_str() != "detector" && !KEY_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    out
}

/// A number for people: at most 3 decimals, no trailing zeros, no `-0`.
pub(crate) fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// `2026-11-26 10:00–10:05 UTC` from epoch milliseconds.
pub(crate) fn window_text(start: i64, end: i64) -> String {
    use chrono::{DateTime, Timelike, Utc};
    match (
        DateTime::<Utc>::from_timestamp_millis(start),
        DateTime::<Utc>::from_timestamp_millis(end),
    ) {
        (Some(s), Some(e)) => {
            let fmt = |t: DateTime<Utc>| {
                if t.second() == 0 && t.nanosecond() == 0 {
                    t.format("%H:%M").to_string()
                } else {
                    t.format("%H:%M:%S").to_string()
                }
            };
            if s.date_naive() == e.date_naive() {
                format!("{} {}–{} UTC", s.format("%Y-%m-%d"), fmt(s), fmt(e))
            } else {
                format!(
                    "{} {} – {} {} UTC",
                    s.format("%Y-%m-%d"),
                    fmt(s),
                    e.format("%Y-%m-%d"),
                    fmt(e)
                )
            }
        }
        _ => format!("{} – {}", format_ms(start), format_ms(end)),
    }
}

/// At most `max` characters of `s` (on a char boundary); whether it was cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> (&str, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (&s[..i], true),
        None => (s, false),
    }
}

/// Control characters (newlines included) become spaces: for one-line fields.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::{alert, message};
    use super::*;

    #[test]
    fn notification_id_is_stable_and_distinguishes_notifications() {
        let m = message(vec![alert("spend_spike", "key-7", AlertStatus::Firing)]);
        let id = notification_id(&m, 1);
        assert_eq!(id, notification_id(&m.clone(), 1));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert_ne!(id, notification_id(&m, 2), "sequence");
        let mut resolved = m.clone();
        resolved.alerts[0].status = AlertStatus::Resolved;
        resolved.alerts[0].ends_at = Some(1_795_687_740_000); // 10:09
        assert_ne!(id, notification_id(&resolved, 1), "content");
        let mut other_reason = m.clone();
        other_reason.reason = reason::REPEAT.into();
        assert_ne!(id, notification_id(&other_reason, 1), "reason");
        // Alert order does not matter.
        let two = message(vec![
            alert("spend_spike", "key-7", AlertStatus::Firing),
            alert("spend_spike", "key-8", AlertStatus::Firing),
        ]);
        let mut swapped = two.clone();
        swapped.alerts.reverse();
        assert_eq!(notification_id(&two, 1), notification_id(&swapped, 1));
    }

    #[test]
    fn group_thread_id_depends_on_receiver_and_group_only() {
        assert_eq!(group_thread_id("r", "g"), group_thread_id("r", "g"));
        assert_ne!(group_thread_id("r", "g"), group_thread_id("r", "h"));
        assert_ne!(group_thread_id("r", "g"), group_thread_id("s", "g"));
        assert_ne!(group_thread_id("ab", "c"), group_thread_id("a", "bc"));
    }

    #[test]
    fn counts_annotations_and_helpers() {
        let mut m = message(vec![
            alert("spend_spike", "key-7", AlertStatus::Firing),
            alert("spend_spike", "key-8", AlertStatus::Resolved),
        ]);
        assert_eq!(
            (m.firing_count(), m.resolved_count(), m.status_count()),
            (1, 1, 1)
        );
        assert!(m.common_annotations().is_empty(), "summaries differ");
        m.alerts[1].summary = m.alerts[0].summary.clone();
        m.alerts[1].description = m.alerts[0].description.clone();
        assert_eq!(m.common_annotations().len(), 2);
        assert_eq!(number(4.0), "4");
        assert_eq!(number(2.4567), "2.457");
        assert_eq!(number(-0.0001), "0");
        assert_eq!(
            window_text(1_795_687_200_000, 1_795_687_500_000),
            "2026-11-26 10:00–10:05 UTC"
        );
        assert_eq!(
            window_text(1_795_687_200_000, 1_795_773_630_000),
            "2026-11-26 10:00 – 2026-11-27 10:00:30 UTC"
        );
        assert_eq!(
            window_text(i64::MAX, 0),
            "9223372036854775807 – 1970-01-01T00:00:00.000Z",
            "a time chrono cannot hold is shown as its number"
        );
        assert_eq!(truncate_chars("héllo", 2), ("hé", true));
        assert_eq!(truncate_chars("hé", 2), ("hé", false));
        let labels: BTreeMap<String, String> = [
            ("zz", "1"),
            ("detector", "d"),
            ("project", "p"),
            ("api_key_id", "k"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            display_labels(&labels),
            vec![("api_key_id", "k"), ("project", "p"), ("zz", "1")]
        );
    }
}
