//! The detectors' durable outbox: every alert state change (firing, a higher severity,
//! resolved) is pending until Kafka has acknowledged it with acks=all, retried without ever
//! holding up an evaluation cycle, and sent after a restart if it never was.
//!
//! What is committed when:
//!
//! 1. **Decided**: the cycle's lifecycle marks the alert firing (or resolved) and hands it to
//!    the outbox over a bounded channel; the cycle goes on at once. From here the detector
//!    itself will not decide the same change again.
//! 2. **Recorded**: the outbox writes the `alerts` row (ClickHouse). From here the change
//!    survives a crash: at start-up, a worker reloads the rows of its shard that have no
//!    acknowledgement (`store::pending_alerts`) and sends them, and reloads what is firing into
//!    the lifecycle so that nothing pages twice. A crash between 1 and 2 loses the decision but
//!    not the condition: a firing not recorded is decided again if still true; a resolution not
//!    recorded leaves the alert firing in ClickHouse, so the restarted lifecycle resolves it
//!    again `resolve_after_s` later. An insert whose answer was lost may have landed: before
//!    it is retried, the rows already there are left out (`store::recorded`), so a change is
//!    not recorded twice unless that insert was still running on the server after our timeout
//!    or, in cluster mode, the replica asked has not fetched its rows yet.
//! 3. **Published** (the alert counts as fired): Kafka acknowledged the message (acks=all:
//!    every in-sync replica has it). Only now is `tripline_detector_alerts_total` counted.
//! 4. **Acknowledged**: an `alert_publications` row says so. A crash between 3 and 4 sends the
//!    change again after the restart: alerting takes a repeated firing message as a refresh and
//!    a repeated resolution as nothing new, so a duplicate pages no one.
//!
//! Sending does not wait for recording (a page must not wait for the database), and changes of
//! one fingerprint go out one at a time in the order they were decided, so a resolution never
//! overtakes its firing. A failed attempt (librdkafka gives up after `message.timeout.ms`) is
//! retried with backoff up to [`MAX_BACKOFF_MS`]. At most [`MAX_IN_MEMORY`] changes are held in
//! memory: beyond that, new ones are only recorded, and are reloaded from ClickHouse once the
//! queue has drained.

mod store;
mod worker;

use std::collections::BTreeMap;

use tripline_core::alert::Alert;

pub use store::{firing_alerts, pending_alerts};
pub use worker::Outbox;

/// Changes held in memory at most (an alert with evidence is a few KB).
pub const MAX_IN_MEMORY: usize = 10_000;
/// The first retry waits this long; each further one twice as long, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 30_000;

/// One pending change.
#[derive(Debug, Clone)]
pub struct Entry {
    pub alert: Alert,
    /// The message as published (and as stored in `alerts.alert_json`).
    pub json: String,
    /// When it was decided (`emitted_at`), epoch seconds.
    pub decided_s: u32,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not attempted again before this (epoch ms).
    due_ms: i64,
    in_flight: bool,
}

/// The pending changes in the order they were decided. Pure: the worker does the IO.
#[derive(Debug, Default)]
pub struct Queue {
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
}

impl Queue {
    /// Adds a change, due at once; `None` when the queue is full.
    pub fn push(&mut self, alert: Alert, json: String, now_ms: i64) -> Option<u64> {
        if self.entries.len() >= MAX_IN_MEMORY {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let decided_s = decided_s(&alert);
        self.entries.insert(
            seq,
            Entry {
                alert,
                json,
                decided_s,
                attempts: 0,
                due_ms: now_ms,
                in_flight: false,
            },
        );
        Some(seq)
    }

    /// The changes to send now, marked in flight: for each fingerprint its oldest pending change,
    /// if it is due and not already in flight (later ones wait for it).
    pub fn take_due(&mut self, now_ms: i64) -> Vec<(u64, &Entry)> {
        let mut seen = std::collections::HashSet::new();
        let mut due = Vec::new();
        for (seq, entry) in &self.entries {
            if seen.insert(entry.alert.fingerprint.as_str())
                && !entry.in_flight
                && entry.due_ms <= now_ms
            {
                due.push(*seq);
            }
        }
        for seq in &due {
            if let Some(entry) = self.entries.get_mut(seq) {
                entry.in_flight = true;
            }
        }
        due.iter()
            .filter_map(|seq| self.entries.get(seq).map(|e| (*seq, e)))
            .collect()
    }

    /// Kafka acknowledged `seq`: it leaves the queue.
    pub fn acknowledged(&mut self, seq: u64) -> Option<Entry> {
        self.entries.remove(&seq)
    }

    /// An attempt failed: retried after a backoff that doubles with each failure.
    pub fn failed(&mut self, seq: u64, now_ms: i64) -> Option<&Entry> {
        let entry = self.entries.get_mut(&seq)?;
        entry.attempts = entry.attempts.saturating_add(1);
        entry.in_flight = false;
        let doublings = entry.attempts.saturating_sub(1).min(16);
        entry.due_ms = now_ms + (FIRST_BACKOFF_MS << doublings).min(MAX_BACKOFF_MS);
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.entries.values().filter(|e| e.in_flight).count()
    }

    /// When the oldest pending change was decided (epoch seconds).
    pub fn oldest_decided_s(&self) -> Option<u32> {
        self.entries.values().map(|e| e.decided_s).min()
    }
}

/// `emitted_at` in epoch seconds, as the `alerts` row stores it.
pub fn decided_s(alert: &Alert) -> u32 {
    seconds(alert.emitted_at)
}

/// Epoch milliseconds in whole seconds, as the `alerts` table stores times.
fn seconds(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tripline_core::alert::{AlertStatus, Evidence, Severity};

    fn alert(fingerprint: &str, status: AlertStatus, at_s: i64) -> Alert {
        Alert {
            version: 1,
            fingerprint: fingerprint.into(),
            detector: "leaked_key".into(),
            status,
            severity: Severity::Critical,
            labels: Default::default(),
            summary: "s".into(),
            description: String::new(),
            observed: 0.0,
            expected: 0.0,
            upper: 0.0,
            score: 1.0,
            window_start: at_s * 1000,
            window_end: at_s * 1000,
            starts_at: at_s * 1000,
            ends_at: None,
            emitted_at: at_s * 1000,
            evidence: Evidence::default(),
        }
    }

    fn push(q: &mut Queue, fp: &str, status: AlertStatus, at_s: i64) -> u64 {
        q.push(alert(fp, status, at_s), String::new(), at_s * 1000)
            .unwrap()
    }

    #[test]
    fn a_resolution_waits_for_its_firing_and_other_alerts_do_not() {
        let mut q = Queue::default();
        let fire_a = push(&mut q, "a", AlertStatus::Firing, 100);
        let resolve_a = push(&mut q, "a", AlertStatus::Resolved, 400);
        let fire_b = push(&mut q, "b", AlertStatus::Firing, 400);
        let due: Vec<u64> = q.take_due(400_000).iter().map(|d| d.0).collect();
        assert_eq!(due, [fire_a, fire_b]);
        assert!(q.take_due(400_000).is_empty(), "in flight: not sent twice");
        assert_eq!(q.oldest_decided_s(), Some(100));
        // a's firing fails: its resolution still waits, through the backoff.
        assert_eq!(q.failed(fire_a, 401_000).map(|e| e.attempts), Some(1));
        assert!(q.take_due(401_500).is_empty(), "backing off");
        let due: Vec<u64> = q.take_due(402_000).iter().map(|d| d.0).collect();
        assert_eq!(due, [fire_a]);
        assert!(q.acknowledged(fire_a).is_some());
        let due: Vec<u64> = q.take_due(402_000).iter().map(|d| d.0).collect();
        assert_eq!(due, [resolve_a], "then the resolution goes");
        assert_eq!((q.len(), q.in_flight()), (2, 2));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut q = Queue::default();
        let seq = push(&mut q, "a", AlertStatus::Firing, 0);
        let waits: Vec<i64> = (0..8)
            .map(|_| {
                q.take_due(i64::MAX);
                q.failed(seq, 0).map_or(0, |e| e.due_ms)
            })
            .collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let mut q = Queue::default();
        for i in 0..MAX_IN_MEMORY {
            assert!(q
                .push(
                    alert(&format!("f{i}"), AlertStatus::Firing, 1),
                    String::new(),
                    0
                )
                .is_some());
        }
        assert!(q
            .push(alert("late", AlertStatus::Firing, 1), String::new(), 0)
            .is_none());
    }
}
