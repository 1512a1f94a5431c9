-- Named queries on tasks. Every status change is one statement: a guarded UPDATE (its WHERE names the statuses
-- that domain/task.py TRANSITIONS allows, see the `transition:` lines) whose RETURNING drives the attempt and
-- outbox writes of the same statement, so a change and its events commit together or not at all.

-- name: insert_task
-- transition: created -> queued
-- Refused (no row) when the tenant's month has already spent or holds its whole budget, or when the tenant has a
-- budget and the model no price (the caller then reads why).
WITH budget AS (
    SELECT tenant_budget(%(tenant_id)s) AS usd, tenant_committed(%(tenant_id)s, budget_period(%(now)s)) AS committed
), task AS (
    INSERT INTO tasks (id, tenant_id, type, priority, status, payload, idempotency_key, scheduled_at, available_at,
                       max_attempts, attempt_count, created_at, updated_at, dispatched_at,
                       model, input_tokens, max_output_tokens, worst_cost, max_cost_usd)
    SELECT %(id)s, %(tenant_id)s, %(type)s, %(priority)s, 'queued', %(payload)s, %(idempotency_key)s,
           %(scheduled_at)s, %(available_at)s, %(max_attempts)s, 0, %(now)s, %(now)s, %(now)s,
           %(model)s, %(input_tokens)s, %(max_output_tokens)s, %(worst_cost)s, %(max_cost_usd)s
    FROM budget
    WHERE budget.usd IS NULL OR (budget.committed < budget.usd AND %(worst_cost)s::numeric IS NOT NULL)
    RETURNING *
), events AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), task.id, task.tenant_id, e.event_type,
           jsonb_build_object('type', task.type, 'status', e.status, 'attemptNo', 0), task.created_at
    FROM task, (VALUES (1, 'task.created', 'created'), (2, 'task.queued', 'queued')) AS e (n, event_type, status)
    ORDER BY e.n  -- seq in that order
)
SELECT task.*, task_waiting_for(task.tenant_id, task.status, task.available_at, task.deferred_until,
                                task.deferred_for, now()) AS waiting_for
FROM task;

-- name: get_task
-- waiting_for (the API's waitingFor) is derived here, at read time, by the rules the claim applies.
SELECT t.*, task_waiting_for(t.tenant_id, t.status, t.available_at, t.deferred_until, t.deferred_for, now())
           AS waiting_for
FROM tasks t WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s;

-- name: claim_due
-- The best due work, up to `limit` tasks, in one statement: claim_tasks() (migrations/0009_limits_budgets.sql)
-- holds the fair-share, priority, cap, rate-limit and budget rules and the transitions queued|failed -> running.
-- Tasks it deferred come back too, still queued, with deferred_until and deferred_for.
SELECT * FROM claim_tasks(%(locked_by)s, %(lease_until)s, %(now)s, %(limit)s);

-- name: finish_runs
-- The end of leased runs, one row each in %(runs)s (a JSON array), in one statement. Each is fenced by (id,
-- locked_by, attempt): a run whose lease was taken over changes nothing. The status comes from the caller
-- (adapters/postgres.py allows only these targets):
-- transition: running -> succeeded
-- transition: running -> failed
-- transition: running -> dead_letter
-- transition: running -> cancelled
WITH run AS (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb) AS r (
        id uuid, attempt_no smallint, status text, event_type text, attempt_status text, last_error text,
        available_at timestamptz, model text, tokens_in integer, tokens_out integer, cost numeric,
        latency_ms integer, error_code text, error_detail text, artifact_kind text, artifact_content text,
        charge_held boolean, pause_until timestamptz)
), held AS (
    -- what the runs still hold on their tenants' budgets, read before the update below clears it
    SELECT t.id, t.tenant_id, t.model, t.reserved_usd, t.reserved_period
    FROM tasks t JOIN run ON run.id = t.id
    WHERE t.status = 'running' AND t.locked_by = %(locked_by)s AND t.attempt_count = run.attempt_no
), done AS (
    UPDATE tasks
    -- A retryable failure of a task whose cancel was requested meanwhile ends it: it would never be claimed again.
    SET status = CASE WHEN run.status = 'failed' AND tasks.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      ELSE run.status END,
        locked_by = NULL, locked_until = NULL, last_error = run.last_error,
        available_at = COALESCE(run.available_at, tasks.available_at),
        tokens_in = tasks.tokens_in + COALESCE(run.tokens_in, 0),
        tokens_out = tasks.tokens_out + COALESCE(run.tokens_out, 0),
        cost = CASE WHEN run.cost IS NULL THEN tasks.cost ELSE COALESCE(tasks.cost, 0) + run.cost END,
        -- a failed task's next wake-up is sent right after this commit
        dispatched_at = CASE WHEN run.status = 'failed' AND tasks.cancel_requested_at IS NULL THEN %(now)s
                             ELSE tasks.dispatched_at END,
        reserved_usd = NULL, reserved_period = NULL,
        updated_at = %(now)s
    FROM run
    WHERE tasks.id = run.id
      AND tasks.status IN ('running')
      AND tasks.locked_by = %(locked_by)s
      AND tasks.attempt_count = run.attempt_no
    RETURNING tasks.*
), attempt AS (
    UPDATE task_attempts
    -- the database's time, as the claim's started_at: before this commits, so before any claim that counts it ended
    SET status = run.attempt_status, ended_at = statement_timestamp(), model = run.model, tokens_in = run.tokens_in,
        tokens_out = run.tokens_out, cost = run.cost, latency_ms = run.latency_ms, error_code = run.error_code,
        error_detail = run.error_detail
    FROM run JOIN done ON done.id = run.id
    WHERE task_attempts.task_id = run.id AND task_attempts.attempt_no = run.attempt_no
      AND task_attempts.status = 'running'
), artifact AS (
    INSERT INTO task_artifacts (id, task_id, kind, content, created_at)
    SELECT gen_random_uuid(), run.id, run.artifact_kind, run.artifact_content, %(now)s
    FROM run JOIN done ON done.id = run.id WHERE run.artifact_kind IS NOT NULL
), event AS (
    INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
    SELECT gen_random_uuid(), done.id, done.tenant_id,
           CASE done.status WHEN 'cancelled' THEN 'task.cancelled' ELSE run.event_type END,
           jsonb_build_object('type', done.type, 'status', done.status, 'attemptNo', done.attempt_count), %(now)s
    FROM done JOIN run ON run.id = done.id
), settle AS (
    -- the tenant's month: each attempt's hold released, its cost spent (a call that may have been billed without
    -- our knowing how much - cancelled, timed out, cut off - is charged what it held: the worst it could cost)
    UPDATE tenant_spend
    SET spent_usd = tenant_spend.spent_usd + x.charge, reserved_usd = GREATEST(tenant_spend.reserved_usd - x.released, 0),
        tokens_in = tenant_spend.tokens_in + x.tokens_in, tokens_out = tenant_spend.tokens_out + x.tokens_out,
        attempts = tenant_spend.attempts + x.attempts
    FROM (
        SELECT held.tenant_id, held.reserved_period AS period, COALESCE(held.model, 'unknown') AS model,
               sum(COALESCE(run.cost, CASE WHEN run.charge_held THEN held.reserved_usd ELSE 0 END)) AS charge,
               sum(held.reserved_usd) AS released, sum(COALESCE(run.tokens_in, 0)) AS tokens_in,
               sum(COALESCE(run.tokens_out, 0)) AS tokens_out, count(*) AS attempts
        FROM done JOIN held ON held.id = done.id JOIN run ON run.id = done.id
        GROUP BY 1, 2, 3
    ) x
    WHERE tenant_spend.tenant_id = x.tenant_id AND tenant_spend.period = x.period AND tenant_spend.model = x.model
), pause AS (
    -- a provider's 429 with a wait: no run of that model starts before it, whoever's
    INSERT INTO model_limits (model, paused_until, updated_at)
    SELECT held.model, max(run.pause_until), %(now)s
    FROM run JOIN held ON held.id = run.id
    WHERE run.pause_until IS NOT NULL AND held.model IS NOT NULL
    GROUP BY held.model
    ON CONFLICT (model) DO UPDATE
    SET paused_until = GREATEST(model_limits.paused_until, EXCLUDED.paused_until), updated_at = EXCLUDED.updated_at
)
SELECT * FROM done;

-- name: extend_leases
-- A heartbeat for every run of an invocation: renew the leases it still holds; says which have a cancel request.
UPDATE tasks SET locked_until = %(lease_until)s
FROM unnest(%(ids)s::uuid[], %(attempt_nos)s::smallint[]) AS run (id, attempt_no)
WHERE tasks.id = run.id AND tasks.status = 'running' AND tasks.locked_by = %(locked_by)s
  AND tasks.attempt_count = run.attempt_no
RETURNING tasks.id, tasks.cancel_requested_at;

-- name: abandon_expired_run
-- A run whose lease expired died (timeout, crash, lost host): close its attempt as abandoned; the task is cancelled
-- if that was asked, dead-lettered if its attempts are spent, else failed and due at once. What it held on its
-- tenant's budget is charged: the call may have been billed, and how much is not known.
-- transition: running -> cancelled
-- transition: running -> dead_letter
-- transition: running -> failed
WITH held AS (
    SELECT id, tenant_id, model, reserved_usd, reserved_period FROM tasks
    WHERE id = ANY(%(ids)s) AND status = 'running' AND locked_until < %(now)s
), stale AS (
    UPDATE tasks
    SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN attempt_count - budget_from >= max_attempts THEN 'dead_letter'
                      ELSE 'failed' END,
        last_error = 'lease_expired: the run stopped renewing its lease (timeout or crash)',
        locked_by = NULL, locked_until = NULL, available_at = %(now)s, dispatched_at = %(now)s,
        reserved_usd = NULL, reserved_period = NULL, updated_at = %(now)s
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
), settle AS (
    UPDATE tenant_spend
    SET spent_usd = tenant_spend.spent_usd + x.held, reserved_usd = GREATEST(tenant_spend.reserved_usd - x.held, 0),
        attempts = tenant_spend.attempts + x.attempts
    FROM (
        SELECT held.tenant_id, held.reserved_period AS period, COALESCE(held.model, 'unknown') AS model,
               sum(held.reserved_usd) AS held, count(*) AS attempts
        FROM stale JOIN held ON held.id = stale.id
        GROUP BY 1, 2, 3
    ) x
    WHERE tenant_spend.tenant_id = x.tenant_id AND tenant_spend.period = x.period AND tenant_spend.model = x.model
)
SELECT * FROM stale;

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
SELECT t.*, task_waiting_for(t.tenant_id, t.status, t.available_at, t.deferred_until, t.deferred_for, now())
           AS waiting_for
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
SELECT t.id AS task_id, o.id AS event_id, o.seq, o.event_type, o.payload, o.occurred_at
FROM tasks t LEFT JOIN outbox_messages o ON o.task_id = t.id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(id)s
ORDER BY o.seq;

-- name: expired_leases
SELECT id FROM tasks WHERE status = 'running' AND locked_until < %(now)s ORDER BY locked_until LIMIT %(limit)s;

-- name: redispatch_due
-- Due tasks whose last wake-up is older than the grace period (and due that long: a scheduled task's own wake-up comes
-- at its time): their message was lost (or the schedule was), or it was spent while their tenant was at its cap; and
-- at once, due tasks that have no wake-up at all (a raised budget released them). Each tenant gets as many as its cap has room for now, in the
-- claim's order: work the cap holds back is left to the tenant's finishing runs (a wake-up would only find the
-- cap). SKIP LOCKED lets sweepers run side by side, and the lock re-checks the task is still stale, so two never
-- wake the same one; the returned tasks get a new wake-up right after the commit.
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
          AND (t.deferred_until IS NULL OR t.deferred_until <= %(now)s)
        ORDER BY t.priority, t.available_at, t.id
        LIMIT GREATEST(room.free, 0)
    ) s
), due AS (
    SELECT tasks.id FROM tasks
    WHERE tasks.id IN (SELECT id FROM stale ORDER BY available_at LIMIT %(limit)s)
      AND tasks.status IN ('queued', 'failed')
      AND (tasks.dispatched_at IS NULL OR tasks.dispatched_at <= %(due_before)s)
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET dispatched_at = %(now)s FROM due WHERE tasks.id = due.id
RETURNING tasks.*;

-- name: wake_freed
-- What runs that just ended freed, for an executor that can no longer claim: for each tenant, the next due tasks in
-- the claim's order, as many as it freed and its cap now admits; marked as woken (they get wake-ups right after
-- this), so that the sweeper and other executors do not wake them again.
WITH freed AS (
    SELECT * FROM unnest(%(tenants)s::text[], %(counts)s::integer[]) AS f (tenant_id, n)
), next AS (
    SELECT n.id FROM freed
    CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
        WHERE t.tenant_id = freed.tenant_id AND t.status IN ('queued', 'failed') AND t.available_at <= %(now)s
          AND t.cancel_requested_at IS NULL AND (t.deferred_until IS NULL OR t.deferred_until <= %(now)s)
        ORDER BY t.priority, t.available_at, t.id
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
