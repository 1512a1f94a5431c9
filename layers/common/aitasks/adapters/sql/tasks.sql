-- Named queries on tasks. Every status change is one statement: a guarded UPDATE (its WHERE names the statuses
-- that domain/task.py TRANSITIONS allows, see the `transition:` lines) whose RETURNING drives the attempt and
-- outbox writes of the same statement, so a change and its events commit together or not at all.

-- name: insert_task
-- transition: created -> queued
-- Refused (no row) when the tenant's month has already spent or holds its whole budget, when the tenant has a budget
-- and the model no price, or when one call of the task counts more tokens than its model allows in a minute (the
-- caller then reads why). The task's queue (its tenant's work on its model) is ready from the task's due time.
WITH budget AS (
    SELECT tenant_budget(%(tenant_id)s) AS usd,
           (SELECT m.spent + m.reserved FROM tenant_month(%(tenant_id)s, budget_period(%(now)s)) m) AS committed
), task AS (
    INSERT INTO tasks (id, tenant_id, type, priority, status, payload, idempotency_key, scheduled_at, available_at,
                       max_attempts, attempt_count, created_at, updated_at, dispatched_at,
                       model, model_key, input_tokens, rate_tokens, max_output_tokens, worst_cost, max_cost_usd)
    SELECT %(id)s, %(tenant_id)s, %(type)s, %(priority)s, 'queued', %(payload)s, %(idempotency_key)s,
           %(scheduled_at)s, %(available_at)s, %(max_attempts)s, 0, %(now)s, %(now)s, %(now)s,
           %(model)s, %(model_key)s, %(input_tokens)s, %(rate_tokens)s, %(max_output_tokens)s, %(worst_cost)s,
           %(max_cost_usd)s
    FROM budget
    WHERE (budget.usd IS NULL OR (budget.committed < budget.usd AND %(worst_cost)s::numeric IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM model_limits l WHERE l.model = %(model_key)s AND l.tpm < %(rate_tokens)s)
    RETURNING *
), queue AS (
    INSERT INTO task_queues AS tq (tenant_id, model_key, ready_at, gen)
    SELECT task.tenant_id, task.model_key, task.available_at, 1 FROM task
    ON CONFLICT (tenant_id, model_key)
    DO UPDATE SET ready_at = LEAST(tq.ready_at, EXCLUDED.ready_at), gen = tq.gen + 1
), events AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), task.id, task.tenant_id, e.event_type,
           jsonb_build_object('type', task.type, 'status', e.status, 'attemptNo', 0), task.created_at
    FROM task, (VALUES (1, 'task.created', 'created'), (2, 'task.queued', 'queued')) AS e (n, event_type, status)
    ORDER BY e.n  -- seq in that order
)
SELECT task.*, task_waiting_for(task.tenant_id, task.status, task.available_at, task.model_key, task.worst_cost, now())
           AS waiting_for
FROM task;

-- name: model_tpm
-- Why a create was refused, in part: the tokens a minute its model allows.
SELECT tpm FROM model_limits WHERE model = %(model_key)s;

-- name: get_task
-- waiting_for (the API's waitingFor) is derived here, at read time, by the rules the claim applies.
SELECT t.*, task_waiting_for(t.tenant_id, t.status, t.available_at, t.model_key, t.worst_cost, now()) AS waiting_for
FROM tasks t WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s;

-- name: claim_due
-- The best due work, up to `limit` tasks, in one statement: claim_tasks() (migrations/0011_scarcity.sql) holds the
-- fair-share, priority, cap, rate-limit and budget rules and the transitions queued|failed -> running (and ->
-- dead_letter for work that can never run). Rows with wake_at are no change: one due task of each model that needs a
-- wake-up, to wake then with wake_slots slots.
SELECT (c.task).*, c.wake_at, c.wake_slots FROM claim_tasks(%(locked_by)s, %(lease_until)s, %(now)s, %(limit)s) AS c;

-- name: finish_runs
-- The end of leased runs, one row each in %(runs)s (a JSON array): finish_runs() (migrations/0011_scarcity.sql),
-- fenced by (id, attempt, locked_by). The status comes from the caller (adapters/postgres.py allows only these):
-- transition: running -> succeeded
-- transition: running -> failed
-- transition: running -> dead_letter
-- transition: running -> cancelled
SELECT * FROM finish_runs(%(runs)s::jsonb, %(locked_by)s, %(now)s);

-- name: extend_leases
-- A heartbeat for every run (id, attempt) of an invocation: renew the leases it still holds; says which it holds and
-- which have a cancel request. It never waits for a lock: it runs on its own connection beside the invocation's
-- claims and finishes, and a row another statement holds (this invocation's finish of that run, a cancel request)
-- is skipped - answered held, renewed by the next beat - so that one busy row cannot hold up every run's lease.
WITH held AS (
    SELECT tasks.id, tasks.attempt_count, tasks.cancel_requested_at
    FROM tasks JOIN unnest(%(ids)s::uuid[], %(attempt_nos)s::smallint[]) AS run (id, attempt_no)
        ON tasks.id = run.id AND tasks.attempt_count = run.attempt_no
    WHERE tasks.status = 'running' AND tasks.locked_by = %(locked_by)s
), free AS (
    SELECT tasks.id FROM tasks JOIN held ON held.id = tasks.id FOR UPDATE OF tasks SKIP LOCKED
), renewed AS (
    UPDATE tasks SET locked_until = %(lease_until)s
    FROM free JOIN held ON held.id = free.id
    -- checked again on the row as it is now: a run finished or closed since the statement's snapshot is left alone
    WHERE tasks.id = free.id AND tasks.status = 'running' AND tasks.locked_by = %(locked_by)s
      AND tasks.attempt_count = held.attempt_count
)
SELECT id, attempt_count, cancel_requested_at FROM held;

-- name: abandon_expired_run
-- Runs whose lease expired died: abandon_expired_runs() (migrations/0011_scarcity.sql) closes their attempts and
-- charges their holds.
-- transition: running -> cancelled
-- transition: running -> dead_letter
-- transition: running -> failed
SELECT * FROM abandon_expired_runs(%(ids)s::uuid[], %(now)s);

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
SELECT t.*, task_waiting_for(t.tenant_id, t.status, t.available_at, t.model_key, t.worst_cost, now()) AS waiting_for
FROM (
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
SELECT t.id AS task_id, a.attempt_no, a.status, a.model, a.tokens_in, a.tokens_out, a.cost, a.cost_estimated,
       a.latency_ms, a.error_code, a.error_detail, a.started_at, a.ended_at
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
SELECT t.id AS task_id, o.id AS event_id, o.seq, o.event_type, o.payload, o.occurred_at
FROM tasks t LEFT JOIN outbox_messages o ON o.task_id = t.id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s
ORDER BY o.seq;

-- name: expired_leases
SELECT id FROM tasks WHERE status = 'running' AND locked_until < %(now)s ORDER BY locked_until LIMIT %(limit)s;

-- name: redispatch_due
-- Due tasks whose last wake-up is older than the grace period (and due that long: a scheduled task's own wake-up comes
-- at its time): their message was lost (or the schedule was), or it was spent while their tenant was at its cap; and
-- at once, due tasks that have no wake-up at all (an operator's change released them). Each tenant gets as many as its
-- cap has room for now, oldest first (a wake-up only says there is work; the claim picks it): work the cap holds back
-- is left to the tenant's finishing runs (a wake-up would only find the cap). Their queues are made ready again, in
-- case a claim found one empty just before its work came back. SKIP LOCKED lets sweepers run side by side, and the
-- lock re-checks the task is still stale, so two never wake the same one; the returned tasks get a new wake-up right
-- after the commit.
WITH room AS (
    SELECT w.tenant_id, tenant_max_concurrency(w.tenant_id) - tenant_running(w.tenant_id) AS free
    FROM waiting_tenants() w WHERE w.first_due <= %(now)s
), stale AS (
    SELECT s.id, s.available_at FROM room
    CROSS JOIN LATERAL (
        SELECT t.id, t.available_at FROM tasks t
        WHERE t.tenant_id = room.tenant_id AND t.status IN ('queued', 'failed') AND t.available_at <= %(now)s
          AND (t.dispatched_at IS NULL  -- released (a budget raised): woken at once
               OR (t.dispatched_at <= %(due_before)s AND t.available_at <= %(due_before)s))
        ORDER BY t.available_at, t.id
        LIMIT GREATEST(room.free, 0)
    ) s
), due AS (
    SELECT tasks.id FROM tasks
    WHERE tasks.id IN (SELECT id FROM stale ORDER BY available_at LIMIT %(limit)s)
      AND tasks.status IN ('queued', 'failed')
      AND (tasks.dispatched_at IS NULL OR tasks.dispatched_at <= %(due_before)s)
    FOR UPDATE SKIP LOCKED
), woken AS (
    UPDATE tasks SET dispatched_at = %(now)s FROM due WHERE tasks.id = due.id
    RETURNING tasks.*
), queues AS (
    SELECT ready_queues(array_agg(tenant_id), array_agg(model_key), array_agg(available_at)) FROM woken
    HAVING count(*) > 0
)
SELECT woken.* FROM woken LEFT JOIN queues ON true;

-- name: wake_freed
-- What runs that just ended freed, for an executor that can no longer claim: for each tenant, due tasks (oldest first:
-- a wake-up only says there is work), as many as it freed and its cap now admits; marked as woken (they get wake-ups right after
-- this), so that the sweeper and other executors do not wake them again.
WITH freed AS (
    SELECT * FROM unnest(%(tenants)s::text[], %(counts)s::integer[]) AS f (tenant_id, n)
), next AS (
    SELECT n.id FROM freed
    CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
        WHERE t.tenant_id = freed.tenant_id AND t.status IN ('queued', 'failed') AND t.available_at <= %(now)s
          AND t.cancel_requested_at IS NULL
        ORDER BY t.available_at, t.id
        LIMIT GREATEST(LEAST(freed.n, tenant_max_concurrency(freed.tenant_id) - tenant_running(freed.tenant_id)), 0)
    ) n
)
UPDATE tasks SET dispatched_at = %(now)s FROM next WHERE tasks.id = next.id
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
), queues AS (
    SELECT ready_queues(array_agg(tenant_id), array_agg(model_key), array_agg(available_at)) FROM redriven
    HAVING count(*) > 0
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), id, tenant_id, 'task.queued',
           jsonb_build_object('type', type, 'status', status, 'attemptNo', attempt_count), %(now)s
    FROM redriven
)
SELECT redriven.* FROM redriven LEFT JOIN queues ON true;

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
