-- REST API v1: usage totals on the task (kept by the executor with each attempt, so reads need no aggregate),
-- a type filter, and the Idempotency-Key records of the Powertools idempotency utility.

ALTER TABLE tasks
    ADD COLUMN tokens_in  bigint NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    ADD COLUMN tokens_out bigint NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    ADD COLUMN cost       numeric(16, 8) CHECK (cost >= 0);   -- null until an attempt has a known price

-- Listing filtered by type (status and type together use the status index and filter on type).
CREATE INDEX tasks_tenant_type_created_idx ON tasks (tenant_id, type, created_at DESC, id DESC);

CREATE TABLE idempotency_records (
    id                     text PRIMARY KEY,   -- "<function>#<hash of tenant and Idempotency-Key>"
    status                 text   NOT NULL CHECK (status IN ('INPROGRESS', 'COMPLETED')),
    expires_at             bigint NOT NULL,     -- epoch seconds: the record (and the key) lives until then
    in_progress_expires_at bigint,              -- epoch milliseconds: an INPROGRESS record older than this is stale
    payload_hash           text   NOT NULL DEFAULT '',
    response_data          text,
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_records_expires_idx ON idempotency_records (expires_at);
