-- Countries one API key was used from in the range, with the first time each was ever seen for
-- the key (a country first seen inside the range is new: the leaked_key and cross_region
-- detectors' signal).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {api_key_id}  the key's id as stored (never the secret)
-- Columns: country (ISO code; '' = unknown), requests and ips (distinct client IPs) in the
--   range, first_seen (over the key's whole history before {to}), last_seen, new_in_range (1 when
--   first seen inside the range). Reads the key's raw rows (ordered by key, so a range scan).
SELECT
    client_country AS country,
    countIf(ts >= {from}) AS requests,
    uniqExactIf(client_ip, ts >= {from} AND client_ip != '') AS ips,
    min(ts) AS first_seen,
    max(ts) AS last_seen,
    toUInt8(first_seen >= {from}) AS new_in_range
FROM {db}.gateway_requests
WHERE api_key_id = '{api_key_id}' AND ts < {to}
GROUP BY country
HAVING requests > 0
ORDER BY first_seen, country;
