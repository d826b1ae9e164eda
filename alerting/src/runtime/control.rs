//! Controlling the running service (the HTTP API's side): list alerts and silences, create and
//! expire silences, send a test notification, apply a reloaded config. Requests go to the task
//! that owns the pipeline through a channel, so they are applied between messages and the state
//! file is written before the answer: a silence the API acknowledged survives a crash.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tripline_core::alert::{Alert, AlertStatus, Evidence, Severity, ALERT_CONTRACT_VERSION};
use tripline_core::config::AlertingConfig;
use tripline_core::time::format_ms;

use crate::matcher::Matcher;
use crate::silence::{NewSilence, Silence, SilenceError};

/// An alert as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub fingerprint: String,
    /// `pending`, `firing`, `flapping` or `resolved`.
    pub state: &'static str,
    pub severity: &'static str,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub last_message_at: String,
    /// Active silences muting it.
    pub silenced_by: Vec<String>,
    /// The firing alert inhibiting it.
    pub inhibited_by: Option<String>,
}

/// A silence as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SilenceView {
    pub id: String,
    pub state: &'static str,
    pub matchers: Vec<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    pub updated_at: String,
}

impl SilenceView {
    pub fn of(s: &Silence, now: i64) -> SilenceView {
        SilenceView {
            id: s.id.clone(),
            state: s.state(now).as_str(),
            matchers: s.matchers.iter().map(Matcher::to_string).collect(),
            starts_at: format_ms(s.starts_at_ms),
            ends_at: format_ms(s.ends_at_ms),
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
            updated_at: format_ms(s.updated_at_ms),
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

pub enum Command {
    ListAlerts(Reply<Vec<AlertView>>),
    ListSilences(Reply<Vec<SilenceView>>),
    CreateSilence(NewSilence, Reply<SilenceView>),
    ExpireSilence(String, Reply<SilenceView>),
    /// Queues a test notification for a receiver; answers its notification id.
    Test(String, Reply<String>),
    /// Applies a new (validated) `[alerting]`: routes, receivers, inhibition, timings. Alerts,
    /// groups, silences and pending notifications stay.
    Reload(Box<AlertingConfig>, Reply<()>),
}

/// The API's end of the channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    sender: mpsc::Sender<Command>,
}

/// Why the service refused a request or could not answer it. The API chooses its status code
/// from the variant (`api/src/alerts.rs`), never from the message, which is for people: rewording
/// one changes no answer's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A silence could not be created or expired: [`SilenceError::NotFound`] names an unknown
    /// id, the others a silence the store refuses.
    #[error(transparent)]
    Silence(#[from] SilenceError),
    /// A test notification for a receiver `[alerting]` does not name.
    #[error("no receiver {0:?} in [alerting]")]
    UnknownReceiver(String),
    /// A config refused: a reload's (the file does not load, or names no receivers, or does
    /// not validate), or the running one, under which a standby cannot read the stored state.
    #[error("{0}")]
    Config(String),
    /// The service is not running: the request was not taken or got no answer.
    #[error("alerting is not running")]
    Stopped,
    /// A standby (`[alerting.ha]`) was asked what only the active instance does.
    #[error("this alerting instance is a standby: test notifications are sent by the active one")]
    Standby,
    /// The change is applied but not durable yet: the state file or topic cannot be written.
    #[error("the change is applied but the state could not be stored (see the log)")]
    NotStored,
    /// A silence could not be shared with the other instances (`[alerting.ha]`: Kafka is
    /// unreachable); it was not applied.
    #[error("the silence could not be shared through {topic}: {reason}")]
    NotShared { topic: String, reason: String },
}

impl Handle {
    pub fn channel() -> (Handle, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel(64);
        (Handle { sender }, receiver)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(make(reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    pub async fn alerts(&self) -> Result<Vec<AlertView>, ControlError> {
        self.ask(Command::ListAlerts).await
    }

    pub async fn silences(&self) -> Result<Vec<SilenceView>, ControlError> {
        self.ask(Command::ListSilences).await
    }

    pub async fn create_silence(&self, new: NewSilence) -> Result<SilenceView, ControlError> {
        self.ask(|r| Command::CreateSilence(new, r)).await
    }

    pub async fn expire_silence(&self, id: String) -> Result<SilenceView, ControlError> {
        self.ask(|r| Command::ExpireSilence(id, r)).await
    }

    pub async fn test(&self, receiver: String) -> Result<String, ControlError> {
        self.ask(|r| Command::Test(receiver, r)).await
    }

    pub async fn reload(&self, config: AlertingConfig) -> Result<(), ControlError> {
        self.ask(|r| Command::Reload(Box::new(config), r)).await
    }
}

/// The alert a test notification carries.
pub fn test_alert(receiver: &str, now: i64) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("detector".to_owned(), "test".to_owned()),
        ("receiver".to_owned(), receiver.to_owned()),
    ]
    .into();
    Alert {
        version: ALERT_CONTRACT_VERSION,
        fingerprint: tripline_core::alert::fingerprint(&labels),
        detector: "test".to_owned(),
        status: AlertStatus::Firing,
        severity: Severity::Info,
        labels,
        summary: format!("Test notification from Tripline to receiver {receiver}"),
        description: "Sent on request through the API; no alert is firing.".to_owned(),
        observed: 0.0,
        expected: 0.0,
        upper: 0.0,
        score: 0.0,
        window_start: now,
        window_end: now,
        starts_at: now,
        ends_at: None,
        emitted_at: now,
        evidence: Evidence::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_nobody_answers_is_stopped() {
        let (handle, commands) = Handle::channel();
        drop(commands);
        assert_eq!(handle.alerts().await.unwrap_err(), ControlError::Stopped);

        let (handle, mut commands) = Handle::channel();
        let dropped = tokio::spawn(async move {
            // Taken, never answered.
            drop(commands.recv().await);
        });
        assert_eq!(
            handle.expire_silence("sil_x".into()).await.unwrap_err(),
            ControlError::Stopped
        );
        dropped.await.unwrap();
    }

    #[test]
    fn messages_say_what_went_wrong() {
        let cases = [
            (
                ControlError::Silence(SilenceError::NotFound("sil_x".into())),
                r#"no silence "sil_x""#,
            ),
            (
                ControlError::UnknownReceiver("pager".into()),
                r#"no receiver "pager" in [alerting]"#,
            ),
            (ControlError::Stopped, "alerting is not running"),
            (
                ControlError::NotShared {
                    topic: "tripline-silences".into(),
                    reason: "timed out".into(),
                },
                "the silence could not be shared through tripline-silences: timed out",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(err.to_string(), message);
        }
    }
}
