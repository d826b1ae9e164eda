//! Running the alerting service inside `tripline alert` / `tripline run` (when `[alerting]`
//! names at least one receiver), its HTTP API, and config reloads (file change or SIGHUP).
//!
//! API (bearer token from `TRIPLINE_ALERTING_API_TOKEN`, at least 16 characters; without it the
//! API is not served), JSON in and out, bodies up to 64 KiB:
//!
//! | request | does |
//! |---|---|
//! | `GET /api/v1/alerts` | alerts with state, labels, silences and inhibition muting them |
//! | `GET /api/v1/silences` | silences (pending, active, expired within `silence_retention_s`) |
//! | `POST /api/v1/silences` | `{"matchers": ["api_key_id=\"key-7\""], "ends_at": "…" or "duration_s": 3600, "starts_at"?: "…", "created_by": "…", "comment": "…"}` → 201 + the silence |
//! | `DELETE /api/v1/silences/{id}` | expires it now |
//! | `POST /api/v1/receivers/{name}/test` | queues a test notification → 202 + its id |
//! | `POST /api/v1/reload` | re-reads the config file and applies `[alerting]` (alerts, groups, silences and pending notifications stay) |
//! | `GET /api/v1/keys/{api_key_id}/series?from=…&to=…` | a key's per-minute spend and requests with their baseline bands, and its alert rows (see [`console`]) |
//!
//! The built-in console (`/ui/`, see [`console`]) is served with the API and uses the same token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tripline_alerting::matcher::Matcher;
use tripline_alerting::receivers::delivery::RetryPolicy;
use tripline_alerting::runtime::control::{ControlError, Handle};
use tripline_alerting::runtime::{now_ms, AlertService, AlertingHealth, DEFAULT_GROUP_ID};
use tripline_alerting::silence::{NewSilence, SilenceError};
use tripline_core::auth::{self, TokenDigest};
use tripline_core::config::AlertingConfig;

use crate::live_config::LiveConfig;
use crate::settings::{self, Loaded};

/// Overrides the consumer group (`tripline-alerting`), e.g. for two independent deployments
/// sharing a broker.
pub const GROUP_ID_ENV: &str = "TRIPLINE_ALERTING_GROUP_ID";
/// The API's bearer token.
pub const API_TOKEN_ENV: &str = "TRIPLINE_ALERTING_API_TOKEN";
const MIN_TOKEN_CHARS: usize = 16;
const MAX_BODY_BYTES: usize = 64 * 1024;

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
    let config_path = config_path.map(Path::to_path_buf);
    let router = match std::env::var(API_TOKEN_ENV) {
        Ok(token) if token.trim().chars().count() >= MIN_TOKEN_CHARS => {
            info!("alerting api enabled on /api/v1/, console on /ui/");
            let console = crate::console::router(crate::console::Console {
                token: TokenDigest::of(token.trim()),
                clickhouse: loaded.clickhouse(),
                live: live.clone(),
            });
            Some(
                router(Api {
                    handle: handle.clone(),
                    config_path: config_path.clone(),
                    token: TokenDigest::of(token.trim()),
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

#[derive(Clone)]
struct Api {
    handle: Handle,
    config_path: Option<PathBuf>,
    token: TokenDigest,
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/receivers/{name}/test", post(test_notification))
        .route("/api/v1/reload", post(reload))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unauthorized(api: &Api, headers: &HeaderMap) -> Option<Response> {
    (!bearer_ok(&api.token, headers))
        .then(|| problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// Whether `headers` carry `Authorization: Bearer <token>` (see [`tripline_core::auth`]: any
/// case of the scheme, SHA-256 digests compared in constant time).
pub(crate) fn bearer_ok(token: &TokenDigest, headers: &HeaderMap) -> bool {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::authenticate(value, [((), token)]).is_some()
}

/// An error from the service: an unknown silence or receiver is 404; a stopped service, a
/// standby asked what only the active instance does, and a change not stored or not shared
/// 503; a refused silence or config 400.
fn refused(err: ControlError) -> Response {
    let status = match &err {
        ControlError::Silence(SilenceError::NotFound(_)) | ControlError::UnknownReceiver(_) => {
            StatusCode::NOT_FOUND
        }
        ControlError::Silence(
            SilenceError::NoMatchers
            | SilenceError::TooManyMatchers(_)
            | SilenceError::MatchesEverything
            | SilenceError::EndsBeforeStart
            | SilenceError::AlreadyEnded
            | SilenceError::NoAuthor
            | SilenceError::NoComment
            | SilenceError::TooLong { .. }
            | SilenceError::AlreadyExpired(_),
        )
        | ControlError::Config(_) => StatusCode::BAD_REQUEST,
        ControlError::Stopped
        | ControlError::Standby
        | ControlError::NotStored
        | ControlError::NotShared { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    problem(status, err.to_string())
}

async fn list_alerts(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    match api.handle.alerts().await {
        Ok(alerts) => Json(alerts).into_response(),
        Err(e) => refused(e),
    }
}

async fn list_silences(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    match api.handle.silences().await {
        Ok(silences) => Json(silences).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    matchers: Vec<String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default)]
    duration_s: Option<u64>,
    created_by: String,
    comment: String,
}

async fn create_silence(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    let request: SilenceRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid silence: {e}")),
    };
    let mut matchers = Vec::new();
    for text in &request.matchers {
        match Matcher::parse(text) {
            Ok(m) => matchers.push(m),
            Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let time = |field: &str, text: &str| {
        tripline_core::time::parse_rfc3339_ms(text)
            .ok_or_else(|| format!("{field} {text:?} is not an RFC 3339 time"))
    };
    let starts_at_ms = match request
        .starts_at
        .as_deref()
        .map(|t| time("starts_at", t))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let ends_at_ms = match (&request.ends_at, request.duration_s) {
        (Some(text), None) => match time("ends_at", text) {
            Ok(t) => t,
            Err(e) => return problem(StatusCode::BAD_REQUEST, e),
        },
        (None, Some(secs)) => starts_at_ms
            .unwrap_or_else(now_ms)
            .saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)),
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "give either ends_at (RFC 3339) or duration_s",
            )
        }
    };
    let new = NewSilence {
        matchers,
        starts_at_ms,
        ends_at_ms,
        created_by: request.created_by,
        comment: request.comment,
    };
    match api.handle.create_silence(new).await {
        Ok(silence) => (StatusCode::CREATED, Json(silence)).into_response(),
        Err(e) => refused(e),
    }
}

async fn expire_silence(
    State(api): State<Api>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    match api.handle.expire_silence(id).await {
        Ok(silence) => Json(silence).into_response(),
        Err(e) => refused(e),
    }
}

async fn test_notification(
    State(api): State<Api>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    match api.handle.test(name).await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "notification_id": id })),
        )
            .into_response(),
        Err(e) => refused(e),
    }
}

async fn reload(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    let Some(path) = &api.config_path else {
        return problem(
            StatusCode::BAD_REQUEST,
            "tripline runs without a config file: nothing to reload",
        );
    };
    match reload_from(path, &api.handle).await {
        Ok(()) => Json(serde_json::json!({ "reloaded": true })).into_response(),
        Err(e) => refused(e),
    }
}

async fn reload_from(path: &Path, handle: &Handle) -> Result<(), ControlError> {
    let loaded = settings::load(Some(path)).map_err(|e| ControlError::Config(format!("{e:#}")))?;
    apply(&loaded.config.alerting, handle).await
}

/// Hands a new `[alerting]` to the running service, unless it names no receivers.
async fn apply(config: &AlertingConfig, handle: &Handle) -> Result<(), ControlError> {
    if !config.enabled() {
        return Err(ControlError::Config(
            "the new config names no alerting receivers; keeping the running one".to_owned(),
        ));
    }
    handle.reload(config.clone()).await
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
        match apply(&next, &handle).await {
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

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};

    use super::*;

    #[test]
    fn the_api_takes_its_token_with_any_case_of_the_scheme() {
        let token = TokenDigest::of("token-of-the-alerting-api");
        let check = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            bearer_ok(&token, &headers)
        };
        assert!(check(Some("Bearer token-of-the-alerting-api")));
        assert!(check(Some("bearer token-of-the-alerting-api")));
        assert!(!check(Some("Bearer token-of-the-alerting-ap")));
        assert!(!check(Some("Basic token-of-the-alerting-api")));
        assert!(!check(None));
    }

    async fn answer(err: ControlError) -> (StatusCode, serde_json::Value) {
        let response = refused(err);
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn refusals_map_to_status_codes_by_kind_not_by_message() {
        let cases = [
            (
                ControlError::Silence(SilenceError::NotFound("sil_x".into())),
                StatusCode::NOT_FOUND,
            ),
            (
                ControlError::UnknownReceiver("pager".into()),
                StatusCode::NOT_FOUND,
            ),
            (
                ControlError::Silence(SilenceError::AlreadyExpired("sil_x".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ControlError::Silence(SilenceError::NoComment),
                StatusCode::BAD_REQUEST,
            ),
            // A config error whose text happens to read like a 404 is still a 400.
            (
                ControlError::Config("no receiver named in route".into()),
                StatusCode::BAD_REQUEST,
            ),
            (ControlError::Stopped, StatusCode::SERVICE_UNAVAILABLE),
            (ControlError::Standby, StatusCode::SERVICE_UNAVAILABLE),
            (ControlError::NotStored, StatusCode::SERVICE_UNAVAILABLE),
            (
                ControlError::NotShared {
                    topic: "silences".into(),
                    reason: "timed out".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (err, status) in cases {
            let message = err.to_string();
            assert_eq!(
                answer(err).await,
                (status, serde_json::json!({ "error": message }))
            );
        }
    }
}
