use super::proto::*;
use super::*;
use prost::Message;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::String(value.into())),
        }),
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::Int(value)),
        }),
    }
}

const START_NS: u64 = 1_796_400_000_123_456_789;

/// A chat span as `opentelemetry-instrumentation-openai-v2` writes it.
fn chat_span(extra: Vec<KeyValue>) -> Span {
    let mut attributes = vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.system", "openai"),
        text("gen_ai.request.model", "gpt-4o-mini"),
        text("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        text("gen_ai.response.id", "chatcmpl-1"),
        int("gen_ai.usage.input_tokens", 11),
        int("gen_ai.usage.output_tokens", 7),
        text("server.address", "api.openai.com"),
    ];
    attributes.extend(extra);
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        name: "chat gpt-4o-mini".into(),
        start_time_unix_nano: START_NS,
        end_time_unix_nano: START_NS + 250_000_000,
        attributes,
        status: None,
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
            }),
            scope_spans: vec![ScopeSpans { spans }],
        }],
    }
}

fn mapped(resource: &[KeyValue], span: &Span) -> serde_json::Value {
    match map(resource, span, &OtlpConfig::default()) {
        Mapped::Inference(json) => serde_json::from_slice(&json).unwrap(),
        other => panic!("not an inference event: {other:?}"),
    }
}

#[test]
fn a_chat_span_is_a_gateway_request() {
    let resource = [
        text("service.name", "billing-bot"),
        text("enduser.id", "u_42"),
    ];
    let event = mapped(&resource, &chat_span(vec![]));
    assert_eq!(
        event,
        serde_json::json!({
            "event_id": format!("otel-{}-0102030405060708", "ab".repeat(16)),
            "ts": 1_796_400_000_123i64,
            "api_key": "billing-bot",
            "model": "gpt-4o-mini",
            "status": 200,
            "user": "u_42",
            "provider": "openai",
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "latency_ms": 250,
            "request_id": "chatcmpl-1",
        })
    );
}

#[test]
fn span_attributes_win_over_the_resource_and_config_says_where_to_look() {
    let resource = [
        text("service.name", "svc"),
        text("tripline.api_key", "from-resource"),
    ];
    let span = chat_span(vec![
        text("tripline.api_key", "from-span"),
        text("gen_ai.provider.name", "azure.ai.openai"),
        text("client.address", "203.0.113.9"),
        text("user_agent.original", "my-app/1.0"),
        text("gen_ai.usage.cost", "0.0042"),
    ]);
    let event = mapped(&resource, &span);
    assert_eq!(event["api_key"], "from-span");
    assert_eq!(
        event["provider"], "azure.ai.openai",
        "provider.name over system"
    );
    assert_eq!(event["client_ip"], "203.0.113.9");
    assert_eq!(event["user_agent"], "my-app/1.0");
    assert_eq!(event["cost_usd"], 0.0042);

    let config = OtlpConfig {
        key_attributes: vec!["gateway.consumer".into()],
        ..OtlpConfig::default()
    };
    let span = chat_span(vec![
        text("gateway.consumer", "team-a"),
        text("client.address", "gateway.internal"),
    ]);
    let Mapped::Inference(json) = map(&resource, &span, &config) else {
        panic!("not mapped")
    };
    let event: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(event["api_key"], "team-a");
    assert!(
        event.get("client_ip").is_none(),
        "a host name is no IP: {event}"
    );

    let Mapped::Refused(reject) = map(&[], &chat_span(vec![]), &config) else {
        panic!("a span without a key must be refused")
    };
    assert_eq!(reject.reason, RejectReason::MissingField);
    assert!(
        reject.detail.contains("gateway.consumer"),
        "{}",
        reject.detail
    );
}

#[test]
fn only_inference_spans_are_events() {
    let http = Span {
        attributes: vec![
            text("http.request.method", "POST"),
            int("http.response.status_code", 200),
        ],
        ..chat_span(vec![])
    };
    assert!(matches!(
        map(&[], &http, &OtlpConfig::default()),
        Mapped::Ignored
    ));
    let tool = chat_span(vec![text("gen_ai.operation.name", "execute_tool")]);
    assert!(matches!(
        map(&[], &tool, &OtlpConfig::default()),
        Mapped::Ignored
    ));
    // LiteLLM's `litellm_request` span: its own call type, a provider and a model.
    let litellm = Span {
        attributes: vec![
            text("gen_ai.operation.name", "acompletion"),
            text("gen_ai.system", "openai"),
            text("gen_ai.request.model", "gpt-4o-mini"),
            text(
                "metadata.user_api_key_hash",
                "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
            ),
            text("metadata.requester_ip_address", "127.0.0.1"),
            int("gen_ai.usage.input_tokens", 10),
        ],
        ..chat_span(vec![])
    };
    let event = mapped(&[text("service.name", "litellm")], &litellm);
    assert_eq!(
        event["api_key"],
        "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    );
    assert_eq!(event["client_ip"], "127.0.0.1");
    let unnamed = Span {
        attributes: litellm.attributes[1..].to_vec(),
        ..litellm.clone()
    };
    assert!(matches!(
        map(
            &[text("service.name", "s")],
            &unnamed,
            &OtlpConfig::default()
        ),
        Mapped::Inference(_)
    ));
    let embeddings = chat_span(vec![text("gen_ai.operation.name", "embeddings")]);
    assert!(matches!(
        map(
            &[text("service.name", "s")],
            &embeddings,
            &OtlpConfig::default()
        ),
        Mapped::Inference(_)
    ));
}

#[test]
fn failures_get_a_status_and_an_error_type() {
    let resource = [text("service.name", "svc")];
    let error = Some(Status {
        code: STATUS_CODE_ERROR,
    });
    let rate_limited = Span {
        status: error.clone(),
        ..chat_span(vec![text("error.type", "openai.RateLimitError")])
    };
    let event = mapped(&resource, &rate_limited);
    assert_eq!(
        (event["status"].as_i64(), event["error_type"].as_str()),
        (Some(429), Some("rate_limit"))
    );

    let stated = chat_span(vec![
        text("error.type", "RateLimitError"),
        int("http.response.status_code", 503),
    ]);
    let event = mapped(&resource, &stated);
    assert_eq!(event["status"], 503, "the stated code wins");

    let bare = Span {
        status: error,
        ..chat_span(vec![text("error.type", "_OTHER")])
    };
    let event = mapped(&resource, &bare);
    assert_eq!(
        (event["status"].as_i64(), event["error_type"].as_str()),
        (Some(500), Some("server_error"))
    );

    let timeout = chat_span(vec![text("error.type", "APITimeoutError")]);
    assert_eq!(mapped(&resource, &timeout)["status"], 504);
}

#[test]
fn protobuf_and_json_bodies_map_alike() {
    let resource = vec![text("service.name", "billing-bot")];
    let span = chat_span(vec![text("client.address", "198.51.100.7")]);
    let wire = request(resource, vec![span]).encode_to_vec();
    let from_protobuf = decode(Format::Protobuf, &wire).unwrap();

    // The same export as OTLP/JSON writes it: hex ids, 64-bit integers as strings, enums as
    // integers, attributes that are lists (read as nothing).
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"billing-bot"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"opentelemetry.instrumentation.openai_v2"}},"spans":[{{
        "traceId":"{trace}","spanId":"0102030405060708","name":"chat gpt-4o-mini","kind":3,
        "startTimeUnixNano":"{start}","endTimeUnixNano":{end},
        "attributes":[
          {{"key":"gen_ai.operation.name","value":{{"stringValue":"chat"}}}},
          {{"key":"gen_ai.system","value":{{"stringValue":"openai"}}}},
          {{"key":"gen_ai.request.model","value":{{"stringValue":"gpt-4o-mini"}}}},
          {{"key":"gen_ai.response.model","value":{{"stringValue":"gpt-4o-mini-2024-07-18"}}}},
          {{"key":"gen_ai.response.id","value":{{"stringValue":"chatcmpl-1"}}}},
          {{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"11"}}}},
          {{"key":"gen_ai.usage.output_tokens","value":{{"intValue":7}}}},
          {{"key":"server.address","value":{{"stringValue":"api.openai.com"}}}},
          {{"key":"gen_ai.response.finish_reasons","value":{{"arrayValue":{{"values":[{{"stringValue":"stop"}}]}}}}}},
          {{"key":"client.address","value":{{"stringValue":"198.51.100.7"}}}}],
        "events":[{{"name":"gen_ai.user.message","attributes":[{{"key":"content","value":{{"stringValue":"my secret prompt"}}}}]}}],
        "status":{{"code":0}}}}]}}]}}]}}"#,
        trace = "ab".repeat(16),
        start = START_NS,
        end = START_NS + 250_000_000,
    );
    let from_json = decode(Format::Json, json.as_bytes()).unwrap();
    let events = |r: &ExportTraceServiceRequest| -> Vec<serde_json::Value> {
        spans(r)
            .map(|(res, span)| match map(res, span, &OtlpConfig::default()) {
                Mapped::Inference(j) => serde_json::from_slice(&j).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(events(&from_protobuf), events(&from_json));
    assert_eq!(events(&from_json)[0]["client_ip"], "198.51.100.7");
    assert_eq!(events(&from_json)[0]["completion_tokens"], 7);
}

/// A span as a fuller encoder writes it: events (tag 11) carrying the prompt, a status
/// message (tag 2 of Status) quoting it.
#[derive(Clone, PartialEq, prost::Message)]
struct FullSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    events: Vec<SpanEvent>,
    #[prost(message, optional, tag = "15")]
    status: Option<FullStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SpanEvent {
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FullStatus {
    #[prost(string, tag = "2")]
    message: String,
    #[prost(int32, tag = "3")]
    code: i32,
}

#[test]
fn prompts_in_events_and_status_messages_are_never_read() {
    let span = chat_span(vec![text("service.name", "svc")]);
    let full = FullSpan {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        start_time_unix_nano: START_NS,
        attributes: span.attributes.clone(),
        events: vec![SpanEvent {
            name: "gen_ai.user.message".into(),
            attributes: vec![text("content", "my secret prompt")],
        }],
        status: Some(FullStatus {
            message: "Error code: 400 - my secret prompt".into(),
            code: STATUS_CODE_ERROR,
        }),
    };
    // ExportTraceServiceRequest { resource_spans { scope_spans { spans: full } } }, by hand.
    let scope = encode_field(2, &full.encode_to_vec());
    let resource_spans = encode_field(2, &scope);
    let wire = encode_field(1, &resource_spans);
    let decoded = decode(Format::Protobuf, &wire).unwrap();
    let (resource, span) = spans(&decoded).next().unwrap();
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(STATUS_CODE_ERROR)
    );
    let Mapped::Inference(event) = map(resource, span, &OtlpConfig::default()) else {
        panic!("not mapped")
    };
    let event = String::from_utf8(event).unwrap();
    assert!(!event.contains("secret prompt"), "{event}");
    assert!(!format!("{decoded:?}").contains("secret prompt"));
}

/// A length-delimited protobuf field.
fn encode_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

#[test]
fn bodies_that_are_not_exports_say_why() {
    let err = decode(Format::Protobuf, b"\x0a\xff\xff\xff\xff\x0f").unwrap_err();
    assert!(
        err.starts_with("not an OTLP ExportTraceServiceRequest in protobuf"),
        "{err}"
    );
    let err = decode(
        Format::Json,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
    )
    .unwrap_err();
    assert!(err.contains("hex"), "{err}");
    assert_eq!(
        Format::from_content_type(Some("application/json; charset=utf-8")),
        Some(Format::Json)
    );
    assert_eq!(
        Format::from_content_type(Some("application/x-protobuf")),
        Some(Format::Protobuf)
    );
    assert_eq!(Format::from_content_type(Some("text/plain")), None);
    assert_eq!(Format::from_content_type(None), None);
}
