-- Alert timeline: alert state changes per time bucket, one series per detector and status
-- (an alert writes one row when it fires, re-fires at a higher severity, and resolves).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {bucket_s}    bucket width in seconds, e.g. 60 (Grafana: $__interval_s)
-- Columns: time (bucket start), series ('<detector> <status>', e.g. 'spend_spike firing'),
--   alerts (rows in the bucket). Long format: Grafana draws one series each.
SELECT
    toDateTime(intDiv(toUInt32(emitted_at), {bucket_s}) * {bucket_s}, 'UTC') AS time,
    concat(detector, ' ', toString(status)) AS series,
    count() AS alerts
FROM {db}.alerts
WHERE emitted_at >= {from} AND emitted_at < {to}
GROUP BY time, series
ORDER BY time, series;
