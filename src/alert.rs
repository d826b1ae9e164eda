//! Running the alerting service inside `tripline alert` / `tripline run` (when `[alerting]`
//! names at least one receiver): building it, its API and console routes (from
//! [`tripline_api`], when `TRIPLINE_ALERTING_API_TOKEN` is set), and following the config file.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_alerting::receivers::delivery::RetryPolicy;
use tripline_alerting::runtime::control::Handle;
use tripline_alerting::runtime::{AlertService, AlertingHealth, DEFAULT_GROUP_ID};
use tripline_api::alerts::{self, Api, ReadAlerting};
use tripline_api::console::{self, Console};
use tripline_core::auth::TokenDigest;

use crate::live_config::LiveConfig;
use crate::settings::{self, Loaded};

/// Overrides the consumer group (`tripline-alerting`), e.g. for two independent deployments
/// sharing a broker.
pub const GROUP_ID_ENV: &str = "TRIPLINE_ALERTING_GROUP_ID";
/// The API's bearer token.
pub const API_TOKEN_ENV: &str = "TRIPLINE_ALERTING_API_TOKEN";
const MIN_TOKEN_CHARS: usize = 16;

/// The alerting service, built but not started (it starts once the schema and topics exist).
pub struct Prepared {
    service: AlertService,
    handle: Handle,
    live: LiveConfig,
}

/// Builds the alerting service and its API routes (when a token is configured). Fails when
/// `[alerting]` names no receivers.
pub fn prepare(
    loaded: &Loaded,
    config_path: Option<&Path>,
    live: &LiveConfig,
) -> anyhow::Result<(Prepared, Option<Router>)> {
    let config = loaded.config.alerting.clone();
    if !config.enabled() {
        anyhow::bail!("alerting is off: [alerting] names no receivers (see tripline.example.toml)");
    }
    let state_dir = loaded.resolve(&config.state_dir);
    let group_id = std::env::var(GROUP_ID_ENV)
        .ok()
        .filter(|g| !g.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned());
    info!(receivers = config.receivers.len(), state_dir = %state_dir.display(), group = %group_id, "alerting enabled");
    let (handle, commands) = Handle::channel();
    let service = AlertService {
        config,
        kafka: loaded.config.kafka.clone(),
        group_id,
        clickhouse: loaded.clickhouse(),
        state_dir,
        retry: RetryPolicy::default(),
        commands,
        health: Arc::new(AlertingHealth::default()),
    };
    let read_config = config_path.map(|path| -> ReadAlerting {
        let path = path.to_path_buf();
        Arc::new(move || {
            settings::load(Some(&path))
                .map(|loaded| loaded.config.alerting)
                .map_err(|err| format!("{err:#}"))
        })
    });
    let router = match std::env::var(API_TOKEN_ENV) {
        Ok(token) if token.trim().chars().count() >= MIN_TOKEN_CHARS => {
            info!("alerting api enabled on /api/v1/, console on /ui/");
            let token = TokenDigest::of(token.trim());
            let console = console::router(Console {
                token: token.clone(),
                clickhouse: loaded.clickhouse(),
                live: live.clone(),
            });
            Some(
                alerts::router(Api {
                    handle: handle.clone(),
                    read_config,
                    token,
                })
                .merge(console),
            )
        }
        Ok(_) => {
            error!("{API_TOKEN_ENV} is shorter than {MIN_TOKEN_CHARS} characters: the alerting api is off");
            None
        }
        Err(_) => {
            info!("{API_TOKEN_ENV} is not set: the alerting api is off");
            None
        }
    };
    let prepared = Prepared {
        service,
        handle,
        live: live.clone(),
    };
    Ok((prepared, router))
}

impl Prepared {
    /// What `/readyz` reads of the service.
    pub fn health(&self) -> Arc<AlertingHealth> {
        self.service.health.clone()
    }

    /// Starts the service and the config watcher; both stop at `shutdown`. When alerting is
    /// the process's only role (`alone`), its failure stops the process so that a supervisor
    /// restarts it; beside other roles it only fails readiness.
    pub fn spawn(self, shutdown: CancellationToken, alone: bool) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(follow(self.live, self.handle, shutdown.clone()));
        let service = self.service;
        tokio::spawn(async move {
            let result = service.run(shutdown.clone()).await;
            if let Err(err) = &result {
                metrics::counter!("tripline_role_failures_total", "role" => "alert").increment(1);
                if alone {
                    error!("alerting failed, stopping: {err}");
                    shutdown.cancel();
                } else {
                    // Ingest must not stop storing because a page cannot go out; `/readyz`
                    // reports alerting as not ready, and the exit status at shutdown says so.
                    error!("alerting stopped: {err}; the other roles go on, /readyz reports it");
                }
            }
            result.context("alerting failed")
        })
    }
}

/// Follows the config file ([`crate::live_config`]): each new version's `[alerting]` is handed
/// to the service; one it refuses is logged and the running config stays.
async fn follow(mut live: LiveConfig, handle: Handle, shutdown: CancellationToken) {
    live.mark_unchanged();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = live.changed() => if changed.is_err() { return },
        }
        let next = live.borrow_and_update().alerting.clone();
        match alerts::apply(&next, &handle).await {
            Ok(()) => {
                metrics::counter!("tripline_alerting_config_reloads_total", "result" => "ok")
                    .increment(1);
            }
            Err(err) => {
                metrics::counter!("tripline_alerting_config_reloads_total", "result" => "refused")
                    .increment(1);
                warn!("alerting config reload refused, the running config stays: {err}");
            }
        }
    }
}
