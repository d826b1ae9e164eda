//! What happens to one request at any door, in order: the bearer token, the `?kind=` and
//! Content-Type checks, the body read within its limit, decoding, redaction and validation off
//! the reactor, the batch produced to Kafka, the metrics, and the answer chosen.
//!
//! Kept apart from the collector's setup (`lib.rs`: tokens, doors, the outlet, the router)
//! and from how answers are written (`answer.rs`): this file is the steps a batch goes through.

use std::time::Instant;
use tripline_core::time::now_ms;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use tracing::{debug, warn};
use tripline_core::event::EventKind;

use crate::answer::{error, otlp_answer, refused, too_large, Answer};
use crate::batch::{Endpoint, PrepareError, Prepared};
use crate::otlp::Format;
use crate::sources::OwnedFormat;
use crate::{batch, body, metrics, Collector, Door};

#[derive(Deserialize)]
pub(crate) struct Params {
    /// Default `kind` of the items of a `/v1/events` batch.
    kind: Option<String>,
}

pub(crate) async fn events(
    state: State<Collector>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(
        Door::Endpoint(Endpoint::Events),
        state,
        params,
        headers,
        body,
    )
    .await
}

pub(crate) async fn litellm_logs(
    state: State<Collector>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(
        Door::Endpoint(Endpoint::LiteLlm),
        state,
        params,
        headers,
        body,
    )
    .await
}

pub(crate) async fn kong_logs(
    state: State<Collector>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(Door::Endpoint(Endpoint::Kong), state, params, headers, body).await
}

pub(crate) async fn traces(
    state: State<Collector>,
    params: Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(Door::Endpoint(Endpoint::Otlp), state, params, headers, body).await
}

pub(crate) async fn handle(
    door: Door,
    State(collector): State<Collector>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = process(&door, &collector, params, &headers, body).await;
    let status = response.status();
    ::metrics::counter!(metrics::REQUESTS, "endpoint" => door.label().to_owned(), "status" => status.as_str().to_owned())
        .increment(1);
    ::metrics::histogram!(metrics::REQUEST_SECONDS, "endpoint" => door.label().to_owned())
        .record(started.elapsed().as_secs_f64());
    response
}

async fn process(
    door: &Door,
    collector: &Collector,
    params: Params,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let inner = &collector.inner;
    let Some(source) = collector.authenticate(headers).map(str::to_owned) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or unknown bearer token",
            &[(header::WWW_AUTHENTICATE, "Bearer realm=\"tripline\"")],
        );
    };
    let default_kind = match params.kind.as_deref().map(batch::parse_kind) {
        None => EventKind::Gateway,
        Some(Some(kind)) if door.takes_kind() => kind,
        Some(_) => return error(
            StatusCode::BAD_REQUEST,
            "query parameter `kind` must be gateway_request or provider_attempt (on /v1/events)",
            &[],
        ),
    };
    let otlp_format = match door {
        Door::Endpoint(Endpoint::Otlp) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match Format::from_content_type(content_type) {
                Some(format) => Some(format),
                None => return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)",
                    &[],
                ),
            }
        }
        _ => None,
    };
    let limit = inner.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return too_large(limit);
    }

    // Bounds memory: at most this many bodies are held at once; the others wait here.
    let Ok(_slot) = inner.slots.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", &[]);
    };
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return too_large(limit),
        Err(err) => {
            debug!(%err, "collector: request body not received");
            return error(StatusCode::BAD_REQUEST, "request body not received", &[]);
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // Decoding, redaction and validation are CPU work on up to max_body_bytes: off the reactor.
    let worker = collector.clone();
    let door_for_work = door.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, PrepareError> {
        let door = door_for_work;
        let inner = &worker.inner;
        let decoded = body::decode(encoding.as_deref(), &raw, inner.max_body_bytes)
            .map_err(PrepareError::Body)?;
        match otlp_format {
            Some(format) => batch::prepare_otlp(
                format,
                &decoded,
                &inner.otlp,
                &inner.fingerprinter,
                &inner.limits,
                now_ms(),
            ),
            None => match &door {
                Door::Endpoint(endpoint) => batch::prepare(
                    *endpoint,
                    default_kind,
                    &decoded,
                    &inner.fingerprinter,
                    &inner.limits,
                    now_ms(),
                ),
                Door::Source(source) => {
                    let format = match &source.format {
                        OwnedFormat::Events => batch::RecordFormat::Events(default_kind),
                        other => other.as_record_format(),
                    };
                    batch::prepare_body(
                        format,
                        &source.source_topic,
                        &decoded,
                        &inner.fingerprinter,
                        &inner.limits,
                        now_ms(),
                    )
                }
            },
        }
    })
    .await;
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(err)) => return refused(&err),
        Err(err) => {
            warn!(%err, "collector: batch preparation panicked");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &[]);
        }
    };

    let produce = inner.outlet.produce(&prepared.records);
    // librdkafka times records out after produce_timeout; this only guards a queue kept full.
    let outcome = match tokio::time::timeout(inner.produce_timeout * 2, produce).await {
        Ok(outcome) => outcome,
        Err(_) => Err("kafka did not acknowledge in time".to_owned()),
    };
    if let Err(err) = outcome {
        ::metrics::counter!(metrics::KAFKA_FAILURES).increment(1);
        warn!(%err, endpoint = door.path(), records = prepared.records.len(), "collector: kafka did not take the batch; answering 503");
        let retry_after = inner.retry_after_s.to_string();
        let retry_after = HeaderValue::from_str(&retry_after).expect("digits are a header value");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka is unavailable: nothing of this batch was acknowledged; send it again",
            &[],
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
        return response;
    }

    let label = door.label().to_owned();
    ::metrics::counter!(metrics::EVENTS, "endpoint" => label.clone(), "source" => source.clone(), "outcome" => "accepted")
        .increment(prepared.accepted as u64);
    for rejected in &prepared.rejected {
        ::metrics::counter!(metrics::REJECTED, "endpoint" => label.clone(), "reason" => rejected.reason)
            .increment(1);
    }
    ::metrics::counter!(metrics::EVENTS, "endpoint" => label.clone(), "source" => source.clone(), "outcome" => "rejected")
        .increment(prepared.rejected.len() as u64);
    ::metrics::counter!(metrics::EVENTS, "endpoint" => label, "source" => source, "outcome" => "ignored")
        .increment(prepared.ignored as u64);
    let status = if prepared.malformed {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    if let Some(format) = otlp_format {
        return otlp_answer(status, format, &prepared);
    }
    let answer = Answer {
        accepted: prepared.accepted,
        rejected: &prepared.rejected,
        ignored: prepared.ignored,
    };
    (status, Json(answer)).into_response()
}
