//! Row types for the raw event tables, in the column order of `0001_raw_events.sql` (then the
//! columns later migrations added).

use clickhouse::Row;
use serde::{Deserialize, Serialize};

pub const GATEWAY_TABLE: &str = "gateway_requests";
pub const PROVIDER_TABLE: &str = "provider_attempts";

/// Where a row's `cost_usd` came from (ClickHouse `Enum8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum CostSource {
    /// The event said what it cost.
    Event = 1,
    /// Computed from the model price table.
    PriceTable = 2,
    /// Neither: the model is not in the price table, so the cost is recorded as 0.
    Unpriced = 3,
}

/// What the writer needs to know of any row to tell whether it is already stored.
pub trait StoredRow {
    fn event_id(&self) -> &str;
    /// The event's content digest: with the id, its identity (see `tripline_core::event::digest`).
    fn event_digest(&self) -> u64;
    /// Event time, seconds since the epoch (which daily partition the row lands in).
    fn ts(&self) -> u32;
    /// Ingestion time, seconds since the epoch.
    fn ingested_at(&self) -> u32;
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct GatewayRow {
    pub event_id: String,
    /// Event time, seconds since the epoch (`DateTime('UTC')`).
    pub ts: u32,
    pub ts_ms: i64,
    pub ingested_at: u32,
    pub api_key_id: String,
    pub key_hint: String,
    pub project: String,
    pub team: String,
    pub user: String,
    pub provider: String,
    pub model: String,
    pub status: u16,
    pub error_type: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: f64,
    /// A [`CostSource`] as its `Enum8` value.
    pub cost_source: i8,
    pub latency_ms: u32,
    pub client_ip: String,
    pub client_country: String,
    pub client_asn: u32,
    pub client_as_org: String,
    pub gateway_region: String,
    pub user_agent: String,
    pub request_id: String,
    pub idempotency_key: String,
    pub attempt: u16,
    pub stream: u8,
    pub src_partition: i32,
    pub src_offset: i64,
    /// Content digest of the event (added by migration 5, hence last).
    pub event_digest: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ProviderRow {
    pub event_id: String,
    pub ts: u32,
    pub ts_ms: i64,
    pub ingested_at: u32,
    pub request_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub attempt: u16,
    pub status: u16,
    pub provider_region: String,
    pub error_type: String,
    pub latency_ms: u32,
    pub retry_after_ms: u32,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cost_usd: f64,
    pub cost_source: i8,
    pub src_partition: i32,
    pub src_offset: i64,
    /// Content digest of the event (added by migration 5, hence last).
    pub event_digest: u64,
}

impl StoredRow for GatewayRow {
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn event_digest(&self) -> u64 {
        self.event_digest
    }
    fn ts(&self) -> u32 {
        self.ts
    }
    fn ingested_at(&self) -> u32 {
        self.ingested_at
    }
}

impl StoredRow for ProviderRow {
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn event_digest(&self) -> u64 {
        self.event_digest
    }
    fn ts(&self) -> u32 {
        self.ts
    }
    fn ingested_at(&self) -> u32 {
        self.ingested_at
    }
}
