//! The HTTP transport for webhooks and Slack: one POST per call, its result as a
//! [`DeliveryError`] for [`super::delivery::RetryPolicy::decide`]. Retries, rate limits and
//! persistence are the caller's; this stays thin.
//!
//! reqwest with rustls (ring, webpki roots): no OpenSSL, the same TLS stack as lettre.
//! Redirects are not followed: a signed body must not be forwarded to another host, and a
//! moved URL is a configuration error ([`super::delivery::is_permanent_status`]).

use std::fmt;
use std::time::Duration;

use super::delivery::DeliveryError;

/// One request, fully built: [`super::webhook::WebhookReceiver::request`] and
/// [`super::slack::SlackReceiver::request`] make them.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpRequest {
    /// Without the URL: a Slack webhook URL is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("url", &"<redacted>")
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// How much of an error response's body is read (Slack explains errors there).
const MAX_ERROR_BODY_BYTES: usize = 1024;

/// A shared HTTP client. Cheap to clone; one per process is enough.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    /// `timeout` bounds a whole attempt (connect, send, response): a hanging receiver costs
    /// one timeout, then the retry policy decides.
    pub fn new(timeout: Duration) -> Result<Self, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tripline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Permanent(format!("http client: {}", e.without_url())))?;
        Ok(Self { client })
    }

    /// POSTs `request` once. 2xx is success; anything else is a [`DeliveryError`] that never
    /// contains the URL.
    pub async fn send(&self, request: &HttpRequest) -> Result<(), DeliveryError> {
        let mut builder = self.client.post(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder
            .body(request.body.clone())
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        // Best effort: an error body that fails to arrive still leaves the status.
        while body.len() < MAX_ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BODY_BYTES);
        Err(DeliveryError::from_status(
            status,
            retry_after.as_deref(),
            &String::from_utf8_lossy(&body),
        ))
    }
}

fn request_error(e: reqwest::Error) -> DeliveryError {
    let permanent = e.is_builder();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_builder() {
        "invalid request (check the receiver url)"
    } else {
        "request failed"
    };
    // reqwest's messages include the URL; a Slack URL is a secret.
    let detail = e.without_url();
    let mut message = format!("{what}: {detail}");
    let mut source = std::error::Error::source(&detail);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if permanent {
        DeliveryError::Permanent(message)
    } else {
        DeliveryError::Transient(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_url() {
        let r = HttpRequest {
            url: "https://hooks.slack.com/services/T0/B0/secret".into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        };
        let debug = format!("{r:?}");
        assert!(
            !debug.contains("secret") && debug.contains("redacted"),
            "{debug}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("webhook-id"), None);
    }

    #[test]
    fn a_client_builds_without_a_runtime() {
        assert!(HttpSender::new(Duration::from_secs(5)).is_ok());
    }
}
