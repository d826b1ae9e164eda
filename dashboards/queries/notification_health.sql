-- Notification delivery health per receiver: how many notifications went out, how many were
-- delivered, retried or failed, how many attempts and how long delivery took, the last error.
-- Reads `notifications`, the alerting service's delivery log (one row per notification outcome:
-- delivered, retry = an attempt failed and another is scheduled, failed = gave up). Until the
-- alerting service creates that table the query fails with "Table ... doesn't exist".
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
-- Columns: receiver, rows, delivered, retried, failed, delivery_rate (delivered / (delivered +
--   failed): settled notifications only, 0..1), avg_attempts and p95_latency_ms (of delivered
--   ones, NULL if none), last_error (latest non-empty), last_failure (NULL if none). Lowest
--   delivery rate first.
SELECT
    receiver,
    count() AS rows,
    countIf(status = 'delivered') AS delivered,
    countIf(status = 'retry') AS retried,
    countIf(status = 'failed') AS failed,
    delivered / greatest(delivered + failed, 1) AS delivery_rate,
    if(delivered > 0, avgIf(attempts, status = 'delivered'), NULL) AS avg_attempts,
    if(delivered > 0, quantileExactIf(0.95)(latency_ms, status = 'delivered'), NULL) AS p95_latency_ms,
    argMaxIf(error, sent_at, error != '') AS last_error,
    if(failed > 0, maxIf(sent_at, status = 'failed'), NULL) AS last_failure
FROM {db}.notifications
WHERE sent_at >= {from} AND sent_at < {to}
GROUP BY receiver
ORDER BY delivery_rate, receiver;
