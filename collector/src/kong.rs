//! Kong Gateway's log object (what `http-log` posts and `kafka-log` writes) from a route with
//! Kong's AI plugins (`ai-proxy`, `ai-proxy-advanced`, …) → contract v1.
//!
//! One log object is one gateway request; each entry of `tries[]` (the balancer's upstream
//! tries, a retry after a failed one among them) is one provider attempt, which is the retry
//! evidence the storm detector reads. Only the fields below are read: the AI plugins' payloads
//! (`ai.payload`, `ai.<plugin>.payload`, where Kong puts prompts and completions when
//! `log_payloads` is on), request and response headers other than `user-agent` (an `apikey` or
//! `authorization` header can hold a key) and everything else are skipped by the parser. A log
//! object without any AI plugin's `usage` or `meta` is not an LLM call: it is ignored and
//! counted. The README's "Kong AI Gateway" lists the mapping field by field.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tripline_core::event::{Reject, RejectReason};

use crate::draft::{number, text, GatewayDraft, ProviderDraft, Scalar};
use crate::litellm::error_type;

/// The log object's fields Tripline reads (Kong Gateway 3.x).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Log {
    request: Request,
    response: Response,
    upstream_status: Option<Scalar>,
    started_at: Option<Scalar>,
    client_ip: Option<Scalar>,
    latencies: Latencies,
    tries: Vec<Try>,
    consumer: Option<Consumer>,
    authenticated_entity: Option<Entity>,
    route: Option<Named>,
    service: Option<Named>,
    ai: BTreeMap<String, AiPlugin>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    id: Option<Scalar>,
    headers: Headers,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Headers {
    #[serde(rename = "user-agent")]
    user_agent: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Response {
    status: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Latencies {
    request: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Try {
    balancer_start: Option<Scalar>,
    balancer_latency: Option<Scalar>,
    /// The try's upstream status, on tries the balancer moved on from (older Kong versions).
    code: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Consumer {
    id: Option<Scalar>,
    username: Option<Scalar>,
    custom_id: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Entity {
    id: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    id: Option<Scalar>,
    name: Option<Scalar>,
}

/// `ai.<plugin>`: `usage` and `meta` (its `payload` is skipped).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AiPlugin {
    usage: Option<Usage>,
    meta: Option<Meta>,
}

/// Kong's documentation spells the token counts `prompt_token`/`completion_token`; the gateway
/// writes `prompt_tokens`/`completion_tokens`. Both are read.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    prompt_tokens: Option<Scalar>,
    prompt_token: Option<Scalar>,
    completion_tokens: Option<Scalar>,
    completion_token: Option<Scalar>,
    cost: Option<Scalar>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    request_model: Option<Scalar>,
    response_model: Option<Scalar>,
    provider_name: Option<Scalar>,
}

/// One log object, mapped: the gateway request and its provider attempts, contract-v1 JSON not
/// validated yet; `None` for a log object that is no LLM call.
#[derive(Debug)]
pub struct Mapped {
    pub gateway: Vec<u8>,
    pub attempts: Vec<Vec<u8>>,
}

/// Maps one Kong log object (its raw JSON, already redacted).
pub fn map(raw: &[u8]) -> Result<Option<Mapped>, Reject> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Reject::new(
            RejectReason::WrongType,
            "a Kong log entry is a JSON object",
        ));
    }
    let log: Log = serde_json::from_slice(raw).map_err(|err| {
        let reason = match err.classify() {
            serde_json::error::Category::Data => RejectReason::WrongType,
            _ => RejectReason::InvalidJson,
        };
        Reject::new(reason, format!("not a Kong log entry: {err}"))
    })?;
    // The plugin that proxied the call names the model; others (a request transformer calling
    // an LLM of its own) add their usage.
    let plugins: Vec<(&String, &AiPlugin)> = log
        .ai
        .iter()
        .filter(|(_, p)| p.usage.is_some() || p.meta.is_some())
        .collect();
    if plugins.is_empty() {
        return Ok(None);
    }
    let meta = plugins
        .iter()
        .filter(|(name, _)| name.contains("proxy"))
        .chain(plugins.iter())
        .find_map(|(_, p)| p.meta.as_ref());
    let usages: Vec<&Usage> = plugins
        .iter()
        .filter_map(|(_, p)| p.usage.as_ref())
        .collect();
    let sum = |read: fn(&Usage) -> Option<f64>| -> Option<f64> {
        let values: Vec<f64> = usages.iter().filter_map(|u| read(u)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let prompt_tokens = sum(|u| number(&u.prompt_tokens).or_else(|| number(&u.prompt_token)));
    let completion_tokens =
        sum(|u| number(&u.completion_tokens).or_else(|| number(&u.completion_token)));
    let cost_usd = sum(|u| number(&u.cost)).filter(|c| c.is_finite() && *c >= 0.0);

    let started_at = number(&log.started_at).map(|ms| ms.round() as i64);
    let status = number(&log.response.status).map(|s| s as i64);
    let request_id = text(&log.request.id);
    let key = log
        .authenticated_entity
        .as_ref()
        .and_then(|e| text(&e.id))
        .or_else(|| log.consumer.as_ref().and_then(|c| text(&c.id)));
    let route = log
        .route
        .as_ref()
        .and_then(|r| text(&r.name).or_else(|| text(&r.id)));
    // A route without authentication is one shared key: watched as such.
    let api_key_id = key
        .clone()
        .or_else(|| route.as_ref().map(|r| format!("route:{r}")));
    let event_id = event_id(&log, request_id.as_deref(), key.as_deref(), started_at);
    let failed = |status: Option<i64>| status.filter(|s| *s >= 400).map(|s| error_type(None, s));
    let model = meta.and_then(|m| text(&m.request_model).or_else(|| text(&m.response_model)));
    let provider = meta.and_then(|m| text(&m.provider_name));

    let gateway = GatewayDraft {
        event_id: Some(event_id.clone()),
        ts: started_at,
        api_key_id: api_key_id.clone(),
        model: model.clone(),
        status,
        key_hint: log
            .consumer
            .as_ref()
            .and_then(|c| text(&c.username).or_else(|| text(&c.custom_id))),
        project: log.service.as_ref().and_then(|s| text(&s.name)),
        provider: provider.clone(),
        error_type: failed(status),
        prompt_tokens: prompt_tokens.map(|n| n as i64),
        completion_tokens: completion_tokens.map(|n| n as i64),
        cost_usd,
        latency_ms: number(&log.latencies.request).map(|ms| ms as i64),
        client_ip: text(&log.client_ip),
        user_agent: text(&log.request.headers.user_agent),
        request_id: Some(request_id.clone().unwrap_or_else(|| event_id.clone())),
        ..GatewayDraft::default()
    };

    let mut attempts = Vec::new();
    if let Some(provider) = &provider {
        let upstream = upstream_statuses(&log);
        let request_id = request_id.unwrap_or_else(|| event_id.clone());
        let last = log.tries.len();
        for (i, attempt) in log.tries.iter().enumerate() {
            let n = i + 1;
            // The last try answered the request; earlier ones failed (the balancer moved on).
            let status = upstream
                .get(i)
                .copied()
                .or_else(|| number(&attempt.code).map(|c| c as i64))
                .or(if n == last { status } else { Some(502) });
            let is_last = n == last;
            let draft = ProviderDraft {
                event_id: format!("{event_id}:attempt-{n}"),
                ts: number(&attempt.balancer_start)
                    .map(|ms| ms.round() as i64)
                    .or(started_at),
                request_id: &request_id,
                api_key_id: api_key_id.clone(),
                provider,
                model: meta
                    .and_then(|m| text(&m.response_model).or_else(|| text(&m.request_model))),
                attempt: n as i64,
                status,
                error_type: failed(status),
                latency_ms: number(&attempt.balancer_latency)
                    .map(|ms| ms as i64)
                    .filter(|_| !is_last),
                // Tokens and cost belong to the answered try.
                prompt_tokens: prompt_tokens.filter(|_| is_last).map(|n| n as i64),
                completion_tokens: completion_tokens.filter(|_| is_last).map(|n| n as i64),
                cost_usd: cost_usd.filter(|_| is_last),
            };
            attempts.push(serde_json::to_vec(&draft).expect("plain struct serializes"));
        }
    }
    Ok(Some(Mapped {
        gateway: serde_json::to_vec(&gateway).expect("plain struct serializes"),
        attempts,
    }))
}

/// `upstream_status` as nginx writes it: one code per try, `"502, 502, 200"` (a `:` separates
/// internal redirects).
fn upstream_statuses(log: &Log) -> Vec<i64> {
    let Some(text) = text(&log.upstream_status) else {
        return Vec::new();
    };
    let codes: Vec<i64> = text
        .split([',', ':'])
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| (100..=599).contains(c))
        .collect();
    // Only trusted when it speaks of every try.
    if codes.len() == log.tries.len() {
        codes
    } else {
        Vec::new()
    }
}

/// `kong-<request.id>` (Kong 3.5+), else 32 hex digits of SHA-256 over what tells two requests
/// apart: start time, client, key, the tries' balancer starts and the total latency.
fn event_id(
    log: &Log,
    request_id: Option<&str>,
    key: Option<&str>,
    started_at: Option<i64>,
) -> String {
    if let Some(id) = request_id {
        return format!("kong-{id}");
    }
    let mut hash = Sha256::new();
    let mut part = |s: &str| {
        hash.update((s.len() as u64).to_le_bytes());
        hash.update(s.as_bytes());
    };
    part(&started_at.map_or(String::new(), |t| t.to_string()));
    part(text(&log.client_ip).as_deref().unwrap_or(""));
    part(key.unwrap_or(""));
    part(&number(&log.latencies.request).map_or(String::new(), |l| l.to_string()));
    for t in &log.tries {
        part(&number(&t.balancer_start).map_or(String::new(), |s| s.to_string()));
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("kong-{hex}")
}

#[cfg(test)]
mod tests;
