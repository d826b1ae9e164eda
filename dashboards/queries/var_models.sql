-- Models with traffic in the range, biggest spend first (Grafana: the `model` variable's
-- choices).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions
-- Columns: model. At most 1000.
SELECT model
FROM {db}.rollup_model_1m
WHERE minute >= toStartOfMinute({from}) AND minute < {to}
GROUP BY model
ORDER BY sumMerge(cost_usd) DESC, model
LIMIT 1000;
