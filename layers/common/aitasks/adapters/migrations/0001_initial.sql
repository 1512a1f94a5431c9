-- The tables of DESIGN.md. Times are timestamptz; ids are uuids made by the application.

CREATE TABLE tasks (
    id                  uuid PRIMARY KEY,
    tenant_id           text        NOT NULL,
    type                text        NOT NULL,
    priority            smallint    NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    status              text        NOT NULL CHECK (status IN ('created', 'queued', 'reserved', 'running',
                                                               'succeeded', 'failed', 'cancelled', 'dead_letter')),
    payload             jsonb       NOT NULL,
    idempotency_key     text,
    scheduled_at        timestamptz,                 -- what the client asked for (null: as soon as possible)
    available_at        timestamptz NOT NULL,        -- when it may run next: scheduled time, then retry times
    locked_until        timestamptz,
    locked_by           text,
    max_attempts        smallint    NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
    attempt_count       smallint    NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    last_error          text,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    CONSTRAINT tasks_lease_consistent CHECK ((locked_by IS NULL) = (locked_until IS NULL)),
    CONSTRAINT tasks_tenant_idempotency_key_key UNIQUE (tenant_id, idempotency_key)
);

-- Listing a tenant's tasks, newest first (id breaks ties so pages are stable).
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant_id, created_at DESC, id DESC);
-- The same, filtered by status.
CREATE INDEX tasks_tenant_status_created_idx ON tasks (tenant_id, status, created_at DESC, id DESC);
-- Due work: runnable tasks by the time they may run.
CREATE INDEX tasks_due_idx ON tasks (available_at) WHERE status IN ('queued', 'failed');
-- Expired leases: leased tasks by the end of their lease.
CREATE INDEX tasks_lease_idx ON tasks (locked_until) WHERE status IN ('reserved', 'running');

CREATE TABLE task_attempts (
    id           uuid PRIMARY KEY,
    task_id      uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt_no   smallint    NOT NULL CHECK (attempt_no >= 1),
    status       text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'abandoned')),
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    model        text,
    tokens_in    integer CHECK (tokens_in >= 0),
    tokens_out   integer CHECK (tokens_out >= 0),
    cost         numeric(14, 8) CHECK (cost >= 0),
    latency_ms   integer CHECK (latency_ms >= 0),
    error_code   text,
    error_detail text,
    CONSTRAINT task_attempts_task_attempt_no_key UNIQUE (task_id, attempt_no)
);

-- The database, not the code, guarantees at most one running attempt per task.
CREATE UNIQUE INDEX task_attempts_one_running_idx ON task_attempts (task_id) WHERE status = 'running';

CREATE TABLE task_artifacts (
    id         uuid PRIMARY KEY,
    task_id    uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind IN ('text', 'json', 'file', 'link')),
    uri        text,
    content    text,
    created_at timestamptz NOT NULL,
    CONSTRAINT task_artifacts_has_body CHECK (uri IS NOT NULL OR content IS NOT NULL)
);

CREATE INDEX task_artifacts_task_idx ON task_artifacts (task_id, created_at);

CREATE TABLE outbox_messages (
    id           uuid PRIMARY KEY,             -- the event's eventId: subscribers drop duplicates by it
    task_id      uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant_id    text        NOT NULL,
    event_type   text        NOT NULL,
    payload      jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL,
    published_at timestamptz
);

-- What the relay still has to publish, oldest first.
CREATE INDEX outbox_unpublished_idx ON outbox_messages (occurred_at) WHERE published_at IS NULL;
CREATE INDEX outbox_task_idx ON outbox_messages (task_id);

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  text        NOT NULL,
    name       text        NOT NULL,
    key_hash   bytea       NOT NULL CHECK (octet_length(key_hash) = 32),  -- SHA-256 of the key
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
