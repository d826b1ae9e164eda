-- Amplification over time per provider/model: provider attempts per successful attempt in
-- each time bucket (1 = no retries), one series per provider/model.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range (minutes starting in [from, to)), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {bucket_s}    bucket width in seconds, e.g. 60 (Grafana: $__interval_s)
-- Columns: time (bucket start), series ('provider/model'), amplification (attempts per
--   success, successes counted as at least 1). Long format: Grafana draws one line per series.
SELECT
    toDateTime(intDiv(toUInt32(minute), {bucket_s}) * {bucket_s}, 'UTC') AS time,
    concat(provider, '/', model) AS series,
    countMerge(attempts) / greatest(sumMerge(successes), 1) AS amplification
FROM {db}.rollup_provider_1m
WHERE minute >= toStartOfMinute({from}) AND minute < {to}
GROUP BY time, series
ORDER BY time, series;
