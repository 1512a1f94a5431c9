-- The order in which outbox rows were written, for the relay: events written by one statement share their time.

ALTER TABLE outbox_messages ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

DROP INDEX outbox_unpublished_idx;
CREATE INDEX outbox_unpublished_idx ON outbox_messages (seq) WHERE published_at IS NULL;
