//! The state: the pipeline (alerts, groups, silences) and the outbox, as one JSON document,
//! stored after every change and before the Kafka offsets of the messages that caused the
//! change are committed, so a crash (kill -9 included) at any point either redelivers a message
//! into the old state or finds the new state stored: nothing is lost. One instance alone keeps
//! it in a file written atomically (temp file, fsync, rename, fsync of the directory); with
//! standbys it goes to a Kafka topic (`super::ha`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::outbox::OutboxEntry;
use crate::pipeline::PipelineSnapshot;

pub const STATE_FILE: &str = "state.json";
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Which active instance wrote it (`[alerting.ha]`; 0 for a state file): a successor
    /// starts the next term, and readers trust the highest term, so a cut-off instance that
    /// still writes cannot overwrite its successor's state.
    #[serde(default)]
    pub term: u64,
    pub saved_at_ms: i64,
    pub pipeline: PipelineSnapshot,
    /// Notifications not yet delivered (nor given up), oldest first.
    pub outbox: Vec<OutboxEntry>,
    /// Per `topic/partition`: one past the last message applied to `pipeline`. Messages Kafka
    /// redelivers (their commit was lost in a crash) are skipped, so a replayed firing message
    /// cannot bring back an alert that has since resolved.
    #[serde(default)]
    pub applied: BTreeMap<String, i64>,
}

/// The key of a partition in [`State::applied`].
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not readable state: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}, this build reads {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("state topic {topic}: {message}")]
    Kafka { topic: String, message: String },
}

/// Where the active instance keeps its state.
pub enum StateStore {
    /// `state_dir`: one instance alone.
    File(StateFile),
    /// A Kafka topic, in a term of its own (`[alerting.ha]`).
    Log(super::ha::StateLog),
}

impl StateStore {
    pub fn term(&self) -> u64 {
        match self {
            StateStore::File(_) => 0,
            StateStore::Log(log) => log.term(),
        }
    }

    pub async fn save(&self, state: &State) -> Result<(), StateError> {
        match self {
            StateStore::File(file) => file.save(state),
            StateStore::Log(log) => log.save(state).await,
        }
    }
}

impl std::fmt::Display for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateStore::File(file) => write!(f, "{}", file.path().display()),
            StateStore::Log(log) => write!(f, "{} (term {})", log.topic(), log.term()),
        }
    }
}

/// Reads and writes `<dir>/state.json`.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let state: State =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version {
                path,
                found: state.version,
            });
        }
        Ok(Some(state))
    }

    /// Writes `state` so that the file is always either the old or the new state.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec(state).expect("state serializes");
        {
            let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(&json).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        let path = self.path();
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = std::env::temp_dir().join(format!("tripline-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = StateFile::new(&dir);
        assert!(file.load().unwrap().is_none());
        let config: tripline_core::config::AlertingConfig = toml_config();
        let pipeline = Pipeline::from_config(&config).unwrap();
        let state = State {
            version: STATE_VERSION,
            term: 0,
            saved_at_ms: 7,
            pipeline: pipeline.snapshot(),
            outbox: Vec::new(),
            applied: [(partition_key("t", 0), 5)].into(),
        };
        file.save(&state).unwrap();
        file.save(&state).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded.saved_at_ms, 7);
        assert_eq!(loaded.pipeline, state.pipeline);
        assert_eq!(loaded.applied, state.applied);
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::write(file.path(), b"{not json").unwrap();
        assert!(matches!(file.load(), Err(StateError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn toml_config() -> tripline_core::config::AlertingConfig {
        crate::lifecycle::test_support::alerting_config(
            "[[alerting.receivers]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n[alerting.route]\nreceiver = \"w\"\n",
        )
    }
}
