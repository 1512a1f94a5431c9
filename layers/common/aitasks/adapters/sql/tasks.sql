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
