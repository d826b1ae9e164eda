//! The behaviours of issue 4's acceptance list that are pure logic, through the whole
//! pipeline (store → routing → groups → mute → notifications), with a simulated clock.

use proptest::prelude::*;
use tripline_core::alert::{AlertStatus, Severity};

use super::*;
use crate::lifecycle::test_support::{alerting_config, critical, firing, message, resolved, s};
use crate::matcher::Matcher;
use crate::pipeline::{Pipeline, PipelineSnapshot};
use crate::silence::NewSilence;

/// group_wait 1 s, group_interval 5 s, repeat 60 s, one webhook receiver `ops`.
const BASE: &str = r#"
[alerting.route]
receiver = "ops"
group_by = ["detector"]
group_wait_ms = 1000
group_interval_ms = 5000
repeat_interval_s = 60

[[alerting.receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

/// (time, receiver, reason, [(api_key_id, status)]) of a notification.
type Line = (i64, String, &'static str, Vec<(String, &'static str)>);
/// The same without the receiver.
type Short = (i64, &'static str, Vec<(String, &'static str)>);

/// Drives a pipeline like the runtime does: tick at every wakeup, messages in between.
struct Run {
    p: Pipeline,
    now: i64,
    sent: Vec<(i64, Notification)>,
}

impl Run {
    fn new(body: &str) -> Run {
        Run {
            p: Pipeline::from_config(&alerting_config(body)).unwrap(),
            now: 0,
            sent: Vec::new(),
        }
    }

    fn until(&mut self, t: i64) {
        for _ in 0..100_000 {
            match self.p.next_wakeup() {
                Some(w) if w <= t => {
                    self.now = w.max(self.now);
                    let (notifications, _) = self.p.tick(self.now);
                    self.sent
                        .extend(notifications.into_iter().map(|n| (self.now, n)));
                    if self.p.next_wakeup().is_some_and(|next| next <= self.now) {
                        panic!("wakeup does not advance at {}", self.now);
                    }
                }
                _ => {
                    self.now = self.now.max(t);
                    return;
                }
            }
        }
        panic!("too many wakeups");
    }

    fn push(&mut self, at: i64, message: tripline_core::alert::Alert) {
        self.until(at);
        self.p.ingest(message, at);
    }

    /// (time, receiver, reason, [(api_key_id, status)]) of every notification sent.
    fn log(&self) -> Vec<Line> {
        self.sent
            .iter()
            .map(|(t, n)| {
                let alerts = n
                    .alerts
                    .iter()
                    .map(|a| (a.labels["api_key_id"].clone(), a.status.as_str()))
                    .collect();
                (*t, n.receiver.clone(), n.reason.as_str(), alerts)
            })
            .collect()
    }

    fn times(&self) -> Vec<i64> {
        self.sent.iter().map(|(t, _)| *t).collect()
    }
}

fn keys(pairs: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    pairs.iter().map(|(k, st)| ((*k).to_owned(), *st)).collect()
}

#[test]
fn group_wait_batches_alerts() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(200, firing("retry_storm", "key-1", 200));
    run.push(500, firing("spend_spike", "key-2", 500));
    run.until(s(30));
    let log = run.log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0].0, 1000);
    assert_eq!(log[0].2, "new");
    assert_eq!(log[0].3, keys(&[("key-1", "firing"), ("key-2", "firing")]));
    assert_eq!(
        log[1].0, 1200,
        "the other detector's group waits from its own first alert"
    );
    let n = &run.sent[0].1;
    assert_eq!(n.group_key, r#"{}:{detector="spend_spike"}"#);
    assert_eq!(n.group_labels["detector"], "spend_spike");
    assert_eq!(n.common_labels["severity"], "warning");
    assert!(!n.common_labels.contains_key("api_key_id"));
    assert_eq!((n.sequence, n.status()), (1, AlertStatus::Firing));
    assert_eq!(run.sent[1].1.sequence, 2, "numbered across groups");
}

/// Only a receiver: every grouping setting is the built-in default.
const DEFAULTS: &str = r#"
[alerting.route]
receiver = "ops"

[[alerting.receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

#[test]
fn by_default_each_security_alert_is_its_own_group_and_waits_5_s() {
    let mut run = Run::new(DEFAULTS);
    run.push(0, critical("cross_region", "key-1", 0));
    run.push(0, firing("spend_spike", "key-1", 0));
    // A second stolen key while the first still fires: news of its own, not held for the
    // first one's group_interval; a second spend alert joins its detector's group.
    run.push(s(60), critical("cross_region", "key-2", s(60)));
    run.push(s(60), critical("leaked_key", "key-2", s(60)));
    run.push(s(60), firing("spend_spike", "key-2", s(60)));
    run.until(s(400));
    let short: Vec<Short> = run
        .log()
        .into_iter()
        .map(|(t, _, reason, alerts)| (t, reason, alerts))
        .collect();
    assert_eq!(
        short,
        vec![
            (s(5), "new", keys(&[("key-1", "firing")])),
            (s(30), "new", keys(&[("key-1", "firing")])),
            (s(65), "new", keys(&[("key-2", "firing")])),
            (s(65), "new", keys(&[("key-2", "firing")])),
            (
                s(330),
                "changed",
                keys(&[("key-1", "firing"), ("key-2", "firing")])
            ),
        ],
        "{:#?}",
        run.sent
    );
    let groups: Vec<&str> = run.sent.iter().map(|(_, n)| n.group_key.as_str()).collect();
    assert_eq!(
        groups[0],
        r#"{}:{api_key_id="key-1", detector="cross_region"}"#
    );
    assert_eq!(groups[1], r#"{}:{detector="spend_spike"}"#);

    // A security alert that escalates stays in its group: news at its next group_interval.
    let mut up = Run::new(DEFAULTS);
    up.push(0, firing("leaked_key", "key-1", 0));
    up.push(s(20), critical("leaked_key", "key-1", s(20)));
    up.until(s(400));
    let log: Vec<(i64, &str)> = up.log().into_iter().map(|(t, _, r, _)| (t, r)).collect();
    assert_eq!(log, vec![(s(5), "new"), (s(305), "changed")]);

    // A tree that sets group_wait_ms or group_by keeps it for every detector.
    let mut set = Run::new(&DEFAULTS.replace(
        "receiver = \"ops\"\n\n",
        "receiver = \"ops\"\ngroup_wait_ms = 20000\ngroup_by = [\"detector\"]\n\n",
    ));
    set.push(0, critical("cross_region", "key-1", 0));
    set.push(s(1), critical("cross_region", "key-2", s(1)));
    set.until(s(100));
    assert_eq!(
        set.log()
            .into_iter()
            .map(|(t, _, reason, alerts)| (t, reason, alerts))
            .collect::<Vec<_>>(),
        vec![(
            s(20),
            "new",
            keys(&[("key-1", "firing"), ("key-2", "firing")])
        )]
    );
}

#[test]
fn group_interval_holds_late_alerts() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(s(2), firing("spend_spike", "key-2", s(2)));
    run.push(6500, firing("spend_spike", "key-3", 6500));
    run.until(s(40));
    let log = run.log();
    assert_eq!(run.times(), [s(1), s(6), s(11)], "{log:#?}");
    assert_eq!(log[1].2, "changed");
    assert_eq!(log[1].3, keys(&[("key-1", "firing"), ("key-2", "firing")]));
    assert_eq!(log[2].3.len(), 3);
    assert_eq!(run.sent[2].1.sequence, 3);
}

#[test]
fn unchanged_firing_group_repeats_after_repeat_interval() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.until(s(130));
    assert_eq!(run.times(), [s(1), s(61), s(121)]);
    let reasons: Vec<_> = run.log().iter().map(|l| l.2).collect();
    assert_eq!(reasons, ["new", "repeat", "repeat"]);
}

#[test]
fn resolved_alerts_are_sent_once_then_the_group_ends() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(0, firing("spend_spike", "key-2", 0));
    run.push(s(3), resolved("spend_spike", "key-1", s(3)));
    run.push(s(8), resolved("spend_spike", "key-2", s(8)));
    run.until(s(200));
    let log = run.log();
    assert_eq!(run.times(), [s(1), s(6), s(11)], "{log:#?}");
    assert_eq!(log[1].2, "changed");
    assert_eq!(
        log[1].3,
        keys(&[("key-2", "firing"), ("key-1", "resolved")])
    );
    assert_eq!(log[2].2, "resolved");
    assert_eq!(log[2].3, keys(&[("key-2", "resolved")]));
    let gone = &run.sent[2].1.alerts[0];
    assert_eq!(gone.ends_at, Some(8_000));
    assert_eq!(run.sent[2].1.status(), AlertStatus::Resolved);
    assert_eq!(run.p.grouper.groups().count(), 0);
}

#[test]
fn send_resolved_off_sends_no_resolution() {
    let body = BASE.replace(
        "url = \"http://127.0.0.1:9/hook\"",
        "url = \"http://x\"\nsend_resolved = false",
    );
    let mut run = Run::new(&body);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(0, firing("spend_spike", "key-2", 0));
    run.push(s(3), resolved("spend_spike", "key-1", s(3)));
    run.push(s(8), resolved("spend_spike", "key-2", s(8)));
    run.until(s(100));
    assert_eq!(run.times(), [s(1)], "{:#?}", run.log());
    assert_eq!(run.p.grouper.groups().count(), 0);
    // Firing again is news.
    run.push(s(120), firing("spend_spike", "key-1", s(120)));
    run.until(s(130));
    assert_eq!(run.times(), [s(1), s(121)]);
    assert_eq!(run.log()[1].2, "new");
}

#[test]
fn a_flap_inside_group_wait_sends_nothing() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(500, resolved("spend_spike", "key-1", 500));
    run.until(s(300));
    assert!(run.sent.is_empty(), "{:#?}", run.log());
    assert_eq!(run.p.grouper.groups().count(), 0);
}

#[test]
fn inhibition_with_equal_labels() {
    let body = BASE.replace(
        "group_by = [\"detector\"]",
        "group_by = [\"detector\", \"api_key_id\"]",
    ) + r#"
[[alerting.inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["api_key_id"]
"#;
    let mut run = Run::new(&body);
    run.push(0, critical("spend_spike", "key-1", 0));
    run.push(0, firing("retry_storm", "key-1", 0));
    run.push(0, firing("retry_storm", "key-2", 0));
    run.push(
        s(10),
        resolved("spend_spike", "key-1", s(10)).with_severity(Severity::Critical),
    );
    run.until(s(30));
    let log = run.log();
    let summary: Vec<Short> = log.iter().map(|l| (l.0, l.2, l.3.clone())).collect();
    assert_eq!(
        summary,
        [
            (s(1), "new", keys(&[("key-1", "firing")])),
            (s(1), "new", keys(&[("key-2", "firing")])),
            (s(11), "new", keys(&[("key-1", "firing")])),
            (s(11), "resolved", keys(&[("key-1", "resolved")])),
        ]
    );
    assert_eq!(run.sent[0].1.alerts[0].detector, "spend_spike");
    assert_eq!(
        run.sent[2].1.alerts[0].detector, "retry_storm",
        "muted until the critical resolved"
    );
}

#[test]
fn silence_window_and_early_expiry() {
    let body = BASE.replace("group_by = [\"detector\"]", "group_by = [\"api_key_id\"]");
    let mut run = Run::new(&body);
    let silence = |key: &str, from: Option<i64>, to: i64| NewSilence {
        matchers: vec![Matcher::parse(&format!("api_key_id=\"{key}\"")).unwrap()],
        starts_at_ms: from,
        ends_at_ms: to,
        created_by: "ana".into(),
        comment: "maintenance".into(),
    };
    let id = run
        .p
        .silences
        .create(silence("key-1", None, s(100)), 0)
        .unwrap()
        .id
        .clone();
    run.push(s(1), firing("spend_spike", "key-1", s(1)));
    run.push(s(1), firing("spend_spike", "key-2", s(1)));
    run.until(s(20));
    assert_eq!(
        run.log(),
        [(s(2), "ops".into(), "new", keys(&[("key-2", "firing")]))]
    );
    run.p.silences.expire(&id, s(20)).unwrap();
    // A silence for key-2 from 40 s to 50 s, made at 30 s.
    run.until(s(30));
    run.p
        .silences
        .create(silence("key-2", Some(s(40)), s(50)), s(30))
        .unwrap();
    run.until(s(70));
    let log = run.log();
    let summary: Vec<Short> = log.iter().map(|l| (l.0, l.2, l.3.clone())).collect();
    assert_eq!(
        summary,
        [
            (s(2), "new", keys(&[("key-2", "firing")])),
            // The first tick of key-1's group after the early expiry.
            (s(22), "new", keys(&[("key-1", "firing")])),
            // key-2 muted at its 42 s tick, told again when the silence is over.
            (s(52), "new", keys(&[("key-2", "firing")])),
        ]
    );
}

#[test]
fn continue_routing_sends_to_every_matching_receiver() {
    let body = r#"
[alerting.route]
receiver = "ops"
group_wait_ms = 1000
group_by = ["detector"]

[[alerting.route.routes]]
matchers = ['severity="critical"']
receiver = "pager"
continue = true

[[alerting.route.routes]]
matchers = ['detector="leaked_key"']
receiver = "security"

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
kind = "webhook"
url = "http://x"
"#;
    let mut run = Run::new(body);
    run.push(0, critical("leaked_key", "key-1", 0));
    run.push(0, firing("leaked_key", "key-2", 0));
    run.push(0, firing("spend_spike", "key-3", 0));
    run.push(0, critical("spend_spike", "key-4", 0));
    run.until(s(5));
    let mut got: Vec<(String, Vec<String>)> = run
        .sent
        .iter()
        .map(|(_, n)| {
            let mut keys: Vec<String> = n
                .alerts
                .iter()
                .map(|a| a.labels["api_key_id"].clone())
                .collect();
            keys.sort();
            (n.receiver.clone(), keys)
        })
        .collect();
    got.sort();
    let want = [
        ("ops", vec!["key-3"]),
        ("pager", vec!["key-1"]),
        ("pager", vec!["key-4"]),
        ("security", vec!["key-1", "key-2"]),
    ];
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(r, k)| ((*r).to_owned(), k.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn route_for_delays_and_drops_short_alerts() {
    let body = BASE.replace(
        "repeat_interval_s = 60",
        "repeat_interval_s = 60\nfor_ms = 10000",
    );
    let mut run = Run::new(&body);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(s(2), firing("retry_storm", "key-1", s(2)));
    run.push(s(5), resolved("retry_storm", "key-1", s(5)));
    run.until(s(30));
    assert_eq!(
        run.log(),
        [(s(11), "ops".into(), "new", keys(&[("key-1", "firing")]))]
    );
    assert_eq!(run.sent[0].1.alerts[0].detector, "spend_spike");
}

#[test]
fn escalation_is_news() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.push(s(3), critical("spend_spike", "key-1", s(3)));
    run.until(s(20));
    let reasons: Vec<_> = run.log().iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(reasons, [(s(1), "new"), (s(6), "changed")]);
    assert_eq!(run.sent[1].1.alerts[0].severity, Severity::Critical);
}

#[test]
fn a_flapping_alert_is_summarised_once() {
    let body = BASE.replace("repeat_interval_s = 60", "repeat_interval_s = 3600")
        + "\n[alerting.flapping]\nflips = 4\nwindow_s = 60\n";
    let mut run = Run::new(&body);
    let mut t = 0;
    run.push(t, firing("spend_spike", "key-1", t));
    for _ in 0..8 {
        t += s(2);
        run.push(t, resolved("spend_spike", "key-1", t));
        t += s(2);
        run.push(t, firing("spend_spike", "key-1", t));
    }
    t += s(2);
    run.push(t, resolved("spend_spike", "key-1", t)); // last flip at 34 s
    run.until(s(200));
    let log = run.log();
    let reasons: Vec<_> = log.iter().map(|l| (l.0, l.2)).collect();
    // Firing; flapping (4th flip at 8 s, told at the 11 s tick); resolved once it settled
    // (34 s + 60 s quiet = 94 s, told at the 96 s tick).
    assert_eq!(
        reasons,
        [(s(1), "new"), (s(11), "changed"), (s(96), "resolved")],
        "{log:#?}"
    );
    let facts = &run.sent[1].1.alerts[0].evidence.facts;
    assert_eq!(facts["flapping"], serde_json::json!(true));
    assert!(facts["flips"].as_u64().unwrap() >= 4);
}

#[test]
fn a_restart_neither_repeats_nor_loses_notifications() {
    let restart = |run: &mut Run| {
        let json = serde_json::to_string(&run.p.snapshot()).unwrap();
        let snapshot: PipelineSnapshot = serde_json::from_str(&json).unwrap();
        run.p = Pipeline::restore(&alerting_config(BASE), snapshot, run.now).unwrap();
    };
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.until(500);
    restart(&mut run);
    run.until(s(3));
    run.p.ingest(resolved("spend_spike", "key-1", s(3)), s(3));
    restart(&mut run);
    run.until(s(100));
    let reasons: Vec<_> = run.log().iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(reasons, [(s(1), "new"), (s(6), "resolved")]);
}

#[test]
fn reload_keeps_what_receivers_were_told() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.until(s(2));
    let body = BASE.replace("group_interval_ms = 5000", "group_interval_ms = 2000")
        + r#"
[[alerting.route.routes]]
matchers = ['detector="leaked_key"']
receiver = "ops"
"#;
    run.p.reload(&alerting_config(&body), s(2)).unwrap();
    run.push(s(4), resolved("spend_spike", "key-1", s(4)));
    run.until(s(100));
    let reasons: Vec<_> = run.log().iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(
        reasons,
        [(s(1), "new"), (s(5), "resolved")],
        "the new interval applies"
    );
}

#[test]
fn a_receiver_that_leaves_the_route_drops_its_groups() {
    let mut run = Run::new(BASE);
    run.push(0, firing("spend_spike", "key-1", 0));
    run.until(s(2));
    let body = BASE.replace("receiver = \"ops\"", "receiver = \"ops2\"")
        + "\n[[alerting.receivers]]\nname = \"ops2\"\nkind = \"webhook\"\nurl = \"http://y\"\n";
    run.p.reload(&alerting_config(&body), s(2)).unwrap();
    run.until(s(10));
    let got: Vec<_> = run.log().iter().map(|l| (l.0, l.1.clone(), l.2)).collect();
    // The new receiver hears about the firing alert at once (its group_wait has passed).
    assert_eq!(
        got,
        [(s(1), "ops".into(), "new"), (s(2), "ops2".into(), "new")]
    );
    assert_eq!(run.p.grouper.groups().count(), 1);
}

trait WithSeverity {
    fn with_severity(self, severity: Severity) -> Self;
}

impl WithSeverity for tripline_core::alert::Alert {
    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// One message of a random scenario: (gap before it in ms, key index, firing?).
fn scenario() -> impl Strategy<Value = Vec<(i64, usize, bool)>> {
    prop::collection::vec((0i64..4_000, 0usize..4, any::<bool>()), 1..40)
}

fn play(events: &[(i64, usize, bool)], restart_at: Option<usize>) -> Vec<(i64, Notification)> {
    let body = BASE.replace("group_by = [\"detector\"]", "group_by = []");
    let mut run = Run::new(&body);
    let mut t = 0;
    for (i, (gap, key, fire)) in events.iter().enumerate() {
        t += gap;
        let key = format!("key-{key}");
        let status = if *fire {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        run.push(
            t,
            message("spend_spike", &key, status, Severity::Warning, t),
        );
        if restart_at == Some(i) {
            let snapshot = run.p.snapshot();
            run.p = Pipeline::restore(&alerting_config(&body), snapshot, run.now).unwrap();
        }
    }
    // Everything resolves, then time passes.
    t += 1;
    for key in 0..4 {
        run.push(t, resolved("spend_spike", &format!("key-{key}"), t));
    }
    run.until(t + s(3600));
    run.sent
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn notifications_keep_alertmanager_invariants(events in scenario()) {
        let sent = play(&events, None);
        let mut told_firing = std::collections::BTreeSet::new();
        let mut last_time = None;
        for (t, n) in &sent {
            prop_assert!(!n.alerts.is_empty());
            // Only a new group (the old one ended all resolved) may come sooner.
            if let (Some(prev), false) = (last_time, n.reason == NotificationReason::New) {
                prop_assert!(t - prev >= s(5), "group_interval respected: {prev} then {t}");
            }
            last_time = Some(*t);
            let mut now_firing = std::collections::BTreeSet::new();
            for a in &n.alerts {
                match a.status {
                    AlertStatus::Firing => { now_firing.insert(a.fingerprint.clone()); }
                    AlertStatus::Resolved => prop_assert!(
                        told_firing.contains(&a.fingerprint),
                        "resolved {} without having been told it fired", a.fingerprint
                    ),
                }
            }
            told_firing = now_firing;
        }
        // Nothing lost: whatever the receiver last heard firing, it heard resolved.
        prop_assert!(told_firing.is_empty(), "still firing at the end: {told_firing:?}");
    }

    #[test]
    fn a_restart_anywhere_changes_nothing(events in scenario(), at in any::<prop::sample::Index>()) {
        let without = play(&events, None);
        let with = play(&events, Some(at.index(events.len())));
        prop_assert_eq!(without, with);
    }
}
