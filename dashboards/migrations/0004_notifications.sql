-- Notification delivery log, written by the alerting service (`tripline alert`): one row per
-- delivery attempt's outcome. `status`: delivered; retry = the attempt failed and another is
-- scheduled; failed = a configuration error (400/401/403/404/410, SMTP 5xx, missing secret) or
-- the retry budget is spent. `attempts` counts the notification's attempts so far, `latency_ms`
-- is the time from the notification's creation to the end of this attempt. Every row of one
-- notification shares `notification_id` (the webhook's `webhook-id`, the email's Message-ID
-- local part). Read by dashboards/queries/notification_health.sql.

CREATE TABLE IF NOT EXISTS {db}.notifications
(
    sent_at DateTime('UTC'),
    receiver String,
    status Enum8('delivered' = 1, 'retry' = 2, 'failed' = 3),
    attempts UInt16,
    latency_ms UInt32,
    error String,
    kind String,
    notification_id String,
    sequence UInt64,
    group_key String,
    reason String,
    notification_status String,
    alerts UInt16
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (receiver, sent_at);
