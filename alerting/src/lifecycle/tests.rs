use proptest::prelude::*;
use tripline_core::alert::Severity;

use super::test_support::{alerting_config, critical, firing, resolved, s};
use super::*;

fn store(body: &str) -> AlertStore {
    AlertStore::new(LifecycleConfig::from_config(&alerting_config(body)))
}

fn fp(key: &str) -> String {
    firing("spend_spike", key, 0).fingerprint
}

#[test]
fn config_defaults_and_units() {
    let c = LifecycleConfig::default();
    assert_eq!(
        (c.for_ms, c.keep_firing_for_ms, c.resolve_timeout_ms),
        (0, 0, 0)
    );
    assert_eq!(
        c.flapping,
        Some(FlappingPolicy {
            flips: 4,
            window_ms: s(600)
        })
    );
    let c = LifecycleConfig::from_config(&alerting_config(
        "resolve_timeout_s = 30\n[alerting.flapping]\nenabled = false\n",
    ));
    assert_eq!((c.resolve_timeout_ms, c.flapping), (s(30), None));
}

#[test]
fn pending_until_for_then_firing_then_resolved() {
    let mut st = store("for_ms = 10000\n");
    let change = st.ingest(firing("spend_spike", "k", 0), 0).unwrap();
    assert_eq!((change.from, change.to), (None, AlertState::Pending));
    assert_eq!(st.next_wakeup(), Some(s(10)));
    assert!(st.tick(s(9)).is_empty());
    let changes = st.tick(s(12));
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].from, changes[0].to, changes[0].at_ms),
        (Some(AlertState::Pending), AlertState::Firing, s(10))
    );
    let change = st
        .ingest(resolved("spend_spike", "k", s(20)), s(20))
        .unwrap();
    assert_eq!(change.to, AlertState::Resolved);
    let a = st.get(&fp("k")).unwrap();
    assert_eq!(
        (a.resolved_at_ms, a.resolved_by),
        (Some(s(20)), Some(ResolveCause::Message))
    );
    assert_eq!(a.phase(s(20), s(10)), Phase::Resolved);
    assert_eq!(
        a.phase(s(20), s(30)),
        Phase::Inactive,
        "a route with a longer for never saw it fire"
    );
    let shown = a.notified(Phase::Resolved);
    assert_eq!(shown.status, AlertStatus::Resolved);
    assert_eq!(shown.ends_at, Some(20_000));
}

#[test]
fn resolved_before_for_never_fires() {
    let mut st = store("for_ms = 10000\n");
    st.ingest(firing("spend_spike", "k", 0), 0);
    let change = st.ingest(resolved("spend_spike", "k", s(5)), s(5)).unwrap();
    assert_eq!(
        (change.from, change.to),
        (Some(AlertState::Pending), AlertState::Resolved)
    );
    assert_eq!(
        st.get(&fp("k")).unwrap().phase(s(6), s(10)),
        Phase::Inactive
    );
}

#[test]
fn unknown_resolutions_are_ignored_and_escalation_updates_labels() {
    let mut st = store("");
    assert!(st.ingest(resolved("spend_spike", "k", 0), 0).is_none());
    st.ingest(firing("spend_spike", "k", 0), 0);
    let change = st.ingest(critical("spend_spike", "k", s(1)), s(1)).unwrap();
    assert!(!change.is_transition());
    let a = st.get(&fp("k")).unwrap();
    assert_eq!(a.labels["severity"], "critical");
    assert_eq!(a.labels["detector"], "spend_spike");
    assert_eq!(a.alert.severity, Severity::Critical);
    assert_eq!(a.active_since_ms, 0, "same alert");
}

#[test]
fn keep_firing_for_bridges_a_short_dip() {
    let mut st = store("keep_firing_for_ms = 60000\n");
    st.ingest(firing("spend_spike", "k", 0), 0);
    let change = st
        .ingest(resolved("spend_spike", "k", s(10)), s(10))
        .unwrap();
    assert_eq!(change.to, AlertState::Firing, "still firing for a minute");
    st.ingest(firing("spend_spike", "k", s(30)), s(30));
    let a = st.get(&fp("k")).unwrap();
    assert_eq!(
        (a.active_since_ms, a.resolved_at_ms),
        (0, None),
        "the same alert goes on"
    );
    st.ingest(resolved("spend_spike", "k", s(40)), s(40));
    assert_eq!(st.next_wakeup(), Some(s(100)));
    assert!(st.tick(s(99)).is_empty());
    let changes = st.tick(s(101));
    assert_eq!(
        (changes[0].to, changes[0].at_ms),
        (AlertState::Resolved, s(100))
    );
    // Firing after the end is a new alert.
    st.ingest(firing("spend_spike", "k", s(200)), s(200));
    assert_eq!(st.get(&fp("k")).unwrap().active_since_ms, s(200));
}

#[test]
fn resolve_timeout_is_off_by_default() {
    let mut st = store("");
    st.ingest(firing("spend_spike", "k", 0), 0);
    assert!(st.tick(s(86_400)).is_empty());
    assert_eq!(st.state(&fp("k"), s(86_400)), Some(AlertState::Firing));
    assert_eq!(st.next_wakeup(), None);
}

#[test]
fn resolve_timeout_resolves_silent_alerts() {
    let mut st = store("resolve_timeout_s = 60\n");
    st.ingest(firing("spend_spike", "k", 0), 0);
    st.ingest(firing("spend_spike", "k", s(50)), s(50));
    assert_eq!(st.next_wakeup(), Some(s(110)));
    assert!(st.tick(s(100)).is_empty());
    let changes = st.tick(s(130));
    assert_eq!(
        (changes[0].to, changes[0].at_ms),
        (AlertState::Resolved, s(110))
    );
    let a = st.get(&fp("k")).unwrap();
    assert_eq!(a.resolved_by, Some(ResolveCause::Timeout));
}

#[test]
fn flapping_is_held_then_settles() {
    let mut st = store("[alerting.flapping]\nflips = 4\nwindow_s = 60\n");
    let k = fp("k");
    st.ingest(firing("spend_spike", "k", 0), 0);
    st.ingest(resolved("spend_spike", "k", s(1)), s(1));
    st.ingest(firing("spend_spike", "k", s(2)), s(2));
    st.ingest(resolved("spend_spike", "k", s(3)), s(3));
    assert_eq!(st.state(&k, s(3)), Some(AlertState::Resolved));
    let change = st.ingest(firing("spend_spike", "k", s(4)), s(4)).unwrap();
    assert_eq!(change.to, AlertState::Flapping);
    let change = st.ingest(resolved("spend_spike", "k", s(5)), s(5)).unwrap();
    assert_eq!(change.to, AlertState::Flapping, "held firing");
    let a = st.get(&k).unwrap();
    let facts = a.notified(Phase::Firing).evidence.facts;
    assert_eq!(
        (facts["flapping"].clone(), facts["flips"].clone()),
        (true.into(), 5.into())
    );
    assert_eq!(st.next_wakeup(), Some(s(65)));
    // Quiet for the window: it settles in its last reported state (resolved).
    let changes = st.tick(s(70));
    assert_eq!(
        (changes[0].from, changes[0].to, changes[0].at_ms),
        (Some(AlertState::Flapping), AlertState::Resolved, s(65))
    );
    assert!(!st.get(&k).unwrap().is_flapping());
}

#[test]
fn a_flapping_alert_that_settles_firing_stays_firing() {
    let mut st = store("[alerting.flapping]\nflips = 2\nwindow_s = 60\n");
    st.ingest(firing("spend_spike", "k", 0), 0);
    st.ingest(resolved("spend_spike", "k", s(1)), s(1));
    st.ingest(firing("spend_spike", "k", s(2)), s(2));
    assert_eq!(st.state(&fp("k"), s(2)), Some(AlertState::Flapping));
    let changes = st.tick(s(62));
    assert_eq!(changes[0].to, AlertState::Firing);
}

#[test]
fn resolved_alerts_are_forgotten_after_retention() {
    let mut st = store("resolved_retention_s = 100\n");
    st.ingest(firing("spend_spike", "k", 0), 0);
    st.ingest(resolved("spend_spike", "k", s(10)), s(10));
    assert_eq!(st.next_wakeup(), Some(s(110)));
    st.tick(s(109));
    assert_eq!(st.len(), 1);
    st.tick(s(110));
    assert!(st.is_empty());
}

#[test]
fn snapshot_round_trips_through_json() {
    let mut st = store("keep_firing_for_ms = 5000\n");
    st.ingest(firing("spend_spike", "a", 0), 0);
    st.ingest(firing("leaked_key", "b", s(1)), s(1));
    st.ingest(resolved("leaked_key", "b", s(2)), s(2));
    let json = serde_json::to_string(&st.snapshot()).unwrap();
    let back =
        AlertStore::restore(st.config().clone(), serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(back.snapshot(), st.snapshot());
    assert_eq!(back.next_wakeup(), st.next_wakeup());
    let mut old = st.snapshot();
    old.version = 99;
    assert_eq!(
        AlertStore::restore(LifecycleConfig::default(), old).unwrap_err(),
        SnapshotVersionError(99)
    );
}

proptest! {
    /// Whatever the messages, an alert's last word is honoured: after the detector resolves it
    /// and enough time passes, it is resolved (flapping and keep-firing only delay that).
    #[test]
    fn the_last_word_wins(flips in prop::collection::vec((1i64..5_000, any::<bool>()), 0..30), keep in 0i64..10_000) {
        let mut st = store(&format!("keep_firing_for_ms = {keep}\n[alerting.flapping]\nflips = 3\nwindow_s = 20\n"));
        let mut t = 0;
        st.ingest(firing("spend_spike", "k", t), t);
        let mut last_firing = true;
        for (gap, fire) in flips {
            t += gap;
            let m = if fire { firing("spend_spike", "k", t) } else { resolved("spend_spike", "k", t) };
            st.ingest(m, t);
            st.tick(t);
            last_firing = fire;
        }
        let later = t + s(3_000);
        st.tick(later);
        let want = if last_firing { AlertState::Firing } else { AlertState::Resolved };
        prop_assert_eq!(st.state(&fp("k"), later), Some(want));
    }
}
