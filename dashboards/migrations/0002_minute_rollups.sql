-- Per-minute rollups that detectors and dashboards read, fed by materialized views on insert.
-- Read them with the -Merge combinators, e.g.
--   SELECT minute, countMerge(requests), sumMerge(cost_usd), uniqIfMerge(distinct_ips)
--   FROM {db}.rollup_key_1m WHERE api_key_id = 'k' GROUP BY minute ORDER BY minute
-- Distinct counts skip empty values (uniqIf). Error classes: auth = 401/403, rate_limited = 429, client = other 4xx, server = 5xx.
-- Retries: requests with attempt > 1 (client retries); repeated idempotency keys are countable as
-- countMerge(with_idempotency_key) - uniqIfMerge(idempotency_keys).

CREATE TABLE IF NOT EXISTS {db}.rollup_key_1m
(
    minute DateTime('UTC'),
    api_key_id String,
    project AggregateFunction(anyLast, String),
    requests AggregateFunction(count),
    errors_auth AggregateFunction(sum, UInt64),
    errors_rate_limited AggregateFunction(sum, UInt64),
    errors_client AggregateFunction(sum, UInt64),
    errors_server AggregateFunction(sum, UInt64),
    retries AggregateFunction(sum, UInt64),
    with_idempotency_key AggregateFunction(sum, UInt64),
    idempotency_keys AggregateFunction(uniqIf, String, UInt8),
    prompt_tokens AggregateFunction(sum, UInt64),
    completion_tokens AggregateFunction(sum, UInt64),
    cost_usd AggregateFunction(sum, Float64),
    distinct_ips AggregateFunction(uniqIf, String, UInt8),
    distinct_countries AggregateFunction(uniqIf, String, UInt8),
    latency_ms AggregateFunction(quantilesTDigest(0.5, 0.95), UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (api_key_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_key_1m_mv TO {db}.rollup_key_1m AS
SELECT
    toStartOfMinute(ts) AS minute,
    api_key_id,
    anyLastState(project) AS project,
    countState() AS requests,
    sumState(toUInt64(status IN (401, 403))) AS errors_auth,
    sumState(toUInt64(status = 429)) AS errors_rate_limited,
    sumState(toUInt64(status >= 400 AND status < 500 AND status NOT IN (401, 403, 429))) AS errors_client,
    sumState(toUInt64(status >= 500)) AS errors_server,
    sumState(toUInt64(attempt > 1)) AS retries,
    sumState(toUInt64(idempotency_key != '')) AS with_idempotency_key,
    uniqIfState(idempotency_key, idempotency_key != '') AS idempotency_keys,
    sumState(toUInt64(prompt_tokens)) AS prompt_tokens,
    sumState(toUInt64(completion_tokens)) AS completion_tokens,
    sumState(cost_usd) AS cost_usd,
    uniqIfState(client_ip, client_ip != '') AS distinct_ips,
    uniqIfState(client_country, client_country != '') AS distinct_countries,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_ms
FROM {db}.gateway_requests
GROUP BY minute, api_key_id;

CREATE TABLE IF NOT EXISTS {db}.rollup_project_1m
(
    minute DateTime('UTC'),
    project String,
    requests AggregateFunction(count),
    errors_auth AggregateFunction(sum, UInt64),
    errors_rate_limited AggregateFunction(sum, UInt64),
    errors_client AggregateFunction(sum, UInt64),
    errors_server AggregateFunction(sum, UInt64),
    retries AggregateFunction(sum, UInt64),
    prompt_tokens AggregateFunction(sum, UInt64),
    completion_tokens AggregateFunction(sum, UInt64),
    cost_usd AggregateFunction(sum, Float64),
    distinct_keys AggregateFunction(uniq, String),
    distinct_ips AggregateFunction(uniqIf, String, UInt8),
    distinct_countries AggregateFunction(uniqIf, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_project_1m_mv TO {db}.rollup_project_1m AS
SELECT
    toStartOfMinute(ts) AS minute,
    project,
    countState() AS requests,
    sumState(toUInt64(status IN (401, 403))) AS errors_auth,
    sumState(toUInt64(status = 429)) AS errors_rate_limited,
    sumState(toUInt64(status >= 400 AND status < 500 AND status NOT IN (401, 403, 429))) AS errors_client,
    sumState(toUInt64(status >= 500)) AS errors_server,
    sumState(toUInt64(attempt > 1)) AS retries,
    sumState(toUInt64(prompt_tokens)) AS prompt_tokens,
    sumState(toUInt64(completion_tokens)) AS completion_tokens,
    sumState(cost_usd) AS cost_usd,
    uniqState(api_key_id) AS distinct_keys,
    uniqIfState(client_ip, client_ip != '') AS distinct_ips,
    uniqIfState(client_country, client_country != '') AS distinct_countries
FROM {db}.gateway_requests
GROUP BY minute, project;

-- Per provider/model, from the gateway's point of view (what clients saw).
CREATE TABLE IF NOT EXISTS {db}.rollup_model_1m
(
    minute DateTime('UTC'),
    provider String,
    model String,
    requests AggregateFunction(count),
    errors_auth AggregateFunction(sum, UInt64),
    errors_rate_limited AggregateFunction(sum, UInt64),
    errors_client AggregateFunction(sum, UInt64),
    errors_server AggregateFunction(sum, UInt64),
    retries AggregateFunction(sum, UInt64),
    prompt_tokens AggregateFunction(sum, UInt64),
    completion_tokens AggregateFunction(sum, UInt64),
    cost_usd AggregateFunction(sum, Float64),
    distinct_keys AggregateFunction(uniq, String),
    distinct_ips AggregateFunction(uniqIf, String, UInt8),
    distinct_countries AggregateFunction(uniqIf, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (provider, model, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_model_1m_mv TO {db}.rollup_model_1m AS
SELECT
    toStartOfMinute(ts) AS minute,
    provider,
    model,
    countState() AS requests,
    sumState(toUInt64(status IN (401, 403))) AS errors_auth,
    sumState(toUInt64(status = 429)) AS errors_rate_limited,
    sumState(toUInt64(status >= 400 AND status < 500 AND status NOT IN (401, 403, 429))) AS errors_client,
    sumState(toUInt64(status >= 500)) AS errors_server,
    sumState(toUInt64(attempt > 1)) AS retries,
    sumState(toUInt64(prompt_tokens)) AS prompt_tokens,
    sumState(toUInt64(completion_tokens)) AS completion_tokens,
    sumState(cost_usd) AS cost_usd,
    uniqState(api_key_id) AS distinct_keys,
    uniqIfState(client_ip, client_ip != '') AS distinct_ips,
    uniqIfState(client_country, client_country != '') AS distinct_countries
FROM {db}.gateway_requests
GROUP BY minute, provider, model;

-- Per provider/model, from the upstream attempts (what the gateway did to serve them):
-- amplification = countMerge(attempts) / sumMerge(successes).
CREATE TABLE IF NOT EXISTS {db}.rollup_provider_1m
(
    minute DateTime('UTC'),
    provider String,
    model String,
    attempts AggregateFunction(count),
    successes AggregateFunction(sum, UInt64),
    errors_rate_limited AggregateFunction(sum, UInt64),
    errors_server AggregateFunction(sum, UInt64),
    retries AggregateFunction(sum, UInt64),
    requests_served AggregateFunction(uniqIf, String, UInt8),
    cost_usd AggregateFunction(sum, Float64),
    latency_ms AggregateFunction(quantilesTDigest(0.5, 0.95), UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (provider, model, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_provider_1m_mv TO {db}.rollup_provider_1m AS
SELECT
    toStartOfMinute(ts) AS minute,
    provider,
    model,
    countState() AS attempts,
    sumState(toUInt64(status < 400)) AS successes,
    sumState(toUInt64(status = 429)) AS errors_rate_limited,
    sumState(toUInt64(status >= 500)) AS errors_server,
    sumState(toUInt64(attempt > 1)) AS retries,
    uniqIfState(request_id, request_id != '') AS requests_served,
    sumState(cost_usd) AS cost_usd,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_ms
FROM {db}.provider_attempts
GROUP BY minute, provider, model;
