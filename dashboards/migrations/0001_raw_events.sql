-- Raw contract-v1 events, one row per accepted event (duplicates are dropped by ingest).
-- Written for ClickHouse 18.16 and current releases alike: no DateTime64, no LowCardinality, no TTL.
-- `ts` is the event time (second precision, UTC) for partitioning and time filters; `ts_ms` keeps
-- the exact epoch milliseconds. `src_partition`/`src_offset` say which Kafka message a row came from.

CREATE TABLE IF NOT EXISTS {db}.gateway_requests
(
    event_id String,
    ts DateTime('UTC'),
    ts_ms Int64,
    ingested_at DateTime('UTC'),
    api_key_id String,
    key_hint String,
    project String,
    team String,
    user String,
    provider String,
    model String,
    status UInt16,
    error_type String,
    prompt_tokens UInt32,
    completion_tokens UInt32,
    cost_usd Float64,
    cost_source Enum8('event' = 1, 'price_table' = 2, 'unpriced' = 3),
    latency_ms UInt32,
    client_ip String,
    client_country String,
    client_asn UInt32,
    client_as_org String,
    gateway_region String,
    user_agent String,
    request_id String,
    idempotency_key String,
    attempt UInt16,
    stream UInt8,
    src_partition Int32,
    src_offset Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (api_key_id, ts, event_id);

CREATE TABLE IF NOT EXISTS {db}.provider_attempts
(
    event_id String,
    ts DateTime('UTC'),
    ts_ms Int64,
    ingested_at DateTime('UTC'),
    request_id String,
    api_key_id String,
    provider String,
    model String,
    attempt UInt16,
    status UInt16,
    provider_region String,
    error_type String,
    latency_ms UInt32,
    retry_after_ms UInt32,
    prompt_tokens UInt32,
    completion_tokens UInt32,
    cost_usd Float64,
    cost_source Enum8('event' = 1, 'price_table' = 2, 'unpriced' = 3),
    src_partition Int32,
    src_offset Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (provider, model, ts, event_id);
