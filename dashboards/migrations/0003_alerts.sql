-- Alert history: one row per state change (firing, re-fired with a higher severity, resolved),
-- written by the detectors. The latest row per fingerprint is the alert's current state:
--   SELECT fingerprint, argMax(status, emitted_at) AS status FROM {db}.alerts GROUP BY fingerprint
-- `alert_json` is the full alert as published on Kafka (contract: core/src/alert.rs).

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    emitted_at DateTime('UTC'),
    fingerprint String,
    detector String,
    status Enum8('firing' = 1, 'resolved' = 2),
    severity Enum8('info' = 1, 'warning' = 2, 'critical' = 3),
    api_key_id String,
    project String,
    provider String,
    model String,
    entity String,
    observed Float64,
    expected Float64,
    upper Float64,
    score Float64,
    window_start DateTime('UTC'),
    window_end DateTime('UTC'),
    starts_at DateTime('UTC'),
    summary String,
    alert_json String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(emitted_at)
ORDER BY (detector, fingerprint, emitted_at);
