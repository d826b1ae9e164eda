use super::*;
use crate::receivers::fixtures::{alert, message};
use crate::receivers::notification_id;

const NOW: u64 = 1_795_687_500;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn secret() -> WebhookSecret {
    WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
}

#[test]
fn signature_matches_the_standard_webhooks_test_vector() {
    // The specification's published example: a consumer's Standard Webhooks library accepts
    // what we send only if this reproduces exactly.
    let sig = sign(
        &secret(),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn signed_request_verifies() {
    let m = message(vec![alert("spend_spike", "key-7", AlertStatus::Firing)]);
    let receiver = WebhookReceiver {
        url: "https://hooks.example.com/tripline".into(),
        secret: Some(secret()),
        max_alerts: 0,
    };
    let id = notification_id(&m, 1);
    let req = receiver.request(&m, &id, at(NOW));
    assert_eq!(req.header("webhook-id"), Some(id.as_str()));
    assert_eq!(
        req.header("webhook-timestamp"),
        Some(NOW.to_string().as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    let sig = req.header("webhook-signature").unwrap();
    assert!(sig.starts_with("v1,") && !sig.contains(' '), "{sig}");
    let tolerance = Duration::from_secs(300);
    verify(
        &secret(),
        req.headers.iter().map(|(k, v)| (k, v)),
        &req.body,
        at(NOW + 10),
        tolerance,
    )
    .unwrap();
    // Header names in any case; several signatures (key rotation), one of them right.
    let rotated = [
        ("Webhook-Id", id.clone()),
        ("WEBHOOK-TIMESTAMP", NOW.to_string()),
        ("Webhook-Signature", format!("v1,bm9wZQ== v2,xyz {sig}")),
    ];
    verify(&secret(), rotated, &req.body, at(NOW), tolerance).unwrap();
}

#[test]
fn verification_fails_on_tampering_and_old_timestamps() {
    let m = message(vec![alert("spend_spike", "key-7", AlertStatus::Firing)]);
    let receiver = WebhookReceiver {
        url: "http://127.0.0.1:9/hook".into(),
        secret: Some(secret()),
        max_alerts: 0,
    };
    let req = receiver.request(&m, "msg_1", at(NOW));
    let tol = Duration::from_secs(300);
    let pairs = |req: &HttpRequest| req.headers.clone();

    let mut body = req.body.clone();
    let i = body.iter().position(|b| *b == b'7').unwrap();
    body[i] = b'8';
    assert_eq!(
        verify(&secret(), pairs(&req), &body, at(NOW), tol),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut other_id = pairs(&req);
    other_id[1].1 = "msg_2".into();
    assert_eq!(
        verify(&secret(), other_id, &req.body, at(NOW), tol),
        Err(VerifyError::NoMatchingSignature)
    );
    // A replayed signature with a fresh timestamp does not match.
    let mut bumped = pairs(&req);
    bumped[2].1 = (NOW + 60).to_string();
    assert_eq!(
        verify(&secret(), bumped, &req.body, at(NOW + 60), tol),
        Err(VerifyError::NoMatchingSignature)
    );
    let wrong = WebhookSecret::parse("another-secret-of-enough-bytes").unwrap();
    assert_eq!(
        verify(&wrong, pairs(&req), &req.body, at(NOW), tol),
        Err(VerifyError::NoMatchingSignature)
    );
    // Expired, and from the future.
    assert!(matches!(
        verify(&secret(), pairs(&req), &req.body, at(NOW + 301), tol),
        Err(VerifyError::TimestampOutOfTolerance { .. })
    ));
    assert!(matches!(
        verify(&secret(), pairs(&req), &req.body, at(NOW - 301), tol),
        Err(VerifyError::TimestampOutOfTolerance { .. })
    ));
    assert!(verify(&secret(), pairs(&req), &req.body, at(NOW + 300), tol).is_ok());
    // Missing or malformed headers.
    assert_eq!(
        verify(
            &secret(),
            pairs(&req)[..3].to_vec(),
            &req.body,
            at(NOW),
            tol
        ),
        Err(VerifyError::MissingHeader("webhook-signature"))
    );
    let mut bad_ts = pairs(&req);
    bad_ts[2].1 = "yesterday".into();
    assert!(matches!(
        verify(&secret(), bad_ts, &req.body, at(NOW), tol),
        Err(VerifyError::InvalidTimestamp(_))
    ));
    let mut garbage = pairs(&req);
    garbage[3].1 = "v1,!!!notbase64 v1,".into();
    assert_eq!(
        verify(&secret(), garbage, &req.body, at(NOW), tol),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn webhook_id_is_stable_across_retries_while_the_signature_is_fresh() {
    let m = message(vec![alert("retry_storm", "key-9", AlertStatus::Firing)]);
    let receiver = WebhookReceiver {
        url: "http://127.0.0.1:9/hook".into(),
        secret: Some(secret()),
        max_alerts: 0,
    };
    let id = notification_id(&m, 3);
    let first = receiver.request(&m, &id, at(NOW));
    let retry = receiver.request(&m.clone(), &notification_id(&m, 3), at(NOW + 30));
    assert_eq!(first.header("webhook-id"), retry.header("webhook-id"));
    assert_eq!(first.body, retry.body);
    assert_ne!(
        first.header("webhook-signature"),
        retry.header("webhook-signature")
    );
}

#[test]
fn secrets_whsec_raw_and_too_short() {
    assert_eq!(secret().0.len(), 24);
    assert_eq!(
        WebhookSecret::parse("whsec_not base64!"),
        Err(SecretError::NotBase64)
    );
    assert_eq!(
        WebhookSecret::parse("whsec_c2hvcnQ="),
        Err(SecretError::TooShort(5))
    );
    assert_eq!(WebhookSecret::parse("short"), Err(SecretError::TooShort(5)));
    let raw = WebhookSecret::parse("a-raw-secret-0123456789").unwrap();
    assert_eq!(raw.0, b"a-raw-secret-0123456789");
    assert!(!format!("{raw:?}").contains("raw-secret"));
    // A raw secret signs with its bytes: the documented Python snippet's `secret.encode()`.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"a-raw-secret-0123456789").unwrap();
    mac.update(b"msg_1.5.{}");
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    assert_eq!(sign(&raw, "msg_1", 5, b"{}"), expected);
}

#[test]
fn unsigned_receivers_still_send_id_and_timestamp() {
    let m = message(vec![alert("spend_spike", "key-7", AlertStatus::Firing)]);
    let receiver = WebhookReceiver {
        url: "http://127.0.0.1:9/hook".into(),
        secret: None,
        max_alerts: 0,
    };
    let req = receiver.request(&m, "msg_1", at(NOW));
    assert_eq!(req.header("webhook-id"), Some("msg_1"));
    assert!(req.header("webhook-timestamp").is_some());
    assert_eq!(req.header("webhook-signature"), None);
}

#[test]
fn payload_has_the_documented_field_names() {
    let mut m = message(vec![
        alert("spend_spike", "key-7", AlertStatus::Firing),
        alert("spend_spike", "key-8", AlertStatus::Resolved),
    ]);
    m.alerts[1].summary = m.alerts[0].summary.clone();
    let json: serde_json::Value = serde_json::from_slice(&body(&m, 0)).unwrap();
    let top: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "version",
        "status",
        "receiver",
        "group_key",
        "group_labels",
        "common_labels",
        "common_annotations",
        "notification_reason",
        "external_url",
        "truncated_alerts",
        "alerts",
    ];
    expected.sort_unstable();
    let mut top_sorted = top.clone();
    top_sorted.sort_unstable();
    assert_eq!(top_sorted, expected);
    assert_eq!(json["version"], "4");
    assert_eq!(json["status"], "firing");
    assert_eq!(json["receiver"], "ops");
    assert_eq!(json["notification_reason"], "new");
    assert_eq!(json["group_labels"]["detector"], "spend_spike");
    assert_eq!(json["common_labels"]["project"], "search");
    assert!(
        json["common_labels"].get("api_key_id").is_none(),
        "keys differ"
    );
    assert_eq!(json["common_annotations"]["summary"], m.alerts[0].summary);
    assert!(json["common_annotations"].get("description").is_none());
    assert_eq!(json["external_url"], "https://tripline.example.com");
    assert_eq!(json["truncated_alerts"], 0);

    let a = &json["alerts"][0];
    let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "annotations",
            "ends_at",
            "evidence",
            "expected",
            "fingerprint",
            "labels",
            "observed",
            "score",
            "severity",
            "starts_at",
            "status",
            "upper",
            "window_end",
            "window_start"
        ]
    );
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["detector"], "spend_spike");
    assert_eq!(a["labels"]["api_key_id"], "key-7");
    assert_eq!(a["annotations"]["summary"], m.alerts[0].summary);
    assert_eq!(a["annotations"]["description"], m.alerts[0].description);
    assert_eq!(a["starts_at"], "2026-11-26T10:05:02.000Z");
    assert!(a["ends_at"].is_null());
    assert_eq!(a["fingerprint"], m.alerts[0].fingerprint);
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["evidence"]["top_ips"][0]["value"], "203.0.113.7");
    assert_eq!(a["evidence"]["top_ips"][0]["count"], 1200);
    assert_eq!(a["evidence"]["facts"]["amplification"], 4.2);
    let r = &json["alerts"][1];
    assert_eq!(r["status"], "resolved");
    assert_eq!(r["ends_at"], "2026-11-26T10:30:00.000Z");
    // It round-trips through the typed payload.
    let typed: Payload = serde_json::from_value(json).unwrap();
    assert_eq!(typed, payload(&m, 0));
}

#[test]
fn max_alerts_truncates_firing_first_and_counts_the_rest() {
    let m = message(vec![
        alert("spend_spike", "key-1", AlertStatus::Resolved),
        alert("spend_spike", "key-2", AlertStatus::Firing),
        alert("spend_spike", "key-3", AlertStatus::Firing),
    ]);
    let p = payload(&m, 2);
    assert_eq!(p.truncated_alerts, 1);
    let keys: Vec<&str> = p
        .alerts
        .iter()
        .map(|a| a.labels["api_key_id"].as_str())
        .collect();
    assert_eq!(keys, ["key-2", "key-3"]);
    assert_eq!(payload(&m, 0).alerts.len(), 3);
    assert_eq!(payload(&m, 10).truncated_alerts, 0);
}

#[test]
fn detector_label_is_always_present() {
    let mut a = alert("leaked_key", "key-7", AlertStatus::Firing);
    a.labels.remove("detector");
    let p = PayloadAlert::from_alert(&a);
    assert_eq!(p.labels["detector"], "leaked_key");
}
