use super::*;
use crate::config::Config;

/// The `[alerting]` section proposed for tripline.example.toml.
const EXAMPLE: &str = r#"
[alerting]
# external_url = "https://tripline.example.com"
# An alert notifies once it has been firing this long (routes may override it).
for_ms = 0
# A resolved message keeps the alert firing this long; firing again within it is no new page.
keep_firing_for_ms = 0
# 0: only the detectors' resolved messages resolve (they send only state changes).
resolve_timeout_s = 0
resolved_retention_s = 3600
silence_retention_s = 432000

[alerting.flapping]
# 4 firing/resolved flips within 10 minutes: held firing as "flapping", one notification.
enabled = true
flips = 4
window_s = 600

[alerting.route]
receiver = "ops-webhook"
group_by = ["detector", "api_key_id"]
group_wait_ms = 30000
group_interval_ms = 300000
repeat_interval_s = 14400

# Critical alerts also page on Slack, then keep going to the default receiver.
[[alerting.route.routes]]
matchers = ['severity="critical"']
receiver = "oncall-slack"
group_wait_ms = 10000
continue = true

# Leaked keys and cross-region access go to security by email.
[[alerting.route.routes]]
matchers = ['detector=~"leaked_key|cross_region"']
receiver = "security-email"
repeat_interval_s = 3600

[[alerting.receivers]]
name = "ops-webhook"
kind = "webhook"
url = "https://hooks.example.com/tripline"
secret_env = "TRIPLINE_WEBHOOK_SECRET"

[[alerting.receivers]]
name = "oncall-slack"
kind = "slack"
url_env = "TRIPLINE_SLACK_WEBHOOK_URL"
# rate_limit_per_s = 1.0   (Slack's default)

[[alerting.receivers]]
name = "security-email"
kind = "email"
smtp_url = "smtps://alerts@smtp.example.com:465"
smtp_password_env = "TRIPLINE_SMTP_PASSWORD"
from = "tripline@example.com"
to = ["security@example.com"]
send_resolved = false

# A critical alert for a key mutes the warnings for the same key and detector.
[[alerting.inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["detector", "api_key_id"]
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    Config::from_toml(text).unwrap_err()
}

#[test]
fn example_section_parses() {
    let config = Config::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e:#?}"));
    let a = &config.alerting;
    assert!(a.enabled());
    assert_eq!(a.route.receiver.as_deref(), Some("ops-webhook"));
    assert_eq!(a.route.routes.len(), 2);
    assert!(a.route.routes[0].continue_matching);
    assert_eq!(a.route.routes[1].repeat_interval_s, Some(3600));
    assert_eq!(a.receivers[1].kind, ReceiverKind::Slack);
    assert_eq!(a.receivers[1].effective_rate_limit_per_s(), Some(1.0));
    assert_eq!(a.receivers[0].effective_rate_limit_per_s(), None);
    assert!(a.receivers[0].send_resolved);
    assert!(!a.receivers[2].send_resolved);
    assert_eq!(a.inhibit_rules[0].equal, ["detector", "api_key_id"]);
}

#[test]
fn empty_section_is_off_and_valid() {
    let config = Config::from_toml("[alerting]\n").unwrap();
    assert!(!config.alerting.enabled());
    assert_eq!(config.alerting.resolve_timeout_s, 0);
    assert!(config.alerting.flapping.enabled);
}

#[test]
fn unknown_fields_and_kinds_are_parse_errors_with_places() {
    let e = errors("[alerting.route]\nreceiver = \"a\"\ngroup_wait = 5\n");
    // (Line 2: "a" is not a receiver.)
    let e = &e[1..];
    assert_eq!(
        (e[0].line, e[0].message.contains("group_wait")),
        (Some(3), true)
    );
    let e = errors("[[alerting.receivers]]\nname = \"a\"\nkind = \"pager\"\n");
    assert_eq!(e[0].line, Some(3), "{}", e[0]);
}

#[test]
fn unknown_receivers_bad_regexes_and_zero_intervals_are_located() {
    let text = r#"
[alerting.route]
receiver = "ops"

[[alerting.route.routes]]
matchers = ['detector="spend_spike"']
receiver = "ops"

[[alerting.route.routes]]
matchers = ['model=~"gpt-(4"']
receiver = "nobody"
group_interval_ms = 0

[[alerting.route.routes.routes]]
receiver = "ops"
repeat_interval_s = 0

[[alerting.receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
"#;
    let e = errors(text);
    let found: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            ("alerting.route.routes[1].matchers", Some(10)),
            ("alerting.route.routes[1].receiver", Some(11)),
            ("alerting.route.routes[1].group_interval_ms", Some(12)),
            (
                "alerting.route.routes[1].routes[0].repeat_interval_s",
                Some(16)
            ),
        ]
    );
    assert!(
        e[1].message.contains("\"nobody\" is not a receiver"),
        "{}",
        e[1]
    );
    assert!(e[0].message.contains("invalid regex"), "{}", e[0]);
    assert!(!e[0].message.contains('\n'), "{}", e[0]);
}

#[test]
fn root_route_rules() {
    let e = errors(
        "[alerting.route]\nmatchers = ['a=\"b\"']\ncontinue = true\n\n[[alerting.receivers]]\nname = \"r\"\nkind = \"webhook\"\nurl = \"http://x\"\n",
    );
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alerting.route.receiver",
            "alerting.route.matchers",
            "alerting.route.continue",
        ]
    );
    assert_eq!(e[1].line, Some(2));
    // No receiver line: the table's header is the place.
    assert_eq!(e[0].line, Some(1));
}

#[test]
fn receivers_are_checked_per_kind() {
    let text = r#"
[alerting.route]
receiver = "a"

[[alerting.receivers]]
name = "a"
kind = "slack"
url = "ftp://x"
secret_env = "S"

[[alerting.receivers]]
name = "mail"
kind = "email"
smtp_url = "smtps://u:hunter2@smtp.example.com"
to = ["nobody"]
rate_limit_per_s = 0.0

[[alerting.receivers]]
name = "a"
kind = "webhook"
"#;
    let e = errors(text);
    let found: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            ("alerting.receivers[0].url", Some(8)),
            ("alerting.receivers[0].secret_env", Some(9)),
            ("alerting.receivers[1].from", Some(11)),
            ("alerting.receivers[1].smtp_url", Some(14)),
            ("alerting.receivers[1].to", Some(15)),
            ("alerting.receivers[1].rate_limit_per_s", Some(16)),
            ("alerting.receivers[2].url", Some(18)),
            ("alerting.receivers[2].name", Some(19)),
        ]
    );
    assert!(!e[3].to_string().contains("hunter2") || e[3].message == "contains a password");
}

#[test]
fn group_by_inhibit_rules_and_flapping_are_checked() {
    let text = r#"
[alerting.flapping]
flips = 1

[alerting.route]
group_by = ["...", "detector", "bad-label"]

[[alerting.inhibit_rules]]
source_matchers = []
target_matchers = ['severity="warning']
equal = ["api key"]
"#;
    let e = errors(text);
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alerting.flapping.flips",
            "alerting.route.group_by",
            "alerting.route.group_by",
            "alerting.inhibit_rules[0].source_matchers",
            "alerting.inhibit_rules[0].target_matchers",
            "alerting.inhibit_rules[0].equal",
        ]
    );
    assert!(e[4].message.contains("unterminated"), "{}", e[4]);
}

#[test]
fn locate_handles_nested_arrays_and_dotted_keys() {
    let text = "[alerting]\nroute.receiver = \"x\"\n[[alerting.route.routes]]\n[[alerting.route.routes.routes]]\n[[alerting.route.routes]]\n[[alerting.route.routes.routes]]\n  receiver = \"y\"\n";
    let source = crate::config::diagnose::Source::new(text);
    // Values are pointed at: `"x"` starts in column 18.
    assert_eq!(source.locate("alerting.route.receiver"), Some((2, 18)));
    assert_eq!(
        source.locate("alerting.route.routes[1].routes[0].receiver"),
        Some((7, 14))
    );
    assert_eq!(
        source.locate("alerting.route.routes[0].routes[0].receiver"),
        Some((4, 1)),
        "falls back to the header"
    );
    assert_eq!(
        source.locate("alerting.receivers[0].name"),
        Some((1, 1)),
        "falls back to the nearest table in the file"
    );
    assert_eq!(source.locate("detect.eval_interval_ms"), None);
}

#[test]
fn matcher_grammar() {
    let m = MatcherSpec::parse(r#"severity=~"warning|critical""#).unwrap();
    assert_eq!(
        (m.name.as_str(), m.op, m.value.as_str()),
        ("severity", MatchOp::Regex, "warning|critical")
    );
    let m = MatcherSpec::parse("  api_key_id != key-7 ").unwrap();
    assert_eq!((m.op, m.value.as_str()), (MatchOp::NotEqual, "key-7"));
    assert_eq!(MatcherSpec::parse("a=").unwrap().value, "");
    assert_eq!(
        MatcherSpec::parse(r#"m!~"gpt-4\.1""#).unwrap().value,
        r"gpt-4\.1"
    );
    assert_eq!(
        MatcherSpec::parse(r#"s="say \"hi\"\\""#).unwrap().value,
        r#"say "hi"\"#
    );
    for (bad, what) in [
        ("", "expected a label name"),
        ("=x", "expected a label name"),
        ("1abc=x", "not a label name"),
        ("sev", "expected an operator"),
        ("sev<x", "expected an operator"),
        ("sev==x", "not an operator"),
        (r#"sev="x"y"#, "unexpected 'y'"),
        (r#"sev="x"#, "unterminated"),
        (r#"sev=~"(""#, "invalid regex"),
        ("sev=a\"b", "quote inside"),
    ] {
        let err = MatcherSpec::parse(bad).unwrap_err();
        assert!(err.message.contains(what), "{bad:?}: {err}");
        assert!(err.message.contains("(column "), "{err}");
    }
}

#[test]
fn matcher_lists_and_display_round_trip() {
    let list =
        MatcherSpec::parse_list(r#"{detector="leaked_key", severity!~"info|warning",}"#).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(MatcherSpec::parse_list("a=b, c=~d").unwrap().len(), 2);
    assert!(MatcherSpec::parse_list("{}").unwrap().is_empty());
    assert!(MatcherSpec::parse_list("").unwrap().is_empty());
    assert!(MatcherSpec::parse_list("{a=b")
        .unwrap_err()
        .message
        .contains("closing"));
    assert!(
        MatcherSpec::parse_list("a=b c=d").is_ok(),
        "a bare value runs to the comma"
    );
    assert!(MatcherSpec::parse_list(r#"a="b" c="d""#)
        .unwrap_err()
        .message
        .contains("expected ','"));
    for m in list.iter().chain(&[MatcherSpec {
        name: "x".into(),
        op: MatchOp::Equal,
        value: "q\"\\\n\t\\d".into(),
    }]) {
        assert_eq!(&MatcherSpec::parse(&m.to_string()).unwrap(), m);
    }
}

#[test]
fn ha_topics_must_be_named_and_distinct() {
    let text = "[alerting.ha]\nenabled = true\ngroup_id = \" \"\nstate_topic = \"t\"\nsilences_topic = \"t\"\n";
    let e = errors(text);
    let places: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        places,
        [
            ("alerting.ha.group_id", Some(3)),
            ("alerting.ha.state_topic", Some(4))
        ]
    );
    let off = Config::from_toml("[alerting.ha]\nstate_topic = \"t\"\nsilences_topic = \"t\"\n");
    assert!(off.is_ok(), "not checked while off");
}

#[test]
fn the_compose_profiles_alerting_config_is_valid_and_has_a_standby() {
    let text = include_str!("../../../../docker/alerting-ha.toml");
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(config.alerting.enabled() && config.alerting.ha.enabled);
}

#[test]
fn the_compose_demo_profiles_alerting_config_is_valid_and_sends_to_the_sink() {
    let text = include_str!("../../../../docker/demo.toml");
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(config.alerting.enabled() && !config.alerting.ha.enabled);
    assert_eq!(config.alerting.receivers.len(), 1);
}
