use super::*;
use crate::lifecycle::test_support::{alerting_config, critical, firing, labels, s};
use crate::lifecycle::{AlertStore, LifecycleConfig};

fn new_silence(matchers: &str, starts: Option<i64>, ends: i64) -> NewSilence {
    NewSilence {
        matchers: crate::matcher::parse_list(matchers).unwrap(),
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: "ana@example.com".into(),
        comment: "key rotation".into(),
    }
}

#[test]
fn silence_window() {
    let mut store = SilenceStore::new();
    let id = store
        .create(
            new_silence(r#"{api_key_id="key-1"}"#, Some(s(10)), s(20)),
            0,
        )
        .unwrap()
        .id
        .clone();
    assert!(id.starts_with("sil_") && id.len() == 20, "{id}");
    let key1 = labels(&[("api_key_id", "key-1"), ("detector", "spend_spike")]);
    let key2 = labels(&[("api_key_id", "key-2")]);
    let sil = store.get(&id).unwrap();
    assert_eq!(sil.state(s(5)), SilenceState::Pending);
    assert_eq!(sil.state(s(10)), SilenceState::Active);
    assert_eq!(sil.state(s(20)), SilenceState::Expired);
    assert!(!store.is_muted(&key1, s(9)));
    assert!(store.is_muted(&key1, s(10)));
    assert_eq!(store.muted_by(&key1, s(15)), [id.as_str()]);
    assert!(!store.is_muted(&key2, s(15)));
    assert!(!store.is_muted(&key1, s(20)));
    assert_eq!(store.next_change(0), Some(s(10)));
    assert_eq!(store.next_change(s(10)), Some(s(20)));
}

#[test]
fn early_expiry() {
    let mut store = SilenceStore::new();
    let active = store
        .create(new_silence("api_key_id=key-1", None, s(100)), 0)
        .unwrap()
        .id
        .clone();
    let pending = store
        .create(new_silence("api_key_id=key-2", Some(s(50)), s(100)), 0)
        .unwrap()
        .id
        .clone();
    assert_ne!(active, pending);
    let key1 = labels(&[("api_key_id", "key-1")]);
    assert!(store.is_muted(&key1, s(10)));
    let expired = store.expire(&active, s(10)).unwrap();
    assert_eq!(
        (expired.ends_at_ms, expired.state(s(10))),
        (s(10), SilenceState::Expired)
    );
    assert!(!store.is_muted(&key1, s(10)));
    let expired = store.expire(&pending, s(10)).unwrap();
    assert_eq!(
        (expired.starts_at_ms, expired.ends_at_ms),
        (s(10), s(10)),
        "never starts"
    );
    assert!(!store.is_muted(&labels(&[("api_key_id", "key-2")]), s(60)));
    assert_eq!(
        store.expire(&active, s(11)).unwrap_err(),
        SilenceError::AlreadyExpired(active.clone())
    );
    assert_eq!(
        store.expire("sil_nope", s(11)).unwrap_err(),
        SilenceError::NotFound("sil_nope".into())
    );
    // Listed until the retention has passed.
    assert_eq!(store.gc(s(20), s(60)), 0);
    assert_eq!(store.list().count(), 2);
    assert_eq!(store.gc(s(70), s(60)), 2);
}

#[test]
fn bad_silences_are_refused() {
    let mut store = SilenceStore::new();
    let refuse = |store: &mut SilenceStore, new: NewSilence| store.create(new, s(10)).unwrap_err();
    assert_eq!(
        refuse(&mut store, new_silence("{}", None, s(20))),
        SilenceError::NoMatchers
    );
    assert_eq!(
        refuse(&mut store, new_silence(r#"{team!="core"}"#, None, s(20))),
        SilenceError::MatchesEverything
    );
    assert_eq!(
        refuse(&mut store, new_silence("a=b", None, s(5))),
        SilenceError::AlreadyEnded
    );
    assert_eq!(
        refuse(&mut store, new_silence("a=b", Some(s(30)), s(20))),
        SilenceError::EndsBeforeStart
    );
    let mut no_author = new_silence("a=b", None, s(20));
    no_author.created_by = " ".into();
    assert_eq!(refuse(&mut store, no_author), SilenceError::NoAuthor);
    let mut no_comment = new_silence("a=b", None, s(20));
    no_comment.comment = String::new();
    assert_eq!(refuse(&mut store, no_comment), SilenceError::NoComment);
    let mut long = new_silence("a=b", None, s(20));
    long.comment = "x".repeat(MAX_COMMENT_CHARS + 1);
    assert!(matches!(
        refuse(&mut store, long),
        SilenceError::TooLong {
            field: "comment",
            ..
        }
    ));
    assert_eq!(store.list().count(), 0);
    // A start in the past means now.
    let ok = store
        .create(new_silence("a=b", Some(0), s(20)), s(10))
        .unwrap();
    assert_eq!(ok.starts_at_ms, s(10));
}

#[test]
fn silences_survive_serialization() {
    let mut store = SilenceStore::new();
    store
        .create(
            new_silence(r#"{detector=~"leaked_key|cross_region"}"#, None, s(100)),
            0,
        )
        .unwrap();
    let json = serde_json::to_string(&store).unwrap();
    let mut back: SilenceStore = serde_json::from_str(&json).unwrap();
    assert_eq!(back, store);
    // Ids stay unique after a restore.
    let a = back
        .create(new_silence("a=b", None, s(100)), 0)
        .unwrap()
        .id
        .clone();
    let b = store
        .create(new_silence("a=b", None, s(100)), 0)
        .unwrap()
        .id
        .clone();
    assert_eq!(a, b, "deterministic");
    assert_eq!(back.list().count(), 2);
}

fn inhibition_rules() -> Inhibitor {
    Inhibitor::from_config(&alerting_config(
        r#"
[[alerting.inhibit_rules]]
source_matchers = ['severity="critical"']
target_matchers = ['severity="warning"']
equal = ["api_key_id"]
"#,
    ))
    .unwrap()
}

#[test]
fn a_critical_alert_mutes_the_warning_for_the_same_key() {
    let mut alerts = AlertStore::new(LifecycleConfig::default());
    alerts.ingest(critical("spend_spike", "key-1", 0), 0);
    alerts.ingest(firing("retry_storm", "key-1", 0), 0);
    alerts.ingest(firing("retry_storm", "key-2", 0), 0);
    let rules = inhibition_rules();
    let index = rules.index(alerts.firing(0));
    let get = |key: &str, detector: &str| {
        alerts
            .alerts()
            .find(|a| a.labels["api_key_id"] == key && a.detector_is(detector))
            .unwrap()
    };
    let source = get("key-1", "spend_spike");
    let warning1 = get("key-1", "retry_storm");
    let warning2 = get("key-2", "retry_storm");
    assert_eq!(
        index.inhibited_by(&warning1.fingerprint, &warning1.labels),
        Some(source.fingerprint.as_str())
    );
    assert_eq!(
        index.inhibited_by(&warning2.fingerprint, &warning2.labels),
        None,
        "another key"
    );
    assert_eq!(
        index.inhibited_by(&source.fingerprint, &source.labels),
        None
    );
    let silences = SilenceStore::new();
    let muter = Muter {
        silences: &silences,
        inhibitions: index,
        now: 0,
    };
    assert!(muter.is_muted(warning1) && !muter.is_muted(warning2));
}

trait DetectorIs {
    fn detector_is(&self, detector: &str) -> bool;
}

impl DetectorIs for TrackedAlert {
    fn detector_is(&self, detector: &str) -> bool {
        self.alert.detector == detector
    }
}

#[test]
fn equal_labels_missing_on_both_sides_are_equal_and_nothing_inhibits_itself() {
    let rule = |source: &str, target: &str, equal: &[&str]| Inhibitor {
        rules: vec![InhibitRule {
            source: crate::matcher::parse_list(source).unwrap(),
            target: crate::matcher::parse_list(target).unwrap(),
            equal: equal.iter().map(|s| (*s).to_owned()).collect(),
        }],
    };
    let alert = |fp: &str, pairs: &[(&str, &str)]| TrackedAlert {
        fingerprint: fp.into(),
        labels: labels(pairs),
        ..tracked_template()
    };
    let src = alert("s", &[("severity", "critical")]);
    let dst = alert("t", &[("severity", "warning")]);
    let inhibitor = rule(
        r#"severity="critical""#,
        r#"severity="warning""#,
        &["project"],
    );
    let index = inhibitor.index([&src]);
    assert_eq!(
        index.inhibited_by("t", &dst.labels),
        Some("s"),
        "project missing on both"
    );
    // One rule whose two sides both match both alerts: neither mutes the other.
    let both = rule(r#"detector="x""#, r#"detector="x""#, &[]);
    let a = alert("a", &[("detector", "x")]);
    let b = alert("b", &[("detector", "x")]);
    let index = both.index([&a, &b]);
    assert_eq!(index.inhibited_by("a", &a.labels), None);
    assert_eq!(index.inhibited_by("b", &b.labels), None);
}

fn tracked_template() -> TrackedAlert {
    let mut alerts = AlertStore::new(LifecycleConfig::default());
    alerts.ingest(firing("x", "y", 0), 0);
    let first = alerts.alerts().next().unwrap().clone();
    first
}

#[test]
fn a_merged_silence_wins_only_when_it_changed_later() {
    let mut here = SilenceStore::new();
    let mut there = SilenceStore::new();
    let created = there
        .create(
            new_silence(r#"{detector="spend_spike"}"#, None, 10_000),
            1_000,
        )
        .unwrap()
        .clone();
    assert!(here.merge(created.clone()), "new here");
    assert!(
        !here.merge(created.clone()),
        "the same copy again changes nothing"
    );
    let expired = there.expire(&created.id, 2_000).unwrap().clone();
    assert!(here.merge(expired.clone()));
    assert_eq!(
        here.get(&created.id).unwrap().state(2_500),
        SilenceState::Expired
    );
    assert!(
        !here.merge(created),
        "an older copy does not bring the silence back"
    );
    assert_eq!(here.get(&expired.id), Some(&expired));
}

#[test]
fn an_expiry_in_the_same_millisecond_as_the_creation_still_wins_the_merge() {
    let mut here = SilenceStore::new();
    let mut there = SilenceStore::new();
    let created = there
        .create(
            new_silence(r#"{detector="leaked_key"}"#, None, 10_000),
            1_000,
        )
        .unwrap()
        .clone();
    here.merge(created.clone());
    let expired = there.expire(&created.id, 1_000).unwrap().clone();
    assert!(expired.updated_at_ms > created.updated_at_ms);
    assert!(here.merge(expired));
    assert_eq!(
        here.get(&created.id).unwrap().state(1_000),
        SilenceState::Expired
    );
    let mut same_time = created.clone();
    same_time.ends_at_ms = 5_000;
    let mut other = SilenceStore::new();
    other.merge(created.clone());
    assert!(
        other.merge(same_time),
        "at the same time, the earlier end wins"
    );
    assert!(!other.merge(created), "and stays");
}
