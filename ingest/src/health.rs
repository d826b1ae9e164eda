//! What `/readyz` and the stall gauge know of ingest: ClickHouse answering, the consumer
//! polling, and how long consumed messages have waited to be stored and committed.
//!
//! A stall is the failure no error reports: a batch retried for ever (a dead letter the broker
//! refuses, a ClickHouse that accepts connections but never an insert) leaves every later event
//! of every partition unstored while each part looks alive. So progress is measured directly:
//! each batch is noted when its first message is consumed and forgotten once committed, and
//! the age of the oldest one still waiting is the stall.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

/// Consumed messages waiting longer than this (beyond the batch's own age limit) make ingest
/// unready. A healthy batch is stored within seconds; this leaves room for ClickHouse merges
/// and a broker's leader election.
pub const STALL_AFTER_S: f64 = 60.0;

#[derive(Debug, Default)]
pub struct Health {
    /// The last ClickHouse insert (or the start-up check) succeeded.
    pub clickhouse_ok: AtomicBool,
    /// The consumer is subscribed and polling.
    pub consuming: AtomicBool,
    /// Start times (epoch ms) of the batches consumed but not yet committed, oldest first.
    waiting: Mutex<VecDeque<i64>>,
    /// How long a batch may fill (`ingest.batch_max_age_ms`): waiting that long is not a stall.
    batch_max_age_ms: AtomicI64,
}

impl Health {
    /// A batch's first message was consumed at `at_ms`.
    pub fn batch_started(&self, at_ms: i64) {
        self.lock().push_back(at_ms);
    }

    /// A (re)started ingest: forgets every waiting batch (it starts from its committed
    /// offsets) and is not consuming until it subscribes.
    pub fn reset(&self, batch_max_age_ms: u64) {
        self.lock().clear();
        self.consuming.store(false, Ordering::Relaxed);
        self.batch_max_age_ms
            .store(batch_max_age_ms as i64, Ordering::Relaxed);
    }

    /// The oldest waiting batch was committed (or given up at shutdown).
    pub fn batch_done(&self) {
        self.lock().pop_front();
    }

    /// Seconds the oldest waiting batch has waited; 0 when none waits.
    pub fn stalled_s(&self, now_ms: i64) -> f64 {
        self.lock()
            .front()
            .map_or(0.0, |&since| (now_ms - since).max(0) as f64 / 1000.0)
    }

    /// Ready: ClickHouse answers, the consumer polls, and nothing has waited too long.
    pub fn checks(&self, now_ms: i64) -> [(&'static str, bool); 3] {
        [
            ("clickhouse", self.clickhouse_ok.load(Ordering::Relaxed)),
            ("kafka_consumer", self.consuming.load(Ordering::Relaxed)),
            (
                "ingest_progress",
                self.stalled_s(now_ms) <= self.stall_after_s(),
            ),
        ]
    }

    /// The stall beyond which ingest is unready: [`STALL_AFTER_S`] past the batch age limit.
    pub fn stall_after_s(&self) -> f64 {
        STALL_AFTER_S + self.batch_max_age_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<i64>> {
        // The queue holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_batch_is_the_stall() {
        let health = Health::default();
        assert_eq!(health.stalled_s(10_000), 0.0);
        health.batch_started(1_000);
        health.batch_started(2_000);
        assert_eq!(health.stalled_s(11_000), 10.0);
        health.batch_done();
        assert_eq!(health.stalled_s(11_000), 9.0);
        health.batch_done();
        assert_eq!(health.stalled_s(11_000), 0.0);
    }

    #[test]
    fn a_long_wait_makes_ingest_unready() {
        let health = Health::default();
        health.clickhouse_ok.store(true, Ordering::Relaxed);
        health.consuming.store(true, Ordering::Relaxed);
        health.reset(1_000);
        health.consuming.store(true, Ordering::Relaxed);
        health.batch_started(0);
        assert!(health.checks(61_000).iter().all(|(_, ok)| *ok));
        let checks = health.checks(61_001);
        assert_eq!(checks[2], ("ingest_progress", false));
    }
}
