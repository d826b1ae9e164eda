use super::*;
use serde_json::Value;

fn fp() -> Fingerprinter {
    Fingerprinter::new(b"0123456789abcdef-test").unwrap()
}

#[test]
fn fingerprint_is_stable_and_keyed() {
    let a = fp().fingerprint(b"sk-secret");
    assert_eq!(a, fp().fingerprint(b"sk-secret"));
    assert_eq!(a.len(), 3 + 24);
    let other = Fingerprinter::new(b"another-secret-key!!").unwrap();
    assert_ne!(a, other.fingerprint(b"sk-secret"));
}

#[test]
fn rejects_short_secret() {
    assert!(Fingerprinter::new(b"short").is_err());
}

#[test]
fn clean_message_is_borrowed() {
    let raw = br#"{"event_id":"e1","api_key_id":"key-1","key_hint":"sk-...9f2c"}"#;
    assert!(matches!(fp().redact(raw), Cow::Borrowed(_)));
}

#[test]
fn escapes_that_hide_nothing_leave_the_message_borrowed() {
    // Go's encoder writes `<`, `>` and `&` as \u escapes in every message.
    let raw = br#"{"event_id":"e1","user_agent":"a \u003cb\u003e \u0026 c","user":"x\u0026y=1"}"#;
    assert!(matches!(fp().redact(raw), Cow::Borrowed(_)));
    // An escaped letter or a `&` before a query name is looked at.
    let raw = br#"{"user_agent":"\u0041Iza_SOFFfI-D_-3l6BadJ7lMTi7yrNz63Rb_R-"}"#;
    assert!(!String::from_utf8_lossy(&fp().redact(raw)).contains("SOFFfI"));
}

#[test]
fn redacts_key_shaped_tokens_anywhere() {
    let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234";
    let raw = format!(r#"{{"user_agent":"curl Bearer {key}","api_key_id":"{key}"}}"#);
    let out = fp().redact(raw.as_bytes());
    let text = std::str::from_utf8(&out).unwrap();
    assert!(!text.contains(key), "{text}");
    let expected = fp().fingerprint(key.as_bytes());
    assert_eq!(text.matches(&expected).count(), 2, "{text}");
}

#[test]
fn redacts_secret_fields_whatever_their_shape() {
    let raw = br#"{"API_KEY" : "hunter2-not-key-shaped", "Authorization":"Bearer abc"}"#;
    let out = fp().redact(raw);
    let text = std::str::from_utf8(&out).unwrap();
    assert!(!text.contains("hunter2"));
    assert!(!text.contains("Bearer abc"));
    assert!(text.contains(&fp().fingerprint(b"hunter2-not-key-shaped")));
    // Still valid JSON afterwards.
    serde_json::from_str::<serde_json::Value>(text).unwrap();
}

#[test]
fn redacts_inside_malformed_json() {
    let raw = b"{not json at all AIzaSyA1234567890abcdefghijklmnopqrstuv and more";
    let out = fp().redact(raw);
    assert!(!String::from_utf8_lossy(&out).contains("AIzaSy"));
}

#[test]
fn already_fingerprinted_values_are_kept() {
    let once = fp().redact(br#"{"api_key":"hunter2"}"#).into_owned();
    let twice = fp().redact(&once).into_owned();
    assert_eq!(once, twice);
}

#[path = "corpus.rs"]
#[allow(dead_code)] // `fields` is for the end-to-end test.
mod corpus;

use corpus::{placements, Shape, KEYS};

fn redact_str(raw: &str) -> String {
    String::from_utf8(fp().redact(raw.as_bytes()).into_owned()).unwrap()
}

/// The fingerprint of `secret` as redaction writes it.
fn fp_of(secret: &str) -> String {
    fp().fingerprint(secret.as_bytes())
}

/// Every corpus key in every position it can be caught in: gone from the output, its
/// fingerprint there instead, the output still JSON, and redacting again changes nothing.
#[test]
fn corpus_keys_are_gone_in_every_position() {
    let mut checked = 0;
    for key in KEYS {
        for placement in placements(key) {
            let raw = format!(
                r#"{{"event_id":"e-1","ts":1795687200000,"status":200,{}}}"#,
                placement.members
            );
            let out = redact_str(&raw);
            let context = format!(
                "{} in {}:\n{raw}\n→ {out}",
                key.provider, placement.position
            );
            assert!(!out.contains(key.needle()), "leaked: {context}");
            serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{e}: {context}"));
            for secret in &placement.fingerprinted {
                assert!(out.contains(&fp_of(secret)), "no fingerprint: {context}");
            }
            assert_eq!(redact_str(&out), out, "not idempotent: {context}");
            // Invalid JSON (cut short: it goes to the dead-letter topic) is redacted too.
            let cut = &raw[..raw.len() - 1];
            let out = redact_str(cut);
            assert!(
                !out.contains(key.needle()),
                "leaked when cut: {context}\n→ {out}"
            );
            assert_eq!(redact_str(&out), out, "not idempotent when cut: {context}");
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn corpus_keys_alone_are_their_fingerprint() {
    for key in KEYS.iter().filter(|k| k.shape != Shape::Context) {
        assert_eq!(redact_str(key.key), fp_of(key.key), "{}", key.provider);
    }
}

#[test]
fn google_key_ending_in_dash_or_underscore() {
    for key in [
        "AIzaSyD-abcdefghijklmnopqrstuvwxyz0123-",
        "AIzaSyD-abcdefghijklmnopqrstuvwxyz0123_",
    ] {
        let out = redact_str(&format!(
            r#"{{"model":"gemini","user_agent":"k={key}","x":"{key}"}}"#
        ));
        assert!(!out.contains("abcdefghijklmnop"), "{out}");
        assert_eq!(out.matches(&fp_of(key)).count(), 2, "{out}");
    }
}

#[test]
fn escaped_api_key_name_becomes_a_fingerprinted_id() {
    let key = "hunter2-not-key-shaped";
    let out = redact_str(&format!(
        r#"{{"event_id":"e","ts":1795687200000,"api\u005fkey":"{key}","model":"m","status":200}}"#
    ));
    assert!(!out.contains("hunter2"), "{out}");
    let rules = crate::event::ValidationRules {
        now_ms: 1_795_687_200_000,
        max_future_skew_ms: 60_000,
    };
    let event = crate::event::decode_gateway(out.as_bytes(), &rules).unwrap();
    assert_eq!(event.api_key_id, fp_of(key));
}

#[test]
fn secret_field_names_compare_case_and_dash_insensitively() {
    for name in [
        "x-goog-api-key",
        "X_GOOG_API_KEY",
        "access_token",
        "Refresh-Token",
        "PASSWORD",
        "passwd",
        "Cookie",
        "set-cookie",
        "Ocp-Apim-Subscription-Key",
        "api-key",
        "Api_Key",
        "token",
        "client_secret",
        "private_key",
        "X-API-KEY",
        "authorization",
        "Proxy-Authorization",
        "apikey",
        "secret_key",
    ] {
        assert!(is_secret_name(name), "{name}");
        let out = redact_str(&format!(r#"{{"{name}":"hunter2 plain","n":1}}"#));
        assert!(!out.contains("hunter2"), "{name}: {out}");
        assert!(out.contains(&fp_of("hunter2 plain")), "{name}: {out}");
    }
    for name in [
        "api_key_id",
        "prompt_tokens",
        "key_hint",
        "tokens",
        "keys",
        "authorized",
    ] {
        assert!(!is_secret_name(name), "{name}");
    }
}

#[test]
fn secret_fields_of_every_json_type() {
    let raw = r#"{"Authorization":["Bearer abc123"],"cookie":{"session":"s3cr3t","n":[42]},"password":123456,"token":null,"api-key":true,"ok":"kept"}"#;
    let out = redact_str(raw);
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["Authorization"][0], fp_of("Bearer abc123"));
    assert_eq!(value["cookie"]["session"], fp_of("s3cr3t"));
    assert_eq!(value["cookie"]["n"][0], fp_of("42"));
    assert_eq!(value["password"], fp_of("123456"));
    assert_eq!(value["token"], Value::Null);
    assert_eq!(value["api-key"], Value::Bool(true));
    assert_eq!(value["ok"], "kept");
    // The same, cut short (invalid JSON): the byte path reads the compound values leniently.
    let out = redact_str(&raw[..raw.len() - 1]);
    for secret in ["abc123", "s3cr3t", "42", "123456"] {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    assert!(out.contains(&fp_of("Bearer abc123")), "{out}");
    assert!(out.contains(&fp_of("123456")), "{out}");
}

#[test]
fn azure_keys_in_header_arrays() {
    let azure = "0123456789abcdef0123456789abcdef";
    for raw in [
        format!(
            r#"{{"headers":{{"api-key":["{azure}"],"Ocp-Apim-Subscription-Key":["{azure}"]}}}}"#
        ),
        format!(r#"{{"headers":{{"api-key":["{azure}"]"#),
        format!(r#"{{"body":"{{\"api-key\":[\"{azure}\"]}}"}}"#),
        format!(r#"{{"body":"{{\"api-key\":[\"{azure}\"]}}"#),
    ] {
        let out = redact_str(&raw);
        assert!(!out.contains("456789abcdef"), "{raw} → {out}");
        assert!(out.contains(&fp_of(azure)), "{raw} → {out}");
    }
}

#[test]
fn word_adjacent_keys() {
    let key = "sk-ugk3fa9vo6iM713uwplt6y"; // a LiteLLM virtual key: 22 characters after sk-
    for (raw, caught) in [
        (format!(r#"{{"a":"x\n{key}"}}"#), true), // a JSON escape
        (format!(r#"{{"a":"x\t{key}"}}"#), true),
        (format!(r#"{{"a":"Bearer%20{key}"}}"#), true), // URL-encoded
        (format!(r#"{{"a":"key%3D{key}"}}"#), true),
        (format!(r#"{{"a":"x={key}"}}"#), true),
        (format!(r#"{{"a":"ta{key}"}}"#), false), // `task-…`-like: too short to be a key
    ] {
        let out = redact_str(&raw);
        assert_eq!(!out.contains("3fa9vo6iM713"), caught, "{raw} → {out}");
    }
    // Long enough, a key glued to a word is still taken.
    let long = "sk-t5yTDrm7I35wMkMp4t3skn2H7sCB2jZ5uK8pRA2pocvvDvkz";
    let out = redact_str(&format!(r#"{{"a":"abc{long}"}}"#));
    assert_eq!(out, format!(r#"{{"a":"abc{}"}}"#, fp_of(long)));
}

#[test]
fn ordinary_words_with_key_prefixes_are_kept() {
    for text in [
        "task-runner-for-the-nightly-batch-job",
        "disk-usage-alerts-for-the-cluster-nodes",
        "risk-assessment-quarterly-report-v2",
        "whisk-and-fold-the-eggs-into-the-flour",
        "ask-me-anything-about-the-new-release",
        "gpt-4o-mini-2024-07-18",
        "claude-sonnet-4-5-20250929",
        "openai-python/1.52.0",
        "sk-...9f2c",
        "sk-…9f2c",
        "hf_hub_download",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        "https://example.com/search?q=rust&page=2",
        "eyJhbGciOiJIUzI1NiJ9",
    ] {
        let raw = format!(r#"{{"project":"{text}","user_agent":"{text}"}}"#);
        assert_eq!(redact_str(&raw), raw, "{text}");
    }
}

#[test]
fn query_string_keys() {
    for (url, secret) in [
        ("https://x.test/v1?api-key=abc123def", "abc123def"),
        ("https://x.test/v1?alt=json&key=AbC_123-xyz", "AbC_123-xyz"),
        ("/oauth?access_token=tok.en-value&x=1", "tok.en-value"),
        ("/blob?sv=2024&sig=Zm9vYmFy%2Bc2ln", "Zm9vYmFy%2Bc2ln"),
        ("/v1?API_KEY=UPPER123", "UPPER123"),
    ] {
        let out = redact_str(&format!(r#"{{"request_id":"{url}"}}"#));
        assert!(!out.contains(secret), "{url} → {out}");
        assert!(out.contains(&fp_of(secret)), "{url} → {out}");
    }
    // Go's encoder writes `&` as \u0026: what the parser sees is a query string all the same.
    let out = redact_str(r#"{"request_id":"/v1?a=1\u0026token=s3cr3tvalue"}"#);
    assert!(!out.contains("s3cr3tvalue"), "{out}");
    // Parameters that merely end in a secret name are not secrets.
    let raw = r#"{"request_id":"/v1?monkey=banana&tokens=12"}"#;
    assert_eq!(redact_str(raw), raw);
}

#[test]
fn new_formats() {
    for secret in [
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghr_16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "xoxb-263594206564-2343594206574-FGqddMF8t08v8N7Oq4i57vs1",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ] {
        let out = redact_str(&format!(r#"{{"user_agent":"x {secret} y"}}"#));
        assert_eq!(out, format!(r#"{{"user_agent":"x {} y"}}"#, fp_of(secret)));
    }
    // AWS secret access keys only after their name.
    let aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for raw in [
        format!(r#"{{"aws_secret_access_key":"{aws}"}}"#),
        format!(r#"{{"env":"AWS_SECRET_ACCESS_KEY={aws}"}}"#),
        format!(r#"{{"cfg":"aws_secret_access_key = {aws}"}}"#),
        format!(r#"{{"cfg":"{{\"SecretAccessKey\": \"{aws}\"}}"}}"#),
        format!(r#"{{"cfg":"secret_access_key: '{aws}'"}}"#),
        r#"{"aws_secret_access_key":"wJalrXUtnFEMI\/K7MDENG\/bPxRfiCYEXAMPLEKEY"}"#.to_owned(),
    ] {
        let out = redact_str(&raw);
        assert!(!out.contains("K7MDENG"), "{raw} → {out}");
        assert!(out.contains(&fp_of(aws)), "{raw} → {out}");
    }
}

#[test]
fn ghp_token_as_a_model_name() {
    let key = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let out = redact_str(&format!(
        r#"{{"event_id":"e","ts":1,"api_key_id":"k","model":"{key}","status":200}}"#
    ));
    assert!(
        out.contains(&format!(r#""model":"{}""#, fp_of(key))),
        "{out}"
    );
}

#[test]
fn byte_path_keeps_the_message_as_it_was() {
    // No value path needed: key order, spacing and numbers stay byte for byte.
    let raw = r#"{"z":1.50, "api_key" : "hunter2", "a":[1e3]}"#;
    let out = redact_str(raw);
    assert_eq!(
        out,
        format!(
            r#"{{"z":1.50, "api_key" : "{}", "a":[1e3]}}"#,
            fp_of("hunter2")
        )
    );
}

#[test]
fn fingerprint_lookalikes_are_not_left_alone() {
    // Only an exact fingerprint is kept: a value that merely starts with `fp_` is a secret.
    let raw = r#"{"api_key":"fp_sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234"}"#;
    let out = redact_str(raw);
    assert!(!out.contains("AbCdEfGh"), "{out}");
}

#[test]
fn same_secret_same_fingerprint_on_every_path() {
    let key = "sk-t5yTDrm7I35wMkMp4t3skn2H7sCB2jZ5uK8pRA2pocvvDvkz";
    let expected = fp_of(key);
    for raw in [
        format!(r#"{{"api_key":"{key}"}}"#),
        format!(r#"{{"api\u005fkey":"{key}"}}"#),
        r#"{"api_key":"\u0073k-t5yTDrm7I35wMkMp4t3skn2H7sCB2jZ5uK8pRA2pocvvDvkz"}"#.to_owned(),
        format!(r#"{{"api_key":["{key}"]}}"#),
        format!(r#"{{"x":"{key}"}}"#),
        format!(r#"{{"x":"{{\"api_key\":\"{key}\"}}"}}"#),
    ] {
        let out = redact_str(&raw);
        assert!(out.contains(&expected), "{raw} → {out}");
    }
}

#[test]
fn deeply_nested_escapes_do_not_recurse_forever() {
    let mut s =
        r#"{"authorization":["sk-t5yTDrm7I35wMkMp4t3skn2H7sCB2jZ5uK8pRA2pocvvDvkz"]}"#.to_owned();
    for _ in 0..8 {
        s = serde_json::to_string(&serde_json::json!({ "inner": s })).unwrap();
    }
    let out = redact_str(&s);
    assert!(!out.contains("t5yTDrm7I35w"));
    assert_eq!(redact_str(&out), out);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that make interesting text: key prefixes, secret names, escapes, quotes.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("sk-".to_owned()),
            Just("sk_live_".to_owned()),
            Just("AIza".to_owned()),
            Just("AKIA".to_owned()),
            Just("ghp_".to_owned()),
            Just("eyJ".to_owned()),
            Just(".".to_owned()),
            Just("xoxb-".to_owned()),
            Just("hf_".to_owned()),
            Just("Bearer ".to_owned()),
            Just("%20".to_owned()),
            Just("?key=".to_owned()),
            Just("&api-key=".to_owned()),
            Just("aws_secret_access_key=".to_owned()),
            Just("\"api_key\":".to_owned()),
            Just("\"authorization\" : ".to_owned()),
            Just("\\\"token\\\":".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\\n".to_owned()),
            Just("\\u005f".to_owned()),
            Just("\\u0073".to_owned()),
            Just("\\/".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(",".to_owned()),
            Just("123".to_owned()),
            Just("fp_0123456789abcdef01234567".to_owned()),
            "[A-Za-z0-9_\\-]{1,40}",
            "[a-z ]{1,5}",
        ]
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(piece(), 0..24).prop_map(|pieces| pieces.concat().into_bytes())
    }

    /// JSON values whose strings and names are made of those pieces.
    fn json() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            Just("api_key".to_owned()),
            Just("Authorization".to_owned()),
            Just("headers".to_owned()),
            Just("token".to_owned()),
            Just("user_agent".to_owned()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop::collection::vec(piece(), 0..8).prop_map(|p| Value::String(p.concat())),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((name.clone(), inner.clone()), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
                // JSON text inside a string.
                inner.prop_map(|v| Value::String(v.to_string())),
            ]
        })
    }

    /// A corpus key in a random JSON document: a separator around it, or the value of a
    /// secret-named member written in any case with `-` or `_`, plain or in an array.
    fn document_with_key() -> impl Strategy<Value = (String, &'static str)> {
        let key = prop::sample::select(KEYS);
        let sep = prop::sample::select(vec![
            " ", "\n", "\"", "=", "/", "(", ":", ",", "\t", "%20", "+", "",
        ]);
        let name = prop::sample::select(SECRET_NAMES).prop_flat_map(|name| {
            prop::collection::vec(any::<(bool, bool)>(), name.len()).prop_map(move |flips| {
                name.chars()
                    .zip(flips)
                    .map(|(c, (upper, dash))| match c {
                        '_' if dash => '-',
                        c if upper => c.to_ascii_uppercase(),
                        c => c,
                    })
                    .collect::<String>()
            })
        });
        (json(), key, sep.clone(), sep, name, 0..4u8, any::<bool>()).prop_map(
            |(payload, key, before, after, name, how, nest)| {
                let secret = match (key.shape, how) {
                    (Shape::Context, _) | (_, 0) => serde_json::json!({ name: key.key }),
                    (_, 1) => serde_json::json!({ name: [key.key] }),
                    _ => serde_json::json!({ "text": format!("{before}{}{after}", key.key) }),
                };
                let mut doc = serde_json::json!({ "payload": payload, "secret": secret });
                if nest {
                    doc = serde_json::json!({ "wrapped": doc.to_string() });
                }
                (doc.to_string(), key.needle())
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(1000), ..ProptestConfig::default() })]

        #[test]
        fn corpus_keys_never_survive((raw, needle) in document_with_key(), escape in any::<bool>()) {
            let raw = if escape { raw.replace('_', "\\u005f") } else { raw };
            let out = fp().redact(raw.as_bytes()).into_owned();
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains(needle), "{} → {}", raw, text);
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok(), "{} → {}", raw, text);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_idempotent(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            let once = fp().redact(&raw).into_owned();
            prop_assert_eq!(fp().redact(&once).into_owned(), once);
        }

        #[test]
        fn textual_input_is_idempotent(raw in text()) {
            let once = fp().redact(&raw).into_owned();
            let twice = fp().redact(&once).into_owned();
            prop_assert_eq!(
                String::from_utf8_lossy(&twice),
                String::from_utf8_lossy(&once),
                "input {}", String::from_utf8_lossy(&raw)
            );
        }

        #[test]
        fn valid_json_stays_valid_json(value in json(), escape in any::<bool>()) {
            let mut raw = value.to_string();
            if escape {
                // Some encoders escape more than they must.
                raw = raw.replace('_', "\\u005f").replace('/', "\\/");
            }
            let once = fp().redact(raw.as_bytes()).into_owned();
            let parsed = serde_json::from_slice::<Value>(&once);
            prop_assert!(parsed.is_ok(), "{} → {}", raw, String::from_utf8_lossy(&once));
            let twice = fp().redact(&once).into_owned();
            prop_assert_eq!(
                String::from_utf8_lossy(&twice),
                String::from_utf8_lossy(&once),
                "input {}", raw
            );
        }
    }
}
