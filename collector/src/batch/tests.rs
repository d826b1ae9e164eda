use serde_json::Value;

use super::*;

const SAMPLE: &str = include_str!("../../tests/fixtures/litellm_generic_api_sample.ndjson");
const NOW: i64 = 1_795_703_400_000;

fn fp() -> Fingerprinter {
    Fingerprinter::new(b"0123456789abcdef-test").unwrap()
}

fn limits() -> Limits {
    Limits {
        max_batch_events: 100,
        max_message_bytes: 1024,
        max_dead_letter_bytes: 4096,
        max_future_skew_ms: 300_000,
    }
}

fn run(endpoint: Endpoint, body: &[u8]) -> Prepared {
    prepare(endpoint, EventKind::Gateway, body, &fp(), &limits(), NOW).unwrap()
}

fn event(id: &str, extra: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","ts":1795703300000,"api_key_id":"key-1","model":"gpt-4o-mini","status":200{extra}}}"#
    )
}

fn letters(p: &Prepared) -> Vec<Value> {
    p.records
        .iter()
        .filter(|r| r.destination == Destination::DeadLetters)
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect()
}

#[test]
fn mixed_array_keeps_good_neighbours_and_dead_letters_the_rest() {
    let body = format!(
        "[{}, {}, {{not json}}, {}, {}, {}]",
        event("e0", ""),
        event("e1", r#","prompt_tokens":-1"#),
        r#"{"event_id":"e3","ts":1795703300000,"model":"m","status":200}"#,
        event("e4", &format!(r#","user_agent":"{}""#, "x".repeat(2000))),
        event("e5", r#","cost_usd":0.5,"unknown":"dropped""#),
    );
    let p = run(Endpoint::Events, body.as_bytes());
    assert!(!p.malformed);
    assert_eq!(p.accepted, 2);
    assert_eq!(p.events, 2);
    let rejected: Vec<(usize, &str)> = p.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(
        rejected,
        [
            (1, "invalid_value"),
            (2, "invalid_json"),
            (3, "missing_field"),
            (4, "oversize")
        ]
    );
    // Batch order: accepted events and dead letters interleaved as they came.
    let kinds: Vec<Destination> = p.records.iter().map(|r| r.destination).collect();
    use Destination::*;
    assert_eq!(
        kinds,
        [
            Gateway,
            DeadLetters,
            DeadLetters,
            DeadLetters,
            DeadLetters,
            Gateway
        ]
    );
    let last: Value = serde_json::from_slice(&p.records[5].payload).unwrap();
    assert_eq!(last["event_id"], "e5");
    assert_eq!(last["cost_usd"], 0.5);
    assert!(last.get("unknown").is_none());
    assert_eq!(p.records[5].key, "key-1");

    let letters = letters(&p);
    assert_eq!(letters.len(), 4);
    for (letter, (index, reason)) in letters.iter().zip(rejected) {
        assert_eq!(letter["source_topic"], "http:/v1/events");
        assert_eq!(letter["source_partition"], -1);
        assert_eq!(letter["source_offset"], index);
        assert_eq!(letter["reason"], reason);
    }
    assert_eq!(letters[1]["payload"], "{not json}");
}

#[test]
fn ndjson_secrets_are_fingerprinted_before_anything_sees_them() {
    let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234";
    let line = |id: &str, status: &str| {
        format!(
            r#"{{"event_id":"{id}","ts":1795703300000,"api_key":"{key}","model":"m","status":{status}}}"#
        )
    };
    let body = line("e0", "200") + "\n" + &line("e1", "\"bad\"") + "\n";
    let p = run(Endpoint::Events, body.as_bytes());
    assert_eq!(p.accepted, 1);
    let fingerprint = fp().fingerprint(key.as_bytes());
    assert_eq!(p.records[0].key, fingerprint);
    for record in &p.records {
        let text = String::from_utf8_lossy(&record.payload);
        assert!(!text.contains(key), "{text}");
        assert!(text.contains(&fingerprint), "{text}");
    }
}

#[test]
fn kind_comes_from_the_item_or_the_default() {
    let attempt = r#"{"kind":"provider_attempt","event_id":"a1","ts":1795703300000,"request_id":"r1","api_key_id":"k","provider":"openai","model":"m","attempt":2,"status":429}"#;
    let body = format!(
        "{}\n{attempt}\n{}",
        event("e0", ""),
        r#"{"kind":"nope","event_id":"x"}"#
    );
    let p = run(Endpoint::Events, body.as_bytes());
    assert_eq!(p.accepted, 2);
    assert_eq!(p.records[1].destination, Destination::Provider);
    assert_eq!(p.rejected[0].reason, "invalid_value");

    let default_provider = prepare(
        Endpoint::Events,
        EventKind::Provider,
        attempt
            .replace(r#""kind":"provider_attempt","#, "")
            .as_bytes(),
        &fp(),
        &limits(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        default_provider.records[0].destination,
        Destination::Provider
    );
}

#[test]
fn litellm_batches_in_all_three_formats() {
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let ndjson = SAMPLE.as_bytes().to_vec();
    let array = format!("[{}]", lines.join(", ")).into_bytes();
    for body in [ndjson, array] {
        let p = run(Endpoint::LiteLlm, &body);
        assert_eq!((p.accepted, p.events, p.rejected.len()), (3, 6, 0));
        let gateways = p
            .records
            .iter()
            .filter(|r| r.destination == Destination::Gateway);
        assert_eq!(gateways.count(), 3);
        for record in &p.records {
            let text = String::from_utf8_lossy(&record.payload);
            assert!(!text.contains("Hello from a mock"), "{text}");
            assert_eq!(record.key, "litellm_proxy_master_key");
        }
    }
    let single = run(Endpoint::LiteLlm, lines[2].as_bytes());
    assert_eq!((single.accepted, single.events), (1, 2));
}

#[test]
fn refused_litellm_payloads_never_forward_the_prompt() {
    let good = SAMPLE.lines().next().unwrap();
    // Valid JSON, but no key hash: refused after mapping; the letter shows the mapped event.
    let no_key = good.replace(
        "\"user_api_key_hash\": \"litellm_proxy_master_key\"",
        "\"user_api_key_hash\": null",
    );
    assert_ne!(no_key, good);
    // Not JSON at all: refused, and nothing of it is forwarded.
    let broken = format!("{} oops", &good[..good.len() / 2]);
    let body = format!("{good}\n{no_key}\n{broken}\n");
    let p = run(Endpoint::LiteLlm, body.as_bytes());
    assert_eq!(p.accepted, 1);
    let reasons: Vec<&str> = p.rejected.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, ["missing_field", "invalid_json"]);
    let letters = letters(&p);
    assert_eq!(letters[0]["source_topic"], "http:/v1/logs/litellm");
    assert_eq!(letters[0]["source_offset"], 1);
    let mapped: Value = serde_json::from_str(letters[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(mapped["user"], "u_42");
    assert_eq!(letters[1]["payload"], "");
    assert_eq!(letters[1]["payload_bytes"], broken.len());
    assert_eq!(letters[1]["payload_truncated"], true);
    for letter in &letters {
        let text = letter.to_string();
        assert!(
            !text.contains("Hello from a mock") && !text.contains("\\\"hi\\\""),
            "{text}"
        );
    }
}

#[test]
fn too_many_events_and_malformed_bodies() {
    let body: String = (0..101)
        .map(|i| event(&format!("e{i}"), "") + "\n")
        .collect();
    let err = prepare(
        Endpoint::Events,
        EventKind::Gateway,
        body.as_bytes(),
        &fp(),
        &limits(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PrepareError::TooManyEvents {
            count: 101,
            max: 100
        }
    );

    let p = run(
        Endpoint::Events,
        format!("[{}, {{\"a\":\"]", event("e0", "")).as_bytes(),
    );
    assert!(p.malformed);
    assert_eq!(p.accepted, 0);
    assert_eq!(p.rejected[0].reason, "invalid_json");
    assert_eq!(letters(&p).len(), 1);

    let empty = run(Endpoint::Events, b"  \n");
    assert_eq!((empty.accepted, empty.records.len()), (0, 0));
}

/// An OTLP/JSON export of `spans` (each `(start in ms, attributes as JSON)`).
fn otlp_json(spans: &[(i64, &str)]) -> Vec<u8> {
    let spans: Vec<String> = spans
        .iter()
        .enumerate()
        .map(|(i, (start_ms, attributes))| {
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{:016x}","startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":[{attributes}]}}"#,
                i + 1,
                i + 1,
                start_ms * 1_000_000,
                (start_ms + 300) * 1_000_000
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
    .into_bytes()
}

fn attr(key: &str, value: &str) -> String {
    format!(r#"{{"key":"{key}","value":{{"stringValue":"{value}"}}}}"#)
}

#[test]
fn otlp_exports_fingerprint_keys_skip_other_spans_and_dead_letter_bad_ones() {
    const RAW_KEY: &str = "sk-proj-Abcdefghijklmnopqrstuvwx0123456789";
    let chat = [
        attr("gen_ai.operation.name", "chat"),
        attr("gen_ai.provider.name", "openai"),
        attr("gen_ai.request.model", "gpt-4o-mini"),
    ]
    .join(",");
    let with_key = format!("{chat},{}", attr("tripline.api_key", RAW_KEY));
    let http = attr("http.request.method", "POST");
    let body = otlp_json(&[
        (NOW - 60_000, &with_key),
        (NOW - 60_000, &http),
        (NOW + 3_600_000, &with_key),
        (NOW - 60_000, &chat),
    ]);
    let config = OtlpConfig {
        key_attributes: vec!["tripline.api_key".into()],
        ..OtlpConfig::default()
    };
    let p = prepare_otlp(Format::Json, &body, &config, &fp(), &limits(), NOW).unwrap();
    assert!(!p.malformed);
    assert_eq!((p.accepted, p.events, p.ignored), (1, 1, 1));
    let rejected: Vec<(usize, &str)> = p.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(rejected, [(2, "future_timestamp"), (3, "missing_field")]);
    for record in &p.records {
        let text = String::from_utf8_lossy(&record.payload);
        assert!(!text.contains("Abcdefghijklmnop"), "raw key in {text}");
    }
    let event: Value = serde_json::from_slice(&p.records[0].payload).unwrap();
    assert_eq!(p.records[0].destination, Destination::Gateway);
    assert_eq!(event["api_key_id"], fp().fingerprint(RAW_KEY.as_bytes()));
    assert_eq!(event["event_id"], format!("otel-{:032x}-{:016x}", 1, 1));
    assert_eq!(event["latency_ms"], 300);
    let dead = letters(&p);
    assert_eq!(dead[0]["source_topic"], "http:/v1/traces");
    let letter_payload = dead[0]["payload"].as_str().unwrap();
    assert!(letter_payload.contains("fp_"), "{letter_payload}");

    // Bytes that are no export: one dead letter without them, and the answer is 400.
    let p = prepare_otlp(
        Format::Protobuf,
        b"\x0a\x05abc",
        &config,
        &fp(),
        &limits(),
        NOW,
    )
    .unwrap();
    assert!(p.malformed);
    assert_eq!(p.accepted, 0);
    assert_eq!(p.rejected[0].reason, "invalid_protobuf");
    let dead = letters(&p);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "");
}
