//! What `/readyz` asks of the alerting service: running, its state file writable (nothing is
//! consumed or sent before it is on disk), and no Kafka consumer error in the last half minute.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A Kafka error this recent makes the service not ready.
const KAFKA_ERROR_GRACE_MS: i64 = 30_000;

#[derive(Debug, Default)]
pub struct AlertingHealth {
    running: AtomicBool,
    state_writable: AtomicBool,
    last_kafka_error_ms: AtomicI64,
}

impl AlertingHealth {
    pub fn ready(&self, now_ms: i64) -> bool {
        let error_at = self.last_kafka_error_ms.load(Ordering::Relaxed);
        self.running.load(Ordering::Relaxed)
            && self.state_writable.load(Ordering::Relaxed)
            && (error_at == 0 || now_ms - error_at > KAFKA_ERROR_GRACE_MS)
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn state_written(&self, ok: bool) {
        self.state_writable.store(ok, Ordering::Relaxed);
    }

    pub(crate) fn kafka_error(&self, now_ms: i64) {
        self.last_kafka_error_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Whether files can be created in `dir` (made if missing): a probe file, written and removed.
pub(crate) fn dir_writable(dir: &Path) -> bool {
    let probe = dir.join(".tripline-write-probe");
    std::fs::create_dir_all(dir).is_ok()
        && std::fs::write(&probe, b"ok").is_ok()
        && std::fs::remove_file(&probe).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_while_running_with_a_writable_state_and_no_recent_kafka_error() {
        let h = AlertingHealth::default();
        assert!(!h.ready(1_000_000), "not started");
        h.set_running(true);
        assert!(!h.ready(1_000_000), "state not written yet");
        h.state_written(true);
        assert!(h.ready(1_000_000));
        h.kafka_error(1_000_000);
        assert!(!h.ready(1_020_000));
        assert!(h.ready(1_030_001));
        h.state_written(false);
        assert!(!h.ready(1_040_000));
        h.state_written(true);
        h.set_running(false);
        assert!(!h.ready(1_050_000));
    }
}
