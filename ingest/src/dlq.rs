//! Dead letters: a refused message, why, and where it came from, as a JSON envelope on the
//! dead-letter topic. The payload is the message as received, with secrets already replaced
//! by fingerprints; very large payloads keep their first [`MAX_DLQ_PAYLOAD_BYTES`] bytes.

use base64::Engine;
use serde::Serialize;
use tripline_core::event::{Reject, RejectReason};

use crate::process::Source;

/// Keeps dead letters under the default Kafka message size limit (1 MB) after base64.
pub const MAX_DLQ_PAYLOAD_BYTES: usize = 512 * 1024;

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

    /// The record written to the dead-letter topic.
    pub fn to_json(&self) -> Vec<u8> {
        let text = std::str::from_utf8(&self.payload).ok();
        let envelope = Envelope {
            reason: self.reason.as_str(),
            detail: &self.detail,
            source_topic: &self.source_topic,
            source_partition: self.source_partition,
            source_offset: self.source_offset,
            rejected_at: tripline_core::time::format_ms(self.rejected_at_ms),
            payload_bytes: self.payload_bytes,
            payload_truncated: self.payload.len() < self.payload_bytes,
            payload: text,
            payload_base64: match text {
                Some(_) => None,
                None => Some(base64::engine::general_purpose::STANDARD.encode(&self.payload)),
            },
        };
        serde_json::to_vec(&envelope).expect("envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source<'static> {
        Source {
            topic: "tripline.gateway.requests",
            partition: 3,
            offset: 42,
        }
    }

    #[test]
    fn envelope_carries_reason_source_and_text_payload() {
        let letter = DeadLetter::new(
            b"{oops",
            Reject::new(RejectReason::InvalidJson, "key must be a string"),
            source(),
            1_000,
        );
        let json: serde_json::Value = serde_json::from_slice(&letter.to_json()).unwrap();
        assert_eq!(json["reason"], "invalid_json");
        assert_eq!(json["source_topic"], "tripline.gateway.requests");
        assert_eq!(json["source_partition"], 3);
        assert_eq!(json["source_offset"], 42);
        assert_eq!(json["payload"], "{oops");
        assert_eq!(json["payload_truncated"], false);
        assert!(json.get("payload_base64").is_none());
    }

    #[test]
    fn binary_payloads_are_base64_and_huge_ones_truncated() {
        let mut payload = vec![0xff_u8; MAX_DLQ_PAYLOAD_BYTES + 10];
        payload[0] = 0xfe;
        let letter = DeadLetter::new(
            &payload,
            Reject::new(RejectReason::Oversize, "too big"),
            source(),
            0,
        );
        let json: serde_json::Value = serde_json::from_slice(&letter.to_json()).unwrap();
        assert_eq!(json["payload_truncated"], true);
        assert_eq!(json["payload_bytes"], MAX_DLQ_PAYLOAD_BYTES + 10);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(json["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded.len(), MAX_DLQ_PAYLOAD_BYTES);
        assert_eq!(decoded[0], 0xfe);
    }
}
