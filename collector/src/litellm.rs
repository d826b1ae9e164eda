//! LiteLLM's StandardLoggingPayload (what its `generic_api` callback posts) → contract v1.
//!
//! Only the fields below are read; everything else, in particular the prompt (`messages`), the
//! completion (`response`), error messages and tracebacks (which can quote the prompt), is skipped
//! by the parser without being kept. The result is contract-v1 JSON that then goes through the
//! same redaction and validation as any other event. Fields LiteLLM does not send stay absent.
//! The mapping, field by field, is documented in the README ("Connect LiteLLM").

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::draft::{number, text, GatewayDraft, ProviderDraft, Scalar};
use tripline_core::event::{Reject, RejectReason};

/// The StandardLoggingPayload fields Tripline reads (LiteLLM 1.7x-1.10x).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Payload {
    id: Option<Scalar>,
    litellm_call_id: Option<Scalar>,
    status: Option<Scalar>,
    #[serde(rename = "startTime")]
    start_time: Option<Scalar>,
    #[serde(rename = "endTime")]
    end_time: Option<Scalar>,
    model: Option<Scalar>,
    model_group: Option<Scalar>,
    model_id: Option<Scalar>,
    api_base: Option<Scalar>,
    custom_llm_provider: Option<Scalar>,
    prompt_tokens: Option<Scalar>,
    completion_tokens: Option<Scalar>,
    response_cost: Option<Scalar>,
    end_user: Option<Scalar>,
    requester_ip_address: Option<Scalar>,
    user_agent: Option<Scalar>,
    stream: Option<Scalar>,
    metadata: Option<Metadata>,
    hidden_params: Option<HiddenParams>,
    error_information: Option<ErrorInformation>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    user_api_key_hash: Option<Scalar>,
    user_api_key_alias: Option<Scalar>,
    user_api_key_team_id: Option<Scalar>,
    user_api_key_project_id: Option<Scalar>,
    user_api_key_user_id: Option<Scalar>,
    user_api_key_end_user_id: Option<Scalar>,
    requester_ip_address: Option<Scalar>,
    user_agent: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HiddenParams {
    api_base: Option<Scalar>,
    model_id: Option<Scalar>,
    litellm_model_name: Option<Scalar>,
    additional_headers: Option<AdditionalHeaders>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdditionalHeaders {
    #[serde(rename = "x-litellm-attempted-retries")]
    attempted_retries: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorInformation {
    error_code: Option<Scalar>,
    error_class: Option<Scalar>,
    llm_provider: Option<Scalar>,
}

/// One payload, mapped: the gateway request, and the provider attempt when LiteLLM says which
/// deployment served it. Both are contract-v1 JSON, not validated yet.
#[derive(Debug)]
pub struct Mapped {
    pub gateway: Vec<u8>,
    pub provider: Option<Vec<u8>>,
}

/// Maps one StandardLoggingPayload (its raw JSON, already redacted).
pub fn map(raw: &[u8]) -> Result<Mapped, Reject> {
    // serde would also read a struct from an array; a payload is an object.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Reject::new(
            RejectReason::WrongType,
            "a LiteLLM StandardLoggingPayload is a JSON object",
        ));
    }
    let p: Payload = serde_json::from_slice(raw).map_err(|err| {
        let reason = match err.classify() {
            serde_json::error::Category::Data => RejectReason::WrongType,
            _ => RejectReason::InvalidJson,
        };
        Reject::new(
            reason,
            format!("not a LiteLLM StandardLoggingPayload: {err}"),
        )
    })?;
    let meta = p.metadata.unwrap_or_default();
    let hidden = p.hidden_params.unwrap_or_default();
    let error = p.error_information.unwrap_or_default();

    let call_id = text(&p.litellm_call_id);
    let response_id = text(&p.id);
    let start_s = number(&p.start_time);
    let end_s = number(&p.end_time);
    let key_hash = text(&meta.user_api_key_hash);
    let event_id = derived_event_id(
        [
            call_id.as_deref(),
            response_id.as_deref(),
            key_hash.as_deref(),
        ],
        [start_s, end_s],
    );
    let request_id = response_id.or(call_id);
    let ts = start_s.map(|s| (s * 1000.0).round() as i64);
    let latency_ms = match (start_s, end_s) {
        (Some(start), Some(end)) if end >= start => Some(((end - start) * 1000.0).round() as i64),
        _ => None,
    };

    let failed = matches!(text(&p.status).as_deref(), Some("failure"));
    let (status, error_type) = match text(&p.status).as_deref() {
        Some("success") => (Some(200), None),
        Some("failure") => {
            let code = text(&error.error_code)
                .and_then(|c| c.parse::<i64>().ok())
                .filter(|c| (100..=599).contains(c));
            // A failure without an HTTP code is a gateway-side error: 500 (status is required).
            let status = code.unwrap_or(500);
            let class = text(&error.error_class);
            (Some(status), Some(error_type(class.as_deref(), status)))
        }
        _ => (None, None),
    };
    let provider = text(&p.custom_llm_provider).or_else(|| {
        if failed {
            text(&error.llm_provider)
        } else {
            None
        }
    });
    let model = text(&p.model);
    let tokens = |v: &Option<Scalar>| number(v).map(|n| n as i64);
    let cost_usd = number(&p.response_cost).filter(|c| c.is_finite());

    let gateway = GatewayDraft {
        event_id: event_id.clone(),
        ts,
        api_key_id: key_hash.clone(),
        // What the client asked for (the model group); the deployment's model is on the attempt.
        model: text(&p.model_group).or_else(|| model.clone()),
        status,
        key_hint: text(&meta.user_api_key_alias),
        project: text(&meta.user_api_key_project_id),
        team: text(&meta.user_api_key_team_id),
        user: text(&p.end_user)
            .or_else(|| text(&meta.user_api_key_end_user_id))
            .or_else(|| text(&meta.user_api_key_user_id)),
        provider: provider.clone(),
        error_type: error_type.clone(),
        prompt_tokens: tokens(&p.prompt_tokens),
        completion_tokens: tokens(&p.completion_tokens),
        cost_usd,
        latency_ms,
        client_ip: text(&p.requester_ip_address).or_else(|| text(&meta.requester_ip_address)),
        user_agent: text(&p.user_agent).or_else(|| text(&meta.user_agent)),
        request_id: request_id.clone(),
        stream: p.stream.as_ref().and_then(Scalar::flag),
        ..GatewayDraft::default()
    };

    // An attempt only when LiteLLM names the deployment (model_id) or the api_base that served
    // the call, and there is a request id to tie it to and a provider to charge it to.
    let deployment = text(&p.model_id)
        .or_else(|| text(&hidden.model_id))
        .or_else(|| text(&p.api_base))
        .or_else(|| text(&hidden.api_base));
    let provider_out = match (&deployment, &request_id, &provider) {
        (Some(_), Some(request_id), Some(provider)) => {
            let retries = hidden
                .additional_headers
                .as_ref()
                .and_then(|h| number(&h.attempted_retries))
                .map(|n| n as i64);
            // LiteLLM states its retries on successes only; a call it does not describe counts
            // as its first attempt.
            let attempt = retries.map_or(1, |r| r + 1);
            let out = ProviderDraft {
                event_id: format!(
                    "{}:attempt-{attempt}",
                    event_id.as_deref().unwrap_or(request_id)
                ),
                ts,
                request_id,
                api_key_id: gateway.api_key_id.clone(),
                provider,
                model: text(&hidden.litellm_model_name).or_else(|| model.clone()),
                attempt,
                status,
                error_type: error_type.clone(),
                latency_ms,
                prompt_tokens: tokens(&p.prompt_tokens),
                completion_tokens: tokens(&p.completion_tokens),
                cost_usd,
            };
            Some(serde_json::to_vec(&out).expect("plain struct serializes"))
        }
        _ => None,
    };
    Ok(Mapped {
        gateway: serde_json::to_vec(&gateway).expect("plain struct serializes"),
        provider: provider_out,
    })
}

/// LiteLLM's exception class → the contract's error vocabulary (`rate_limit`, `server_error`,
/// …); an unlisted class becomes its snake_case name without the `Error` suffix.
pub(crate) fn error_type(class: Option<&str>, status: i64) -> String {
    let known = match class {
        Some("RateLimitError") => "rate_limit",
        Some("InternalServerError") => "server_error",
        Some("ServiceUnavailableError") => "overloaded",
        Some("APIConnectionError") => "connection_error",
        Some("Timeout") => "timeout",
        Some("AuthenticationError") => "auth",
        Some("PermissionDeniedError") => "permission_denied",
        Some("BadRequestError") => "bad_request",
        Some("NotFoundError") => "not_found",
        Some("ContextWindowExceededError") => "context_window_exceeded",
        Some("ContentPolicyViolationError") => "content_policy",
        Some("BudgetExceededError") => "budget_exceeded",
        Some("UnprocessableEntityError") => "unprocessable",
        Some(other) => return snake_case(other.strip_suffix("Error").unwrap_or(other)),
        None => match status {
            429 => "rate_limit",
            401 | 403 => "auth",
            500..=599 => "server_error",
            _ => "error",
        },
    };
    known.to_owned()
}

/// The event's id, derived from what the proxy itself sets.
///
/// `litellm_call_id` alone is no identity: LiteLLM copies it from the client's
/// `x-litellm-call-id` header, so a client (or a thief with a leaked key) sending a constant
/// header would make every request look like one, and a long one would be refused as an id. The
/// response id repeats when LiteLLM serves a cached response. So the id is a digest of the call
/// id with the proxy's own start and end times (microseconds), the key's hash and the response
/// id: the same payload sent again (a callback retry) keeps its id, two calls never share one.
fn derived_event_id(
    [call_id, response_id, key_hash]: [Option<&str>; 3],
    times_s: [Option<f64>; 2],
) -> Option<String> {
    if call_id.is_none() && response_id.is_none() {
        return None;
    }
    let mut hash = Sha256::new();
    for part in [call_id, response_id, key_hash] {
        let part = part.unwrap_or("");
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    for time_s in times_s {
        let micros = time_s.map_or(-1, |s| (s * 1e6).round() as i64);
        hash.update(micros.to_le_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("litellm-{hex}"))
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars().filter(|c| c.is_ascii_alphanumeric()).take(64) {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    if out.is_empty() {
        "error".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests;
