-- The execution engine (docs/executor.md): a wake-up only says that there is due work; the executor claims the
-- best due tasks itself, in one statement - fair across tenants, then by priority, then by age - within each
-- tenant's concurrency cap. The rules live here and nowhere else.

-- Concurrency caps: a default per tier, and an operator's override per tenant (`aitasks tenants set-limits`).
CREATE TABLE tier_limits (
    tier            text    PRIMARY KEY CHECK (tier IN ('free', 'standard', 'pro')),
    max_concurrency integer NOT NULL CHECK (max_concurrency >= 0)
);
INSERT INTO tier_limits (tier, max_concurrency) VALUES ('free', 2), ('standard', 10), ('pro', 50);

CREATE TABLE tenant_limits (
    tenant_id       text        PRIMARY KEY,
    max_concurrency integer     CHECK (max_concurrency >= 0),   -- null: its tier's default; 0 pauses the tenant
    updated_at      timestamptz NOT NULL
);

-- Claims take this row's lock first: one claim at a time, so each claim reads every run that earlier claims
-- started (its snapshot is taken after the lock) and a cap holds exactly, however many executors claim at once.
CREATE TABLE claim_gate (
    id boolean PRIMARY KEY DEFAULT true CHECK (id)
);
INSERT INTO claim_gate DEFAULT VALUES;

-- The tenants with queued work and when each one's is first due (one probe per tenant), and a tenant's due work in
-- the order the claim takes it.
CREATE INDEX tasks_tenant_due_idx ON tasks (tenant_id, available_at) WHERE status IN ('queued', 'failed');
CREATE INDEX tasks_ready_idx ON tasks (tenant_id, priority, available_at, id) WHERE status IN ('queued', 'failed');
-- A tenant's runs, counted against its cap.
CREATE INDEX tasks_running_idx ON tasks (tenant_id) WHERE status = 'running';

-- A tenant's cap: its override, else its tier's default, else the standard tier's (a tenant without a tier); 0,
-- nothing runs, if even that row is gone.
CREATE FUNCTION tenant_max_concurrency(p_tenant text) RETURNS integer
    LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(
        (SELECT max_concurrency FROM tenant_limits WHERE tenant_id = p_tenant),
        (SELECT l.max_concurrency FROM tenants t JOIN tier_limits l USING (tier) WHERE t.tenant_id = p_tenant),
        (SELECT max_concurrency FROM tier_limits WHERE tier = 'standard'),
        0)
$$;

CREATE FUNCTION tenant_running(p_tenant text) RETURNS integer
    LANGUAGE sql STABLE
AS $$
    SELECT count(*)::integer FROM tasks WHERE tenant_id = p_tenant AND status = 'running'
$$;

-- The tenants with queued or failed tasks and the time each one's first is due: one probe of tasks_tenant_due_idx
-- per tenant (a skip scan), whatever their backlogs. The claim and the sweeper start from it.
CREATE FUNCTION waiting_tenants() RETURNS TABLE (tenant_id text, first_due timestamptz)
    LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE waiting (tenant_id, first_due) AS (
        (SELECT t.tenant_id, t.available_at FROM tasks t
         WHERE t.status IN ('queued', 'failed') ORDER BY t.tenant_id, t.available_at LIMIT 1)
        UNION ALL
        SELECT next.tenant_id, next.available_at
        FROM waiting w
        CROSS JOIN LATERAL (
            SELECT t.tenant_id, t.available_at FROM tasks t
            WHERE t.status IN ('queued', 'failed') AND t.tenant_id > w.tenant_id
            ORDER BY t.tenant_id, t.available_at LIMIT 1
        ) next
    )
    SELECT tenant_id, first_due FROM waiting
$$;

-- Why a task that is not running waits (the API's waitingFor): its time has not come ('schedule', or 'retry'
-- after a failed attempt), or its tenant is at its cap ('concurrency'); null when it only waits for an executor,
-- and for a task that is not waiting at all.
CREATE FUNCTION task_waiting_for(p_tenant text, p_status text, p_available_at timestamptz, p_now timestamptz)
    RETURNS text
    LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN p_status NOT IN ('queued', 'failed') THEN NULL
        WHEN p_available_at > p_now THEN CASE p_status WHEN 'failed' THEN 'retry' ELSE 'schedule' END
        WHEN tenant_running(p_tenant) >= tenant_max_concurrency(p_tenant) THEN 'concurrency'
    END
$$;

-- The claim: up to p_limit due tasks become running, each with its attempt row and task.started event.
-- Fair share first: every candidate is numbered within its tenant (priority, then age), and a tenant's n-th
-- candidate would bring it to running + n runs; the claim takes the lowest of those levels first, so tenants with
-- fewer runs are served first and a backlog of one never holds back another's work beyond the next free slot.
-- Ties go to priority (0 first), then to the task due longest. No tenant gets past its cap.
CREATE FUNCTION claim_tasks(p_locked_by text, p_lease_until timestamptz, p_now timestamptz, p_limit integer)
    RETURNS SETOF tasks
    LANGUAGE plpgsql
AS $$
-- transition: queued -> reserved -> running
-- transition: failed -> queued -> reserved -> running
BEGIN
    PERFORM FROM claim_gate FOR UPDATE;
    RETURN QUERY
    WITH tenant_load AS (
        SELECT w.tenant_id, tenant_running(w.tenant_id) AS running, tenant_max_concurrency(w.tenant_id) AS cap
        FROM waiting_tenants() w WHERE w.first_due <= p_now
    ), candidates AS (
        SELECT c.id, l.running + c.n AS level, c.priority, c.available_at
        FROM tenant_load l
        CROSS JOIN LATERAL (
            SELECT d.id, d.priority, d.available_at,
                   row_number() OVER (ORDER BY d.priority, d.available_at, d.id) AS n
            FROM (
                SELECT t.id, t.priority, t.available_at FROM tasks t
                WHERE t.tenant_id = l.tenant_id AND t.status IN ('queued', 'failed') AND t.available_at <= p_now
                  AND t.cancel_requested_at IS NULL
                ORDER BY t.priority, t.available_at, t.id
                LIMIT GREATEST(LEAST(l.cap - l.running, p_limit), 0)
            ) d
        ) c
    ), chosen AS (
        SELECT t.id FROM tasks t
        WHERE t.id IN (SELECT id FROM candidates ORDER BY level, priority, available_at, id LIMIT p_limit)
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tasks
        SET status = 'running', locked_by = p_locked_by, locked_until = p_lease_until,
            attempt_count = attempt_count + 1, updated_at = p_now
        WHERE id IN (SELECT id FROM chosen) AND status IN ('queued', 'failed')
        RETURNING *
    ), attempt AS (
        -- started_at is the database's time of the claim, read after its snapshot: every run it counted as ended
        -- had ended before (an attempt's times show exactly when it held a slot of its tenant's cap).
        INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at)
        SELECT gen_random_uuid(), c.id, c.attempt_count, 'running', clock_timestamp() FROM claimed c
    ), event AS (
        INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
        SELECT gen_random_uuid(), c.id, c.tenant_id, 'task.started',
               jsonb_build_object('type', c.type, 'status', c.status, 'attemptNo', c.attempt_count), p_now
        FROM claimed c
    )
    SELECT * FROM claimed;
END
$$;
