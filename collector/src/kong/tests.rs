use serde_json::{json, Value};
use tripline_core::event::{decode_gateway, decode_provider, ValidationRules};

use super::*;

/// Kong's documented `http-log` entry (3.8) with the AI plugins' block of its AI audit log
/// reference (the documentation's `prompt_token` spelling on one plugin, the gateway's
/// `prompt_tokens` on the other), a consumer, and a raw key in a request header.
const SAMPLE: &str = include_str!("../../tests/fixtures/kong_http_log_ai.json");

const RULES: ValidationRules = ValidationRules {
    now_ms: 1_726_783_900_000,
    max_future_skew_ms: 300_000,
};

fn mapped(raw: &str) -> (Value, Vec<Value>) {
    let m = map(raw.as_bytes()).unwrap().expect("an LLM call");
    (
        serde_json::from_slice(&m.gateway).unwrap(),
        m.attempts
            .iter()
            .map(|a| serde_json::from_slice(a).unwrap())
            .collect(),
    )
}

#[test]
fn the_documented_entry_maps_field_by_field() {
    let (gateway, attempts) = mapped(SAMPLE);
    assert_eq!(
        gateway,
        json!({
            "event_id": "kong-2f6946328ffc4946b8c9120704a4a155",
            "ts": 1_726_783_839_538i64,
            "api_key_id": "8c1f7e2a-5d4b-4c3a-9e8f-7a6b5c4d3e2f",
            "model": "gpt-4o-mini",
            "status": 200,
            "key_hint": "search-team",
            "project": "openai-service",
            "provider": "openai",
            "prompt_tokens": 28 + 89,
            "completion_tokens": 20 + 56,
            "cost_usd": 0.0038 + 0.0012,
            "latency_ms": 2672,
            "client_ip": "192.168.65.1",
            "user_agent": "OpenAI/Python 1.52.0",
            "request_id": "2f6946328ffc4946b8c9120704a4a155",
        })
    );
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0],
        json!({
            "event_id": "kong-2f6946328ffc4946b8c9120704a4a155:attempt-1",
            "ts": 1_726_783_839_539i64,
            "request_id": "2f6946328ffc4946b8c9120704a4a155",
            "api_key_id": "8c1f7e2a-5d4b-4c3a-9e8f-7a6b5c4d3e2f",
            "provider": "openai",
            "model": "gpt-4o-mini-2024-07-18",
            "attempt": 1,
            "status": 200,
            "prompt_tokens": 117,
            "completion_tokens": 76,
            "cost_usd": 0.0038 + 0.0012,
        })
    );
    // Valid contract events, as ingest will judge them.
    decode_gateway(&serde_json::to_vec(&gateway).unwrap(), &RULES).unwrap();
    decode_provider(&serde_json::to_vec(&attempts[0]).unwrap(), &RULES).unwrap();
}

#[test]
fn payloads_and_headers_are_never_read() {
    let m = map(SAMPLE.as_bytes()).unwrap().unwrap();
    for out in std::iter::once(&m.gateway).chain(&m.attempts) {
        let text = String::from_utf8_lossy(out);
        for secret in ["kong secret", "sk-proj-KongHeaderKey", "apikey"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

#[test]
fn retried_tries_are_attempts_with_their_statuses() {
    let mut log: Value = serde_json::from_str(SAMPLE).unwrap();
    log["tries"] = json!([
        {"balancer_start": 1726783839539u64, "ip": "34.237.204.224", "port": 443, "balancer_latency": 0},
        {"balancer_start": 1726783840100u64, "ip": "34.237.204.225", "port": 443, "balancer_latency": 1},
        {"balancer_start": 1726783840700u64, "ip": "34.237.204.226", "port": 443, "balancer_latency": 0}
    ]);
    log["upstream_status"] = json!("429, 503, 200");
    let (_, attempts) = mapped(&log.to_string());
    let summary: Vec<(i64, i64, Option<&str>, bool)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["status"].as_i64().unwrap(),
                a["error_type"].as_str(),
                a.get("cost_usd").is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 429, Some("rate_limit"), false),
            (2, 503, Some("server_error"), false),
            (3, 200, None, true)
        ]
    );

    // Without a status per try: older Kong's `code` on a try, else 502 for one moved on from.
    log["upstream_status"] = json!("200");
    log["tries"][0]["code"] = json!(504);
    let (_, attempts) = mapped(&log.to_string());
    let statuses: Vec<i64> = attempts
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [504, 502, 200]);
}

#[test]
fn failures_anonymous_routes_and_other_traffic() {
    let mut log: Value = serde_json::from_str(SAMPLE).unwrap();
    log["response"]["status"] = json!(429);
    log["upstream_status"] = json!("429");
    log.as_object_mut().unwrap().remove("consumer");
    log.as_object_mut().unwrap().remove("authenticated_entity");
    log["request"].as_object_mut().unwrap().remove("id");
    let (gateway, attempts) = mapped(&log.to_string());
    assert_eq!(gateway["status"], 429);
    assert_eq!(gateway["error_type"], "rate_limit");
    assert_eq!(gateway["api_key_id"], "route:openai-chat");
    let id = gateway["event_id"].as_str().unwrap();
    assert!(id.starts_with("kong-") && id.len() == 5 + 32, "{id}");
    assert_eq!(attempts[0]["request_id"], id, "tied to its request");
    // The same entry logged twice keeps its id; another start time does not.
    assert_eq!(mapped(&log.to_string()).0["event_id"], id);
    log["started_at"] = json!(1726783839539u64);
    assert_ne!(mapped(&log.to_string()).0["event_id"], id);

    // A route without AI plugins is not an LLM call.
    log.as_object_mut().unwrap().remove("ai");
    assert!(map(log.to_string().as_bytes()).unwrap().is_none());
    let err = map(b"[1, 2]").unwrap_err();
    assert_eq!(err.reason, RejectReason::WrongType);
    let err = map(br#"{"tries": 5}"#).unwrap_err();
    assert_eq!(err.reason, RejectReason::WrongType, "{}", err.detail);
}
