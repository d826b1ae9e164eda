-- Top spenders: the 20 API keys that spent the most in the range, with their share of all
-- keys' spend and their error rate.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
-- Columns: api_key_id, project (the key's latest), requests, spend_usd, share (of the spend of
--   all keys in the range, 0..1), error_rate (requests answered 4xx/5xx, 0..1).
SELECT
    api_key_id,
    key_project AS project,
    n_requests AS requests,
    spend_usd,
    spend_usd / greatest(
        (
            SELECT sumMerge(cost_usd)
            FROM {db}.rollup_key_1m
            WHERE minute >= toStartOfMinute({from}) AND minute < {to}
        ),
        1e-9) AS share,
    n_errors / n_requests AS error_rate
FROM
(
    SELECT
        api_key_id,
        anyLastMerge(project) AS key_project,
        countMerge(requests) AS n_requests,
        sumMerge(cost_usd) AS spend_usd,
        sumMerge(errors_auth) + sumMerge(errors_rate_limited) + sumMerge(errors_client) + sumMerge(errors_server) AS n_errors
    FROM {db}.rollup_key_1m
    WHERE minute >= toStartOfMinute({from}) AND minute < {to}
    GROUP BY api_key_id
)
ORDER BY spend_usd DESC, api_key_id
LIMIT 20;
