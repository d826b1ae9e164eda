-- Spend of one model per minute (all providers serving it, as the gateway saw the requests),
-- against a trailing-hour baseline band.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {model}       the model name as the gateway logged it, e.g. gpt-4o-mini
-- Columns: minute, spend (USD in the minute), baseline (mean spend of the 60 minutes before),
--   band_upper (baseline + max(13.03 sigma, $1, 50 % of baseline), sigma of the same hour: the
--   detector's default band, see spend_key.sql). No detector watches spend per model, so there are no alert
--   columns; computed like spend_key.sql (see there why the band is a trailing hour).
SELECT
    toDateTime(target, 'UTC') AS minute,
    sumIf(s, k = 0) AS spend,
    sumIf(s, k > 0) / 60 AS baseline,
    baseline + greatest(greatest(13.03 * sqrt(greatest(sumIf(s * s, k > 0) / 60 - baseline * baseline, 0)), 1.0), 0.5 * baseline) AS band_upper
FROM
(
    SELECT minute AS m, sumMerge(cost_usd) AS s
    FROM {db}.rollup_model_1m
    WHERE model = '{model}'
      AND minute >= toStartOfMinute({from}) - 3600
      AND minute < {to}
    GROUP BY m
)
ARRAY JOIN range(61) AS k
WHERE m + k * 60 >= toStartOfMinute({from}) AND m + k * 60 < {to}
GROUP BY m + k * 60 AS target
ORDER BY minute;
