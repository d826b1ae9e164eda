use super::*;
use crate::lifecycle::test_support::{alerting_config, labels};

const TREE: &str = r#"
[alerting.route]
receiver = "ops"
group_by = ["detector"]
group_wait_ms = 1000
repeat_interval_s = 600

[[alerting.route.routes]]
matchers = ['severity="critical"']
receiver = "pager"
continue = true
group_wait_ms = 0

[[alerting.route.routes]]
matchers = ['detector=~"leaked_key|cross_region"']
receiver = "security"
group_by = ["..."]

[[alerting.route.routes.routes]]
matchers = ['project="payments"']
receiver = "payments"
for_ms = 30000

[[alerting.route.routes]]
matchers = ['detector=~"leaked_key|cross_region"']
receiver = "never"

[[alerting.receivers]]
name = "ops"
kind = "webhook"
url = "http://x"

[[alerting.receivers]]
name = "pager"
kind = "slack"
url = "http://x"

[[alerting.receivers]]
name = "security"
kind = "email"
smtp_url = "smtp://127.0.0.1:25"
from = "t@example.com"
to = ["s@example.com"]
send_resolved = false

[[alerting.receivers]]
name = "payments"
kind = "webhook"
url = "http://x"

[[alerting.receivers]]
name = "never"
kind = "webhook"
url = "http://x"
"#;

fn tree() -> RouteTree {
    RouteTree::from_config(&alerting_config(TREE)).unwrap()
}

fn receivers(tree: &RouteTree, pairs: &[(&str, &str)]) -> Vec<String> {
    tree.match_routes(&labels(pairs))
        .iter()
        .map(|r| r.receiver.clone())
        .collect()
}

#[test]
fn depth_first_with_continue() {
    let t = tree();
    // No child matches: the root takes it.
    assert_eq!(
        receivers(&t, &[("detector", "spend_spike"), ("severity", "warning")]),
        ["ops"]
    );
    // A continuing match, then the next match stops the search ("never" is not reached).
    assert_eq!(
        receivers(&t, &[("detector", "leaked_key"), ("severity", "critical")]),
        ["pager", "security"]
    );
    // Only the continuing route matches: it alone takes the alert, not the root.
    assert_eq!(
        receivers(&t, &[("detector", "spend_spike"), ("severity", "critical")]),
        ["pager"]
    );
    // A matching grandchild takes it instead of its parent.
    assert_eq!(
        receivers(&t, &[("detector", "cross_region"), ("project", "payments")]),
        ["payments"]
    );
}

#[test]
fn settings_are_inherited() {
    let t = tree();
    let root = &t.root;
    assert_eq!(
        (
            root.group_wait_ms,
            root.group_interval_ms,
            root.repeat_interval_ms
        ),
        (1000, 300_000, 600_000)
    );
    assert_eq!((root.for_ms, root.send_resolved), (0, true));
    let pager = &root.routes[0];
    assert_eq!(
        (pager.group_wait_ms, pager.repeat_interval_ms),
        (0, 600_000)
    );
    assert_eq!(pager.group_by, GroupBy::Labels(vec!["detector".into()]));
    let security = &root.routes[1];
    assert_eq!(security.group_by, GroupBy::All);
    assert!(!security.send_resolved, "from the receiver");
    let payments = &security.routes[0];
    assert_eq!(
        (
            payments.group_by.clone(),
            payments.for_ms,
            payments.group_wait_ms
        ),
        (GroupBy::All, 30_000, 1000)
    );
}

#[test]
fn keys_are_stable_and_unique() {
    let t = tree();
    let keys: Vec<&str> = t.routes().iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "{}",
            r#"{}/{severity="critical"}"#,
            r#"{}/{detector=~"leaked_key|cross_region"}"#,
            r#"{}/{detector=~"leaked_key|cross_region"}/{project="payments"}"#,
            r#"{}/{detector=~"leaked_key|cross_region"}#1"#,
        ]
    );
    assert!(t.get(keys[3]).is_some_and(|r| r.receiver == "payments"));
    // Matcher order does not change the key.
    let a = "[alerting.route]\nreceiver = \"r\"\n[[alerting.route.routes]]\nmatchers = ['a=\"1\"', 'b=\"2\"']\n[[alerting.receivers]]\nname = \"r\"\nkind = \"webhook\"\nurl = \"http://x\"\n";
    let b = a.replace(r#"['a="1"', 'b="2"']"#, r#"['b="2"', 'a="1"']"#);
    let key = |text: &str| {
        RouteTree::from_config(&alerting_config(text))
            .unwrap()
            .root
            .routes[0]
            .key
            .clone()
    };
    assert_eq!(key(a), key(&b));
}

#[test]
fn group_labels_and_keys() {
    let t = tree();
    let alert = labels(&[
        ("detector", "leaked_key"),
        ("api_key_id", "k\"1"),
        ("severity", "warning"),
    ]);
    let root = &t.root;
    assert_eq!(
        root.group_labels(&alert),
        labels(&[("detector", "leaked_key")])
    );
    assert_eq!(
        root.group_key(&root.group_labels(&alert)),
        r#"{}:{detector="leaked_key"}"#
    );
    let all = &root.routes[1];
    assert_eq!(all.group_labels(&alert), alert);
    assert_eq!(
        all.group_key(&alert),
        r#"{}/{detector=~"leaked_key|cross_region"}:{api_key_id="k\"1", detector="leaked_key", severity="warning"}"#
    );
    // A missing group_by label is left out.
    assert!(root.group_labels(&labels(&[("x", "y")])).is_empty());
}

#[test]
fn building_fails_on_what_validation_rejects() {
    let mut config = alerting_config(TREE);
    config.route.routes[0].receiver = Some("ghost".into());
    assert!(matches!(
        RouteTree::from_config(&config),
        Err(RoutingError::UnknownReceiver { name, .. }) if name == "ghost"
    ));
    config.route.routes[0].receiver = None;
    config.route.routes[0].matchers = vec!["x=~\"(\"".into()];
    let err = RouteTree::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("invalid regex"), "{err}");
    config.route.receiver = None;
    assert!(matches!(
        RouteTree::from_config(&config),
        Err(RoutingError::MissingReceiver { .. })
    ));
}
