-- Errors and client retries per provider/model as the gateway's clients saw them (gateway
-- requests), by error class, with spend.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
-- Columns: provider, model, requests, error_rate (any 4xx/5xx), auth_error_rate (401/403),
--   rate_limited_rate (429), client_error_rate (other 4xx), server_error_rate (5xx),
--   retry_rate (requests with attempt > 1: client retries) (all 0..1), keys (distinct API keys,
--   estimated), spend_usd. Highest error rate first.
SELECT
    provider,
    model,
    n_requests AS requests,
    (n_auth + n_rate_limited + n_client + n_server) / n_requests AS error_rate,
    n_auth / n_requests AS auth_error_rate,
    n_rate_limited / n_requests AS rate_limited_rate,
    n_client / n_requests AS client_error_rate,
    n_server / n_requests AS server_error_rate,
    n_retries / n_requests AS retry_rate,
    n_keys AS keys,
    n_spend AS spend_usd
FROM
(
    SELECT
        provider,
        model,
        countMerge(requests) AS n_requests,
        sumMerge(errors_auth) AS n_auth,
        sumMerge(errors_rate_limited) AS n_rate_limited,
        sumMerge(errors_client) AS n_client,
        sumMerge(errors_server) AS n_server,
        sumMerge(retries) AS n_retries,
        uniqMerge(distinct_keys) AS n_keys,
        sumMerge(cost_usd) AS n_spend
    FROM {db}.rollup_model_1m
    WHERE minute >= toStartOfMinute({from}) AND minute < {to}
    GROUP BY provider, model
)
ORDER BY error_rate DESC, requests DESC, provider, model;
