//! Reading the roles of `tripline alert` instances with `[alerting.ha]` from their logs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::hook::{spawn_alert, Received};
use super::{TestEnv, Tripline};

pub const ACTIVE: &str = "alerting active";
pub const STANDING_BY: &str = "alerting standing by";
pub const OTHER_IS_ACTIVE: &str = "another instance is active";

/// The role a log last announced; a standby counts once the group has told it that another
/// instance holds the partition.
pub fn role_in(log: &str) -> Option<&'static str> {
    match (log.rfind(ACTIVE), log.rfind(STANDING_BY)) {
        (Some(a), Some(s)) if a > s => Some(ACTIVE),
        (Some(_), None) => Some(ACTIVE),
        (_, Some(s)) if log[s..].contains(OTHER_IS_ACTIVE) => Some(STANDING_BY),
        _ => None,
    }
}

/// Waits until one of two instances is active and the other stands by (`roles` reads them);
/// returns the active one's index.
pub async fn settled(roles: impl Fn() -> [Option<&'static str>; 2], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        match roles() {
            [Some(ACTIVE), Some(STANDING_BY)] => return 0,
            [Some(STANDING_BY), Some(ACTIVE)] => return 1,
            roles => assert!(Instant::now() < deadline, "roles never settled: {roles:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `api_key_id` of the group a notification is about.
pub fn key_of(r: &Received) -> String {
    r.json()["group_labels"]["api_key_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// How often the log at `path` says `needle`.
pub fn said(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Waits until the log at `path` says `needle` `count` times; panics with the log after
/// `timeout`.
pub async fn wait_said(path: &Path, needle: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while said(path, needle) < count {
        assert!(
            Instant::now() < deadline,
            "{needle:?} appeared fewer than {count} times in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `tripline alert` process with its own config, port and log.
pub struct AlertProcess {
    pub env: TestEnv,
    pub tag: &'static str,
    pub process: Tripline,
}

impl AlertProcess {
    pub fn start(env: TestEnv, tag: &'static str) -> AlertProcess {
        let process = spawn_alert(&env, tag);
        AlertProcess { env, tag, process }
    }

    pub fn restart(&mut self) {
        self.process = spawn_alert(&self.env, self.tag);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.log_path(self.tag)).unwrap_or_default()
    }

    pub fn said(&self, needle: &str) -> usize {
        said(&self.env.log_path(self.tag), needle)
    }

    pub fn role(&self) -> Option<&'static str> {
        role_in(&self.log())
    }

    pub async fn wait_said(&self, needle: &str, count: usize, timeout: Duration) {
        wait_said(&self.env.log_path(self.tag), needle, count, timeout).await;
    }
}

/// [`settled`] for two processes.
pub async fn pair_settled(a: &AlertProcess, b: &AlertProcess, timeout: Duration) -> usize {
    settled(|| [a.role(), b.role()], timeout).await
}
