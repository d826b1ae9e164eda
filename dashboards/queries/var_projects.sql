-- Projects with traffic in the range, biggest spender first (Grafana: the `project` variable's
-- choices).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions
-- Columns: project. At most 1000.
SELECT project
FROM {db}.rollup_project_1m
WHERE minute >= toStartOfMinute({from}) AND minute < {to}
GROUP BY project
ORDER BY sumMerge(cost_usd) DESC, project
LIMIT 1000;
