-- Fastest risers: the 20 API keys whose spend grew the most in the last hour of the range
-- against the hour before it (a key that starts spending shows up here before it tops the
-- spenders).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}  database, e.g. tripline
--   {to}  the end of the range, as a DateTime expression, e.g. toDateTime('2026-11-26 12:00:00', 'UTC'):
--         "this hour" is the minutes starting in [to - 1 h, to), "previous hour" the hour before
-- Columns: api_key_id, project (the key's latest), spend_this_hour, spend_previous_hour,
--   rise_usd (this - previous), rise_ratio (this / previous; NULL when the previous hour was 0).
--   Only keys whose spend rose are listed.
SELECT
    api_key_id,
    argMax(p, m) AS project,
    sumIf(s, m >= {to} - 3600) AS spend_this_hour,
    sumIf(s, m < {to} - 3600) AS spend_previous_hour,
    spend_this_hour - spend_previous_hour AS rise_usd,
    if(spend_previous_hour > 0, spend_this_hour / spend_previous_hour, NULL) AS rise_ratio
FROM
(
    SELECT api_key_id, minute AS m, anyLastMerge(project) AS p, sumMerge(cost_usd) AS s
    FROM {db}.rollup_key_1m
    WHERE minute >= {to} - 7200 AND minute < {to}
    GROUP BY api_key_id, m
)
GROUP BY api_key_id
HAVING rise_usd > 0
ORDER BY rise_usd DESC, api_key_id
LIMIT 20;
