-- Spend of one API key per minute, against a baseline band, with the spend_spike detector's own
-- expected and upper values at the minutes where it fired.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {api_key_id}  the key's id as stored (never the secret)
-- Columns: minute, spend (USD in the minute), baseline (mean spend of the 60 minutes before),
--   band_upper (baseline + max(13.03 sigma, $1, 50 % of baseline), sigma of the same hour: the
--   detector's default band, 13.03 being the Student-t (4 dof) quantile for tail_probability
--   1e-4, $1 min_abs_usd, 50 % min_rel_increase; edit them if [detect.spend_spike.model]
--   differs), and alert_observed, alert_expected, alert_upper: the detector's own figures from
--   the alert rows that fired at that minute (NULL elsewhere).
-- Why a trailing hour: the detector's EWMA (half-life 60 minutes) needs window functions that
-- 18.16 lacks; each minute's spend is instead fanned out to the 60 minutes after it (ARRAY JOIN)
-- and summed, which both 18.16 and current ClickHouse run. Minutes with no spend in the last
-- hour have no row. Budget alerts (hour/day windows) are not shown here.
SELECT
    minute,
    spend,
    baseline,
    baseline + greatest(greatest(13.03 * sigma, 1.0), 0.5 * baseline) AS band_upper,
    alert_observed,
    alert_expected,
    alert_upper
FROM
(
    SELECT
        toDateTime(target, 'UTC') AS minute,
        toUInt32(target) AS t,
        sumIf(s, k = 0) AS spend,
        sumIf(s, k > 0) / 60 AS baseline,
        sqrt(greatest(sumIf(s * s, k > 0) / 60 - baseline * baseline, 0)) AS sigma
    FROM
    (
        SELECT minute AS m, sumMerge(cost_usd) AS s
        FROM {db}.rollup_key_1m
        WHERE api_key_id = '{api_key_id}'
          AND minute >= toStartOfMinute({from}) - 3600
          AND minute < {to}
        GROUP BY m
    )
    ARRAY JOIN range(61) AS k
    WHERE m + k * 60 >= toStartOfMinute({from}) AND m + k * 60 < {to}
    GROUP BY m + k * 60 AS target
) AS band
ANY LEFT JOIN
(
    SELECT
        toUInt32(window_start) AS t,
        toNullable(max(observed)) AS alert_observed,
        toNullable(max(expected)) AS alert_expected,
        toNullable(max(upper)) AS alert_upper
    FROM {db}.alerts
    WHERE detector = 'spend_spike'
      AND status = 'firing'
      AND api_key_id = '{api_key_id}'
      AND window_end = window_start + 60
      AND window_start >= toStartOfMinute({from})
      AND window_start < {to}
    GROUP BY t
) AS fired USING t
ORDER BY minute;
