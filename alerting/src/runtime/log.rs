//! The delivery log: one ClickHouse `notifications` row per attempt outcome. Rows go through a
//! bounded channel to one writer task that inserts them in batches and retries while ClickHouse
//! is down. The log is a record, not the source of truth (the state file is): when the channel
//! is full a row is dropped and counted rather than blocking delivery.

use std::time::Duration;

use clickhouse::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How many rows may wait for ClickHouse.
const QUEUE: usize = 10_000;
const BATCH: usize = 500;

#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize)]
pub struct NotificationRow {
    /// Unix seconds.
    pub sent_at: u32,
    pub receiver: String,
    /// 1 delivered, 2 retry, 3 failed (`Enum8` in 0004_notifications.sql).
    pub status: i8,
    pub attempts: u16,
    pub latency_ms: u32,
    pub error: String,
    pub kind: String,
    pub notification_id: String,
    pub sequence: u64,
    pub group_key: String,
    pub reason: String,
    pub notification_status: String,
    pub alerts: u16,
}

pub const DELIVERED: i8 = 1;
pub const RETRY: i8 = 2;
pub const FAILED: i8 = 3;

pub fn status_name(status: i8) -> &'static str {
    match status {
        DELIVERED => "delivered",
        RETRY => "retry",
        _ => "failed",
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryLog {
    sender: mpsc::Sender<NotificationRow>,
}

impl DeliveryLog {
    /// The log and its writer task (ends when every sender is dropped, after a last flush;
    /// gives up retrying a batch at `shutdown` after a last try).
    pub fn start(
        clickhouse: Client,
        shutdown: CancellationToken,
    ) -> (DeliveryLog, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_rows(clickhouse, receiver, shutdown));
        (DeliveryLog { sender }, task)
    }

    pub fn record(&self, row: NotificationRow) {
        if self.sender.try_send(row).is_err() {
            metrics::counter!("tripline_alerting_log_rows_dropped_total").increment(1);
            warn!("delivery log queue full: a notifications row is dropped");
        }
    }
}

async fn write_rows(
    clickhouse: Client,
    mut receiver: mpsc::Receiver<NotificationRow>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut delay = Duration::from_millis(200);
        loop {
            match insert(&clickhouse, &batch).await {
                Ok(()) => break,
                Err(err) => {
                    metrics::counter!("tripline_alerting_log_insert_failures_total").increment(1);
                    warn!(%err, rows = batch.len(), "inserting into notifications failed; retrying");
                    if shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
    }
}

async fn insert(
    clickhouse: &Client,
    rows: &[NotificationRow],
) -> Result<(), clickhouse::error::Error> {
    let mut insert = clickhouse
        .insert::<NotificationRow>("notifications")
        .await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
