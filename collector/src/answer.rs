//! How the collector answers: a batch's `{accepted, rejected, ignored}`, OTLP/HTTP's
//! `ExportTraceServiceResponse`, and the JSON errors (`{"error": …}`) of refused requests with
//! their status.
//!
//! Kept apart from the request's steps (`request.rs`) so that the status codes and bodies a
//! gateway sees are in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::batch::{self, PrepareError};
use crate::body::BodyError;
use crate::otlp::{self, Format};

/// The answer to a processed batch: `{accepted, rejected: [{index, reason, detail}]}`, and
/// `ignored` when items were no LLM call (Kong entries of other routes).
#[derive(serde::Serialize)]
pub(crate) struct Answer<'a> {
    pub(crate) accepted: usize,
    pub(crate) rejected: &'a [batch::Rejected],
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) ignored: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// OTLP/HTTP's answer, in the request's encoding: an `ExportTraceServiceResponse` whose
/// `partial_success` counts the inference spans refused (dead-lettered) and says why the first
/// were; 400 with the reason when the body did not decode.
pub(crate) fn otlp_answer(
    status: StatusCode,
    format: Format,
    prepared: &batch::Prepared,
) -> Response {
    let partial_success = (!prepared.rejected.is_empty()).then(|| {
        let mut reasons: Vec<String> = prepared
            .rejected
            .iter()
            .take(3)
            .map(|r| format!("span {}: {}: {}", r.index, r.reason, r.detail))
            .collect();
        if prepared.rejected.len() > reasons.len() {
            reasons.push(format!(
                "and {} more",
                prepared.rejected.len() - reasons.len()
            ));
        }
        otlp::proto::PartialSuccess {
            rejected_spans: prepared.rejected.len() as i64,
            error_message: reasons.join("; "),
        }
    });
    if status != StatusCode::OK {
        let reason = partial_success.map(|p| p.error_message).unwrap_or_default();
        return error(status, &reason, &[]);
    }
    let body = match format {
        Format::Protobuf => {
            prost::Message::encode_to_vec(&otlp::proto::ExportTraceServiceResponse {
                partial_success,
            })
        }
        Format::Json => match partial_success {
            Some(p) => serde_json::to_vec(&serde_json::json!({ "partialSuccess": p })),
            None => serde_json::to_vec(&serde_json::json!({})),
        }
        .expect("plain values serialize"),
    };
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

pub(crate) fn refused(err: &PrepareError) -> Response {
    match err {
        PrepareError::Body(BodyError::TooLarge(limit)) => too_large(*limit),
        PrepareError::TooManyEvents { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, &err.to_string(), &[])
        }
        PrepareError::Body(BodyError::UnsupportedEncoding(_)) => {
            error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &err.to_string(), &[])
        }
        PrepareError::Body(_) => error(StatusCode::BAD_REQUEST, &err.to_string(), &[]),
    }
}

pub(crate) fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "body is larger than {limit} bytes (collector.max_body_bytes); send smaller batches"
        ),
        &[],
    )
}

pub(crate) fn error(
    status: StatusCode,
    message: &str,
    headers: &[(header::HeaderName, &'static str)],
) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
    response
}
