//! Dead letters: a refused message, why, and where it came from, as a JSON envelope on the
//! dead-letter topic. The payload is the message as received, with secrets already replaced
//! by fingerprints, cut so that the whole envelope fits the broker's message size limit.
//!
//! The size is judged after escaping: a payload of control bytes grows about six times as JSON
//! text, so a message well under the ingest limit could otherwise make a dead letter the broker
//! refuses, and a dead letter that can never be written would hold its partition for ever.

use base64::Engine;
use serde::Serialize;
use tripline_core::event::{Reject, RejectReason};

use crate::process::Source;

/// The payload never keeps more than this, whatever the broker takes.
pub const MAX_DLQ_PAYLOAD_BYTES: usize = 512 * 1024;

/// Room left in a Kafka message for the record key and the batch framing around the envelope.
const RECORD_OVERHEAD_BYTES: usize = 1024;

/// The largest envelope that fits a broker taking `max_message_bytes` per message.
pub fn envelope_limit(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_sub(RECORD_OVERHEAD_BYTES)
        .max(MIN_ENVELOPE_BYTES)
}

/// An envelope without its payload is a few hundred bytes; never aim lower than this.
const MIN_ENVELOPE_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub reason: RejectReason,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub rejected_at_ms: i64,
    /// The (redacted) payload, cut at [`MAX_DLQ_PAYLOAD_BYTES`].
    pub payload: Vec<u8>,
    pub payload_bytes: usize,
}

#[derive(Serialize)]
struct Envelope<'a> {
    reason: &'static str,
    detail: &'a str,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    rejected_at: String,
    payload_bytes: usize,
    payload_truncated: bool,
    /// Why no payload is kept at all, when none is (the broker refused the envelope with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_dropped: Option<&'a str>,
    /// The payload as text when it is UTF-8...
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// ...and as base64 when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

impl DeadLetter {
    pub fn new(payload: &[u8], reject: Reject, source: Source<'_>, now_ms: i64) -> Self {
        let kept = &payload[..payload.len().min(MAX_DLQ_PAYLOAD_BYTES)];
        Self {
            reason: reject.reason,
            detail: reject.detail,
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
            rejected_at_ms: now_ms,
            payload: kept.to_vec(),
            payload_bytes: payload.len(),
        }
    }

    /// The Kafka key of the dead letter: where its message came from.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.source_topic, self.source_partition, self.source_offset
        )
    }

    /// The record written to the dead-letter topic: at most `limit` bytes (see
    /// [`envelope_limit`]), keeping as much of the payload as fits after escaping.
    pub fn to_json(&self, limit: usize) -> Vec<u8> {
        let text = std::str::from_utf8(&self.payload).ok();
        let whole = match text {
            Some(text) => self.envelope(Some(text), None, None),
            None => self.envelope(None, Some(&self.payload), None),
        };
        if whole.len() <= limit {
            return whole;
        }
        // Room for the payload: what the envelope costs with an empty one, taken from the limit.
        let bare = match text {
            Some(_) => self.envelope(Some(""), None, None),
            None => self.envelope(None, Some(&[]), None),
        };
        let room = limit.saturating_sub(bare.len());
        let cut = match text {
            Some(text) => self.envelope(Some(escaped_prefix(text, room)), None, None),
            None => self.envelope(
                None,
                Some(&self.payload[..(room / 4 * 3).min(self.payload.len())]),
                None,
            ),
        };
        if cut.len() <= limit {
            cut
        } else {
            self.without_payload("over the dead-letter size limit")
        }
    }

    /// The envelope with no payload at all: what is written when the broker refused the one
    /// with a payload (e.g. its message size limit is lower than configured).
    pub fn without_payload(&self, why: &str) -> Vec<u8> {
        self.envelope(None, None, Some(why))
    }

    fn envelope(
        &self,
        text: Option<&str>,
        binary: Option<&[u8]>,
        dropped: Option<&str>,
    ) -> Vec<u8> {
        let kept = text.map_or(0, str::len) + binary.map_or(0, <[u8]>::len);
        let envelope = Envelope {
            reason: self.reason.as_str(),
            detail: &self.detail,
            source_topic: &self.source_topic,
            source_partition: self.source_partition,
            source_offset: self.source_offset,
            rejected_at: tripline_core::time::format_ms(self.rejected_at_ms),
            payload_bytes: self.payload_bytes,
            payload_truncated: kept < self.payload_bytes,
            payload_dropped: dropped,
            payload: text,
            payload_base64: binary
                .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes)),
        };
        serde_json::to_vec(&envelope).expect("envelope serializes")
    }
}

/// The longest prefix of `text` (cut at a character boundary) whose JSON-escaped form takes at
/// most `room` bytes, counted as serde_json escapes it.
fn escaped_prefix(text: &str, room: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + cost > room {
            return &text[..at];
        }
        used += cost;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source() -> Source<'static> {
        Source {
            topic: "tripline.gateway.requests",
            partition: 3,
            offset: 42,
        }
    }

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter::new(
            payload,
            Reject::new(RejectReason::InvalidJson, "expected value"),
            source(),
            1_000,
        )
    }

    const ONE_MB: usize = 1_000_000;

    #[test]
    fn envelope_carries_reason_source_and_text_payload() {
        let json: serde_json::Value =
            serde_json::from_slice(&letter(b"{oops").to_json(ONE_MB)).unwrap();
        assert_eq!(json["reason"], "invalid_json");
        assert_eq!(json["source_topic"], "tripline.gateway.requests");
        assert_eq!(json["source_partition"], 3);
        assert_eq!(json["source_offset"], 42);
        assert_eq!(json["payload"], "{oops");
        assert_eq!(json["payload_truncated"], false);
        assert!(json.get("payload_base64").is_none());
        assert!(json.get("payload_dropped").is_none());
    }

    #[test]
    fn binary_payloads_are_base64_and_huge_ones_truncated() {
        let mut payload = vec![0xff_u8; MAX_DLQ_PAYLOAD_BYTES + 10];
        payload[0] = 0xfe;
        let json: serde_json::Value =
            serde_json::from_slice(&letter(&payload).to_json(ONE_MB)).unwrap();
        assert_eq!(json["payload_truncated"], true);
        assert_eq!(json["payload_bytes"], MAX_DLQ_PAYLOAD_BYTES + 10);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(json["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded.len(), MAX_DLQ_PAYLOAD_BYTES);
        assert_eq!(decoded[0], 0xfe);
    }

    /// The message that halted ingest: 200,000 bytes of 0x01 escape to 1.2 MB of JSON.
    #[test]
    fn control_bytes_are_cut_after_escaping() {
        let payload = vec![0x01_u8; 200_000];
        let limit = envelope_limit(ONE_MB);
        let out = letter(&payload).to_json(limit);
        assert!(out.len() <= limit, "{} > {limit}", out.len());
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["payload_truncated"], true);
        assert_eq!(json["payload_bytes"], 200_000);
        let kept = json["payload"].as_str().unwrap();
        assert!(kept.chars().all(|c| c == '\u{1}'));
        // Most of the room is used: the cut is not needlessly short.
        assert!(out.len() > limit - 16, "{} of {limit}", out.len());
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let payload = "é\"\n".repeat(1_000);
        let out = letter(payload.as_bytes()).to_json(3_000);
        assert!(out.len() <= 3_000);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(payload.starts_with(json["payload"].as_str().unwrap()));
    }

    #[test]
    fn without_payload_keeps_the_facts() {
        let json: serde_json::Value =
            serde_json::from_slice(&letter(b"{oops").without_payload("refused by the broker"))
                .unwrap();
        assert_eq!(json["payload_dropped"], "refused by the broker");
        assert_eq!(json["payload_truncated"], true);
        assert_eq!(json["source_offset"], 42);
        assert!(json.get("payload").is_none());
    }

    proptest! {
        /// No payload of any size or byte content makes a dead letter the broker would refuse,
        /// and every dead letter is valid JSON whose payload is a prefix of the message.
        #[test]
        fn any_payload_fits_any_limit(
            payload in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..20_000),
                proptest::collection::vec(0u8..0x20, 0..20_000),
                ".{0,5000}".prop_map(String::into_bytes),
            ],
            limit in MIN_ENVELOPE_BYTES..40_000,
        ) {
            let out = letter(&payload).to_json(limit);
            prop_assert!(out.len() <= limit, "{} > {}", out.len(), limit);
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let kept = match (json.get("payload"), json.get("payload_base64")) {
                (Some(text), None) => text.as_str().unwrap().as_bytes().to_vec(),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64.as_str().unwrap())
                    .unwrap(),
                (None, None) => Vec::new(),
                _ => panic!("both payload forms"),
            };
            prop_assert!(payload.starts_with(&kept));
            prop_assert_eq!(json["payload_truncated"].as_bool().unwrap(), kept.len() < payload.len());
        }
    }
}
