//! The outbox: notifications produced by the groups and not yet delivered or given up. Each
//! entry carries its own retry budget (attempts, first attempt, next attempt), persisted with
//! the state file, so a restart resumes the schedule instead of starting it again.

use serde::{Deserialize, Serialize};

use crate::grouping::Notification;
use crate::receivers::{notification_id, Message};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `receivers::notification_id(message, sequence)`: the `webhook-id`, the same on every
    /// attempt, before and after a restart.
    pub id: String,
    pub message: Message,
    pub sequence: u64,
    pub created_at_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    pub first_attempt_at_ms: Option<i64>,
    /// Not before this (backoff, Retry-After, rate limit).
    pub next_attempt_at_ms: i64,
    /// The last attempt's error, for the delivery log.
    #[serde(default)]
    pub last_error: String,
}

impl OutboxEntry {
    pub fn new(n: Notification, external_url: Option<String>) -> Self {
        let status = n.status();
        let message = Message {
            receiver: n.receiver,
            group_key: n.group_key,
            group_labels: n.group_labels,
            common_labels: n.common_labels,
            reason: n.reason.as_str().to_owned(),
            status,
            alerts: n.alerts,
            external_url,
        };
        Self {
            id: notification_id(&message, n.sequence),
            message,
            sequence: n.sequence,
            created_at_ms: n.created_at_ms,
            attempts: 0,
            first_attempt_at_ms: None,
            next_attempt_at_ms: n.created_at_ms,
            last_error: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouping::NotificationReason;
    use crate::lifecycle::test_support::{firing, labels, resolved};
    use tripline_core::alert::AlertStatus;

    fn notification(alerts: Vec<tripline_core::alert::Alert>, sequence: u64) -> Notification {
        Notification {
            receiver: "hook".into(),
            group_key: "{}:{detector=\"spend_spike\"}".into(),
            group_labels: labels(&[("detector", "spend_spike")]),
            common_labels: labels(&[("detector", "spend_spike")]),
            alerts,
            reason: NotificationReason::New,
            sequence,
            created_at_ms: 1_000,
        }
    }

    #[test]
    fn an_entry_is_due_at_once_and_its_id_is_the_notification_id() {
        let n = notification(vec![firing("spend_spike", "k", 0)], 7);
        let e = OutboxEntry::new(n.clone(), Some("https://t.example".into()));
        assert_eq!(e.id, notification_id(&e.message, 7));
        assert_eq!(
            (e.attempts, e.first_attempt_at_ms, e.next_attempt_at_ms),
            (0, None, 1_000)
        );
        assert_eq!(e.message.status, AlertStatus::Firing);
        assert_eq!(e.message.reason, "new");
        assert_eq!(e.message.external_url.as_deref(), Some("https://t.example"));
        // The same notification gives the same id (a restart rebuilds nothing differently);
        // another sequence gives another.
        assert_eq!(OutboxEntry::new(n.clone(), None).id, e.id);
        let mut later = n;
        later.sequence = 8;
        assert_ne!(OutboxEntry::new(later, None).id, e.id);
        let done = OutboxEntry::new(notification(vec![resolved("spend_spike", "k", 0)], 9), None);
        assert_eq!(done.message.status, AlertStatus::Resolved);
        // Survives the state file.
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<OutboxEntry>(&json).unwrap(), e);
    }
}
