//! Metric names (`tripline_collector_*`), with bounded labels: endpoint, status, source (from
//! the config), outcome, reason.

pub const REQUESTS: &str = "tripline_collector_requests_total";
pub const REQUEST_SECONDS: &str = "tripline_collector_request_seconds";
pub const EVENTS: &str = "tripline_collector_events_total";
pub const REJECTED: &str = "tripline_collector_rejected_total";
pub const KAFKA_FAILURES: &str = "tripline_collector_kafka_failures_total";

/// Registers descriptions so that `/metrics` explains each series.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "Collector requests answered, by endpoint and HTTP status"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer a collector request, Kafka acknowledgement included"
    );
    describe_counter!(
        EVENTS,
        "Batch items and source records acknowledged by Kafka, by endpoint, source and outcome (accepted, rejected, ignored: not an LLM call)"
    );
    describe_counter!(
        REJECTED,
        "Batch items refused and dead-lettered, by endpoint and reason"
    );
    describe_counter!(
        KAFKA_FAILURES,
        "Batches answered 503 because Kafka did not acknowledge them"
    );
}
