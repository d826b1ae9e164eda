//! Rollups equal to their raw rows, whatever failed.
//!
//! An INSERT into a raw table with materialized views is not atomic: ClickHouse stores the raw
//! part, then runs each view; if one view fails, the INSERT reports an error although the raw
//! rows (and the views before it) are stored. The writer's retry then finds the rows stored and
//! must not send them again, so the failed view's rollup would stay short of them for good.
//!
//! So after a retry finds rows already stored, the failed attempt is examined first: it must
//! have finished on the server (it may still be running its views after the client gave up),
//! and a view must have failed (its error says "while pushing to view", or the query log says
//! so; an attempt that in fact finished needs nothing). Only then is each rollup checked on the
//! cells (minute and group) of those rows: a cell whose rollup counts fewer rows than the raw
//! table by at least our rows is one the view missed, and the view's own SELECT (read from the
//! migrations) is run again for exactly our rows. The check is idempotent, so a repair that
//! fails ambiguously is simply checked again. A deficit must be seen twice, a moment apart:
//! another writer's insert is briefly stored raw before its views run.
//!
//! What is not covered: two workers whose views fail on the same cells at the same moment (a
//! deficit cannot say whose rows it lacks), and a crash between a failed insert and its repair
//! (the redelivery is then a duplicate). Both are logged or counted, not guessed at.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clickhouse::Client;
use tracing::{debug, info, warn};
use tripline_store::{rollup_views, sql_string as quote, RollupView, StoredRow};

use crate::writer::FailedInsert;

/// Queries here list a batch's ids; ClickHouse's default 256 KiB query limit is too small.
const MAX_QUERY_BYTES: &str = "67108864";

/// How long a deficit must last before it counts (see the module doc).
const CONFIRM_AFTER: Duration = Duration::from_millis(500);

/// Rows checked and repaired per query: ClickHouse 18.16 parses each tuple of an IN list as a
/// function call (about four AST nodes), and refuses queries over `max_ast_elements`.
const ROWS_PER_QUERY: usize = 5_000;

/// How long to wait for a failed insert to finish on the server before checking again later.
const FINISH_WAIT: Duration = Duration::from_secs(30);

/// How ClickHouse words an exception raised inside a materialized view during an INSERT.
const VIEW_FAILURE: &str = "while pushing to view";

/// Why the rollups were not checked or could not be repaired (both retried by the writer).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("the failed insert {0} is still running on the server")]
    StillRunning(String),
}

/// A cell: minute (epoch seconds) and the view's group values.
type Cell = (u32, Vec<String>);

#[derive(clickhouse::Row, serde::Deserialize)]
struct CellCount {
    minute: u32,
    groups: Vec<String>,
    rows: u64,
}

/// After `failed` stored `rows` raw: checks every rollup fed by `table` and re-derives the cells
/// a failed view missed. Returns the number of raw rows re-derived (summed over rollups).
pub async fn repair<T: StoredRow>(
    client: &Client,
    table: &str,
    rows: &[&T],
    failed: &FailedInsert,
) -> Result<usize, RepairError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let client = client
        .clone()
        .with_setting("max_query_size", MAX_QUERY_BYTES)
        .with_setting("max_ast_elements", "1000000")
        .with_setting("max_expanded_ast_elements", "1000000");
    wait_finished(&client, &failed.query_id).await?;
    if !view_failed(&client, failed).await? {
        debug!(query_id = %failed.query_id, "the failed insert had finished: rollups complete");
        return Ok(0);
    }
    let mut repaired = 0;
    for slice in rows.chunks(ROWS_PER_QUERY) {
        repaired += repair_slice(&client, table, slice).await?;
    }
    Ok(repaired)
}

/// Waits (a while) until the insert no longer runs: its views may still be writing.
async fn wait_finished(client: &Client, query_id: &str) -> Result<(), RepairError> {
    let deadline = tokio::time::Instant::now() + FINISH_WAIT;
    loop {
        let running: u64 = client
            .query_raw(&format!(
                "SELECT count() FROM system.processes WHERE query_id = {}",
                quote(query_id)
            ))
            .fetch_one()
            .await?;
        if running == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RepairError::StillRunning(query_id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Logged {
    kind: u8,
    exception: String,
}

/// Whether a materialized view failed in the insert: from its error when the server sent one,
/// else from `system.query_log`. Unknown (no log) counts as failed: the count check decides.
async fn view_failed(client: &Client, failed: &FailedInsert) -> Result<bool, RepairError> {
    if failed.error.contains(VIEW_FAILURE) {
        return Ok(true);
    }
    // The log is flushed every few seconds; ask for it now.
    if let Err(err) = client.query_raw("SYSTEM FLUSH LOGS").execute().await {
        debug!(%err, "cannot flush the query log; deciding by counts");
        return Ok(true);
    }
    let logged: Result<Vec<Logged>, _> = client
        .query_raw(&format!(
            "SELECT toUInt8(type), exception FROM system.query_log \
             WHERE event_date >= yesterday() AND query_id = {} AND type != 1",
            quote(&failed.query_id)
        ))
        .fetch_all()
        .await;
    Ok(match logged {
        // QueryFinish (2): the insert completed, views included; only its answer was lost.
        Ok(rows) if rows.iter().any(|r| r.kind == 2) => false,
        Ok(rows) if !rows.is_empty() => rows.iter().any(|r| r.exception.contains(VIEW_FAILURE)),
        Ok(_) | Err(_) => true,
    })
}

/// Checks and repairs one slice of rows against every rollup of `table`.
async fn repair_slice<T: StoredRow>(
    client: &Client,
    table: &str,
    rows: &[&T],
) -> Result<usize, RepairError> {
    let ours = ours_filter(rows);
    let mut repaired = 0;
    for view in rollup_views().iter().filter(|v| v.source == table) {
        let Some(count_column) = view.count_column() else {
            continue;
        };
        if !view_missed_rows(client, view, count_column, &ours).await? {
            continue;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        if !view_missed_rows(client, view, count_column, &ours).await? {
            continue;
        }
        client
            .query_raw(&view.insert_select(&ours))
            .execute()
            .await?;
        metrics::counter!(crate::metrics::ROLLUP_REPAIRS, "table" => view.target.clone())
            .increment(rows.len() as u64);
        info!(
            rollup = %view.target,
            rows = rows.len(),
            "rollup re-derived for raw rows whose view failed"
        );
        repaired += rows.len();
    }
    Ok(repaired)
}

/// Whether the view missed our rows: every cell of ours is short by at least our rows there.
/// Cells short by less (another writer's rows, or part of ours) are reported, not guessed at.
async fn view_missed_rows(
    client: &Client,
    view: &RollupView,
    count_column: &str,
    ours: &str,
) -> Result<bool, clickhouse::error::Error> {
    let minute = view.group_expression("minute");
    let groups: Vec<&str> = view
        .group_by
        .iter()
        .filter(|c| c.as_str() != "minute")
        .map(String::as_str)
        .collect();
    let raw_groups: Vec<String> = groups.iter().map(|g| view.group_expression(g)).collect();
    let raw_cell = format!("({minute}, {})", raw_groups.join(", "));
    let our_cells = format!(
        "SELECT {minute}, {} FROM {} WHERE {ours}",
        raw_groups.join(", "),
        view.source
    );
    let count_in = |sql: String| async move { cell_counts(client, &sql).await };

    let mine = count_in(format!(
        "SELECT toUInt32({minute}) AS m, [{}] AS g, count() FROM {} WHERE {ours} GROUP BY m, g",
        raw_groups.join(", "),
        view.source
    ))
    .await?;
    let (Some(first), Some(last)) = (
        mine.keys().map(|(m, _)| *m).min(),
        mine.keys().map(|(m, _)| *m).max(),
    ) else {
        return Ok(false);
    };
    let raw = count_in(format!(
        "SELECT toUInt32({minute}) AS m, [{}] AS g, count() FROM {} \
         WHERE ts >= toDateTime({first}) AND ts < toDateTime({}) AND {raw_cell} IN ({our_cells}) \
         GROUP BY m, g",
        raw_groups.join(", "),
        view.source,
        last + 60
    ))
    .await?;
    let rolled = count_in(format!(
        "SELECT toUInt32(minute) AS m, [{}] AS g, toUInt64(countMerge({count_column})) FROM {} \
         WHERE minute >= toDateTime({first}) AND minute <= toDateTime({last}) \
         AND (minute, {}) IN ({our_cells}) GROUP BY m, g",
        groups.join(", "),
        view.target,
        groups.join(", ")
    ))
    .await?;

    let short: BTreeSet<&Cell> = mine
        .iter()
        .filter(|(cell, n)| {
            let deficit = raw
                .get(*cell)
                .copied()
                .unwrap_or(0)
                .saturating_sub(rolled.get(*cell).copied().unwrap_or(0));
            deficit >= **n
        })
        .map(|(cell, _)| cell)
        .collect();
    if !short.is_empty() && short.len() < mine.len() {
        metrics::counter!(crate::metrics::ROLLUP_UNREPAIRED, "table" => view.target.clone())
            .increment(short.len() as u64);
        warn!(
            rollup = %view.target,
            short = short.len(),
            of = mine.len(),
            "some cells of a retried batch are short in the rollup; not repairing a part"
        );
        return Ok(false);
    }
    Ok(!short.is_empty())
}

async fn cell_counts(
    client: &Client,
    sql: &str,
) -> Result<BTreeMap<Cell, u64>, clickhouse::error::Error> {
    let rows: Vec<CellCount> = client.query_raw(sql).fetch_all().await?;
    Ok(rows
        .into_iter()
        .map(|c| ((c.minute, c.groups), c.rows))
        .collect())
}

/// SQL selecting exactly `rows` in their raw table: by identity, within their ingestion span.
fn ours_filter<T: StoredRow>(rows: &[&T]) -> String {
    let first = rows.iter().map(|r| r.ingested_at()).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.ingested_at()).max().unwrap_or(0);
    let mut ids = String::with_capacity(rows.len() * 48);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            ids.push_str(", ");
        }
        ids.push_str(&format!(
            "({}, {})",
            quote(row.event_id()),
            row.event_digest()
        ));
    }
    if let [only] = rows {
        // A one-tuple list would read as the tuple itself: say it twice.
        ids.push_str(&format!(
            ", ({}, {})",
            quote(only.event_id()),
            only.event_digest()
        ));
    }
    format!(
        "ingested_at >= toDateTime({first}) AND ingested_at <= toDateTime({last}) \
         AND (event_id, event_digest) IN ({ids})"
    )
}
