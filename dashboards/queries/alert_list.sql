-- Alerts that changed state in the range or were still firing at its end, newest change first,
-- with their latest state and the detector's figures.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
-- Columns: last_change, detector, entity (its labels, e.g. 'api_key_id=k,project=p'), state
--   ('firing' or 'resolved' as of {to}), peak_severity (the highest reached), first_fired,
--   observed_last, expected_last, upper_last, summary_last (of the latest row), fingerprint.
--   At most 200 rows.
SELECT
    max(emitted_at) AS last_change,
    detector,
    entity,
    toString(argMax(status, emitted_at)) AS state,
    toString(argMax(severity, toUInt8(severity))) AS peak_severity,
    min(emitted_at) AS first_fired,
    argMax(observed, emitted_at) AS observed_last,
    argMax(expected, emitted_at) AS expected_last,
    argMax(upper, emitted_at) AS upper_last,
    argMax(summary, emitted_at) AS summary_last,
    fingerprint
FROM {db}.alerts
WHERE emitted_at < {to}
GROUP BY fingerprint, detector, entity
HAVING last_change >= {from} OR state = 'firing'
ORDER BY last_change DESC, fingerprint
LIMIT 200;
