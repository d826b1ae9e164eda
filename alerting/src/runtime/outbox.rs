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
