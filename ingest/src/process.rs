//! One message in, one outcome out: a row to insert, a duplicate to drop, or a dead letter.
//! Pure CPU work with no IO, so it is tested here without Kafka or ClickHouse.

use std::path::PathBuf;

use tracing::info;
use tripline_core::config::{EnrichConfig, IngestConfig};
use tripline_core::event::{self, Event, EventKind, GatewayRequest, ProviderAttempt, Reject};
use tripline_core::event::{RejectReason, ValidationRules};
use tripline_core::price::{PriceTable, PriceTableError};
use tripline_core::secret::{FingerprintKeyError, Fingerprinter};
use tripline_store::{GatewayRow, ProviderRow};

use crate::dedup::{DedupFilter, Sighting};
use crate::dlq::DeadLetter;
use crate::enrich::{Coster, GeoIp, GeoIpError};

/// Where a message came from in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Gateway(Box<GatewayRow>),
    Provider(Box<ProviderRow>),
    Duplicate,
    Dead(Box<DeadLetter>),
}

pub struct Processor {
    pub fingerprinter: Fingerprinter,
    pub geo: GeoIp,
    pub coster: Coster,
    pub dedup: DedupFilter,
    pub max_message_bytes: usize,
    pub max_future_skew_ms: i64,
}

/// Why the config does not make a processor.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    FingerprintKey(#[from] FingerprintKeyError),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error("enrich.prices: cannot read {}: {source}", path.display())]
    ReadPrices {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enrich.prices: {}: {source}", path.display())]
    Prices {
        path: PathBuf,
        source: PriceTableError,
    },
}

impl Processor {
    /// The processor `[enrich]` and `[ingest]` describe, fingerprinting keys with `secret`.
    /// `resolve` places the config's relative paths (the binary resolves them against the
    /// config file's directory).
    pub fn from_config(
        enrich: &EnrichConfig,
        ingest: &IngestConfig,
        secret: &[u8],
        resolve: impl Fn(&str) -> PathBuf,
    ) -> Result<Self, BuildError> {
        let fingerprinter = Fingerprinter::new(secret)?;
        let country = enrich.country_db.as_deref().map(&resolve);
        let asn = enrich.asn_db.as_deref().map(&resolve);
        let geo = GeoIp::open(country.as_deref(), asn.as_deref())?;
        let prices = match &enrich.prices {
            None => PriceTable::builtin(),
            Some(path) => {
                let path = resolve(path);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(source) => return Err(BuildError::ReadPrices { path, source }),
                };
                PriceTable::from_json(&text)
                    .map_err(|source| BuildError::Prices { path, source })?
            }
        };
        info!(models = prices.len(), "price table loaded");
        Ok(Processor {
            fingerprinter,
            geo,
            coster: Coster::new(prices),
            dedup: DedupFilter::new(ingest.dedup_window_s as u32, ingest.dedup_max_entries),
            max_message_bytes: ingest.max_message_bytes,
            max_future_skew_ms: ingest.max_future_skew_ms,
        })
    }

    /// Handles one message. `now_ms` is the wall clock (for skew checks and `ingested_at`).
    pub fn process(
        &mut self,
        kind: EventKind,
        payload: &[u8],
        source: Source<'_>,
        now_ms: i64,
    ) -> Outcome {
        // Redact first: nothing below, not even a dead letter, may see a raw secret.
        let payload = self.fingerprinter.redact(payload);
        let dead = |reject: Reject| {
            Outcome::Dead(Box::new(DeadLetter::new(&payload, reject, source, now_ms)))
        };
        if payload.len() > self.max_message_bytes {
            return dead(Reject::new(
                RejectReason::Oversize,
                format!(
                    "message is {} bytes (max {})",
                    payload.len(),
                    self.max_message_bytes
                ),
            ));
        }
        let rules = ValidationRules {
            now_ms,
            max_future_skew_ms: self.max_future_skew_ms,
        };
        let event = match event::decode(kind, &payload, &rules) {
            Ok(event) => event,
            Err(reject) => return dead(reject),
        };
        let now_s = (now_ms / 1000) as u32;
        let digest = event.digest();
        match self.dedup.sight(kind, event.event_id(), digest, now_s) {
            Sighting::First => {}
            Sighting::Duplicate => return Outcome::Duplicate,
            Sighting::Collision => {
                // Rare, and worth a look (a client setting ids, or two sources numbering alike).
                metrics::counter!(crate::metrics::ID_COLLISIONS).increment(1);
            }
        }
        match event {
            Event::Gateway(request) => {
                Outcome::Gateway(Box::new(self.gateway_row(request, digest, source, now_s)))
            }
            Event::Provider(attempt) => {
                Outcome::Provider(Box::new(self.provider_row(attempt, digest, source, now_s)))
            }
        }
    }

    fn gateway_row(
        &mut self,
        e: GatewayRequest,
        event_digest: u64,
        source: Source<'_>,
        now_s: u32,
    ) -> GatewayRow {
        let geo = e
            .client_ip
            .map(|ip| self.geo.lookup(ip))
            .unwrap_or_default();
        let (cost_usd, cost_source) = self.coster.cost(
            e.cost_usd,
            &e.provider,
            &e.model,
            e.prompt_tokens,
            e.completion_tokens,
        );
        GatewayRow {
            ts: (e.ts_ms / 1000) as u32,
            ts_ms: e.ts_ms,
            ingested_at: now_s,
            cost_usd,
            cost_source: cost_source as i8,
            client_ip: e.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            // The event's own country wins over the lookup.
            client_country: if e.client_country.is_empty() {
                geo.country
            } else {
                e.client_country
            },
            client_asn: geo.asn,
            client_as_org: geo.as_org,
            stream: u8::from(e.stream),
            src_partition: source.partition,
            src_offset: source.offset,
            event_digest,
            event_id: e.event_id,
            api_key_id: e.api_key_id,
            key_hint: e.key_hint,
            project: e.project,
            team: e.team,
            user: e.user,
            provider: e.provider,
            model: e.model,
            status: e.status,
            error_type: e.error_type,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            latency_ms: e.latency_ms,
            gateway_region: e.gateway_region,
            user_agent: e.user_agent,
            request_id: e.request_id,
            idempotency_key: e.idempotency_key,
            attempt: e.attempt,
        }
    }

    fn provider_row(
        &mut self,
        e: ProviderAttempt,
        event_digest: u64,
        source: Source<'_>,
        now_s: u32,
    ) -> ProviderRow {
        let (cost_usd, cost_source) = self.coster.cost(
            e.cost_usd,
            &e.provider,
            &e.model,
            e.prompt_tokens,
            e.completion_tokens,
        );
        ProviderRow {
            ts: (e.ts_ms / 1000) as u32,
            ts_ms: e.ts_ms,
            ingested_at: now_s,
            cost_usd,
            cost_source: cost_source as i8,
            src_partition: source.partition,
            src_offset: source.offset,
            event_digest,
            event_id: e.event_id,
            request_id: e.request_id,
            api_key_id: e.api_key_id,
            provider: e.provider,
            model: e.model,
            attempt: e.attempt,
            status: e.status,
            provider_region: e.provider_region,
            error_type: e.error_type,
            latency_ms: e.latency_ms,
            retry_after_ms: e.retry_after_ms,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
        }
    }
}

#[cfg(test)]
mod tests;
