//! Running the detectors inside `tripline detect` / `tripline run`, and live config reloads:
//! the config file is re-read when it changes (or on SIGHUP); a file with any problem is
//! reported with its places and the running thresholds stay as they were.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_core::config::DetectConfig;

use tripline_detector::{Detector, DetectorHealth};

use crate::settings::{self, Loaded};

/// The live detector config: the file's `[detect]`, re-sent whenever a reload succeeds.
pub fn watch(
    loaded: &Loaded,
    config_path: Option<&Path>,
    shutdown: CancellationToken,
) -> watch::Receiver<DetectConfig> {
    let (sender, receiver) = watch::channel(loaded.config.detect.clone());
    if let Some(path) = config_path {
        tokio::spawn(watch_config(path.to_path_buf(), sender, shutdown));
    }
    receiver
}

/// Starts the detector workers; they stop at `shutdown`.
pub fn spawn(
    loaded: &Loaded,
    config: watch::Receiver<DetectConfig>,
    health: Arc<DetectorHealth>,
    shutdown: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let detector = Detector {
        config,
        kafka: loaded.config.kafka.clone(),
        clickhouse: loaded.clickhouse(),
        health,
    };
    tokio::spawn(async move { detector.run(shutdown).await.map_err(anyhow::Error::from) })
}

/// Reloads the config when the file changes or on SIGHUP.
async fn watch_config(
    path: PathBuf,
    sender: watch::Sender<DetectConfig>,
    shutdown: CancellationToken,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            warn!(%err, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut seen = modified(&path);
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup => info!(path = %path.display(), "SIGHUP: reloading the config"),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                info!(path = %path.display(), "config file changed: reloading");
            }
        }
        match settings::load(Some(&path)) {
            Ok(loaded) => {
                metrics::counter!("tripline_config_reloads_total", "result" => "ok").increment(1);
                let _ = sender.send(loaded.config.detect);
            }
            Err(err) => {
                metrics::counter!("tripline_config_reloads_total", "result" => "refused")
                    .increment(1);
                error!("config reload refused, the running config stays: {err:#}");
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
