//! Running the detectors inside `tripline detect` / `tripline run`. They follow `[detect]` as
//! the config file says now ([`crate::live_config`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tripline_core::config::DetectConfig;
use tripline_detector::{Detector, DetectorHealth};

use crate::settings::Loaded;

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
