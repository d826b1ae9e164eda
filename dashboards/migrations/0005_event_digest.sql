-- The content digest of each event (XXH3-64 of its contract fields, see core/src/event/digest.rs).
-- With `event_id` it is the event's identity: a redelivery has both equal and is dropped; a
-- different event that reuses an id (a client-set id, two gateways numbering alike) has another
-- digest and is stored. Rows stored before this migration read 0 and are compared by id alone.
-- ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: the migration runner skips an ADD COLUMN
-- whose column already exists, so a rerun is harmless.

ALTER TABLE {db}.gateway_requests ADD COLUMN event_digest UInt64;

ALTER TABLE {db}.provider_attempts ADD COLUMN event_digest UInt64;
