//! Metric names (`tripline_ingest_*`), with bounded labels: topic, table, reason, partition.

pub const CONSUMED: &str = "tripline_ingest_messages_consumed_total";
pub const INSERTED: &str = "tripline_ingest_rows_inserted_total";
pub const DEAD_LETTERED: &str = "tripline_ingest_dead_letters_total";
pub const DUPLICATES: &str = "tripline_ingest_duplicates_total";
pub const UNPRICED: &str = "tripline_ingest_unpriced_events_total";
pub const INSERT_SECONDS: &str = "tripline_ingest_batch_insert_seconds";
pub const BATCH_ROWS: &str = "tripline_ingest_batch_rows";
pub const INSERT_FAILURES: &str = "tripline_ingest_insert_failures_total";
pub const DLQ_FAILURES: &str = "tripline_ingest_dlq_produce_failures_total";
pub const COMMITS: &str = "tripline_ingest_commits_total";
pub const COMMIT_FAILURES: &str = "tripline_ingest_commit_failures_total";
pub const CONSUMER_LAG: &str = "tripline_ingest_consumer_lag_messages";
pub const CONSUMER_ERRORS: &str = "tripline_ingest_consumer_errors_total";
pub const DEDUP_ENTRIES: &str = "tripline_ingest_dedup_entries";
pub const DEDUP_EVICTED: &str = "tripline_ingest_dedup_evicted_total";
pub const ID_COLLISIONS: &str = "tripline_ingest_id_collisions_total";
pub const DLQ_PAYLOADS_DROPPED: &str = "tripline_ingest_dead_letter_payloads_dropped_total";
pub const DLQ_LOST: &str = "tripline_ingest_dead_letters_lost_total";
pub const STALLED_SECONDS: &str = "tripline_ingest_stalled_seconds";
pub const ROLLUP_REPAIRS: &str = "tripline_ingest_rollup_repairs_total";
pub const ROLLUP_UNREPAIRED: &str = "tripline_ingest_rollup_unrepaired_cells_total";
pub const REFILL_FAILURES: &str = "tripline_ingest_dedup_refill_failures_total";

/// Registers descriptions so that `/metrics` explains each series.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CONSUMED, "Kafka messages consumed, by topic");
    describe_counter!(INSERTED, "Rows inserted into ClickHouse, by table");
    describe_counter!(
        DEAD_LETTERED,
        "Messages sent to the dead-letter topic, by reason"
    );
    describe_counter!(
        DUPLICATES,
        "Events dropped as duplicates of an earlier event_id"
    );
    describe_counter!(
        UNPRICED,
        "Events whose model is not in the price table (cost 0)"
    );
    describe_histogram!(
        INSERT_SECONDS,
        Unit::Seconds,
        "Time to insert one batch, retries included"
    );
    describe_histogram!(BATCH_ROWS, "Rows per inserted batch");
    describe_counter!(
        INSERT_FAILURES,
        "Failed ClickHouse insert attempts (each is retried)"
    );
    describe_counter!(
        DLQ_FAILURES,
        "Failed dead-letter produce attempts (each is retried)"
    );
    describe_counter!(COMMITS, "Offset commits after a stored batch");
    describe_counter!(
        COMMIT_FAILURES,
        "Offset commits that failed (the batch is redelivered and deduplicated)"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages behind the fetch high watermark, by topic and partition"
    );
    describe_counter!(CONSUMER_ERRORS, "Errors reported by the Kafka consumer");
    describe_gauge!(DEDUP_ENTRIES, "Event ids held by the duplicate filter");
    describe_counter!(
        DEDUP_EVICTED,
        "Event ids evicted early because the duplicate filter was full"
    );
    describe_counter!(
        ID_COLLISIONS,
        "Events stored although an earlier, different event had the same event_id"
    );
    describe_counter!(
        DLQ_PAYLOADS_DROPPED,
        "Dead letters the broker refused with their payload, written again without it"
    );
    describe_counter!(
        DLQ_LOST,
        "Dead letters the broker refused even without a payload (logged, then skipped)"
    );
    describe_gauge!(
        STALLED_SECONDS,
        Unit::Seconds,
        "How long the oldest consumed batch has waited to be stored and committed (0 when none waits)"
    );
    describe_counter!(
        ROLLUP_REPAIRS,
        "Raw rows re-derived into a rollup after an insert whose view failed, by rollup table"
    );
    describe_counter!(
        ROLLUP_UNREPAIRED,
        "Rollup cells found short that could not be attributed to one insert, by rollup table"
    );
    describe_counter!(
        REFILL_FAILURES,
        "Failed refills of the duplicate filter from ClickHouse after a rebalance (retried)"
    );
}

/// Starts every counter at 0 for each label value it can take, so that `rate()` and
/// `increase()` rules see the first event instead of a series appearing out of nowhere.
pub fn init(topics: &[&str], tables: &[&str], rollups: &[&str]) {
    use tripline_core::event::RejectReason;
    for topic in topics {
        metrics::counter!(CONSUMED, "topic" => topic.to_string()).increment(0);
    }
    for table in tables {
        metrics::counter!(INSERTED, "table" => table.to_string()).increment(0);
    }
    for rollup in rollups {
        metrics::counter!(ROLLUP_REPAIRS, "table" => rollup.to_string()).increment(0);
        metrics::counter!(ROLLUP_UNREPAIRED, "table" => rollup.to_string()).increment(0);
    }
    for reason in RejectReason::ALL {
        metrics::counter!(DEAD_LETTERED, "reason" => reason.as_str()).increment(0);
    }
    for name in [
        DUPLICATES,
        UNPRICED,
        INSERT_FAILURES,
        DLQ_FAILURES,
        COMMITS,
        COMMIT_FAILURES,
        CONSUMER_ERRORS,
        DEDUP_EVICTED,
        ID_COLLISIONS,
        DLQ_PAYLOADS_DROPPED,
        DLQ_LOST,
        REFILL_FAILURES,
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(STALLED_SECONDS).set(0.0);
}
