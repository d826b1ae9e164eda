-- API keys with traffic in the range, biggest spender first (Grafana: the `api_key_id`
-- variable's choices).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions
-- Columns: api_key_id. At most 1000.
SELECT api_key_id
FROM {db}.rollup_key_1m
WHERE minute >= toStartOfMinute({from}) AND minute < {to}
GROUP BY api_key_id
ORDER BY sumMerge(cost_usd) DESC, api_key_id
LIMIT 1000;
