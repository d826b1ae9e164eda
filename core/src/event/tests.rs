use super::*;

const NOW: i64 = 1_795_687_200_000; // 2026-11-26T10:00:00Z

fn rules() -> ValidationRules {
    ValidationRules {
        now_ms: NOW,
        max_future_skew_ms: 300_000,
    }
}

fn gateway(json: &str) -> Result<GatewayRequest, Reject> {
    decode_gateway(json.as_bytes(), &rules())
}

const MINIMAL: &str = r#"{"event_id":"e1","ts":"2026-11-26T09:59:00.250Z","api_key_id":"key-1","model":"gpt-4o","status":200}"#;

#[test]
fn minimal_gateway_event_gets_defaults() {
    let e = gateway(MINIMAL).unwrap();
    assert_eq!(e.event_id, "e1");
    assert_eq!(e.ts_ms, NOW - 60_000 + 250);
    assert_eq!(e.attempt, 1);
    assert_eq!(e.cost_usd, None);
    assert_eq!(e.client_ip, None);
    assert!(!e.stream);
}

#[test]
fn full_gateway_event_round_trips_every_field() {
    let e = gateway(
        r#"{"schema_version":1,"event_id":"e2","ts":1795687100000,"api_key_id":"key-2",
        "model":"claude-3-5-sonnet","status":429,"key_hint":"sk-…9f2c","project":"search",
        "team":"core","user":"u-7","provider":"anthropic","error_type":"rate_limit",
        "prompt_tokens":1200,"completion_tokens":0,"cost_usd":0.0,"latency_ms":85,
        "client_ip":"2001:db8::1","client_country":"de","gateway_region":"eu-west-1",
        "user_agent":"openai-python/1.52.0","request_id":"r-9","idempotency_key":"idem-1",
        "attempt":3,"stream":true,"unknown_field":{"ignored":true}}"#,
    )
    .unwrap();
    assert_eq!(e.ts_ms, 1_795_687_100_000);
    assert_eq!(e.status, 429);
    assert_eq!(e.client_country, "DE");
    assert_eq!(e.client_ip, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(e.attempt, 3);
    assert_eq!(e.cost_usd, Some(0.0));
    assert!(e.stream);
    assert_eq!(e.key_hint, "sk-…9f2c");
}

#[test]
fn api_key_fingerprint_becomes_the_key_id() {
    let e = gateway(
        r#"{"event_id":"e","ts":1795687100000,"api_key":"fp_abc","model":"m","status":200}"#,
    )
    .unwrap();
    assert_eq!(e.api_key_id, "fp_abc");
}

fn reason(json: &str) -> RejectReason {
    gateway(json).unwrap_err().reason
}

#[test]
fn bad_input_is_classified() {
    assert_eq!(reason("{not json"), RejectReason::InvalidJson);
    assert_eq!(reason(""), RejectReason::InvalidJson);
    assert_eq!(reason("[1,2]"), RejectReason::WrongType);
    assert_eq!(
        reason(r#"{"event_id":"e","ts":1795687100000,"model":"m","status":200}"#),
        RejectReason::MissingField
    );
    assert_eq!(
        reason(r#"{"event_id":"  ","ts":1795687100000,"api_key_id":"k","model":"m","status":200}"#),
        RejectReason::MissingField
    );
    assert_eq!(
        reason(
            r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":"200"}"#
        ),
        RejectReason::WrongType
    );
    assert_eq!(
        reason(
            r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"prompt_tokens":-5}"#
        ),
        RejectReason::InvalidValue
    );
    assert_eq!(
        reason(r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":99}"#),
        RejectReason::InvalidValue
    );
    assert_eq!(
        reason(r#"{"event_id":"e","ts":"tomorrow","api_key_id":"k","model":"m","status":200}"#),
        RejectReason::InvalidValue
    );
    assert_eq!(
        reason(
            r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"client_ip":"300.1.1.1"}"#
        ),
        RejectReason::InvalidValue
    );
    assert_eq!(
        reason(
            r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"client_country":"Germany"}"#
        ),
        RejectReason::InvalidValue
    );
    assert_eq!(
        reason(
            r#"{"schema_version":2,"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200}"#
        ),
        RejectReason::UnsupportedVersion
    );
}

#[test]
fn future_timestamps_past_the_skew_are_refused() {
    let ok = format!(
        r#"{{"event_id":"e","ts":{},"api_key_id":"k","model":"m","status":200}}"#,
        NOW + 299_000
    );
    assert!(gateway(&ok).is_ok());
    let bad = format!(
        r#"{{"event_id":"e","ts":{},"api_key_id":"k","model":"m","status":200}}"#,
        NOW + 301_000
    );
    let err = gateway(&bad).unwrap_err();
    assert_eq!(err.reason, RejectReason::FutureTimestamp);
    assert!(err.detail.contains("301000 ms"), "{}", err.detail);
}

#[test]
fn rejection_detail_names_the_field_and_value() {
    let err = gateway(
        r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"completion_tokens":-7}"#,
    )
    .unwrap_err();
    assert!(err.detail.contains("completion_tokens") && err.detail.contains("-7"));
}

#[test]
fn long_free_text_is_cut_at_a_char_boundary() {
    let ua = "é".repeat(400); // 800 bytes
    let json = format!(
        r#"{{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"user_agent":"{ua}"}}"#
    );
    let e = gateway(&json).unwrap();
    assert!(e.user_agent.len() <= limits::MAX_TEXT_LEN);
    assert!(e.user_agent.chars().all(|c| c == 'é'));
}

#[test]
fn escaped_strings_are_decoded() {
    let e = gateway(
        r#"{"event_id":"e\u0031","ts":1795687100000,"api_key_id":"k","model":"m","status":200,"user":"a\"b"}"#,
    )
    .unwrap();
    assert_eq!(e.event_id, "e1");
    assert_eq!(e.user, "a\"b");
}

#[test]
fn provider_attempt_requires_its_fields() {
    let ok = br#"{"event_id":"p1","ts":1795687100000,"request_id":"r1","api_key_id":"k","provider":"openai","model":"gpt-4o","attempt":2,"status":503,"retry_after_ms":1000}"#;
    let p = decode_provider(ok, &rules()).unwrap();
    assert_eq!((p.attempt, p.status, p.retry_after_ms), (2, 503, 1000));
    let missing_attempt = br#"{"event_id":"p1","ts":1795687100000,"request_id":"r1","api_key_id":"k","provider":"openai","model":"gpt-4o","status":503}"#;
    let err = decode_provider(missing_attempt, &rules()).unwrap_err();
    assert_eq!(err.reason, RejectReason::MissingField);
    assert!(err.detail.contains("attempt"));
}

fn schema_required(schema: &str) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn published_json_schemas_match_the_decoder() {
    let gateway = schema_required(include_str!("../../../schema/gateway-request.v1.json"));
    let full: serde_json::Value = serde_json::from_str(
        r#"{"event_id":"e","ts":1795687100000,"api_key_id":"k","model":"m","status":200}"#,
    )
    .unwrap();
    assert_eq!(gateway.len(), full.as_object().unwrap().len());
    for field in &gateway {
        let mut event = full.clone();
        event.as_object_mut().unwrap().remove(field);
        let err = gateway_from_value(&event).unwrap_err();
        assert_eq!(err.reason, RejectReason::MissingField, "{field}");
    }

    let provider = schema_required(include_str!("../../../schema/provider-attempt.v1.json"));
    let full: serde_json::Value = serde_json::from_str(
        r#"{"event_id":"p","ts":1795687100000,"request_id":"r","api_key_id":"k","provider":"openai","model":"m","attempt":1,"status":200}"#,
    )
    .unwrap();
    assert_eq!(provider.len(), full.as_object().unwrap().len());
    assert!(decode_provider(full.to_string().as_bytes(), &rules()).is_ok());
    for field in &provider {
        let mut event = full.clone();
        event.as_object_mut().unwrap().remove(field);
        let err = decode_provider(event.to_string().as_bytes(), &rules()).unwrap_err();
        assert_eq!(err.reason, RejectReason::MissingField, "{field}");
    }
}

fn gateway_from_value(value: &serde_json::Value) -> Result<GatewayRequest, Reject> {
    decode_gateway(value.to_string().as_bytes(), &rules())
}
