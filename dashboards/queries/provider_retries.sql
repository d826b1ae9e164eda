-- Upstream health per provider/model: what the gateway did to serve requests (provider
-- attempts), with error and retry rates and the amplification the retry_storm detector watches.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
-- Columns: provider, model, attempts, successes (status < 400), requests (distinct request ids
--   served), amplification (attempts per success, successes counted as at least 1, as the
--   detector does), retry_share (attempts with attempt > 1, 0..1), error_rate,
--   rate_limited_rate (429), server_error_rate (5xx) (all per attempt, 0..1), latency_p50_ms and
--   latency_p95_ms (t-digest estimates). Worst amplification first.
SELECT
    provider,
    model,
    n_attempts AS attempts,
    n_successes AS successes,
    n_requests AS requests,
    n_attempts / greatest(n_successes, 1) AS amplification,
    n_retries / n_attempts AS retry_share,
    (n_attempts - n_successes) / n_attempts AS error_rate,
    n_rate_limited / n_attempts AS rate_limited_rate,
    n_server_errors / n_attempts AS server_error_rate,
    latency_q[1] AS latency_p50_ms,
    latency_q[2] AS latency_p95_ms
FROM
(
    SELECT
        provider,
        model,
        countMerge(attempts) AS n_attempts,
        sumMerge(successes) AS n_successes,
        uniqIfMerge(requests_served) AS n_requests,
        sumMerge(retries) AS n_retries,
        sumMerge(errors_rate_limited) AS n_rate_limited,
        sumMerge(errors_server) AS n_server_errors,
        quantilesTDigestMerge(0.5, 0.95)(latency_ms) AS latency_q
    FROM {db}.rollup_provider_1m
    WHERE minute >= toStartOfMinute({from}) AND minute < {to}
    GROUP BY provider, model
)
ORDER BY amplification DESC, attempts DESC, provider, model;
