//! One watcher of the config file per process: it re-reads the file when it changes (checked
//! every 2 s) or on SIGHUP, and hands each version that loads whole to every part that follows
//! it (the detectors, alerting, the console). A file with any problem is reported with its
//! places and counted (`tripline_config_reloads_total{result="refused"}`); what runs stays as
//! it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_core::config::Config;

use crate::settings::{self, Loaded};

/// The config as the file says now: the one loaded at start-up until a reload succeeds.
pub type LiveConfig = watch::Receiver<Arc<Config>>;

/// Starts the watcher (when there is a file; without one the config never changes).
pub fn watch(
    loaded: &Loaded,
    config_path: Option<&Path>,
    shutdown: CancellationToken,
) -> LiveConfig {
    let (sender, receiver) = watch::channel(Arc::new(loaded.config.clone()));
    if let Some(path) = config_path {
        tokio::spawn(watch_file(path.to_path_buf(), sender, shutdown));
    }
    receiver
}

/// A receiver of one part of the config, `part` of each version: for a follower that knows
/// only its own section (the detectors' `[detect]`).
pub fn section<T>(live: &LiveConfig, part: fn(&Config) -> T) -> watch::Receiver<T>
where
    T: Send + Sync + 'static,
{
    let mut live = live.clone();
    let (sender, receiver) = watch::channel(part(&live.borrow_and_update()));
    tokio::spawn(async move {
        while live.changed().await.is_ok() {
            let next = part(&live.borrow_and_update());
            if sender.send(next).is_err() {
                return; // nobody follows it any more
            }
        }
    });
    receiver
}

async fn watch_file(
    path: PathBuf,
    sender: watch::Sender<Arc<Config>>,
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
                sender.send_replace(Arc::new(loaded.config));
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
