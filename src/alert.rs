//! Running the alerting service inside `tripline alert` / `tripline run` (when `[alerting]`
//! names at least one receiver).

use std::path::Path;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tripline_alerting::receivers::delivery::RetryPolicy;
use tripline_alerting::runtime::{AlertService, DEFAULT_GROUP_ID};

use crate::settings::Loaded;

/// Overrides the consumer group (`tripline-alerting`), e.g. for two independent deployments
/// sharing a broker.
pub const GROUP_ID_ENV: &str = "TRIPLINE_ALERTING_GROUP_ID";

/// Starts the alerting service; it stops at `shutdown`.
pub fn spawn(
    loaded: &Loaded,
    _config_path: Option<&Path>,
    shutdown: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let config = loaded.config.alerting.clone();
    if !config.enabled() {
        return tokio::spawn(async {
            anyhow::bail!(
                "alerting is off: [alerting] names no receivers (see tripline.example.toml)"
            )
        });
    }
    let state_dir = loaded.resolve(&config.state_dir);
    let group_id = std::env::var(GROUP_ID_ENV)
        .ok()
        .filter(|g| !g.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned());
    info!(receivers = config.receivers.len(), state_dir = %state_dir.display(), group = %group_id, "alerting enabled");
    let service = AlertService {
        config,
        kafka: loaded.config.kafka.clone(),
        group_id,
        clickhouse: loaded.clickhouse(),
        state_dir,
        retry: RetryPolicy::default(),
    };
    tokio::spawn(async move { service.run(shutdown).await.map_err(anyhow::Error::from) })
}
