-- Named queries on tasks. Every status change is one statement: a guarded UPDATE (its WHERE names the statuses
-- that domain/task.py TRANSITIONS allows, see the `transition:` lines) whose RETURNING drives the attempt and
-- outbox writes of the same statement, so a change and its events commit together or not at all.

-- name: insert_task
-- transition: created -> queued
WITH task AS (
    INSERT INTO tasks (id, tenant_id, type, priority, status, payload, idempotency_key, scheduled_at, available_at,
                       max_attempts, attempt_count, created_at, updated_at)
    VALUES (%(id)s, %(tenant_id)s, %(type)s, %(priority)s, 'queued', %(payload)s, %(idempotency_key)s,
            %(scheduled_at)s, %(available_at)s, %(max_attempts)s, 0, %(now)s, %(now)s)
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

-- name: succeed_task
-- transition: running -> succeeded
WITH done AS (
    UPDATE tasks
    SET status = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL, updated_at = %(now)s
    WHERE id = %(id)s
      AND status IN ('running')
      AND locked_by = %(locked_by)s
      AND attempt_count = %(attempt_no)s
    RETURNING *
), attempt AS (
    UPDATE task_attempts
    SET status = 'succeeded', ended_at = %(now)s,
        latency_ms = (extract(epoch FROM %(now)s - started_at) * 1000)::integer
    WHERE task_id = (SELECT id FROM done) AND attempt_no = %(attempt_no)s AND status = 'running'
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.succeeded',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM done
)
SELECT * FROM done;

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
-- so one plan serves every filter and the (tenant_id, status|type, created_at) indexes apply.
SELECT * FROM tasks
WHERE tenant_id = %(tenant_id)s AND status = ANY(%(statuses)s) AND type = ANY(%(types)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_tasks
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
