use super::*;
use crate::receivers::fixtures::{alert, labels, message};
use std::time::Duration;

const NOW: u64 = 1_795_687_500;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn from() -> Mailbox {
    "Tripline <alerts@tripline.example.com>".parse().unwrap()
}

fn to() -> Vec<Mailbox> {
    vec!["oncall@example.com".parse().unwrap()]
}

fn formatted(m: &lettre::Message) -> String {
    String::from_utf8(m.formatted()).unwrap()
}

/// The value of the first header `name` in the message's top-level headers.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    head.split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].to_owned())
}

fn two_keys() -> Message {
    let mut m = message(vec![
        alert("spend_spike", "key-7", AlertStatus::Firing),
        alert("spend_spike", "key-7", AlertStatus::Firing),
    ]);
    m.alerts[1].labels.insert("model".into(), "gpt-4o".into());
    m.group_labels = labels(&[("detector", "spend_spike"), ("api_key_id", "key-7")]);
    m.common_labels = labels(&[
        ("detector", "spend_spike"),
        ("api_key_id", "key-7"),
        ("project", "search"),
    ]);
    m
}

#[test]
fn subject_has_status_count_group_and_common_labels() {
    assert_eq!(
        subject(&two_keys()),
        "[FIRING:2] spend_spike key-7 (search)"
    );
    let one = message(vec![alert("retry_storm", "key-9", AlertStatus::Resolved)]);
    assert_eq!(subject(&one), "[RESOLVED:1] retry_storm (key-9 search)");
    let mut empty_group = two_keys();
    empty_group.group_labels.clear();
    assert_eq!(
        subject(&empty_group),
        "[FIRING:2] spend_spike (key-7 search)"
    );
    let mut hostile = two_keys();
    hostile.group_labels.insert(
        "api_key_id".into(),
        format!("evil\r\nBcc: x@y.z{}", "a".repeat(500)),
    );
    let s = subject(&hostile);
    assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
    assert!(s.chars().count() <= MAX_SUBJECT_CHARS && s.ends_with('…'));
}

#[test]
fn the_mail_is_multipart_alternative_with_subject_and_threading() {
    let m = two_keys();
    let mail = build(&m, 1, &from(), &to(), now()).unwrap();
    let raw = formatted(&mail);
    assert_eq!(
        header(&raw, "Subject").as_deref(),
        Some("[FIRING:2] spend_spike key-7 (search)")
    );
    assert_eq!(
        header(&raw, "From").as_deref(),
        Some("Tripline <alerts@tripline.example.com>")
    );
    assert_eq!(header(&raw, "To").as_deref(), Some("oncall@example.com"));
    assert_eq!(
        header(&raw, "Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(header(&raw, "MIME-Version").as_deref(), Some("1.0"));
    assert!(header(&raw, "Date").unwrap().contains("2026"), "{raw}");
    let content_type = header(&raw, "Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative;"),
        "{content_type}"
    );
    let plain = raw
        .find("Content-Type: text/plain; charset=utf-8")
        .expect("a text part");
    let html = raw
        .find("Content-Type: text/html; charset=utf-8")
        .expect("an html part");
    assert!(plain < html, "text first, html preferred");

    let id = header(&raw, "Message-ID").unwrap();
    assert_eq!(
        id,
        format!("<{}@tripline.example.com>", notification_id(&m, 1))
    );
    let thread = header(&raw, "In-Reply-To").unwrap();
    assert_eq!(header(&raw, "References").unwrap(), thread);
    assert!(thread.starts_with("<group-") && thread.ends_with("@tripline.example.com>"));
    assert_ne!(thread, id);
}

#[test]
fn message_id_is_stable_per_notification_and_references_per_group() {
    let m = two_keys();
    let raw = |m: &Message, seq, t| formatted(&build(m, seq, &from(), &to(), t).unwrap());
    let first = raw(&m, 1, now());
    let retry = raw(&m.clone(), 1, now() + Duration::from_secs(90));
    assert_eq!(header(&first, "Message-ID"), header(&retry, "Message-ID"));

    let mut resolved = m.clone();
    for a in &mut resolved.alerts {
        a.status = AlertStatus::Resolved;
        a.ends_at = Some(1_795_689_000_000); // 2026-11-26T10:30:00Z
    }
    resolved.status = AlertStatus::Resolved;
    resolved.reason = "resolved".into();
    let later = raw(&resolved, 2, now());
    let repeat = raw(&m, 2, now());
    assert_ne!(header(&first, "Message-ID"), header(&later, "Message-ID"));
    assert_ne!(header(&first, "Message-ID"), header(&repeat, "Message-ID"));
    assert_eq!(header(&first, "References"), header(&later, "References"));
    assert_eq!(header(&first, "In-Reply-To"), header(&later, "In-Reply-To"));

    let mut other_group = m.clone();
    other_group.group_key = "{}:{detector=\"retry_storm\"}".into();
    let other = raw(&other_group, 1, now());
    assert_ne!(header(&first, "References"), header(&other, "References"));
}

#[test]
fn html_escapes_everything_user_controlled() {
    let mut m = two_keys();
    let evil = "<script>alert('x')</script> \"q\" & <a href=x>";
    m.alerts[0].summary = evil.into();
    m.alerts[0].description = format!("{evil}\nsecond line");
    m.alerts[0].labels.insert("model".into(), evil.into());
    m.alerts[0].evidence.user_agents[0].value = evil.into();
    m.receiver = evil.into();
    m.external_url = Some("https://t.example.com/?a=1&b=\"2\"".into());
    let html = html_body(&m);
    assert!(
        !html.contains("<script>") && !html.contains("<a href=x>"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &quot;q&quot; &amp;"));
    assert!(html.contains("<br>second line"));
    assert!(html
        .contains("<a href=\"https://t.example.com/?a=1&amp;b=&quot;2&quot;\">Open Tripline</a>"));
    // Our own markup only: every tag is one we write.
    let tags: std::collections::BTreeSet<&str> = html
        .split('<')
        .skip(1)
        .map(|t| t.split([' ', '>']).next().unwrap())
        .collect();
    for t in tags {
        assert!(
            [
                "!DOCTYPE", "html", "/html", "head", "/head", "meta", "body", "/body", "h2", "/h2",
                "h3", "/h3", "p", "/p", "br", "table", "/table", "tr", "/tr", "td", "/td", "a",
                "/a"
            ]
            .contains(&t),
            "{t}"
        );
    }
    // A javascript: link is not linked.
    m.external_url = Some("javascript:alert(1)".into());
    assert!(!html_body(&m).contains("javascript"));
}

#[test]
fn text_body_lists_alerts_facts_and_evidence() {
    let t = text_body(&two_keys());
    assert!(
        t.starts_with("[FIRING:2] spend_spike key-7 (search)\n"),
        "{t}"
    );
    assert!(t.contains("1. FIRING · critical · spend_spike on key-7"));
    assert!(t.contains("2. FIRING"));
    assert!(t.contains("api_key_id   key-7"), "{t}");
    assert!(
        t.contains("observed     42.1 (expected 3.2, limit 9)"),
        "{t}"
    );
    assert!(t.contains("window       2026-11-26 10:00–10:05 UTC"));
    assert!(t.contains("top IPs      203.0.113.7 ×1200, 198.51.100.4 ×300"));
    assert!(t.contains("facts        amplification=4.2"));
    assert!(t.contains("Open Tripline: https://tripline.example.com"));
}

#[test]
fn smtp_urls_choose_the_transport_security() {
    let p = |u| SmtpTarget::parse(u);
    let t = p("smtps://mail.example.com").unwrap();
    assert_eq!(
        (t.security, t.host.as_str(), t.port),
        (SmtpSecurity::ImplicitTls, "mail.example.com", 465)
    );
    let t = p("smtp://mail.example.com:2587?tls=required").unwrap();
    assert_eq!((t.security, t.port), (SmtpSecurity::StartTlsRequired, 2587));
    assert_eq!(p("smtp://mail.example.com?tls=required").unwrap().port, 587);
    assert_eq!(
        p("smtp://relay?tls=opportunistic").unwrap().security,
        SmtpSecurity::StartTlsOpportunistic
    );
    let t = p("smtp://127.0.0.1:2525").unwrap();
    assert_eq!((t.security, t.port), (SmtpSecurity::Plain, 2525));
    assert_eq!(p("smtp://localhost").unwrap().port, 25);
    let t = p("smtp://[::1]:25").unwrap();
    assert_eq!(t.host, "::1");
    assert_eq!(t.to_string(), "smtp://[::1]:25");
    assert_eq!(p("smtps://h:465").unwrap().to_string(), "smtps://h:465");
    assert_eq!(
        p("smtp://h:587?tls=required").unwrap().to_string(),
        "smtp://h:587?tls=required"
    );

    for bad in [
        "http://mail.example.com",
        "smtps://h?tls=required",
        "smtp://h?tls=maybe",
        "smtp://h?foo=1",
        "smtp://h/ehlo",
        "smtp://",
        "not a url",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
    // Credentials in the URL are refused and never echoed.
    let err = p("smtps://bob:hunter2@mail.example.com")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("username_env") && !err.contains("hunter2") && !err.contains("bob"),
        "{err}"
    );
}

fn settings(url: &str) -> EmailSettings {
    EmailSettings {
        smtp_url: url.into(),
        from: "Tripline <alerts@tripline.example.com>".into(),
        to: vec![
            "oncall@example.com".into(),
            "Team <team@example.com>".into(),
        ],
        username_env: Some("SMTP_USER".into()),
        password_env: Some("SMTP_PASSWORD".into()),
        timeout_ms: 5_000,
        hello_name: None,
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "SMTP_USER" => Some("bob".into()),
        "SMTP_PASSWORD" => Some("hunter2".into()),
        _ => None,
    }
}

#[test]
fn receivers_read_credentials_from_the_environment() {
    // Constructing a transport neither connects nor needs a runtime (no pool), and dropping it
    // here, outside any runtime, is fine.
    let r = EmailReceiver::new(&settings("smtps://mail.example.com"), env).unwrap();
    assert_eq!(r.target().to_string(), "smtps://mail.example.com:465");
    let debug = format!("{r:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("bob"),
        "{debug}"
    );
    let mail = r.message(&two_keys(), 1, now()).unwrap();
    let raw = formatted(&mail);
    assert_eq!(
        header(&raw, "To").as_deref(),
        Some("oncall@example.com, Team <team@example.com>")
    );
    drop(r);

    assert!(EmailReceiver::new(&settings("smtp://mail.example.com:587?tls=required"), env).is_ok());
    assert_eq!(
        EmailReceiver::new(&settings("smtps://h"), |_| None).unwrap_err(),
        EmailError::MissingEnv("SMTP_USER".into())
    );
    let mut half = settings("smtps://h");
    half.password_env = None;
    assert!(matches!(
        EmailReceiver::new(&half, env),
        Err(EmailError::Config(_))
    ));
    // Credentials over plain SMTP only to a loopback relay.
    let err = EmailReceiver::new(&settings("smtp://mail.example.com:25"), env).unwrap_err();
    assert!(err.to_string().contains("unencrypted") && !err.to_string().contains("hunter2"));
    assert!(EmailReceiver::new(&settings("smtp://127.0.0.1:2525"), env).is_ok());
    let mut anonymous = settings("smtp://relay.internal:25");
    anonymous.username_env = None;
    anonymous.password_env = None;
    assert!(EmailReceiver::new(&anonymous, env).is_ok());
    let mut bad_to = anonymous.clone();
    bad_to.to = vec!["not an address".into()];
    assert!(matches!(
        EmailReceiver::new(&bad_to, env),
        Err(EmailError::Address { .. })
    ));
    bad_to.to.clear();
    assert!(matches!(
        EmailReceiver::new(&bad_to, env),
        Err(EmailError::Config(_))
    ));
}

#[test]
fn settings_deserialize_with_defaults_and_deny_unknown_fields() {
    let s: EmailSettings = serde_json::from_value(serde_json::json!({
        "smtp_url": "smtps://h", "from": "a@b.c", "to": ["d@e.f"]
    }))
    .unwrap();
    assert_eq!(s.timeout_ms, 30_000);
    assert!(s.username_env.is_none());
    assert!(serde_json::from_value::<EmailSettings>(serde_json::json!({
        "smtp_url": "smtps://h", "from": "a@b.c", "to": [], "password": "x"
    }))
    .is_err());
}
