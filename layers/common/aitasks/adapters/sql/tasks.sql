-- Named queries on tasks. Every status change is one statement: a guarded UPDATE (its WHERE names the statuses
-- that domain/task.py TRANSITIONS allows, see the `transition:` lines) whose RETURNING drives the attempt and
-- outbox writes of the same statement, so a change and its events commit together or not at all.

-- name: insert_task
-- transition: created -> queued
WITH task AS (
    INSERT INTO tasks (id, tenant_id, type, priority, status, payload, idempotency_key, scheduled_at, available_at,
                       max_attempts, attempt_count, created_at, updated_at, dispatched_at)
    VALUES (%(id)s, %(tenant_id)s, %(type)s, %(priority)s, 'queued', %(payload)s, %(idempotency_key)s,
            %(scheduled_at)s, %(available_at)s, %(max_attempts)s, 0, %(now)s, %(now)s, %(now)s)
    RETURNING *
), events AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), task.id, task.tenant_id, e.event_type,
           jsonb_build_object('type', task.type, 'status', e.status, 'attemptNo', 0), task.created_at
    FROM task, (VALUES ('task.created', 'created'), ('task.queued', 'queued')) AS e (event_type, status)
)
SELECT * FROM task;

-- name: get_task
SELECT * FROM tasks WHERE tenant_id = %(tenant_id)s AND id = %(id)s;

-- name: claim_task
-- transition: queued -> reserved -> running
-- transition: failed -> queued -> reserved -> running
WITH claimed AS (
    UPDATE tasks
    SET status = 'running', locked_by = %(locked_by)s, locked_until = %(lease_until)s,
        attempt_count = attempt_count + 1, updated_at = %(now)s
    WHERE id = %(id)s
      AND status IN ('queued', 'failed')
      AND available_at <= %(now)s
      AND cancel_requested_at IS NULL
    RETURNING *
), attempt AS (
    INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at)
    SELECT gen_random_uuid(), id, attempt_count, 'running', %(now)s FROM claimed
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.started',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM claimed
)
SELECT * FROM claimed;

-- name: finish_run
-- The end of a leased run, fenced by (id, locked_by, attempt): a run whose lease was taken over changes nothing.
-- The status comes from the caller (adapters/postgres.py allows only these targets):
-- transition: running -> succeeded
-- transition: running -> failed
-- transition: running -> dead_letter
-- transition: running -> cancelled
WITH done AS (
    UPDATE tasks
    -- A retryable failure of a task whose cancel was requested meanwhile ends it: it would never be claimed again.
    SET status = CASE WHEN %(status)s = 'failed' AND cancel_requested_at IS NOT NULL THEN 'cancelled'
                      ELSE %(status)s END,
        locked_by = NULL, locked_until = NULL, last_error = %(last_error)s::text,
        available_at = COALESCE(%(available_at)s::timestamptz, available_at),
        tokens_in = tokens_in + COALESCE(%(tokens_in)s::bigint, 0),
        tokens_out = tokens_out + COALESCE(%(tokens_out)s::bigint, 0),
        cost = CASE WHEN %(cost)s::numeric IS NULL THEN cost ELSE COALESCE(cost, 0) + %(cost)s::numeric END,
        -- a failed task's next wake-up is sent right after this commit
        dispatched_at = CASE WHEN %(status)s = 'failed' AND cancel_requested_at IS NULL THEN %(now)s
                             ELSE dispatched_at END,
        updated_at = %(now)s
    WHERE id = %(id)s
      AND status IN ('running')
      AND locked_by = %(locked_by)s
      AND attempt_count = %(attempt_no)s
    RETURNING *
), attempt AS (
    UPDATE task_attempts
    SET status = %(attempt_status)s, ended_at = %(now)s, model = %(model)s::text,
        tokens_in = %(tokens_in)s::integer, tokens_out = %(tokens_out)s::integer, cost = %(cost)s::numeric,
        latency_ms = %(latency_ms)s::integer, error_code = %(error_code)s::text, error_detail = %(error_detail)s::text
    WHERE task_id = (SELECT id FROM done) AND attempt_no = %(attempt_no)s AND status = 'running'
), artifact AS (
    INSERT INTO task_artifacts (id, task_id, kind, content, created_at)
    SELECT gen_random_uuid(), id, %(artifact_kind)s::text, %(artifact_content)s::text, %(now)s
    FROM done WHERE %(artifact_kind)s::text IS NOT NULL
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id,
           CASE status WHEN 'cancelled' THEN 'task.cancelled' ELSE %(event_type)s END,
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM done
)
SELECT * FROM done;

-- name: extend_lease
-- A heartbeat: renew the lease of a run that still holds it; says whether a cancel was requested.
UPDATE tasks SET locked_until = %(lease_until)s
WHERE id = %(id)s AND status = 'running' AND locked_by = %(locked_by)s AND attempt_count = %(attempt_no)s
RETURNING cancel_requested_at;

-- name: abandon_expired_run
-- A run whose lease expired died (timeout, OOM, lost host): close its attempt as abandoned; the task is cancelled
-- if that was asked, dead-lettered if its attempts are spent, else failed and due at once.
-- transition: running -> cancelled
-- transition: running -> dead_letter
-- transition: running -> failed
WITH stale AS (
    UPDATE tasks
    SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN attempt_count - budget_from >= max_attempts THEN 'dead_letter'
                      ELSE 'failed' END,
        last_error = 'lease_expired: the run stopped renewing its lease (timeout or crash)',
        locked_by = NULL, locked_until = NULL, available_at = %(now)s, dispatched_at = %(now)s, updated_at = %(now)s
    WHERE id = ANY(%(ids)s) AND status IN ('running') AND locked_until < %(now)s
    RETURNING *
), attempt AS (
    UPDATE task_attempts
    SET status = 'abandoned', ended_at = %(now)s, error_code = 'lease_expired',
        error_detail = 'the run stopped renewing its lease'
    WHERE task_id IN (SELECT id FROM stale) AND status = 'running'
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id,
           CASE status WHEN 'cancelled' THEN 'task.cancelled' WHEN 'dead_letter' THEN 'task.dead_lettered'
                       ELSE 'task.failed' END,
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM stale
)
SELECT * FROM stale;

-- name: dead_letter
-- Its message reached the DLQ: the task is dead (a running attempt whose lease expired is abandoned) - unless the
-- message is stale: a live run holds the task, or the attempt it was sent for already happened and the task waits
-- for a later one.
-- transition: created -> dead_letter
-- transition: queued -> dead_letter
-- transition: reserved -> dead_letter
-- transition: running -> dead_letter
-- transition: failed -> dead_letter
WITH dead AS (
    UPDATE tasks
    SET status = 'dead_letter', last_error = %(reason)s, locked_by = NULL, locked_until = NULL, updated_at = %(now)s
    WHERE id = %(id)s AND status IN ('created', 'queued', 'reserved', 'running', 'failed')
      AND NOT (status = 'running' AND locked_until >= %(now)s)
      AND NOT (status IN ('queued', 'failed') AND attempt_count >= %(attempt_no)s)
    RETURNING *
), attempt AS (
    UPDATE task_attempts
    SET status = 'abandoned', ended_at = %(now)s, error_code = 'dlq', error_detail = %(reason)s
    WHERE task_id = (SELECT id FROM dead) AND status = 'running'
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.dead_lettered',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM dead
)
SELECT * FROM dead;

-- name: get_task_by_id
-- For the executor, which acts on the task a message names, whoever its tenant.
SELECT * FROM tasks WHERE id = %(id)s;

-- name: get_task_by_idempotency_key
SELECT * FROM tasks WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s;

-- name: cancel_task
-- transition: created -> cancelled
-- transition: queued -> cancelled
-- transition: reserved -> cancelled
-- transition: failed -> cancelled
WITH cancelled AS (
    UPDATE tasks
    SET status = 'cancelled', cancel_requested_at = COALESCE(cancel_requested_at, %(now)s),
        locked_by = NULL, locked_until = NULL, updated_at = %(now)s
    WHERE tenant_id = %(tenant_id)s AND id = %(id)s
      AND status IN ('created', 'queued', 'reserved', 'failed')
    RETURNING *
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.cancelled',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM cancelled
)
SELECT * FROM cancelled;

-- name: request_cancel
-- A running task only records the request (no status change): its executor notices it and ends the run.
UPDATE tasks
SET cancel_requested_at = COALESCE(cancel_requested_at, %(now)s), updated_at = %(now)s
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND status = 'running'
RETURNING *;

-- name: list_tasks
-- Newest first; id breaks ties so pages are stable. Callers always pass both arrays (all values for "any"),
-- so one plan serves every filter and the (tenant_id, status|type, created_at) indexes apply. The page's ids come
-- from an index-only scan (the indexes include status and type), so a deep page skips its offset in the index and
-- reads the table only for the rows it returns.
SELECT t.* FROM (
    SELECT id FROM tasks
    WHERE tenant_id = %(tenant_id)s AND status = ANY(%(statuses)s) AND type = ANY(%(types)s)
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s OFFSET %(offset)s
) AS page
JOIN tasks t ON t.id = page.id
ORDER BY t.created_at DESC, t.id DESC;

-- name: count_tasks
-- An index-only scan of the same index (X-Total-Count).
SELECT count(*) AS total FROM tasks
WHERE tenant_id = %(tenant_id)s AND status = ANY(%(statuses)s) AND type = ANY(%(types)s);

-- name: list_attempts
-- One row with null attempt columns when the task has none; no row when it is not the tenant's.
SELECT t.id AS task_id, a.attempt_no, a.status, a.model, a.tokens_in, a.tokens_out, a.cost, a.latency_ms,
       a.error_code, a.error_detail, a.started_at, a.ended_at
FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s
ORDER BY a.attempt_no;

-- name: list_artifacts
SELECT t.id AS task_id, r.id AS artifact_id, r.kind, r.uri, r.content, r.created_at
FROM tasks t LEFT JOIN task_artifacts r ON r.task_id = t.id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s
ORDER BY r.created_at, r.id;

-- name: list_events
-- The task's state history from its outbox rows, in write order. One row with null event columns when it has
-- none left (published rows are pruned after a week); no row when it is not the tenant's.
SELECT t.id AS task_id, o.id AS event_id, o.event_type, o.payload, o.occurred_at
FROM tasks t LEFT JOIN outbox_messages o ON o.task_id = t.id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s
ORDER BY o.seq;

-- name: expired_leases
SELECT id FROM tasks WHERE status = 'running' AND locked_until < %(now)s ORDER BY locked_until LIMIT %(limit)s;

-- name: redispatch_due
-- Due tasks whose last wake-up is older than the grace period: their message was lost (or the schedule was).
-- SKIP LOCKED lets sweepers run side by side; the returned tasks get a new wake-up right after the commit.
WITH due AS (
    SELECT id FROM tasks
    WHERE status IN ('queued', 'failed') AND available_at <= %(due_before)s
      AND (dispatched_at IS NULL OR dispatched_at <= %(due_before)s)
    ORDER BY available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET dispatched_at = %(now)s FROM due WHERE tasks.id = due.id
RETURNING tasks.*;

-- name: redrive
-- transition: dead_letter -> queued
-- A dead letter gets a new attempt budget (its history stays); tenant_id and the filters are optional.
WITH redriven AS (
    UPDATE tasks
    SET status = 'queued', budget_from = attempt_count, redrive_count = redrive_count + 1, last_error = NULL,
        cancel_requested_at = NULL, available_at = %(now)s, dispatched_at = %(now)s, updated_at = %(now)s
    WHERE id IN (
        SELECT id FROM tasks
        WHERE status IN ('dead_letter')
          AND (%(id)s::uuid IS NULL OR id = %(id)s::uuid)
          AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
          AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
          AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
        ORDER BY updated_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING *
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.queued',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM redriven
)
SELECT * FROM redriven;

-- name: dead_letters
-- What a redrive would take (for --dry-run).
SELECT * FROM tasks
WHERE status = 'dead_letter'
  AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
ORDER BY updated_at
LIMIT %(limit)s;

-- name: prune_finished
-- Retention: finished tasks older than the cutoff, with their attempts, artifacts and outbox rows (ON DELETE
-- CASCADE); never a task that is not finished. In batches, so no statement holds many locks for long.
DELETE FROM tasks
WHERE id IN (
    SELECT id FROM tasks
    WHERE status IN ('succeeded', 'cancelled', 'dead_letter') AND updated_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM outbox_messages o WHERE o.task_id = tasks.id AND o.published_at IS NULL)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;
