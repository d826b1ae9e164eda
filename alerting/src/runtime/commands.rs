//! The service's side of [`super::control`]: requests from the API and config reloads,
//! applied by the task that owns the pipeline, and stored before they are answered.

use rdkafka::consumer::{CommitMode, StreamConsumer};
use tracing::{error, info};
use tripline_core::config::AlertingConfig;

use super::control::{self, AlertView, Command, ControlError, SilenceView};
use super::deliver::Receivers;
use super::outbox::OutboxEntry;
use super::{now_ms, Runner};
use crate::pipeline::Pipeline;
use crate::receivers::{notification_id, reason, Message};
use crate::silence::{Silence, SilenceError, SilenceStore};

impl Runner<'_> {
    /// Answers a request; changes are stored before the answer.
    pub(super) async fn command(&mut self, command: Command, consumer: &StreamConsumer) {
        let now = now_ms();
        match command {
            Command::ListAlerts(reply) => {
                let _ = reply.send(Ok(alert_views(&self.pipeline, now)));
            }
            Command::ListSilences(reply) => {
                let _ = reply.send(Ok(silence_views(&self.pipeline.silences, now)));
            }
            Command::CreateSilence(new, reply) => {
                let result = self
                    .change_silence(|s| s.create(new, now))
                    .await
                    .map(|s| SilenceView::of(&s, now));
                if let Ok(view) = &result {
                    info!(id = %view.id, matchers = ?view.matchers, by = %view.created_by, ends_at = %view.ends_at, "silence created");
                }
                let _ = reply.send(self.saved(result, consumer).await);
            }
            Command::ExpireSilence(id, reply) => {
                let result = self
                    .change_silence(|s| s.expire(&id, now))
                    .await
                    .map(|s| SilenceView::of(&s, now));
                if result.is_ok() {
                    info!(id = %id, "silence expired");
                }
                let _ = reply.send(self.saved(result, consumer).await);
            }
            Command::Test(receiver, reply) => {
                let result = self.queue_test(receiver, now);
                let _ = reply.send(self.saved(result, consumer).await);
            }
            Command::Reload(config, reply) => {
                let result = self.reload(*config, now);
                let _ = reply.send(self.saved(result, consumer).await);
            }
        }
    }

    /// Creates or expires a silence. With standbys it is shared first: a silence only this
    /// instance knew would die with it.
    async fn change_silence(
        &mut self,
        change: impl FnOnce(&mut SilenceStore) -> Result<&Silence, SilenceError>,
    ) -> Result<Silence, ControlError> {
        match self.shared {
            Some(shared) => {
                let silence = shared
                    .change_silence(&self.pipeline.silences, change)
                    .await?;
                self.pipeline.silences.merge(silence.clone());
                Ok(silence)
            }
            None => Ok(change(&mut self.pipeline.silences)?.clone()),
        }
    }

    /// `result`, once a change it made is on disk.
    async fn saved<T>(
        &mut self,
        result: Result<T, ControlError>,
        consumer: &StreamConsumer,
    ) -> Result<T, ControlError> {
        let value = result?;
        self.dirty = true;
        if self.persist_with(consumer, CommitMode::Async, true).await {
            Ok(value)
        } else {
            Err(ControlError::NotStored)
        }
    }

    fn queue_test(&mut self, receiver: String, now: i64) -> Result<String, ControlError> {
        if !self.receivers.by_name.contains_key(&receiver) {
            return Err(ControlError::UnknownReceiver(receiver));
        }
        let alert = control::test_alert(&receiver, now);
        let message = Message {
            group_key: format!("test:{now}"),
            group_labels: [("detector".to_owned(), "test".to_owned())].into(),
            common_labels: alert.labels.clone(),
            receiver,
            reason: reason::NEW.to_owned(),
            status: tripline_core::alert::AlertStatus::Firing,
            alerts: vec![alert],
            external_url: self.config.external_url.clone(),
        };
        let sequence = now.max(0) as u64;
        let entry = OutboxEntry {
            id: notification_id(&message, sequence),
            message,
            sequence,
            created_at_ms: now,
            attempts: 0,
            first_attempt_at_ms: None,
            next_attempt_at_ms: now,
            last_error: String::new(),
        };
        let id = entry.id.clone();
        info!(receiver = %entry.message.receiver, id = %id, "test notification queued");
        self.unsaved.insert(id.clone());
        self.outbox.push(entry);
        Ok(id)
    }

    fn reload(&mut self, config: AlertingConfig, now: i64) -> Result<(), ControlError> {
        let receivers = Receivers::from_config(&config, &tripline_kafka::process_env)
            .map_err(|e| ControlError::Config(e.to_string()))?;
        self.pipeline
            .reload(&config, now)
            .map_err(|e| ControlError::Config(e.to_string()))?;
        for (name, err) in receivers.broken() {
            error!(
                receiver = name,
                "receiver misconfigured, its notifications will fail: {err}"
            );
        }
        self.receivers = receivers;
        self.config = config;
        info!(
            receivers = self.receivers.by_name.len(),
            "alerting config reloaded"
        );
        Ok(())
    }
}

/// The alerts as the API lists them, oldest first.
pub(super) fn alert_views(pipeline: &Pipeline, now: i64) -> Vec<AlertView> {
    let mut views: Vec<AlertView> = pipeline
        .store
        .alerts()
        .map(|a| {
            let (silenced_by, inhibited_by) = pipeline.muted_by(&a.fingerprint, now);
            AlertView {
                fingerprint: a.fingerprint.clone(),
                state: pipeline
                    .store
                    .state(&a.fingerprint, now)
                    .map_or("resolved", |s| s.as_str()),
                severity: a.alert.severity.as_str(),
                labels: a.alert.labels.clone(),
                summary: a.alert.summary.clone(),
                starts_at: tripline_core::time::format_ms(a.starts_at_ms),
                ends_at: a.resolved_at_ms.map(tripline_core::time::format_ms),
                last_message_at: tripline_core::time::format_ms(a.last_message_ms),
                silenced_by,
                inhibited_by,
            }
        })
        .collect();
    views.sort_by(|a, b| (&a.starts_at, &a.fingerprint).cmp(&(&b.starts_at, &b.fingerprint)));
    views
}

pub(super) fn silence_views(silences: &SilenceStore, now: i64) -> Vec<SilenceView> {
    silences.list().map(|s| SilenceView::of(s, now)).collect()
}
