//! The pure stages wired together: messages in, notifications out, with `now` passed in.
//! The runtime (Kafka consumer, timers, outbox, API) drives one [`Pipeline`]:
//!
//! ```text
//! on a message:     pipeline.ingest(alert, now)
//! at next_wakeup(): for n in pipeline.tick(now) { outbox.persist(n) }   // persist, then send
//! API:              pipeline.silences (create / expire / list), pipeline.store (list alerts)
//! periodically:     persist pipeline.snapshot() (with the outbox) so a restart loses nothing
//! ```
//!
//! `tick` must run whenever `next_wakeup()` has passed, also while messages keep coming: it
//! is what flushes the groups.

use serde::{Deserialize, Serialize};
use tripline_core::alert::Alert;
use tripline_core::config::AlertingConfig;

use crate::grouping::{Grouper, GrouperSnapshot, Notification};
use crate::lifecycle::{
    AlertStore, AlertStoreSnapshot, Change, LifecycleConfig, SnapshotVersionError,
};
use crate::matcher::MatcherError;
use crate::routing::{RouteTree, RoutingError};
use crate::silence::{Inhibitor, Muter, SilenceStore};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("inhibit rule: {0}")]
    Inhibit(#[from] MatcherError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotVersionError),
}

/// Alert store, routing tree, groups, silences and inhibition rules.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub store: AlertStore,
    pub tree: RouteTree,
    pub grouper: Grouper,
    pub silences: SilenceStore,
    pub inhibitor: Inhibitor,
    silence_retention_ms: i64,
}

/// Everything a restart needs (the outbox of unsent notifications is the caller's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSnapshot {
    pub alerts: AlertStoreSnapshot,
    pub groups: GrouperSnapshot,
    pub silences: SilenceStore,
}

fn retention_ms(config: &AlertingConfig) -> i64 {
    i64::try_from(config.silence_retention_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Pipeline {
    /// From a validated config with at least one receiver.
    pub fn from_config(config: &AlertingConfig) -> Result<Pipeline, PipelineError> {
        Ok(Pipeline {
            store: AlertStore::new(LifecycleConfig::from_config(config)),
            tree: RouteTree::from_config(config)?,
            grouper: Grouper::new(),
            silences: SilenceStore::new(),
            inhibitor: Inhibitor::from_config(config)?,
            silence_retention_ms: retention_ms(config),
        })
    }

    /// Applies a new config; alerts, groups (what each receiver was told) and silences stay.
    /// On error nothing changes.
    pub fn reload(&mut self, config: &AlertingConfig, now: i64) -> Result<(), PipelineError> {
        let tree = RouteTree::from_config(config)?;
        let inhibitor = Inhibitor::from_config(config)?;
        self.store.set_config(LifecycleConfig::from_config(config));
        self.tree = tree;
        self.inhibitor = inhibitor;
        self.silence_retention_ms = retention_ms(config);
        self.grouper.reload(&self.tree, self.store.alerts(), now);
        Ok(())
    }

    /// Takes one message from `tripline.alerts`.
    pub fn ingest(&mut self, message: Alert, now: i64) -> Option<Change> {
        let change = self.store.ingest(message, now)?;
        if let Some(alert) = self.store.get(&change.fingerprint) {
            self.grouper.observe(&self.tree, alert, now);
        }
        Some(change)
    }

    /// Applies time up to `now` and returns the notifications due, and the alert state
    /// changes (for the `alerts` history).
    pub fn tick(&mut self, now: i64) -> (Vec<Notification>, Vec<Change>) {
        let changes = self.store.tick(now);
        for change in &changes {
            if let Some(alert) = self.store.get(&change.fingerprint) {
                self.grouper.observe(&self.tree, alert, now);
            }
        }
        self.silences.gc(now, self.silence_retention_ms);
        let muter = Muter {
            silences: &self.silences,
            inhibitions: self.inhibitor.index(self.store.firing(now)),
            now,
        };
        let notifications = self.grouper.flush(now, &|a| muter.is_muted(a));
        (notifications, changes)
    }

    /// When [`tick`](Self::tick) has something to do next (`None`: only a message can change
    /// anything). Silences starting or ending are picked up by the groups' next interval.
    pub fn next_wakeup(&self) -> Option<i64> {
        [self.store.next_wakeup(), self.grouper.next_wakeup()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Silence ids and the inhibiting alert's fingerprint for an alert, for the API.
    pub fn muted_by(&self, fingerprint: &str, now: i64) -> (Vec<String>, Option<String>) {
        let Some(alert) = self.store.get(fingerprint) else {
            return (Vec::new(), None);
        };
        let silences = self
            .silences
            .muted_by(&alert.labels, now)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let index = self.inhibitor.index(self.store.firing(now));
        let inhibited = index
            .inhibited_by(&alert.fingerprint, &alert.labels)
            .map(str::to_owned);
        (silences, inhibited)
    }

    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            alerts: self.store.snapshot(),
            groups: self.grouper.snapshot(),
            silences: self.silences.clone(),
        }
    }

    /// A pipeline for `config` with the state of a snapshot (taken under this or an older
    /// config: groups are re-routed as on a reload).
    pub fn restore(
        config: &AlertingConfig,
        snapshot: PipelineSnapshot,
        now: i64,
    ) -> Result<Pipeline, PipelineError> {
        let mut pipeline = Pipeline::from_config(config)?;
        pipeline.store =
            AlertStore::restore(LifecycleConfig::from_config(config), snapshot.alerts)?;
        pipeline.grouper = Grouper::restore(snapshot.groups)?;
        pipeline.silences = snapshot.silences;
        pipeline
            .grouper
            .reload(&pipeline.tree, pipeline.store.alerts(), now);
        Ok(pipeline)
    }
}
