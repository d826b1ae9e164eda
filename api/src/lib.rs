//! Tripline's HTTP surface beside the collector, on one listener (`server.listen`):
//! - [`server`]: `/healthz`, `/readyz` and Prometheus `/metrics`, and the listener that serves
//!   every route (the collector's and the ones below merged in);
//! - [`alerts`]: the alerting API (`/api/v1/alerts`, silences, test notifications, reload);
//! - [`console`]: the built-in web page and the key series it draws.
//!
//! The binary builds the parts (which need the config, the alerting service and the config
//! watcher) and hands them here; nothing in this crate reads the config file or the environment.

pub mod alerts;
pub mod console;
pub mod server;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tripline_core::auth::{self, TokenDigest};

/// Whether `headers` carry `Authorization: Bearer <token>` (see [`tripline_core::auth`]: any
/// case of the scheme, SHA-256 digests compared in constant time): the alerting API's and the
/// console's check.
pub fn bearer_ok(token: &TokenDigest, headers: &HeaderMap) -> bool {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth::authenticate(value, [((), token)]).is_some()
}

/// A JSON error body, `{"error": message}`, with `status`.
fn problem(status: axum::http::StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
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
}
