//! The HTTP surface: `/healthz` (the process answers), `/readyz` (it can do its job) and
//! Prometheus `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tripline_alerting::runtime::AlertingHealth;
use tripline_detector::DetectorHealth;
use tripline_ingest::IngestHealth;

/// Installs the global metrics recorder; histograms get buckets suited to batch inserts.
pub fn install_metrics_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full("tripline_ingest_batch_rows".into()),
            &[
                1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0,
            ],
        )?
        .install_recorder()?;
    metrics_process::Collector::default().describe();
    Ok(handle)
}

#[derive(Clone)]
pub struct AppState {
    pub metrics: PrometheusHandle,
    pub ingest: Option<Arc<IngestHealth>>,
    /// Present when this process runs the detectors.
    pub detector: Option<Arc<DetectorHealth>>,
    /// Present when this process runs alerting.
    pub alerting: Option<Arc<AlertingHealth>>,
    /// `POST /v1/events` and `/v1/logs/litellm` when `[collector]` names a source.
    pub collector: Option<Router>,
}

pub fn router(state: AppState) -> Router {
    let collector = state.collector.clone();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match collector {
        Some(collector) => router.merge(collector),
        None => router,
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    if let Some(ingest) = &state.ingest {
        for (name, ok) in ingest.checks(tripline_core::time::now_ms()) {
            ready &= ok;
            checks.insert(name.into(), ok.into());
        }
    }
    if let Some(detector) = &state.detector {
        let ok = detector.ready(tripline_core::time::now_s());
        ready &= ok;
        checks.insert("detector".into(), ok.into());
    }
    if let Some(alerting) = &state.alerting {
        let ok = alerting.ready(tripline_core::time::now_ms());
        ready &= ok;
        checks.insert("alerting".into(), ok.into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ready, "checks": checks })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Process figures are read from /proc at each scrape, so they are never stale.
    metrics_process::Collector::default().collect();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {listen}: {err}"))?;
    let endpoints = if state.collector.is_some() {
        "/healthz, /readyz, /metrics, POST /v1/events, POST /v1/logs/litellm"
    } else {
        "/healthz, /readyz, /metrics"
    };
    tracing::info!(%listen, endpoints, "http server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
