use super::*;
use proptest::prelude::*;
use std::path::Path;
use tripline_core::price::PriceTable;

const NOW: i64 = 1_795_687_200_000;

fn processor() -> Processor {
    let geo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/geo");
    Processor {
        fingerprinter: Fingerprinter::new(b"test-fingerprint-secret").unwrap(),
        geo: GeoIp::open(Some(&geo.join("country.mmdb")), Some(&geo.join("asn.mmdb"))).unwrap(),
        coster: Coster::new(PriceTable::builtin()),
        dedup: DedupFilter::new(3_600, 10_000),
        max_message_bytes: 4_096,
        max_future_skew_ms: 300_000,
    }
}

fn source(offset: i64) -> Source<'static> {
    Source {
        topic: "gw",
        partition: 1,
        offset,
    }
}

fn gateway_row(outcome: Outcome) -> GatewayRow {
    match outcome {
        Outcome::Gateway(row) => *row,
        other => panic!("expected a gateway row, got {other:?}"),
    }
}

#[test]
fn enriches_country_asn_and_cost() {
    let mut p = processor();
    let raw = br#"{"event_id":"e1","ts":1795687100000,"api_key_id":"k1","model":"gpt-4o","provider":"openai","status":200,"prompt_tokens":1000,"completion_tokens":100,"client_ip":"8.8.8.8"}"#;
    let row = gateway_row(p.process(EventKind::Gateway, raw, source(7), NOW));
    assert_eq!(row.client_country, "US");
    assert_eq!(row.client_asn, 15169);
    assert!(row.cost_usd > 0.0);
    assert_eq!(
        row.cost_source,
        tripline_store::CostSource::PriceTable as i8
    );
    assert_eq!((row.src_partition, row.src_offset), (1, 7));
    assert_eq!(row.ts, 1_795_687_100);
    assert_eq!(row.ingested_at, (NOW / 1000) as u32);
}

#[test]
fn stated_country_wins_over_lookup() {
    let mut p = processor();
    let raw = br#"{"event_id":"e1","ts":1795687100000,"api_key_id":"k1","model":"m","status":200,"client_ip":"8.8.8.8","client_country":"fr"}"#;
    let row = gateway_row(p.process(EventKind::Gateway, raw, source(1), NOW));
    assert_eq!(row.client_country, "FR");
    assert_eq!(row.client_asn, 15169);
}

#[test]
fn unknown_model_costs_zero_and_is_marked_unpriced() {
    let mut p = processor();
    let raw = br#"{"event_id":"e1","ts":1795687100000,"api_key_id":"k1","model":"homegrown-llm","status":200,"prompt_tokens":5}"#;
    let row = gateway_row(p.process(EventKind::Gateway, raw, source(1), NOW));
    assert_eq!(row.cost_usd, 0.0);
    assert_eq!(row.cost_source, tripline_store::CostSource::Unpriced as i8);
}

#[test]
fn duplicates_are_dropped() {
    let mut p = processor();
    let raw =
        br#"{"event_id":"dup","ts":1795687100000,"api_key_id":"k1","model":"m","status":200}"#;
    assert!(matches!(
        p.process(EventKind::Gateway, raw, source(1), NOW),
        Outcome::Gateway(_)
    ));
    assert_eq!(
        p.process(EventKind::Gateway, raw, source(2), NOW),
        Outcome::Duplicate
    );
}

#[test]
fn raw_keys_never_reach_rows_or_dead_letters() {
    let mut p = processor();
    let key = "sk-live-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let good = format!(
        r#"{{"event_id":"e1","ts":1795687100000,"api_key":"{key}","model":"m","status":200,"user_agent":"x {key}"}}"#
    );
    let row = gateway_row(p.process(EventKind::Gateway, good.as_bytes(), source(1), NOW));
    assert!(row.api_key_id.starts_with("fp_"));
    assert!(!format!("{row:?}").contains(key));

    let bad = format!(r#"{{"event_id":"e2","api_key":"{key}" broken"#);
    let Outcome::Dead(letter) = p.process(EventKind::Gateway, bad.as_bytes(), source(2), NOW)
    else {
        panic!("expected a dead letter");
    };
    assert!(!String::from_utf8_lossy(&letter.to_json(1_000_000)).contains(key));
    assert!(!letter.detail.contains(key));
}

#[test]
fn oversize_messages_are_dead_lettered() {
    let mut p = processor();
    let raw = vec![b' '; 5_000];
    let Outcome::Dead(letter) = p.process(EventKind::Gateway, &raw, source(3), NOW) else {
        panic!("expected a dead letter");
    };
    assert_eq!(letter.reason, RejectReason::Oversize);
    assert_eq!(
        (letter.source_topic.as_str(), letter.source_offset),
        ("gw", 3)
    );
}

#[test]
fn provider_attempts_become_provider_rows() {
    let mut p = processor();
    let raw = br#"{"event_id":"p1","ts":1795687100000,"request_id":"r1","api_key_id":"k1","provider":"openai","model":"gpt-4o-mini","attempt":2,"status":429,"retry_after_ms":500}"#;
    let Outcome::Provider(row) = p.process(EventKind::Provider, raw, source(4), NOW) else {
        panic!("expected a provider row");
    };
    assert_eq!((row.attempt, row.status, row.retry_after_ms), (2, 429, 500));
    assert_eq!(
        row.cost_source,
        tripline_store::CostSource::PriceTable as i8
    );
}

#[test]
fn a_redelivery_is_a_duplicate_but_a_shared_id_is_not() {
    let mut p = processor();
    let event = |key: &str, tokens: u32| {
        format!(
            r#"{{"event_id":"evt-1","ts":1795687100000,"api_key_id":"{key}","model":"m","status":200,"prompt_tokens":{tokens}}}"#
        )
    };
    let first = gateway_row(p.process(
        EventKind::Gateway,
        event("k1", 5).as_bytes(),
        source(1),
        NOW,
    ));
    // Kafka redelivers the same message, or a producer resends it reformatted: one event.
    assert_eq!(
        p.process(
            EventKind::Gateway,
            event("k1", 5).as_bytes(),
            source(1),
            NOW
        ),
        Outcome::Duplicate
    );
    let spaced = event("k1", 5).replace(',', ", ");
    assert_eq!(
        p.process(EventKind::Gateway, spaced.as_bytes(), source(2), NOW),
        Outcome::Duplicate
    );
    // Another key, or other content, under the same id: different events, both stored.
    let other_key = gateway_row(p.process(
        EventKind::Gateway,
        event("k2", 5).as_bytes(),
        source(3),
        NOW,
    ));
    let other_content = gateway_row(p.process(
        EventKind::Gateway,
        event("k1", 6).as_bytes(),
        source(4),
        NOW,
    ));
    assert_ne!(first.event_digest, other_key.event_digest);
    assert_ne!(first.event_digest, other_content.event_digest);
    assert_eq!(
        p.process(
            EventKind::Gateway,
            event("k2", 5).as_bytes(),
            source(3),
            NOW
        ),
        Outcome::Duplicate
    );
}

proptest! {
    /// No message, of any size or byte content, stops ingest: each one yields an outcome, and a
    /// dead letter always fits the broker.
    #[test]
    fn any_bytes_yield_an_outcome_that_fits(
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8_192),
            proptest::collection::vec(0u8..0x20, 0..8_192),
            "\\{\"event_id\":\".{0,40}\",\"ts\":[0-9]{0,14},\"api_key_id\":\".{0,40}\",\"model\":\".{0,20}\",\"status\":[0-9]{0,4}\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        let mut p = processor();
        let limit = crate::dlq::envelope_limit(1_000_000);
        match p.process(EventKind::Gateway, &payload, source(1), NOW) {
            Outcome::Dead(letter) => {
                let json = letter.to_json(limit);
                prop_assert!(json.len() <= limit);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
            }
            Outcome::Gateway(_) | Outcome::Duplicate => {}
            Outcome::Provider(_) => prop_assert!(false, "a gateway message became an attempt"),
        }
    }
}
