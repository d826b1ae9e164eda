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
use crate::silence::{NewSilence, Silence};

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

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

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

/// Why a request got no answer.
pub const STOPPED: &str = "alerting is not running";
/// Why a change the service applied is not durable yet (the state file or topic cannot be
/// written); the API answers 503.
pub const NOT_STORED: &str =
    "the change is applied but the state could not be stored (see the log)";
/// The start of the answer when a silence cannot be shared with the other instances
/// (`[alerting.ha]`: Kafka is unreachable); the API answers 503.
pub const NOT_SHARED: &str = "the silence could not be shared";
/// Why a standby (`[alerting.ha]`) refuses a request only the active instance can serve.
pub const STANDBY: &str =
    "this alerting instance is a standby: test notifications are sent by the active one";

impl Handle {
    pub fn channel() -> (Handle, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel(64);
        (Handle { sender }, receiver)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(make(reply))
            .await
            .map_err(|_| STOPPED.to_owned())?;
        answer.await.map_err(|_| STOPPED.to_owned())?
    }

    pub async fn alerts(&self) -> Result<Vec<AlertView>, String> {
        self.ask(Command::ListAlerts).await
    }

    pub async fn silences(&self) -> Result<Vec<SilenceView>, String> {
        self.ask(Command::ListSilences).await
    }

    pub async fn create_silence(&self, new: NewSilence) -> Result<SilenceView, String> {
        self.ask(|r| Command::CreateSilence(new, r)).await
    }

    pub async fn expire_silence(&self, id: String) -> Result<SilenceView, String> {
        self.ask(|r| Command::ExpireSilence(id, r)).await
    }

    pub async fn test(&self, receiver: String) -> Result<String, String> {
        self.ask(|r| Command::Test(receiver, r)).await
    }

    pub async fn reload(&self, config: AlertingConfig) -> Result<(), String> {
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
    let at = format_ms(now);
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
        window_start: at.clone(),
        window_end: at.clone(),
        starts_at: at.clone(),
        ends_at: None,
        emitted_at: at,
        evidence: Evidence::default(),
    }
}
