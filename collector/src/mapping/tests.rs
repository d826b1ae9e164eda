use serde_json::{json, Value};
use tripline_core::config::Config;
use tripline_core::event::{decode_gateway, ValidationRules};
use tripline_core::secret::Fingerprinter;

use super::*;

const RULES: ValidationRules = ValidationRules {
    now_ms: 1_796_400_000_000,
    max_future_skew_ms: 300_000,
};

/// The mapping a shipped file under sources/ defines.
fn shipped(file: &str) -> Mapping {
    let path = format!("{}/../sources/{file}", env!("CARGO_MANIFEST_DIR"));
    let config = Config::from_toml(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|errors| panic!("{path}: {errors:?}"));
    Mapping::new(&config.sources[0])
}

fn mapped(mapping: &Mapping, raw: &str) -> Value {
    serde_json::from_slice(&mapping.map(raw.as_bytes()).unwrap()).unwrap()
}

#[test]
fn apisix_ai_proxy_log_entries_map_with_the_shipped_mapping() {
    let raw = include_str!("../../tests/fixtures/apisix_kafka_logger_ai.json");
    let event = mapped(&shipped("apisix-ai-proxy.toml"), raw);
    let id = event["event_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("apisix-") && id.len() == 7 + 32, "{id}");
    assert_eq!(
        event,
        json!({
            "event_id": id,
            "ts": 1_726_783_839_538i64,
            "api_key_id": "alice",
            "model": "gpt-4-0613",
            "status": 200,
            "prompt_tokens": 23,
            "completion_tokens": 8,
            "latency_ms": 1530,
            "client_ip": "203.0.113.21",
            "user_agent": "OpenAI/Python 1.52.0",
            "request_id": "9e5a7c3b-0f6e-4b6b-8c7a-2d7d2f1c0a11",
            "project": "ai-proxy-openai-route",
            "provider": "openai",
        })
    );
    let rules = ValidationRules {
        now_ms: 1_726_783_900_000,
        ..RULES
    };
    decode_gateway(&serde_json::to_vec(&event).unwrap(), &rules).unwrap();
    let text = event.to_string();
    assert!(
        !text.contains("secret") && !text.contains("alice-key"),
        "{text}"
    );

    // Without a consumer, the route is the key.
    let mut anonymous: Value = serde_json::from_str(raw).unwrap();
    anonymous.as_object_mut().unwrap().remove("consumer");
    let event = mapped(&shipped("apisix-ai-proxy.toml"), &anonymous.to_string());
    assert_eq!(event["api_key_id"], "ai-proxy-openai-route");
}

#[test]
fn envoy_access_log_lines_map_with_the_shipped_mapping() {
    let raw = include_str!("../../tests/fixtures/envoy_ai_gateway_access_log.json");
    let fingerprinter = Fingerprinter::new(b"0123456789abcdef-test").unwrap();
    // As the collector and the source reader do: redact the record, map, redact the event.
    let redacted = fingerprinter.redact(raw.as_bytes());
    let event = shipped("envoy-ai-gateway.toml").map(&redacted).unwrap();
    let event = fingerprinter.redact(&event).into_owned();
    let text = String::from_utf8(event.clone()).unwrap();
    assert!(!text.contains("EnvoyAccessLogKey"), "{text}");
    let request = decode_gateway(&event, &RULES).unwrap();
    assert_eq!(request.event_id, "b3c9e1f0-6c1d-4b8e-9f51-0a9c2d7e4f11");
    assert_eq!(request.ts_ms, 1_796_379_330_123);
    assert!(
        request.api_key_id.starts_with("fp_"),
        "{}",
        request.api_key_id
    );
    assert_eq!(
        (request.status, request.latency_ms, request.prompt_tokens),
        (429, 842, 0),
        "\"-\" tokens are absent"
    );
    assert_eq!(request.provider, "openai");
    assert_eq!(request.client_ip, Some("198.51.100.40".parse().unwrap()));
}

fn mapping(fields: &str) -> Mapping {
    let config = Config::from_toml(&format!(
        "[[sources]]\nname = \"t\"\nformat = \"mapping\"\nkafka_topic = \"t\"\n[sources.fields]\n{fields}"
    ))
    .unwrap_or_else(|errors| panic!("{errors:?}"));
    Mapping::new(&config.sources[0])
}

#[test]
fn units_times_paths_and_constants() {
    let m = mapping(
        r#"ts = { path = "at", time = "unix_s" }
api_key_id = { path = ["/who/missing", "who.name"] }
model = { path = "/model", value = "unknown-model" }
status = "/code"
latency_ms = { path = "took", unit = "s" }
cost_usd = "/cost"
prompt_tokens = "usage.0"
stream = "/stream"
team = "/team"
"#,
    );
    let event = mapped(
        &m,
        r#"{"at": 1796400000.25, "who": {"name": "svc-a"}, "code": "503", "took": 1.5, "cost": "0.0021", "usage": [120, 30], "stream": "true", "team": 42}"#,
    );
    assert_eq!(event["ts"], 1_796_400_000_250i64);
    assert_eq!(event["api_key_id"], "svc-a");
    assert_eq!(
        event["model"], "unknown-model",
        "the constant where the path is absent"
    );
    assert_eq!(event["status"], 503);
    assert_eq!(event["latency_ms"], 1500);
    assert_eq!(event["cost_usd"], 0.0021);
    assert_eq!(event["prompt_tokens"], 120);
    assert_eq!(event["stream"], true);
    assert_eq!(event["team"], "42");

    let units = mapping(
        "ts = { path = \"/t\", time = \"unix_ns\" }\napi_key = \"/k\"\nmodel = \"/m\"\nstatus = \"/s\"\nlatency_ms = { path = \"/l\", unit = \"us\" }\n",
    );
    let event = mapped(
        &units,
        r#"{"t": "1796400000123456789", "k": "raw", "m": "x", "s": 200, "l": 2500}"#,
    );
    assert_eq!(event["ts"], 1_796_400_000_123i64);
    assert_eq!(event["latency_ms"], 3, "2.5 ms rounds");
    assert_eq!(
        event["api_key"], "raw",
        "fingerprinted by redaction after mapping"
    );
}

#[test]
fn records_that_cannot_be_mapped_say_why() {
    let m = mapping("ts = { path = \"/t\", time = \"unix_ms\" }\napi_key_id = \"/k\"\nmodel = \"/m\"\nstatus = \"/s\"\n");
    let err = m.map(b"[1]").unwrap_err();
    assert_eq!(err.reason, RejectReason::WrongType);
    let err = m.map(b"{oops").unwrap_err();
    assert_eq!(err.reason, RejectReason::InvalidJson);
    let err = m
        .map(br#"{"t": "yesterday", "k": "a", "m": "b", "s": 200}"#)
        .unwrap_err();
    assert!(err.detail.contains("not a Unix time"), "{}", err.detail);
    // A missing field is left out: the contract's decoder names it.
    let event = m
        .map(br#"{"t": 1796400000000, "m": "b", "s": 200}"#)
        .unwrap();
    let err = decode_gateway(&event, &RULES).unwrap_err();
    assert!(err.detail.contains("api_key_id"), "{}", err.detail);
    // The same record keeps its derived id.
    let raw = br#"{"t": 1796400000000, "k": "a", "m": "b", "s": 200}"#;
    assert_eq!(m.map(raw).unwrap(), m.map(raw).unwrap());
}
