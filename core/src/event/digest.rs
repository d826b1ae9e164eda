//! The content digest of an event: what tells a true redelivery (the same event again) from a
//! different event that happens to carry the same `event_id`.
//!
//! `event_id` alone is not an identity: clients can set it (LiteLLM copies the client's
//! `x-litellm-call-id` header), and two gateways may both number their events from 1. So a
//! repeat counts as a duplicate only when its contract fields are all equal. The digest covers
//! the decoded fields, not the bytes, so unknown fields and formatting do not matter; it is
//! XXH3-64 with a fixed seed, stored with the row so that any worker recognises it after a
//! restart or a rebalance.

use std::net::IpAddr;

use xxhash_rust::xxh3::Xxh3;

use super::{Event, GatewayRequest, ProviderAttempt};

/// Fixed forever: stored digests are compared with freshly computed ones.
const SEED: u64 = 0x7472_6970_6c69_6e65; // "tripline"

/// Feeds fields into the hash so that no two field sequences share an encoding.
struct Digest(Xxh3);

impl Digest {
    fn new(kind: u8) -> Self {
        let mut hash = Xxh3::with_seed(SEED);
        hash.update(&[kind]);
        Self(hash)
    }

    fn text(&mut self, value: &str) -> &mut Self {
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
        self
    }

    fn int(&mut self, value: i64) -> &mut Self {
        self.0.update(&value.to_le_bytes());
        self
    }

    fn cost(&mut self, value: Option<f64>) -> &mut Self {
        match value {
            Some(cost) => self.int(1).int(cost.to_bits() as i64),
            None => self.int(0),
        }
    }

    fn ip(&mut self, value: Option<IpAddr>) -> &mut Self {
        match value {
            Some(IpAddr::V4(ip)) => self.int(4).text(&ip.to_string()),
            Some(IpAddr::V6(ip)) => self.int(6).text(&ip.to_string()),
            None => self.int(0),
        }
    }

    fn finish(&self) -> u64 {
        self.0.digest()
    }
}

impl GatewayRequest {
    /// The digest of every contract field (see the module doc).
    pub fn digest(&self) -> u64 {
        Digest::new(b'g')
            .text(&self.event_id)
            .int(self.ts_ms)
            .text(&self.api_key_id)
            .text(&self.model)
            .int(self.status.into())
            .text(&self.key_hint)
            .text(&self.project)
            .text(&self.team)
            .text(&self.user)
            .text(&self.provider)
            .text(&self.error_type)
            .int(self.prompt_tokens.into())
            .int(self.completion_tokens.into())
            .cost(self.cost_usd)
            .int(self.latency_ms.into())
            .ip(self.client_ip)
            .text(&self.client_country)
            .text(&self.gateway_region)
            .text(&self.user_agent)
            .text(&self.request_id)
            .text(&self.idempotency_key)
            .int(self.attempt.into())
            .int(self.stream.into())
            .finish()
    }
}

impl ProviderAttempt {
    /// The digest of every contract field (see the module doc).
    pub fn digest(&self) -> u64 {
        Digest::new(b'p')
            .text(&self.event_id)
            .int(self.ts_ms)
            .text(&self.request_id)
            .text(&self.api_key_id)
            .text(&self.provider)
            .text(&self.model)
            .int(self.attempt.into())
            .int(self.status.into())
            .text(&self.provider_region)
            .text(&self.error_type)
            .int(self.latency_ms.into())
            .int(self.retry_after_ms.into())
            .int(self.prompt_tokens.into())
            .int(self.completion_tokens.into())
            .cost(self.cost_usd)
            .finish()
    }
}

impl Event {
    pub fn digest(&self) -> u64 {
        match self {
            Event::Gateway(e) => e.digest(),
            Event::Provider(e) => e.digest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GatewayRequest {
        GatewayRequest {
            event_id: "evt-1".into(),
            ts_ms: 1_700_000_000_000,
            api_key_id: "key-1".into(),
            model: "gpt-4o".into(),
            status: 200,
            ..GatewayRequest::default()
        }
    }

    #[test]
    fn equal_events_have_equal_digests() {
        assert_eq!(request().digest(), request().digest());
    }

    #[test]
    fn any_field_changes_the_digest() {
        let base = request().digest();
        let changed = [
            GatewayRequest {
                api_key_id: "key-2".into(),
                ..request()
            },
            GatewayRequest {
                ts_ms: 1_700_000_000_001,
                ..request()
            },
            GatewayRequest {
                prompt_tokens: 1,
                ..request()
            },
            GatewayRequest {
                cost_usd: Some(0.0),
                ..request()
            },
            GatewayRequest {
                client_ip: Some("10.0.0.1".parse().unwrap()),
                ..request()
            },
            GatewayRequest {
                stream: true,
                ..request()
            },
        ];
        for event in changed {
            assert_ne!(event.digest(), base, "{event:?}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = GatewayRequest {
            project: "ab".into(),
            team: "c".into(),
            ..request()
        };
        let b = GatewayRequest {
            project: "a".into(),
            team: "bc".into(),
            ..request()
        };
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn kinds_never_share_a_digest() {
        let attempt = ProviderAttempt {
            event_id: "evt-1".into(),
            ts_ms: 1_700_000_000_000,
            api_key_id: "key-1".into(),
            ..ProviderAttempt::default()
        };
        assert_ne!(attempt.digest(), request().digest());
    }

    /// The algorithm is stored with the rows: a change would make every stored event look new.
    #[test]
    fn digest_is_stable_across_releases() {
        assert_eq!(request().digest(), 5_988_865_779_370_807_510);
    }
}
