-- First-seen markers for one API key: the moment each country and each network (ASN) was first
-- seen for the key, when that moment falls in the range. Grafana shows them as annotations on
-- the key's charts.
--
-- Parameters (replace before running; ClickHouse 18.16 has no server-side query parameters):
--   {db}          database, e.g. tripline
--   {from}, {to}  the range [from, to), as DateTime expressions,
--                 e.g. toDateTime('2026-11-26 10:00:00', 'UTC')
--   {api_key_id}  the key's id as stored (never the secret)
-- Columns: time (first seen), text ('new country US', 'new network AS15169 Google LLC'), tags
--   ('country' or 'asn'). Named as Grafana's annotations expect (time, text, tags).
SELECT time, text, tags
FROM
(
    SELECT
        min(ts) AS time,
        concat('new country ', client_country) AS text,
        'country' AS tags
    FROM {db}.gateway_requests
    WHERE api_key_id = '{api_key_id}' AND ts < {to} AND client_country != ''
    GROUP BY client_country
    UNION ALL
    SELECT
        min(ts) AS time,
        concat('new network AS', toString(client_asn), ' ', anyLast(client_as_org)) AS text,
        'asn' AS tags
    FROM {db}.gateway_requests
    WHERE api_key_id = '{api_key_id}' AND ts < {to} AND client_asn != 0
    GROUP BY client_asn
)
WHERE time >= {from}
ORDER BY time, tags, text;
