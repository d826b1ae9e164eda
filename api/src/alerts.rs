//! The alerting API, served with the console on `server.listen` when
//! `TRIPLINE_ALERTING_API_TOKEN` is set (bearer token, JSON in and out, bodies up to 64 KiB):
//!
//! | request | does |
//! |---|---|
//! | `GET /api/v1/alerts` | alerts with state, labels, silences and inhibition muting them |
//! | `GET /api/v1/silences` | silences (pending, active, expired within `silence_retention_s`) |
//! | `POST /api/v1/silences` | `{"matchers": ["api_key_id=\"key-7\""], "ends_at": "…" or "duration_s": 3600, "starts_at"?: "…", "created_by": "…", "comment": "…"}` → 201 + the silence |
//! | `DELETE /api/v1/silences/{id}` | expires it now |
//! | `POST /api/v1/receivers/{name}/test` | queues a test notification → 202 + its id |
//! | `POST /api/v1/reload` | re-reads the config file and applies `[alerting]` (alerts, groups, silences and pending notifications stay) |
//!
//! Status codes follow the kind of [`ControlError`], never its message.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tripline_alerting::matcher::Matcher;
use tripline_alerting::runtime::control::{ControlError, Handle};
use tripline_alerting::runtime::now_ms;
use tripline_alerting::silence::{NewSilence, SilenceError};
use tripline_core::auth::TokenDigest;
use tripline_core::config::AlertingConfig;

use crate::{bearer_ok, problem};

const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the config file again and returns its `[alerting]`, or every problem found, placed
/// (what `POST /api/v1/reload` applies). Reading the file is the binary's business.
pub type ReadAlerting = Arc<dyn Fn() -> Result<AlertingConfig, String> + Send + Sync>;

/// What the API needs.
#[derive(Clone)]
pub struct Api {
    /// The running alerting service.
    pub handle: Handle,
    /// `None` when Tripline runs without a config file: nothing to reload.
    pub read_config: Option<ReadAlerting>,
    /// The bearer token (its digest).
    pub token: TokenDigest,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/receivers/{name}/test", post(test_notification))
        .route("/api/v1/reload", post(reload))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

fn unauthorized(api: &Api, headers: &HeaderMap) -> Option<Response> {
    (!bearer_ok(&api.token, headers))
        .then(|| problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
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
    let Some(read_config) = &api.read_config else {
        return problem(
            StatusCode::BAD_REQUEST,
            "tripline runs without a config file: nothing to reload",
        );
    };
    let applied = match read_config() {
        Ok(config) => apply(&config, &api.handle).await,
        Err(problems) => Err(ControlError::Config(problems)),
    };
    match applied {
        Ok(()) => Json(serde_json::json!({ "reloaded": true })).into_response(),
        Err(e) => refused(e),
    }
}

/// Hands a new `[alerting]` to the running service, unless it names no receivers.
pub async fn apply(config: &AlertingConfig, handle: &Handle) -> Result<(), ControlError> {
    if !config.enabled() {
        return Err(ControlError::Config(
            "the new config names no alerting receivers; keeping the running one".to_owned(),
        ));
    }
    handle.reload(config.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
