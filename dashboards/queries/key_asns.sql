-- Networks (autonomous systems) one API key was used from in the range, with the first time
-- each was ever seen for the key (a network first seen inside the range is new: the leaked_key
-- detector's signal, strongest for hosting networks).
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {api_key_id}  the key's id as stored (never the secret)
-- Columns: asn (0 = unknown), as_org, countries (the ASN's countries seen for the key, in the
--   range), requests and ips (distinct client IPs) in the range, first_seen (over the key's whole
--   history before {to}), last_seen, new_in_range (1 when first seen inside the range).
SELECT
    client_asn AS asn,
    anyLast(client_as_org) AS as_org,
    arrayStringConcat(arraySort(groupUniqArrayIf(client_country, ts >= {from} AND client_country != '')), ',') AS countries,
    countIf(ts >= {from}) AS requests,
    uniqExactIf(client_ip, ts >= {from} AND client_ip != '') AS ips,
    min(ts) AS first_seen,
    max(ts) AS last_seen,
    toUInt8(first_seen >= {from}) AS new_in_range
FROM {db}.gateway_requests
WHERE api_key_id = '{api_key_id}' AND ts < {to}
GROUP BY asn
HAVING requests > 0
ORDER BY first_seen, asn;
