-- Flow control under scarcity (docs/executor.md, "Shares, tokens and budgets"): a rate-limited model's calls shared by
-- the tenants' recent use of it, weighted; limits counted as the provider counts them and settled with the real usage;
-- budgets that fail closed and release held work as holds settle; a claim whose work per candidate does not grow with
-- the number of tenants, deferred tasks or paused models.

-- One canonical name per model (limits, pauses, the rate window, spend and prices are keyed by it: a dated snapshot
-- or another casing is the same model), and what a call counts against its model's tokens per minute as the
-- provider counts it (OpenAI: about a token per 4 characters sent, plus the output cap).
ALTER TABLE tasks
    ADD COLUMN model_key   text,
    ADD COLUMN rate_tokens integer CHECK (rate_tokens >= 0);
UPDATE tasks SET model_key = COALESCE(lower(model), ''),
                 rate_tokens = COALESCE(input_tokens, 0) + COALESCE(max_output_tokens, 0);
ALTER TABLE tasks ALTER COLUMN model_key SET NOT NULL, ALTER COLUMN model_key SET DEFAULT '';  -- '': no model named

-- Deferrals are no longer written on tasks: a model's block and a budget's are read where they are kept
-- (model_state, tenant_spend), so a held-back task costs a claim nothing.
ALTER TABLE tasks DROP COLUMN deferred_until, DROP COLUMN deferred_for;

-- Where a task stands in its queue: its due time plus ten minutes per priority level. Priority orders a tenant's
-- work and ages: a priority-9 task is overtaken only by work that became due less than 90 minutes after it. (Adding
-- a number of minutes to a timestamptz does not depend on the time zone, so the function is immutable in fact.)
CREATE FUNCTION task_rank(p_available_at timestamptz, p_priority smallint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_available_at + make_interval(mins => 10 * p_priority)
$$;

-- A queue is a tenant's work on one model: its due tasks in rank order.
DROP INDEX tasks_ready_idx;
CREATE INDEX tasks_queue_idx ON tasks (tenant_id, model_key, task_rank(available_at, priority), id)
    WHERE status IN ('queued', 'failed');

-- The queues with work, one row each, and each one's virtual time on its model: the weighted use it has made of it
-- (start-time fair queueing). The claim serves a model's queues lowest virtual time first; a queue that comes back
-- from idle starts at the model's clock (model_state.vclock), so it neither banks idleness nor waits behind a
-- backlog. ready_at: no due work before then (the claim skips it; a create, a retry or a redrive moves it earlier).
-- gen counts the writers that may have added work, so that a claim that found a queue empty marks it so only if
-- nothing was added meanwhile.
CREATE TABLE task_queues (
    tenant_id text             NOT NULL,
    model_key text             NOT NULL,
    vtime     double precision NOT NULL DEFAULT 0,
    ready_at  timestamptz      NOT NULL,
    gen       bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, model_key)
);
CREATE INDEX task_queues_ready_idx ON task_queues (model_key, ready_at);
CREATE INDEX task_queues_share_idx ON task_queues (model_key, vtime, tenant_id);
INSERT INTO task_queues (tenant_id, model_key, ready_at)
SELECT DISTINCT tenant_id, model_key, '-infinity'::timestamptz FROM tasks
WHERE status IN ('queued', 'failed', 'running');

-- Per model, what only claims write (under the claim gate): the fair-share clock, the next start its rpm spacing
-- allows (GCRA's theoretical arrival time), until when it was found blocked (the API's waitingFor), and the wake-up
-- already sent for its end (one per model, not one per claim).
CREATE TABLE model_state (
    model_key     text             PRIMARY KEY,
    vclock        double precision NOT NULL DEFAULT 0,
    rpm_tat       timestamptz,
    blocked_until timestamptz,
    wake_at       timestamptz
);

-- Limits, pauses, the window and spend under the canonical names.
CREATE TEMP TABLE merged_limits AS
SELECT lower(model) AS model, min(rpm) AS rpm, min(tpm) AS tpm, max(paused_until) AS paused_until,
       max(updated_at) AS updated_at
FROM model_limits GROUP BY lower(model);
DELETE FROM model_limits;
INSERT INTO model_limits (model, rpm, tpm, paused_until, updated_at) SELECT * FROM merged_limits;
DROP TABLE merged_limits;

UPDATE model_calls SET model = lower(model);
-- Each call's row names its attempt, so that its end can settle it with the tokens really used.
ALTER TABLE model_calls ADD COLUMN task_id uuid, ADD COLUMN attempt_no smallint;
CREATE INDEX model_calls_task_idx ON model_calls (task_id);

CREATE TEMP TABLE merged_spend AS
SELECT tenant_id, period, lower(model) AS model, sum(spent_usd) AS spent_usd, sum(reserved_usd) AS reserved_usd,
       sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(attempts) AS attempts
FROM tenant_spend GROUP BY tenant_id, period, lower(model);
DELETE FROM tenant_spend;
INSERT INTO tenant_spend SELECT * FROM merged_spend;
DROP TABLE merged_spend;

-- An attempt whose cost could not be known (no usage, or no price) is charged what it held, and says so.
ALTER TABLE task_attempts ADD COLUMN cost_estimated boolean NOT NULL DEFAULT false;

-- Weights: a tenant's share of a scarce model, relative to the others' (a tier default, an operator's override).
ALTER TABLE tier_limits ADD COLUMN weight numeric(8, 3) NOT NULL DEFAULT 1 CHECK (weight > 0);
UPDATE tier_limits SET weight = CASE tier WHEN 'free' THEN 1 WHEN 'standard' THEN 2 ELSE 4 END;
ALTER TABLE tenant_limits ADD COLUMN weight numeric(8, 3) CHECK (weight > 0);

-- A tenant's limits in one place: its override, else its tier's, else (a tenant without a tier, or a tier whose row is
-- gone) the standard tier's; a cap of 0 and a weight of 1 if even that is gone. A function over a join that the
-- planner inlines, so that a claim reads every tenant's limits in one pass; the one-value functions below read it.
CREATE FUNCTION tenant_policy(p_tenant text) RETURNS TABLE (cap integer, weight double precision, budget numeric)
    LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(o.max_concurrency, own.max_concurrency, std.max_concurrency, 0),
           COALESCE(o.weight, CASE WHEN t.tier IS NULL THEN std.weight ELSE own.weight END, 1)::double precision,
           COALESCE(o.monthly_budget_usd, CASE WHEN t.tier IS NULL THEN std.monthly_budget_usd ELSE own.monthly_budget_usd END)
    FROM (SELECT p_tenant AS tenant_id) me
    LEFT JOIN tenant_limits o ON o.tenant_id = me.tenant_id
    LEFT JOIN tenants t ON t.tenant_id = me.tenant_id
    LEFT JOIN tier_limits own ON own.tier = t.tier
    LEFT JOIN tier_limits std ON std.tier = 'standard'
$$;

CREATE OR REPLACE FUNCTION tenant_max_concurrency(p_tenant text) RETURNS integer
    LANGUAGE sql STABLE
AS $$
    SELECT cap FROM tenant_policy(p_tenant)
$$;

CREATE OR REPLACE FUNCTION tenant_budget(p_tenant text) RETURNS numeric
    LANGUAGE sql STABLE
AS $$
    SELECT budget FROM tenant_policy(p_tenant)
$$;

CREATE FUNCTION tenant_weight(p_tenant text) RETURNS double precision
    LANGUAGE sql STABLE
AS $$
    SELECT weight FROM tenant_policy(p_tenant)
$$;

-- 0009's tenant_committed (spent + reserved in one number) is replaced by tenant_month, which keeps the two apart.
DROP FUNCTION tenant_committed(text, date);

-- What a tenant's month has spent and what its running attempts hold.
CREATE FUNCTION tenant_month(p_tenant text, p_period date, OUT spent numeric, OUT reserved numeric)
    LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(sum(spent_usd), 0), COALESCE(sum(reserved_usd), 0)
    FROM tenant_spend WHERE tenant_id = p_tenant AND period = p_period
$$;

-- The rate window: calls started in the last 61 s (a second more than a provider's minute, so that a call counted
-- here leaves the window no sooner than it leaves the provider's).
CREATE FUNCTION rate_window() RETURNS interval
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT interval '61 seconds'
$$;

-- Why a task that is not running waits (the API's waitingFor), read where each rule keeps its state: its time has not
-- come ('schedule', or 'retry' after a failed attempt); its model is paused or was found at a limit
-- ('rate_limit'); its tenant's month cannot hold what it may cost ('budget'); its tenant is at its cap
-- ('concurrency'). Null when it only waits for an executor, and for a task that is not waiting.
DROP FUNCTION task_waiting_for(text, text, timestamptz, timestamptz, text, timestamptz);
CREATE FUNCTION task_waiting_for(
    p_tenant text, p_status text, p_available_at timestamptz, p_model_key text, p_worst_cost numeric,
    p_now timestamptz
) RETURNS text
    LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN p_status NOT IN ('queued', 'failed') THEN NULL
        WHEN p_available_at > p_now THEN CASE p_status WHEN 'failed' THEN 'retry' ELSE 'schedule' END
        WHEN EXISTS (SELECT 1 FROM model_limits WHERE model = p_model_key AND paused_until > p_now)
          OR EXISTS (SELECT 1 FROM model_state WHERE model_key = p_model_key AND blocked_until > p_now)
            THEN 'rate_limit'
        WHEN tenant_budget(p_tenant) IS NOT NULL
         AND (SELECT m.spent + m.reserved FROM tenant_month(p_tenant, budget_period(p_now)) m)
             + COALESCE(p_worst_cost, 0) > tenant_budget(p_tenant)
            THEN 'budget'
        WHEN tenant_running(p_tenant) >= tenant_max_concurrency(p_tenant) THEN 'concurrency'
    END
$$;


-- The most an attempt may cost, held on its tenant's month while it runs: the greater of its worst cost priced when
-- it was created and the same tokens at today's price (a price that rose meanwhile is not undercharged); null when
-- it has no price at all.
CREATE FUNCTION task_hold(
    p_worst_cost numeric, p_input_tokens integer, p_max_output_tokens integer, p_input_per_m numeric,
    p_output_per_m numeric
) RETURNS numeric
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT GREATEST(p_worst_cost,
                    ceil((COALESCE(p_input_tokens, 0) * p_input_per_m + COALESCE(p_max_output_tokens, 0) * p_output_per_m)
                         * 100) / 1e8)
$$;

-- The queues of tasks that may run again (a retry, an abandoned run, a redrive): ready from then, whatever a claim
-- found before. Rows are locked in key order, as everywhere.
CREATE FUNCTION ready_queues(p_tenants text[], p_models text[], p_at timestamptz[]) RETURNS void
    LANGUAGE sql
AS $$
    INSERT INTO task_queues AS tq (tenant_id, model_key, ready_at, gen)
    SELECT x.tenant, x.model, min(x.at), 1
    FROM unnest(p_tenants, p_models, p_at) AS x (tenant, model, at)
    WHERE x.model IS NOT NULL
    GROUP BY x.tenant, x.model
    ORDER BY x.tenant, x.model
    ON CONFLICT (tenant_id, model_key)
    DO UPDATE SET ready_at = LEAST(tq.ready_at, EXCLUDED.ready_at), gen = tq.gen + 1
$$;

-- The claim. Up to p_limit due tasks become running, each with its attempt row, its task.started event, its hold on
-- its tenant's month and, on a model with limits, its row in the rate window. The rules, in order:
--   1. Models first, once each: a paused model, or one whose window or rpm spacing has no room now, is left out
--      whole (its queues are not even read), and gets one wake-up for when it has room.
--   2. Models with limits share their room by fair queueing: their queues are served lowest virtual time first, one
--      task each per pass; each start adds its cost (its tokens on a tpm-limited model, else one call) divided by
--      the tenant's weight to its queue's virtual time. A model's room is perishable, so these go first.
--   3. Models without limits share the other slots by running tasks (weighted water-filling: the tenant with the
--      fewest runs for its weight first), then by recent use (virtual time), then by rank.
--   In every queue its tasks go in rank order (priority that ages), and a queue whose first task does not fit (its
--   tenant's cap, its budget, the model's tokens) is passed over whole: big tasks do not starve behind small ones. A
--   task that can never run (more tokens than its model's tpm; no price under a budget) ends dead_letter with the
--   reason. Each candidate costs a few index probes, and a claim reads a bounded number of candidates of a limited
--   model, whatever the number of tenants or held-back tasks.
-- Returned: the claimed tasks (running), the dead-lettered ones, and for each model that needs a wake-up one of its
-- due tasks with wake_at and wake_slots (nothing stored): the executor wakes that many slots' worth of work then.
DROP FUNCTION claim_tasks(text, timestamptz, timestamptz, integer);
CREATE TYPE claim_result AS (task tasks, wake_at timestamptz, wake_slots integer);

CREATE FUNCTION claim_tasks(p_locked_by text, p_lease_until timestamptz, p_now timestamptz, p_limit integer)
    RETURNS SETOF claim_result
    LANGUAGE plpgsql
AS $$
-- transition: queued -> reserved -> running
-- transition: failed -> queued -> reserved -> running
-- transition: queued -> dead_letter
-- transition: failed -> dead_letter
DECLARE
    v_period date := budget_period(p_now);
    v_horizon timestamptz := p_now + interval '90 minutes';  -- no due task ranks later (task_rank)
    v_max_reads integer := 40 + 8 * p_limit;                  -- queues one limited model's passes read at most
    mo_ record;
    qu_ record;
    hd_ record;
    v_reads integer;
    v_pass_took integer;
    v_until timestamptz;
    v_tokens bigint;
    v_calls integer;
    v_tat timestamptz;
    v_spacing interval;
    v_tolerance interval;
    v_hold numeric;
    -- the claim's picks, in parallel arrays
    v_take uuid[] := '{}';
    v_take_attempt integer[] := '{}';
    v_take_tenant text[] := '{}';
    v_take_model text[] := '{}';
    v_take_hold numeric[] := '{}';
    v_take_tokens integer[] := '{}';
    v_take_limited boolean[] := '{}';
    v_take_cost double precision[] := '{}';
    v_take_start double precision[] := '{}';
    -- tenants read so far: cap room left, budget, what its month holds and spent (with this claim's holds), weight
    v_t text[] := '{}';
    v_t_room integer[] := '{}';
    v_t_budget numeric[] := '{}';
    v_t_committed numeric[] := '{}';
    v_t_weight double precision[] := '{}';
    v_ti integer;
    -- queues found with nothing due (marked after the loops); queues passed over in this claim
    v_empty_tenant text[] := '{}';
    v_empty_model text[] := '{}';
    v_empty_gen bigint[] := '{}';
    v_skip text[];
    -- models: their state after this claim, their wake-ups
    v_state_model text[] := '{}';
    v_state_tat timestamptz[] := '{}';
    v_state_blocked timestamptz[] := '{}';
    v_wake_model text[] := '{}';
    v_wake_at timestamptz[] := '{}';
    v_wake_task uuid[] := '{}';
    v_wake_slots integer[] := '{}';
    v_wake_found_slots integer[] := '{}';
    v_at timestamptz;
    v_left_calls integer;
    v_left_tokens bigint;
    v_slots integer;
    v_unit integer := 1;
    v_wake_found text[] := '{}';
    v_wake_found_at timestamptz[] := '{}';
    v_unlimited text[] := '{}';
    v_dead uuid[] := '{}';
    v_dead_why text[] := '{}';
    v_claimed uuid[] := '{}';
BEGIN
    PERFORM FROM claim_gate FOR UPDATE;

    -- 1. The models with a ready queue (two probes per model), each with its limits, pause and window.
    FOR mo_ IN
        WITH RECURSIVE models (model_key) AS (
            (SELECT q.model_key FROM task_queues q ORDER BY q.model_key LIMIT 1)
            UNION ALL
            SELECT next.model_key FROM models
            CROSS JOIN LATERAL (
                SELECT q.model_key FROM task_queues q WHERE q.model_key > models.model_key ORDER BY q.model_key LIMIT 1
            ) next
        )
        SELECT ms.model_key, l.rpm, l.tpm, l.paused_until, s.rpm_tat, COALESCE(s.vclock, 0) AS vclock,
               w.calls, w.tokens, w.oldest
        FROM models ms
        LEFT JOIN model_limits l ON l.model = ms.model_key
        LEFT JOIN model_state s ON s.model_key = ms.model_key
        LEFT JOIN LATERAL (
            SELECT count(*)::integer AS calls, COALESCE(sum(k.tokens), 0)::bigint AS tokens, min(k.at) AS oldest
            FROM model_calls k
            WHERE k.model = ms.model_key AND k.at > p_now - rate_window() AND (l.rpm IS NOT NULL OR l.tpm IS NOT NULL)
        ) w ON true
        WHERE EXISTS (SELECT 1 FROM task_queues q WHERE q.model_key = ms.model_key AND q.ready_at <= p_now)
    LOOP
        IF mo_.paused_until > p_now THEN
            v_wake_model := v_wake_model || mo_.model_key;
            v_wake_at := v_wake_at || mo_.paused_until;
            v_wake_slots := v_wake_slots || 10;  -- the spacing spreads them
            CONTINUE;
        END IF;
        IF mo_.rpm IS NULL AND mo_.tpm IS NULL THEN
            v_unlimited := v_unlimited || mo_.model_key;
            CONTINUE;
        END IF;

        -- 2. A model with limits: room in its window, and the next start its rpm spacing allows (GCRA: starts
        -- 60/rpm s apart, with bursts of rpm/60 calls).
        v_calls := mo_.calls;
        v_tokens := mo_.tokens;
        v_tat := mo_.rpm_tat;
        IF mo_.rpm IS NOT NULL THEN
            v_spacing := make_interval(secs => 60.0 / mo_.rpm);
            v_tolerance := v_spacing * (greatest(1, mo_.rpm / 60) - 1);
        END IF;
        v_until := NULL;
        v_reads := 0;
        v_skip := '{}';
        LOOP  -- passes: at most one task of each queue per pass
            v_pass_took := 0;
            FOR qu_ IN
                SELECT tq.tenant_id, tq.vtime, tq.gen FROM task_queues tq
                WHERE tq.model_key = mo_.model_key AND tq.ready_at <= p_now AND tq.tenant_id <> ALL(v_skip)
                ORDER BY tq.vtime, tq.tenant_id
            LOOP
                EXIT WHEN cardinality(v_take) >= p_limit OR v_until IS NOT NULL OR v_reads >= v_max_reads;
                v_reads := v_reads + 1;
                IF mo_.rpm IS NOT NULL AND v_calls >= mo_.rpm THEN
                    v_until := COALESCE(mo_.oldest, p_now) + rate_window();
                    EXIT;
                END IF;
                IF mo_.rpm IS NOT NULL AND v_tat - v_tolerance > p_now THEN
                    v_until := v_tat - v_tolerance;
                    EXIT;
                END IF;
                -- its tenant, read once per claim
                v_ti := array_position(v_t, qu_.tenant_id);
                IF v_ti IS NULL THEN
                    SELECT v_t || qu_.tenant_id, v_t_room || (pol.cap - tenant_running(qu_.tenant_id)),
                           v_t_budget || pol.budget, v_t_committed || (mo.spent + mo.reserved), v_t_weight || pol.weight
                    INTO v_t, v_t_room, v_t_budget, v_t_committed, v_t_weight
                    FROM tenant_policy(qu_.tenant_id) pol, tenant_month(qu_.tenant_id, v_period) mo;
                    v_ti := cardinality(v_t);
                END IF;
                IF v_t_room[v_ti] <= 0 THEN
                    v_skip := v_skip || qu_.tenant_id;
                    CONTINUE;
                END IF;
                hd_ := NULL;
                SELECT t.id, t.attempt_count, t.rate_tokens, t.worst_cost, t.input_tokens, t.max_output_tokens,
                       p.input_per_m, p.output_per_m
                INTO hd_
                FROM tasks t LEFT JOIN model_prices p ON p.model = t.model_key
                WHERE t.tenant_id = qu_.tenant_id AND t.model_key = mo_.model_key AND t.status IN ('queued', 'failed')
                  AND task_rank(t.available_at, t.priority) <= v_horizon AND t.available_at <= p_now
                  AND t.cancel_requested_at IS NULL AND t.id <> ALL(v_take) AND t.id <> ALL(v_dead)
                ORDER BY task_rank(t.available_at, t.priority), t.id
                LIMIT 1;
                IF hd_.id IS NULL THEN
                    v_empty_tenant := v_empty_tenant || qu_.tenant_id;
                    v_empty_model := v_empty_model || mo_.model_key;
                    v_empty_gen := v_empty_gen || qu_.gen;
                    v_skip := v_skip || qu_.tenant_id;
                    CONTINUE;
                END IF;
                v_unit := COALESCE(hd_.rate_tokens, 1);
                IF mo_.tpm IS NOT NULL AND hd_.rate_tokens > mo_.tpm THEN
                    v_dead := v_dead || hd_.id;
                    v_dead_why := v_dead_why || format(
                        'exceeds_model_tpm: a call of this task counts %s tokens, more than %s allows in a minute (%s)',
                        hd_.rate_tokens, mo_.model_key, mo_.tpm);
                    CONTINUE;
                END IF;
                v_hold := task_hold(hd_.worst_cost, hd_.input_tokens, hd_.max_output_tokens, hd_.input_per_m, hd_.output_per_m);
                IF v_t_budget[v_ti] IS NOT NULL AND v_hold IS NULL THEN
                    v_dead := v_dead || hd_.id;
                    v_dead_why := v_dead_why || format(
                        'unpriced_model: %s has no price, and a tenant with a budget runs only priced models',
                        mo_.model_key);
                    CONTINUE;
                END IF;
                IF v_t_budget[v_ti] IS NOT NULL AND v_t_committed[v_ti] + v_hold > v_t_budget[v_ti] THEN
                    v_skip := v_skip || qu_.tenant_id;
                    CONTINUE;
                END IF;
                IF mo_.tpm IS NOT NULL AND v_tokens + hd_.rate_tokens > mo_.tpm THEN
                    -- the model's first in line waits for room: nobody overtakes it with fewer tokens
                    v_until := COALESCE(mo_.oldest, p_now) + rate_window();
                    EXIT;
                END IF;
                v_take := v_take || hd_.id;
                v_take_attempt := v_take_attempt || (hd_.attempt_count + 1);
                v_take_tenant := v_take_tenant || qu_.tenant_id;
                v_take_model := v_take_model || mo_.model_key;
                v_take_hold := v_take_hold || COALESCE(v_hold, 0);
                v_take_tokens := v_take_tokens || COALESCE(hd_.rate_tokens, 0);
                v_take_limited := v_take_limited || true;
                v_take_cost := v_take_cost
                    || (CASE WHEN mo_.tpm IS NOT NULL THEN COALESCE(hd_.rate_tokens, 0)::double precision ELSE 1 END
                        / v_t_weight[v_ti]);
                v_take_start := v_take_start || GREATEST(qu_.vtime, mo_.vclock);
                v_t_room[v_ti] := v_t_room[v_ti] - 1;
                v_t_committed[v_ti] := v_t_committed[v_ti] + COALESCE(v_hold, 0);
                v_calls := v_calls + 1;
                v_tokens := v_tokens + COALESCE(hd_.rate_tokens, 0);
                IF mo_.rpm IS NOT NULL THEN
                    v_tat := GREATEST(COALESCE(v_tat, p_now), p_now) + v_spacing;
                END IF;
                v_pass_took := v_pass_took + 1;
            END LOOP;
            EXIT WHEN v_pass_took = 0 OR cardinality(v_take) >= p_limit OR v_until IS NOT NULL
                OR v_reads >= v_max_reads;
        END LOOP;

        v_state_model := v_state_model || mo_.model_key;
        v_state_tat := v_state_tat || v_tat;
        v_state_blocked := v_state_blocked || v_until;
        -- Its wake-up: when it is blocked, for its room's return; when this claim filled its slots and the model has
        -- room to spare, now. Either way for as many slots as that room holds calls like its next (at most 10), so
        -- one message fills the window rather than one slot.
        IF v_until IS NOT NULL OR cardinality(v_take) >= p_limit THEN
            v_at := CASE WHEN v_until IS NULL THEN p_now ELSE GREATEST(v_until, p_now + interval '1 second') END;
            SELECT count(*)::integer + (v_calls - mo_.calls), COALESCE(sum(k.tokens), 0) + (v_tokens - mo_.tokens)
            INTO v_left_calls, v_left_tokens
            FROM model_calls k WHERE k.model = mo_.model_key AND k.at > v_at - rate_window();
            v_slots := LEAST(10, mo_.rpm - v_left_calls, (mo_.tpm - v_left_tokens) / GREATEST(v_unit, 1),
                             CASE WHEN mo_.rpm IS NOT NULL THEN greatest(1, mo_.rpm / 60) END);
            IF v_until IS NOT NULL OR v_slots > 0 THEN
                v_wake_model := v_wake_model || mo_.model_key;
                v_wake_at := v_wake_at || v_at;
                v_wake_slots := v_wake_slots || GREATEST(v_slots, 1);
            END IF;
        END IF;
    END LOOP;

    -- 3. Models without limits: the other slots, by weighted running tasks, then recent use, then rank.
    IF cardinality(v_take) < p_limit AND cardinality(v_unlimited) > 0 THEN
        v_reads := 0;
        v_skip := '{}';
        FOR hd_ IN
            WITH q AS MATERIALIZED (
                SELECT tq.tenant_id, tq.model_key, tq.vtime, tq.gen, COALESCE(s.vclock, 0) AS vclock
                FROM task_queues tq LEFT JOIN model_state s ON s.model_key = tq.model_key
                WHERE tq.model_key = ANY(v_unlimited) AND tq.ready_at <= p_now
            ), load AS MATERIALIZED (  -- once per tenant, not once per row below
                SELECT x.tenant_id, tenant_running(x.tenant_id) AS running, pol.cap, pol.weight, pol.budget,
                       (SELECT COALESCE(sum(sp.spent_usd + sp.reserved_usd), 0) FROM tenant_spend sp
                        WHERE sp.tenant_id = x.tenant_id AND sp.period = v_period) AS committed
                FROM (SELECT DISTINCT tenant_id FROM q) x CROSS JOIN LATERAL tenant_policy(x.tenant_id) pol
            ), heads AS MATERIALIZED (
                SELECT q.tenant_id, q.model_key, q.vtime, q.gen, q.vclock, l.running, l.cap, l.weight, l.budget,
                       l.committed, d.id,
                       d.attempt_count, d.rate_tokens, d.worst_cost, d.input_tokens, d.max_output_tokens, d.rank
                FROM q JOIN load l USING (tenant_id)
                LEFT JOIN LATERAL (
                    SELECT t.id, t.attempt_count, t.rate_tokens, t.worst_cost, t.input_tokens, t.max_output_tokens,
                           task_rank(t.available_at, t.priority) AS rank
                    FROM tasks t
                    WHERE t.tenant_id = q.tenant_id AND t.model_key = q.model_key
                      AND t.status IN ('queued', 'failed') AND task_rank(t.available_at, t.priority) <= v_horizon
                      AND t.available_at <= p_now AND t.cancel_requested_at IS NULL
                    ORDER BY task_rank(t.available_at, t.priority), t.id
                    LIMIT GREATEST(LEAST(l.cap - l.running, p_limit), 1)
                ) d ON true
            )
            SELECT hd.*, p.input_per_m, p.output_per_m,
                   (hd.running + row_number() OVER (PARTITION BY hd.tenant_id ORDER BY hd.rank, hd.id)) / hd.weight
                       AS level
            FROM heads hd LEFT JOIN model_prices p ON p.model = hd.model_key
            ORDER BY hd.id IS NOT NULL, level, GREATEST(hd.vtime, hd.vclock), hd.rank, hd.id
        LOOP
            IF hd_.id IS NULL THEN  -- a queue with nothing due now
                v_empty_tenant := v_empty_tenant || hd_.tenant_id;
                v_empty_model := v_empty_model || hd_.model_key;
                v_empty_gen := v_empty_gen || hd_.gen;
                CONTINUE;
            END IF;
            EXIT WHEN cardinality(v_take) >= p_limit OR v_reads >= 8 * v_max_reads;
            v_reads := v_reads + 1;
            CONTINUE WHEN (hd_.tenant_id || '/' || hd_.model_key) = ANY(v_skip);
            v_ti := array_position(v_t, hd_.tenant_id);
            IF v_ti IS NULL THEN
                v_t := v_t || hd_.tenant_id;
                v_ti := cardinality(v_t);
                v_t_room := v_t_room || (hd_.cap - hd_.running);
                v_t_budget := v_t_budget || hd_.budget;
                v_t_committed := v_t_committed || hd_.committed;
                v_t_weight := v_t_weight || hd_.weight;
            END IF;
            CONTINUE WHEN v_t_room[v_ti] <= 0;
            v_hold := task_hold(hd_.worst_cost, hd_.input_tokens, hd_.max_output_tokens, hd_.input_per_m, hd_.output_per_m);
            IF v_t_budget[v_ti] IS NOT NULL AND v_hold IS NULL THEN
                v_dead := v_dead || hd_.id;
                v_dead_why := v_dead_why || format(
                    'unpriced_model: %s has no price, and a tenant with a budget runs only priced models', hd_.model_key);
                CONTINUE;
            END IF;
            -- a queue whose first task does not fit the budget is passed over whole (nothing smaller overtakes it)
            IF v_t_budget[v_ti] IS NOT NULL AND v_t_committed[v_ti] + v_hold > v_t_budget[v_ti] THEN
                v_skip := v_skip || (hd_.tenant_id || '/' || hd_.model_key);
                CONTINUE;
            END IF;
            v_take := v_take || hd_.id;
            v_take_attempt := v_take_attempt || (hd_.attempt_count + 1);
            v_take_tenant := v_take_tenant || hd_.tenant_id;
            v_take_model := v_take_model || hd_.model_key;
            v_take_hold := v_take_hold || COALESCE(v_hold, 0);
            v_take_tokens := v_take_tokens || COALESCE(hd_.rate_tokens, 0);
            v_take_limited := v_take_limited || false;
            v_take_cost := v_take_cost || (1 / hd_.weight);
            v_take_start := v_take_start || GREATEST(hd_.vtime, hd_.vclock);
            v_t_room[v_ti] := v_t_room[v_ti] - 1;
            v_t_committed[v_ti] := v_t_committed[v_ti] + COALESCE(v_hold, 0);
        END LOOP;
    END IF;

    -- The writes, each table in one statement, its rows locked in key order and the tables in one order (task_queues,
    -- then tenant_spend, as finish_runs and abandon_expired_runs lock them), so that no two statements deadlock.
    IF cardinality(v_take) > 0 THEN
        WITH chosen AS (
            SELECT t.id FROM tasks t WHERE t.id = ANY(v_take) ORDER BY t.id FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE tasks
            SET status = 'running', locked_by = p_locked_by, locked_until = p_lease_until,
                attempt_count = attempt_count + 1, updated_at = p_now,
                reserved_usd = pick.hold, reserved_period = v_period
            FROM unnest(v_take, v_take_hold) AS pick (id, hold)
            WHERE tasks.id = pick.id AND tasks.id IN (SELECT id FROM chosen) AND tasks.status IN ('queued', 'failed')
            RETURNING tasks.*
        ), attempt AS (
            -- started_at is the database's time of the claim, read after its snapshot: every run it counted as
            -- ended had ended before (an attempt's times show exactly when it held a slot of its tenant's cap).
            INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at)
            SELECT gen_random_uuid(), cl.id, cl.attempt_count, 'running', clock_timestamp() FROM claimed cl
        ), event AS (
            INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
            SELECT gen_random_uuid(), cl.id, cl.tenant_id, 'task.started',
                   jsonb_build_object('type', cl.type, 'status', cl.status, 'attemptNo', cl.attempt_count), p_now
            FROM claimed cl
        )
        SELECT COALESCE(array_agg(cl.id), '{}') INTO v_claimed FROM claimed cl;
    END IF;

    IF cardinality(v_claimed) > 0 OR cardinality(v_empty_tenant) > 0 THEN
        PERFORM 1 FROM task_queues tq
        WHERE (tq.tenant_id, tq.model_key) IN (
            SELECT pick.tenant, pick.model FROM unnest(v_take, v_take_tenant, v_take_model) AS pick (id, tenant, model)
            WHERE pick.id = ANY(v_claimed)
            UNION SELECT * FROM unnest(v_empty_tenant, v_empty_model))
        ORDER BY tq.tenant_id, tq.model_key FOR UPDATE;
        -- each start moves its queue's virtual time on by its cost (SFQ: a queue's first start is at the model's clock)
        UPDATE task_queues tq SET vtime = x.vtime
        FROM (
            SELECT pick.tenant, pick.model, max(pick.start) + sum(pick.cost) AS vtime
            FROM unnest(v_take, v_take_tenant, v_take_model, v_take_start, v_take_cost)
                 AS pick (id, tenant, model, start, cost)
            WHERE pick.id = ANY(v_claimed)
            GROUP BY pick.tenant, pick.model
        ) x
        WHERE tq.tenant_id = x.tenant AND tq.model_key = x.model;
        -- a queue found with nothing due is skipped until its first task is due (never, if it has none), unless a
        -- writer added work since it was read
        UPDATE task_queues tq
        SET ready_at = COALESCE((
            SELECT GREATEST(t.available_at, p_now) FROM tasks t
            WHERE t.tenant_id = tq.tenant_id AND t.model_key = tq.model_key AND t.status IN ('queued', 'failed')
            ORDER BY t.available_at
            LIMIT 1
        ), 'infinity')
        FROM unnest(v_empty_tenant, v_empty_model, v_empty_gen) AS e (tenant, model, gen)
        WHERE tq.tenant_id = e.tenant AND tq.model_key = e.model AND tq.gen = e.gen;
    END IF;

    IF true = ANY(v_take_limited) AND cardinality(v_claimed) > 0 THEN
        INSERT INTO model_calls (model, at, tokens, task_id, attempt_no)
        SELECT pick.model, p_now, pick.tokens, pick.id, pick.attempt
        FROM unnest(v_take, v_take_model, v_take_tokens, v_take_attempt, v_take_limited)
             AS pick (id, model, tokens, attempt, limited)
        WHERE pick.limited AND pick.id = ANY(v_claimed);
    END IF;

    IF cardinality(v_claimed) > 0 THEN
        INSERT INTO tenant_spend (tenant_id, period, model, reserved_usd)
        SELECT pick.tenant, v_period, pick.model, sum(pick.hold)
        FROM unnest(v_take, v_take_tenant, v_take_model, v_take_hold) AS pick (id, tenant, model, hold)
        WHERE pick.id = ANY(v_claimed)
        GROUP BY pick.tenant, pick.model
        ORDER BY pick.tenant, pick.model
        ON CONFLICT (tenant_id, period, model)
        DO UPDATE SET reserved_usd = tenant_spend.reserved_usd + EXCLUDED.reserved_usd;
    END IF;

    -- A blocked model's wake-up names one of its due tasks (a hint: the claim it causes picks), found in its queues
    -- in share order (a few probes); a model with none left (this claim took them) needs none.
    IF cardinality(v_wake_model) > 0 THEN
        FOR mo_ IN
            SELECT DISTINCT ON (u.model) u.model, u.at, u.slots
            FROM unnest(v_wake_model, v_wake_at, v_wake_slots) AS u (model, at, slots)
            ORDER BY u.model, u.at
        LOOP
            hd_ := NULL;
            FOR qu_ IN
                SELECT tq.tenant_id FROM task_queues tq
                WHERE tq.model_key = mo_.model AND tq.ready_at <= p_now ORDER BY tq.vtime, tq.tenant_id LIMIT 20
            LOOP
                SELECT t.id INTO hd_ FROM tasks t
                WHERE t.tenant_id = qu_.tenant_id AND t.model_key = mo_.model AND t.status IN ('queued', 'failed')
                  AND t.available_at <= p_now
                LIMIT 1;
                EXIT WHEN hd_.id IS NOT NULL;
            END LOOP;
            IF hd_.id IS NOT NULL THEN
                v_wake_task := v_wake_task || hd_.id;
                v_wake_found := v_wake_found || mo_.model;
                v_wake_found_at := v_wake_found_at || mo_.at;
                v_wake_found_slots := v_wake_found_slots || mo_.slots;
            END IF;
        END LOOP;
        v_wake_model := v_wake_found;
        v_wake_at := v_wake_found_at;
        v_wake_slots := v_wake_found_slots;
    END IF;

    -- Models: the fair-share clock moves to the latest start served; rpm spacing; blocks and their wake-up, one per
    -- model: a claim that finds one already on its way for no later than it would send none.
    IF cardinality(v_state_model) > 0 OR cardinality(v_claimed) > 0 OR cardinality(v_wake_model) > 0 THEN
        WITH served AS (
            SELECT pick.model, max(pick.start) AS start
            FROM unnest(v_take, v_take_model, v_take_start) AS pick (id, model, start)
            WHERE pick.id = ANY(v_claimed) GROUP BY pick.model
        ), st AS (
            SELECT * FROM unnest(v_state_model, v_state_tat, v_state_blocked) AS s (model, tat, blocked)
        ), wk AS (
            SELECT * FROM unnest(v_wake_model, v_wake_at, v_wake_task, v_wake_slots) AS w (model, at, task, slots)
        ), upsert AS (
            INSERT INTO model_state AS s (model_key, vclock, rpm_tat, blocked_until, wake_at)
            SELECT a.model, COALESCE(sv.start, 0), st.tat, COALESCE(st.blocked, wk.at), wk.at
            FROM (SELECT model FROM served UNION SELECT model FROM st UNION SELECT model FROM wk) a
            LEFT JOIN served sv USING (model) LEFT JOIN st USING (model) LEFT JOIN wk USING (model)
            ORDER BY a.model
            ON CONFLICT (model_key) DO UPDATE
            SET vclock = GREATEST(s.vclock, EXCLUDED.vclock),
                rpm_tat = COALESCE(EXCLUDED.rpm_tat, s.rpm_tat),
                blocked_until = EXCLUDED.blocked_until,
                wake_at = CASE WHEN EXCLUDED.wake_at IS NULL THEN s.wake_at
                               WHEN s.wake_at > p_now AND s.wake_at <= EXCLUDED.wake_at THEN s.wake_at
                               ELSE EXCLUDED.wake_at END
        )
        SELECT COALESCE(array_agg(wk.model), '{}'), COALESCE(array_agg(wk.at), '{}'), COALESCE(array_agg(wk.task), '{}'),
               COALESCE(array_agg(wk.slots), '{}')
        INTO v_wake_model, v_wake_at, v_wake_task, v_wake_slots
        FROM wk
        WHERE NOT EXISTS (  -- this reads the state as it was before this statement
            SELECT 1 FROM model_state s WHERE s.model_key = wk.model AND s.wake_at > p_now AND s.wake_at <= wk.at);
    END IF;

    IF cardinality(v_dead) > 0 THEN
        WITH dead AS (
            UPDATE tasks SET status = 'dead_letter', last_error = d.why, updated_at = p_now
            FROM unnest(v_dead, v_dead_why) AS d (id, why)
            WHERE tasks.id = d.id AND tasks.status IN ('queued', 'failed')
            RETURNING tasks.*
        ), event AS (
            INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
            SELECT gen_random_uuid(), d.id, d.tenant_id, 'task.dead_lettered',
                   jsonb_build_object('type', d.type, 'status', d.status, 'attemptNo', d.attempt_count), p_now
            FROM dead d
        )
        SELECT COALESCE(array_agg(d.id), '{}') INTO v_dead FROM dead d;
    END IF;

    RETURN QUERY SELECT t, NULL::timestamptz, NULL::integer FROM tasks t WHERE t.id = ANY(v_claimed || v_dead);

    -- a wake-up for each blocked model whose wake-up is not on its way yet
    RETURN QUERY
    SELECT t, w.at, w.slots FROM unnest(v_wake_task, v_wake_at, v_wake_slots) AS w (id, at, slots) JOIN tasks t ON t.id = w.id;
END
$$;

-- The end of leased runs, one element each in p_runs (a JSON array; adapters/postgres.py builds it from RunOutcome).
-- Each is fenced by (id, attempt, locked_by): a run whose lease was taken over changes nothing, and two attempts of
-- one task in one call end only the current one. The status comes from the caller; a retryable failure of a task whose
-- cancel was requested meanwhile ends it cancelled (it would never be claimed again). What each attempt held on its
-- tenant's month is released and its cost spent; an attempt whose cost is not known but may have been billed
-- (charge_held) is charged what it held, the worst it could cost, and its record says the cost is estimated. The
-- window of a model with limits is settled with the tokens the call really used, and a provider's pause is recorded.
-- Tables are locked in the claim's order: task_queues, then tenant_spend.
CREATE FUNCTION finish_runs(p_runs jsonb, p_locked_by text, p_now timestamptz) RETURNS SETOF tasks
    LANGUAGE plpgsql
AS $$
-- transition: running -> succeeded
-- transition: running -> failed
-- transition: running -> dead_letter
-- transition: running -> cancelled
DECLARE
    v_done jsonb;
BEGIN
    WITH run AS (
        SELECT * FROM jsonb_to_recordset(p_runs) AS r (
            id uuid, attempt_no smallint, status text, event_type text, attempt_status text, last_error text,
            available_at timestamptz, model text, tokens_in integer, tokens_out integer, cost numeric,
            latency_ms integer, error_code text, error_detail text, artifact_kind text, artifact_content text,
            charge_held boolean, pause_until timestamptz)
    ), held AS (
        -- what the runs hold on their tenants' months, read before the update below clears it
        SELECT t.id, t.attempt_count, t.reserved_usd, t.reserved_period
        FROM tasks t JOIN run ON run.id = t.id AND t.attempt_count = run.attempt_no
        WHERE t.status = 'running' AND t.locked_by = p_locked_by
    ), charged AS (
        SELECT run.*, held.reserved_usd AS held_usd, held.reserved_period AS period,
               COALESCE(run.cost, CASE WHEN run.charge_held THEN held.reserved_usd END) AS charge
        FROM run JOIN held ON held.id = run.id AND held.attempt_count = run.attempt_no
    ), done AS (
        UPDATE tasks
        SET status = CASE WHEN c.status = 'failed' AND tasks.cancel_requested_at IS NOT NULL THEN 'cancelled'
                          ELSE c.status END,
            locked_by = NULL, locked_until = NULL, last_error = c.last_error,
            available_at = COALESCE(c.available_at, tasks.available_at),
            tokens_in = tasks.tokens_in + COALESCE(c.tokens_in, 0),
            tokens_out = tasks.tokens_out + COALESCE(c.tokens_out, 0),
            cost = CASE WHEN c.charge IS NULL THEN tasks.cost ELSE COALESCE(tasks.cost, 0) + c.charge END,
            -- a failed task's next wake-up is sent right after this commit
            dispatched_at = CASE WHEN c.status = 'failed' AND tasks.cancel_requested_at IS NULL THEN p_now
                                 ELSE tasks.dispatched_at END,
            reserved_usd = NULL, reserved_period = NULL,
            updated_at = p_now
        FROM charged c
        WHERE tasks.id = c.id AND tasks.attempt_count = c.attempt_no
          AND tasks.status IN ('running') AND tasks.locked_by = p_locked_by
        RETURNING tasks.id, tasks.attempt_count, tasks.tenant_id, tasks.type, tasks.status, tasks.model_key,
                  tasks.available_at
    ), attempt AS (
        UPDATE task_attempts
        -- the database's time, as the claim's started_at: before this commits, so before any claim counts it ended
        SET status = c.attempt_status, ended_at = statement_timestamp(), model = c.model, tokens_in = c.tokens_in,
            tokens_out = c.tokens_out, cost = c.charge, cost_estimated = c.cost IS NULL AND c.charge IS NOT NULL,
            latency_ms = c.latency_ms, error_code = c.error_code, error_detail = c.error_detail
        FROM charged c JOIN done ON done.id = c.id AND done.attempt_count = c.attempt_no
        WHERE task_attempts.task_id = c.id AND task_attempts.attempt_no = c.attempt_no
          AND task_attempts.status = 'running'
    ), artifact AS (
        INSERT INTO task_artifacts (id, task_id, kind, content, created_at)
        SELECT gen_random_uuid(), c.id, c.artifact_kind, c.artifact_content, p_now
        FROM charged c JOIN done ON done.id = c.id AND done.attempt_count = c.attempt_no
        WHERE c.artifact_kind IS NOT NULL
    ), event AS (
        INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
        SELECT gen_random_uuid(), done.id, done.tenant_id,
               CASE done.status WHEN 'cancelled' THEN 'task.cancelled' ELSE c.event_type END,
               jsonb_build_object('type', done.type, 'status', done.status, 'attemptNo', done.attempt_count), p_now
        FROM done JOIN charged c ON c.id = done.id AND c.attempt_no = done.attempt_count
    )
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'id', done.id, 'attempt_no', done.attempt_count, 'tenant_id', done.tenant_id,
               'model_key', done.model_key, 'status', done.status, 'available_at', done.available_at,
               'period', c.period, 'held', c.held_usd, 'charge', COALESCE(c.charge, 0),
               'tokens_in', c.tokens_in, 'tokens_out', c.tokens_out, 'pause_until', c.pause_until)), '[]')
    INTO v_done
    FROM done JOIN charged c ON c.id = done.id AND c.attempt_no = done.attempt_count;

    IF jsonb_array_length(v_done) = 0 THEN
        RETURN;
    END IF;

    -- retries: their queues are ready at their retry time (each step below only when it has something to do)
    IF v_done @? '$[*] ? (@.status == "failed")' THEN
        PERFORM ready_queues(array_agg(d.tenant_id), array_agg(d.model_key), array_agg(d.available_at))
        FROM jsonb_to_recordset(v_done) AS d (tenant_id text, model_key text, status text, available_at timestamptz)
        WHERE d.status = 'failed';
    END IF;

    -- the tenants' months: each hold released, each charge spent
    PERFORM 1 FROM tenant_spend s
    WHERE (s.tenant_id, s.period, s.model) IN (
        SELECT d.tenant_id, d.period, COALESCE(d.model_key, 'unknown')
        FROM jsonb_to_recordset(v_done) AS d (tenant_id text, period date, model_key text))
    ORDER BY s.tenant_id, s.period, s.model FOR UPDATE;
    UPDATE tenant_spend
    SET spent_usd = tenant_spend.spent_usd + x.charge, reserved_usd = GREATEST(tenant_spend.reserved_usd - x.held, 0),
        tokens_in = tenant_spend.tokens_in + x.tokens_in, tokens_out = tenant_spend.tokens_out + x.tokens_out,
        attempts = tenant_spend.attempts + x.attempts
    FROM (
        SELECT d.tenant_id, d.period, COALESCE(d.model_key, 'unknown') AS model, sum(d.charge) AS charge,
               sum(COALESCE(d.held, 0)) AS held, sum(COALESCE(d.tokens_in, 0)) AS tokens_in,
               sum(COALESCE(d.tokens_out, 0)) AS tokens_out, count(*) AS attempts
        FROM jsonb_to_recordset(v_done) AS d (
            tenant_id text, period date, model_key text, charge numeric, held numeric, tokens_in integer,
            tokens_out integer)
        GROUP BY 1, 2, 3
    ) x
    WHERE tenant_spend.tenant_id = x.tenant_id AND tenant_spend.period = x.period AND tenant_spend.model = x.model;

    -- a provider's 429 (or an account's refusal) with a wait: no run of that model starts before it, whoever's
    IF v_done @? '$[*] ? (@.pause_until != null)' THEN
    INSERT INTO model_limits AS l (model, paused_until, updated_at)
    SELECT d.model_key, max(d.pause_until), p_now
    FROM jsonb_to_recordset(v_done) AS d (model_key text, pause_until timestamptz)
    WHERE d.pause_until IS NOT NULL AND d.model_key IS NOT NULL
    GROUP BY d.model_key
    ORDER BY d.model_key
    ON CONFLICT (model) DO UPDATE
    SET paused_until = GREATEST(l.paused_until, EXCLUDED.paused_until), updated_at = EXCLUDED.updated_at;
    END IF;

    -- the rate window: a call that reported its usage counts what it really used (only models with limits have rows)
    IF EXISTS (SELECT 1 FROM model_limits l WHERE l.model IN (SELECT e ->> 'model_key' FROM jsonb_array_elements(v_done) e)
               AND (l.rpm IS NOT NULL OR l.tpm IS NOT NULL)) THEN
        UPDATE model_calls k SET tokens = d.tokens_in + d.tokens_out
        FROM jsonb_to_recordset(v_done) AS d (id uuid, attempt_no smallint, tokens_in integer, tokens_out integer)
        WHERE k.task_id = d.id AND k.attempt_no = d.attempt_no AND d.tokens_in IS NOT NULL AND d.tokens_out IS NOT NULL;
    END IF;

    RETURN QUERY SELECT t.* FROM tasks t WHERE t.id IN (SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(v_done) e);
END
$$;

-- Runs whose lease expired died (timeout, crash, lost host): each attempt is closed as abandoned; the task is
-- cancelled if that was asked, dead-lettered if its attempts are spent, else failed and due at once. What it held on
-- its tenant's month is charged (the call may have been billed, and how much is not known), marked estimated.
CREATE FUNCTION abandon_expired_runs(p_ids uuid[], p_now timestamptz) RETURNS SETOF tasks
    LANGUAGE plpgsql
AS $$
-- transition: running -> cancelled
-- transition: running -> dead_letter
-- transition: running -> failed
DECLARE
    v_done jsonb;
BEGIN
    WITH held AS (
        SELECT tasks.id, tasks.attempt_count, tasks.reserved_usd, tasks.reserved_period FROM tasks
        WHERE tasks.id = ANY(p_ids) AND tasks.status = 'running' AND tasks.locked_until < p_now
    ), stale AS (
        UPDATE tasks
        SET status = CASE WHEN tasks.cancel_requested_at IS NOT NULL THEN 'cancelled'
                          WHEN tasks.attempt_count - tasks.budget_from >= tasks.max_attempts THEN 'dead_letter'
                          ELSE 'failed' END,
            last_error = 'lease_expired: the run stopped renewing its lease (timeout or crash)',
            locked_by = NULL, locked_until = NULL, available_at = p_now, dispatched_at = p_now,
            cost = COALESCE(tasks.cost, 0) + COALESCE(held.reserved_usd, 0),
            reserved_usd = NULL, reserved_period = NULL, updated_at = p_now
        FROM held
        WHERE tasks.id = held.id AND tasks.status IN ('running') AND tasks.locked_until < p_now
          AND tasks.attempt_count = held.attempt_count
        RETURNING tasks.id, tasks.attempt_count, tasks.tenant_id, tasks.type, tasks.status, tasks.model_key,
                  held.reserved_usd AS held, held.reserved_period AS period
    ), attempt AS (
        UPDATE task_attempts a
        SET status = 'abandoned', ended_at = p_now, error_code = 'lease_expired',
            error_detail = 'the run stopped renewing its lease', cost = stale.held, cost_estimated = true
        FROM stale
        WHERE a.task_id = stale.id AND a.attempt_no = stale.attempt_count AND a.status = 'running'
    ), event AS (
        INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
        SELECT gen_random_uuid(), stale.id, stale.tenant_id,
               CASE stale.status WHEN 'cancelled' THEN 'task.cancelled' WHEN 'dead_letter' THEN 'task.dead_lettered'
                                 ELSE 'task.failed' END,
               jsonb_build_object('type', stale.type, 'status', stale.status, 'attemptNo', stale.attempt_count), p_now
        FROM stale
    )
    SELECT COALESCE(jsonb_agg(to_jsonb(stale)), '[]') INTO v_done FROM stale;

    IF jsonb_array_length(v_done) = 0 THEN
        RETURN;
    END IF;

    PERFORM ready_queues(array_agg(d.tenant_id), array_agg(d.model_key), array_agg(p_now))
    FROM jsonb_to_recordset(v_done) AS d (tenant_id text, model_key text, status text)
    WHERE d.status = 'failed'
    HAVING count(*) > 0;

    PERFORM 1 FROM tenant_spend s
    WHERE (s.tenant_id, s.period, s.model) IN (
        SELECT d.tenant_id, d.period, COALESCE(d.model_key, 'unknown')
        FROM jsonb_to_recordset(v_done) AS d (tenant_id text, period date, model_key text))
    ORDER BY s.tenant_id, s.period, s.model FOR UPDATE;
    UPDATE tenant_spend
    SET spent_usd = tenant_spend.spent_usd + x.held, reserved_usd = GREATEST(tenant_spend.reserved_usd - x.held, 0),
        attempts = tenant_spend.attempts + x.attempts
    FROM (
        SELECT d.tenant_id, d.period, COALESCE(d.model_key, 'unknown') AS model, sum(COALESCE(d.held, 0)) AS held,
               count(*) AS attempts
        FROM jsonb_to_recordset(v_done) AS d (tenant_id text, period date, model_key text, held numeric)
        GROUP BY 1, 2, 3
    ) x
    WHERE tenant_spend.tenant_id = x.tenant_id AND tenant_spend.period = x.period AND tenant_spend.model = x.model;

    RETURN QUERY SELECT t.* FROM tasks t WHERE t.id IN (SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(v_done) e);
END
$$;
