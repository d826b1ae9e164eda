use serde_json::{json, Value};
use tripline_core::event::{decode_gateway, decode_provider, ValidationRules};

use super::*;

/// Three StandardLoggingPayloads exactly as litellm[proxy]==1.106.12 posted them (ndjson).
const SAMPLE: &str = include_str!("../../tests/fixtures/litellm_generic_api_sample.ndjson");

const RULES: ValidationRules = ValidationRules {
    now_ms: 1_795_703_400_000,
    max_future_skew_ms: 300_000,
};

fn sample(i: usize) -> Value {
    serde_json::from_str(SAMPLE.lines().nth(i).unwrap()).unwrap()
}

fn mapped_json(payload: &Value) -> (Value, Option<Value>) {
    let mapped = map(&serde_json::to_vec(payload).unwrap()).unwrap();
    (
        serde_json::from_slice(&mapped.gateway).unwrap(),
        mapped.provider.map(|p| serde_json::from_slice(&p).unwrap()),
    )
}

#[test]
fn real_sample_maps_field_by_field() {
    let raw = SAMPLE.lines().next().unwrap();
    let mapped = map(raw.as_bytes()).unwrap();
    let gateway = decode_gateway(&mapped.gateway, &RULES).unwrap();
    // Derived from the proxy's own fields, not the client-settable litellm_call_id.
    assert!(
        gateway.event_id.starts_with("litellm-"),
        "{}",
        gateway.event_id
    );
    assert_eq!(gateway.event_id.len(), "litellm-".len() + 32);
    assert_eq!(
        gateway.request_id,
        "chatcmpl-d3c47cae-de6c-4b11-a4a6-85ea9197619e"
    );
    // startTime 1795703332.681952 s, endTime 1795703332.711833 s.
    assert_eq!(gateway.ts_ms, 1_795_703_332_682);
    assert_eq!(gateway.latency_ms, 30);
    assert_eq!(gateway.api_key_id, "litellm_proxy_master_key");
    assert_eq!(gateway.model, "gpt-4o-mini");
    assert_eq!(gateway.provider, "openai");
    assert_eq!(gateway.status, 200);
    assert_eq!(gateway.error_type, "");
    assert_eq!((gateway.prompt_tokens, gateway.completion_tokens), (10, 20));
    assert_eq!(gateway.cost_usd, Some(1.35e-05));
    assert_eq!(gateway.user, "u_42");
    assert_eq!(gateway.client_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(gateway.user_agent, "openai-python/1.52.0");
    // Not sent by LiteLLM here (null or absent): stays empty, never invented.
    assert_eq!(gateway.key_hint, "");
    assert_eq!(gateway.team, "");
    assert_eq!(gateway.project, "");
    assert_eq!(gateway.client_country, "");
    assert_eq!(gateway.gateway_region, "");
    assert_eq!(gateway.idempotency_key, "");
    assert_eq!(gateway.attempt, 1);
    assert!(!gateway.stream);

    // model_id names the deployment that served it: one provider attempt.
    let attempt = decode_provider(&mapped.provider.unwrap(), &RULES).unwrap();
    assert_eq!(attempt.event_id, format!("{}:attempt-1", gateway.event_id));
    assert_eq!(attempt.request_id, gateway.request_id);
    assert_eq!(attempt.api_key_id, "litellm_proxy_master_key");
    assert_eq!(attempt.provider, "openai");
    assert_eq!(attempt.model, "openai/gpt-4o-mini");
    // x-litellm-attempted-retries: 0.
    assert_eq!(attempt.attempt, 1);
    assert_eq!(attempt.status, 200);
    assert_eq!(attempt.latency_ms, 30);
    assert_eq!(attempt.cost_usd, Some(1.35e-05));
    assert_eq!(attempt.provider_region, "");
}

#[test]
fn every_sample_line_maps_and_validates() {
    for line in SAMPLE.lines() {
        let mapped = map(line.as_bytes()).unwrap();
        decode_gateway(&mapped.gateway, &RULES).unwrap();
        decode_provider(&mapped.provider.unwrap(), &RULES).unwrap();
    }
}

#[test]
fn prompts_and_responses_are_not_carried() {
    let payload = sample(0);
    assert_eq!(payload["messages"][0]["content"], "hi");
    for line in SAMPLE.lines() {
        let mapped = map(line.as_bytes()).unwrap();
        for out in [mapped.gateway, mapped.provider.unwrap()] {
            let text = String::from_utf8(out).unwrap();
            for needle in [
                "\"hi\"",
                "Hello from a mock",
                "messages",
                "response\"",
                "choices",
            ] {
                assert!(!text.contains(needle), "{needle} leaked: {text}");
            }
        }
    }
}

#[test]
fn failures_map_code_and_class() {
    let mut p = sample(0);
    p["status"] = json!("failure");
    p["id"] = p["litellm_call_id"].clone();
    p["response"] = json!({});
    p["response_cost"] = json!(0.0);
    p["prompt_tokens"] = json!(0);
    p["completion_tokens"] = json!(0);
    p["hidden_params"] = json!({"api_base": null, "model_id": null, "additional_headers": null});
    p["error_str"] = json!("litellm.RateLimitError: secret prompt text quoted here");
    p["error_information"] = json!({"error_code": "429", "error_class": "RateLimitError",
        "llm_provider": "openai", "error_message": "secret prompt text quoted here", "traceback": "..."});
    let (gateway, attempt) = mapped_json(&p);
    assert_eq!(gateway["status"], 429);
    assert_eq!(gateway["error_type"], "rate_limit");
    assert_eq!(gateway["cost_usd"], 0.0);
    assert_eq!(gateway["request_id"], p["litellm_call_id"]);
    assert!(!gateway.to_string().contains("secret prompt"));
    // The payload still names the deployment (model_id): the attempt, not retried as far as
    // LiteLLM says, is the first.
    let attempt = attempt.unwrap();
    assert_eq!(attempt["status"], 429);
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["error_type"], "rate_limit");

    p["error_information"] = json!({"error_code": 503, "error_class": "ServiceUnavailableError"});
    let (gateway, _) = mapped_json(&p);
    assert_eq!(
        (gateway["status"].clone(), gateway["error_type"].clone()),
        (json!(503), json!("overloaded"))
    );

    p["error_information"] = json!({"error_code": "", "error_class": "MyProxyHookError"});
    let (gateway, _) = mapped_json(&p);
    assert_eq!(
        (gateway["status"].clone(), gateway["error_type"].clone()),
        (json!(500), json!("my_proxy_hook"))
    );
}

#[test]
fn retries_and_metadata_fields_are_mapped_when_sent() {
    let mut p = sample(1);
    p["hidden_params"]["additional_headers"]["x-litellm-attempted-retries"] = json!(2);
    p["metadata"]["user_api_key_hash"] =
        json!("88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b");
    p["metadata"]["user_api_key_alias"] = json!("search-prod");
    p["metadata"]["user_api_key_team_id"] = json!("team-core");
    p["metadata"]["user_api_key_project_id"] = json!("proj-7");
    p["end_user"] = json!(null);
    p["metadata"]["user_api_key_end_user_id"] = json!(null);
    p["requester_ip_address"] = json!(null);
    p["metadata"]["requester_ip_address"] = json!("203.0.113.7");
    p["stream"] = json!(true);
    let (gateway, attempt) = mapped_json(&p);
    assert_eq!(
        gateway["api_key_id"],
        "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    );
    assert_eq!(gateway["key_hint"], "search-prod");
    assert_eq!(gateway["team"], "team-core");
    assert_eq!(gateway["project"], "proj-7");
    // No end user on the request: the key's internal user.
    assert_eq!(gateway["user"], "default_user_id");
    assert_eq!(gateway["client_ip"], "203.0.113.7");
    assert_eq!(gateway["stream"], true);
    assert_eq!(attempt.unwrap()["attempt"], 3);
}

#[test]
fn absent_fields_stay_absent() {
    let (gateway, attempt) = mapped_json(&json!({"litellm_call_id": "c1", "status": "success"}));
    let id = derived_event_id([Some("c1"), None, None], [None, None]).unwrap();
    assert_eq!(
        gateway,
        json!({"event_id": id, "status": 200, "request_id": "c1"})
    );
    // No deployment named: no attempt.
    assert!(attempt.is_none());
    // …and the validator then says what is missing.
    let raw = serde_json::to_vec(&gateway).unwrap();
    let reject = decode_gateway(&raw, &RULES).unwrap_err();
    assert_eq!(reject.reason, RejectReason::MissingField);
}

#[test]
fn unreadable_payloads_are_refused() {
    assert_eq!(map(b"{oops").unwrap_err().reason, RejectReason::InvalidJson);
    assert_eq!(map(b"[1,2]").unwrap_err().reason, RejectReason::WrongType);
    assert_eq!(
        map(br#"{"metadata": "not an object"}"#).unwrap_err().reason,
        RejectReason::WrongType
    );
}

#[test]
fn snake_case_of_unknown_classes() {
    assert_eq!(
        error_type(Some("JSONSchemaValidationError"), 400),
        "jsonschema_validation"
    );
    assert_eq!(error_type(None, 429), "rate_limit");
    assert_eq!(error_type(None, 502), "server_error");
}

/// LiteLLM copies `litellm_call_id` from the client's `x-litellm-call-id` header: a constant
/// header must not make different calls one event, and a long one must not get them refused.
#[test]
fn a_client_set_call_id_is_not_the_identity() {
    let raw = SAMPLE.lines().next().unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(raw).unwrap();
    payload["litellm_call_id"] = json!("x".repeat(300));
    let id_at = |start: f64| {
        let mut p = payload.clone();
        p["startTime"] = json!(start);
        p["endTime"] = json!(start + 0.8);
        let mapped = map(serde_json::to_vec(&p).unwrap().as_slice()).unwrap();
        decode_gateway(&mapped.gateway, &RULES).unwrap().event_id
    };
    let start = payload["startTime"].as_f64().unwrap();
    let first = id_at(start);
    assert_eq!(
        first,
        id_at(start),
        "the same payload sent again keeps its id"
    );
    assert_ne!(
        first,
        id_at(start + 0.000_001),
        "another call with the same header"
    );
    assert_ne!(first, id_at(start + 1.0));
}
