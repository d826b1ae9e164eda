-- The detectors' outbox: which alert state changes (rows of `alerts`) Kafka has acknowledged.
-- A detector writes an `alerts` row when it decides a change (firing, a higher severity,
-- resolved), publishes it to `tripline.alerts` (acks=all), and adds a row here once Kafka has
-- it. A row of `alerts` with no row here is still pending: the detector retries it, and at
-- start-up reloads the pending changes of its shard and sends them. The pair is matched on
-- (fingerprint, emitted_at, status, severity). Decided but not yet published:
--   SELECT emitted_at, fingerprint, status, summary FROM {db}.alerts
--   WHERE (fingerprint, emitted_at, status, severity) NOT IN
--         (SELECT fingerprint, emitted_at, status, severity FROM {db}.alert_publications)

CREATE TABLE IF NOT EXISTS {db}.alert_publications
(
    fingerprint String,
    emitted_at DateTime('UTC'),
    status Enum8('firing' = 1, 'resolved' = 2),
    severity Enum8('info' = 1, 'warning' = 2, 'critical' = 3),
    published_at DateTime('UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(emitted_at)
ORDER BY (fingerprint, emitted_at);

-- Alerts decided before this table existed were published (or given up) by the detector that
-- decided them: they are not pending. Run once with the migration; a rerun only adds duplicate
-- acknowledgements, which change nothing.
INSERT INTO {db}.alert_publications
SELECT fingerprint, emitted_at, status, severity, now() FROM {db}.alerts;
