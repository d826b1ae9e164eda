//! Refills the duplicate filter from ClickHouse with the event ids ingested within the window,
//! so that a batch stored just before a crash (or by a worker whose partitions we took over)
//! is recognised when Kafka redelivers it.

use clickhouse::Client;
use tracing::info;
use tripline_core::event::EventKind;
use tripline_store::{GATEWAY_TABLE, PROVIDER_TABLE};

use crate::dedup::DedupFilter;

#[derive(clickhouse::Row, serde::Deserialize)]
struct Seen {
    event_id: String,
    event_digest: u64,
    ingested_at: u32,
}

/// Loads ids ingested since `max(now - window, since_s - 5)`; returns the time it read up to.
pub async fn refill(
    clickhouse: &Client,
    dedup: &mut DedupFilter,
    window_s: u32,
    since_s: u32,
) -> Result<u32, clickhouse::error::Error> {
    let now_s = (super::now_ms() / 1000) as u32;
    // A few seconds of overlap: `ingested_at` has second precision.
    let from_s = now_s
        .saturating_sub(window_s)
        .max(since_s.saturating_sub(5));
    let mut loaded = 0usize;
    for (kind, table) in [
        (EventKind::Gateway, GATEWAY_TABLE),
        (EventKind::Provider, PROVIDER_TABLE),
    ] {
        let mut cursor = clickhouse
            .query_raw(&format!(
                "SELECT event_id, event_digest, toUInt32(ingested_at) FROM {table} WHERE ingested_at >= toDateTime({from_s})"
            ))
            .fetch::<Seen>()?;
        while let Some(seen) = cursor.next().await? {
            dedup.remember(kind, &seen.event_id, seen.event_digest, seen.ingested_at);
            loaded += 1;
        }
    }
    info!(loaded, from_s, "duplicate filter refilled from clickhouse");
    Ok(now_s)
}
