-- Limits and budgets (docs/executor.md, docs/operations.md): per-model rate limits shared by every executor, a
-- provider's 429 pausing a model for everyone, prices kept in the database, hard monthly budgets per tenant. The
-- claim enforces them all, in the one statement that starts runs.

-- What one attempt of a task may use, fixed when it is created.
ALTER TABLE tasks
    ADD COLUMN model             text,                                      -- asked for: payload.model or the default
    ADD COLUMN input_tokens      integer CHECK (input_tokens >= 0),         -- at most: the bytes of what is sent
    ADD COLUMN max_output_tokens integer CHECK (max_output_tokens >= 1),    -- params.maxTokens or its type's default
    ADD COLUMN worst_cost        numeric(16, 8) CHECK (worst_cost >= 0),    -- both at the model's price; null: unpriced
    ADD COLUMN max_cost_usd      numeric(16, 8) CHECK (max_cost_usd > 0),   -- not retried once its cost reaches this
    -- the running attempt's hold on its tenant's budget (its worst cost), and the month it is held in
    ADD COLUMN reserved_usd      numeric(16, 8) CHECK (reserved_usd >= 0),
    ADD COLUMN reserved_period   date,
    -- a claim held it back until then: its model's rate limit or pause, or its tenant's budget
    ADD COLUMN deferred_until    timestamptz,
    ADD COLUMN deferred_for      text CHECK (deferred_for IN ('rate_limit', 'budget'));

-- USD per million tokens: genai-prices' data for the providers we call (`aitasks models sync-prices`, run with every
-- migration), AI_PRICES_JSON's overrides, and the fake model's. Read by the functions, cached for minutes.
CREATE TABLE model_prices (
    model              text           PRIMARY KEY,
    provider           text           NOT NULL,
    input_per_m        numeric(12, 6) NOT NULL CHECK (input_per_m >= 0),
    output_per_m       numeric(12, 6) NOT NULL CHECK (output_per_m >= 0),
    cached_input_per_m numeric(12, 6) CHECK (cached_input_per_m >= 0),
    source             text           NOT NULL,
    updated_at         timestamptz    NOT NULL
);

-- Per model, shared by every executor (`aitasks models set-limits`); a provider's 429 sets paused_until.
CREATE TABLE model_limits (
    model        text        PRIMARY KEY,
    rpm          integer     CHECK (rpm > 0),   -- calls started in any 60 s; null: no limit
    tpm          integer     CHECK (tpm > 0),   -- tokens (input + output reserved) in any 60 s; null: no limit
    paused_until timestamptz,                   -- no call starts before this
    updated_at   timestamptz NOT NULL
);

-- The calls started of each model with rate limits, for its 60 s window (the sweeper prunes older rows).
CREATE TABLE model_calls (
    model  text        NOT NULL,
    at     timestamptz NOT NULL,
    tokens integer     NOT NULL
);
CREATE INDEX model_calls_model_at_idx ON model_calls (model, at);

-- Monthly budgets in USD: a tier's default (none by default) and an operator's override per tenant.
ALTER TABLE tier_limits ADD COLUMN monthly_budget_usd numeric(14, 6) CHECK (monthly_budget_usd >= 0);
ALTER TABLE tenant_limits ADD COLUMN monthly_budget_usd numeric(14, 6) CHECK (monthly_budget_usd >= 0);

-- A tenant's month per model: what its ended attempts cost (spent) and what its running ones hold (reserved).
CREATE TABLE tenant_spend (
    tenant_id    text           NOT NULL,
    period       date           NOT NULL,   -- the month's first day (UTC)
    model        text           NOT NULL,
    spent_usd    numeric(16, 8) NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
    reserved_usd numeric(16, 8) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    tokens_in    bigint         NOT NULL DEFAULT 0,
    tokens_out   bigint         NOT NULL DEFAULT 0,
    attempts     integer        NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period, model)
);

CREATE FUNCTION budget_period(p_at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT date_trunc('month', p_at AT TIME ZONE 'UTC')::date
$$;

-- A tenant's monthly budget: its override, else its tier's (the standard tier's without one); null: none.
CREATE FUNCTION tenant_budget(p_tenant text) RETURNS numeric
    LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(
        (SELECT monthly_budget_usd FROM tenant_limits WHERE tenant_id = p_tenant),
        (SELECT l.monthly_budget_usd FROM tier_limits l
         WHERE l.tier = COALESCE((SELECT tier FROM tenants WHERE tenant_id = p_tenant), 'standard')))
$$;

-- What a tenant's month has spent and holds.
CREATE FUNCTION tenant_committed(p_tenant text, p_period date) RETURNS numeric
    LANGUAGE sql STABLE
AS $$
    SELECT COALESCE(sum(spent_usd + reserved_usd), 0) FROM tenant_spend WHERE tenant_id = p_tenant AND period = p_period
$$;

DROP FUNCTION task_waiting_for(text, text, timestamptz, timestamptz);
CREATE FUNCTION task_waiting_for(
    p_tenant text, p_status text, p_available_at timestamptz, p_deferred_until timestamptz, p_deferred_for text,
    p_now timestamptz
) RETURNS text
    LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN p_status NOT IN ('queued', 'failed') THEN NULL
        WHEN p_available_at > p_now THEN CASE p_status WHEN 'failed' THEN 'retry' ELSE 'schedule' END
        WHEN p_deferred_until > p_now THEN p_deferred_for
        WHEN tenant_running(p_tenant) >= tenant_max_concurrency(p_tenant) THEN 'concurrency'
    END
$$;

-- The claim of 0008, now also within each model's rate limits and pause and each tenant's budget. Candidates come
-- in the same order (fair share, priority, age, within the caps); each is admitted if its model can start one more
-- call of its tokens in the last 60 s and its tenant's month can hold its worst cost, counting what this claim
-- admitted before it. One it cannot admit is deferred (deferred_until, deferred_for) and returned with the claimed
-- tasks, still queued, so the executor can wake the work again when the limit lets it; it is no candidate until then.
-- Admitted tasks reserve their worst cost in tenant_spend and, for models with rate limits, a row in model_calls.
CREATE OR REPLACE FUNCTION claim_tasks(p_locked_by text, p_lease_until timestamptz, p_now timestamptz, p_limit integer)
    RETURNS SETOF tasks
    LANGUAGE plpgsql
AS $$
-- transition: queued -> reserved -> running
-- transition: failed -> queued -> reserved -> running
DECLARE
    cand record;
    v_period date := budget_period(p_now);
    v_next_period timestamptz := (budget_period(p_now) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    v_take uuid[] := '{}';
    v_defer_ids uuid[] := '{}';
    v_defer_until timestamptz[] := '{}';
    v_defer_for text[] := '{}';
    v_models jsonb := '{}';
    v_budgets jsonb := '{}';
    v_model jsonb;
    v_budget jsonb;
    v_until timestamptz;
    v_why text;
BEGIN
    PERFORM FROM claim_gate FOR UPDATE;
    FOR cand IN
        WITH tenant_load AS (
            SELECT w.tenant_id, tenant_running(w.tenant_id) AS running, tenant_max_concurrency(w.tenant_id) AS cap
            FROM waiting_tenants() w WHERE w.first_due <= p_now
        )
        SELECT d.id, d.tenant_id, d.model, d.tokens, d.worst_cost
        FROM tenant_load l
        CROSS JOIN LATERAL (
            SELECT x.*, row_number() OVER (ORDER BY x.priority, x.available_at, x.id) AS n
            FROM (
                SELECT t.id, t.tenant_id, t.model, t.priority, t.available_at, t.worst_cost,
                       COALESCE(t.input_tokens, 0) + COALESCE(t.max_output_tokens, 0) AS tokens
                FROM tasks t
                WHERE t.tenant_id = l.tenant_id AND t.status IN ('queued', 'failed') AND t.available_at <= p_now
                  AND t.cancel_requested_at IS NULL AND (t.deferred_until IS NULL OR t.deferred_until <= p_now)
                ORDER BY t.priority, t.available_at, t.id
                LIMIT GREATEST(LEAST(l.cap - l.running, p_limit), 0)
            ) x
        ) d
        ORDER BY l.running + d.n, d.priority, d.available_at, d.id
    LOOP
        EXIT WHEN cardinality(v_take) >= p_limit;
        v_why := NULL;
        v_model := '{}';
        -- its model: paused, or its last 60 s at a limit?
        IF cand.model IS NOT NULL THEN
            v_model := v_models -> cand.model;
            IF v_model IS NULL THEN
                SELECT jsonb_build_object('rpm', ml.rpm, 'tpm', ml.tpm, 'paused', ml.paused_until,
                                          'calls', u.calls, 'tokens', u.tokens, 'oldest', u.oldest)
                INTO v_model
                FROM model_limits ml
                CROSS JOIN LATERAL (
                    SELECT count(*) AS calls, COALESCE(sum(k.tokens), 0) AS tokens, min(k.at) AS oldest
                    FROM model_calls k WHERE k.model = ml.model AND k.at > p_now - interval '60 seconds'
                ) u
                WHERE ml.model = cand.model;
                v_model := COALESCE(v_model, '{}');
                v_models := v_models || jsonb_build_object(cand.model, v_model);
            END IF;
            IF (v_model ->> 'paused')::timestamptz > p_now THEN
                v_why := 'rate_limit';
                v_until := (v_model ->> 'paused')::timestamptz;
            ELSIF (v_model ->> 'calls')::integer >= (v_model ->> 'rpm')::integer
               OR (v_model ->> 'tokens')::bigint + cand.tokens > (v_model ->> 'tpm')::bigint THEN
                v_why := 'rate_limit';
                v_until := COALESCE((v_model ->> 'oldest')::timestamptz, p_now) + interval '60 seconds';
            END IF;
        END IF;
        -- its tenant's month: can it hold the worst this attempt can cost?
        v_budget := v_budgets -> cand.tenant_id;
        IF v_budget IS NULL THEN
            v_budget := jsonb_build_object(
                'budget', tenant_budget(cand.tenant_id), 'committed', tenant_committed(cand.tenant_id, v_period));
        END IF;
        IF v_why IS NULL AND v_budget ->> 'budget' IS NOT NULL AND (
            cand.worst_cost IS NULL
            OR (v_budget ->> 'committed')::numeric + cand.worst_cost > (v_budget ->> 'budget')::numeric
        ) THEN
            v_why := 'budget';
            v_until := v_next_period;
        END IF;
        IF v_why IS NULL THEN
            v_take := v_take || cand.id;
            IF v_model ? 'calls' THEN
                v_models := v_models || jsonb_build_object(cand.model, v_model || jsonb_build_object(
                    'calls', (v_model ->> 'calls')::integer + 1,
                    'tokens', (v_model ->> 'tokens')::bigint + cand.tokens,
                    'oldest', COALESCE(v_model -> 'oldest', to_jsonb(p_now))));
            END IF;
            v_budget := v_budget || jsonb_build_object(
                'committed', (v_budget ->> 'committed')::numeric + COALESCE(cand.worst_cost, 0));
        ELSE
            v_defer_ids := v_defer_ids || cand.id;
            v_defer_until := v_defer_until || v_until;
            v_defer_for := v_defer_for || v_why;
        END IF;
        v_budgets := v_budgets || jsonb_build_object(cand.tenant_id, v_budget);
    END LOOP;

    IF cardinality(v_defer_ids) > 0 THEN
        RETURN QUERY
        WITH deferred AS (
            UPDATE tasks SET deferred_until = d.until, deferred_for = d.why
            FROM unnest(v_defer_ids, v_defer_until, v_defer_for) AS d (id, until, why)
            WHERE tasks.id = d.id AND tasks.status IN ('queued', 'failed')
            RETURNING tasks.*
        )
        SELECT * FROM deferred;
    END IF;

    IF cardinality(v_take) > 0 THEN
        RETURN QUERY
        WITH chosen AS (
            SELECT t.id FROM tasks t WHERE t.id = ANY(v_take) FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE tasks
            SET status = 'running', locked_by = p_locked_by, locked_until = p_lease_until,
                attempt_count = attempt_count + 1, updated_at = p_now,
                reserved_usd = COALESCE(worst_cost, 0), reserved_period = v_period,
                deferred_until = NULL, deferred_for = NULL
            WHERE id IN (SELECT id FROM chosen) AND status IN ('queued', 'failed')
            RETURNING *
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
        ), calls AS (
            INSERT INTO model_calls (model, at, tokens)
            SELECT cl.model, p_now, COALESCE(cl.input_tokens, 0) + COALESCE(cl.max_output_tokens, 0)
            FROM claimed cl
            WHERE EXISTS (SELECT 1 FROM model_limits ml
                          WHERE ml.model = cl.model AND (ml.rpm IS NOT NULL OR ml.tpm IS NOT NULL))
        ), holds AS (
            INSERT INTO tenant_spend (tenant_id, period, model, reserved_usd)
            SELECT cl.tenant_id, v_period, COALESCE(cl.model, 'unknown'), sum(cl.reserved_usd)
            FROM claimed cl GROUP BY cl.tenant_id, COALESCE(cl.model, 'unknown')
            ON CONFLICT (tenant_id, period, model)
            DO UPDATE SET reserved_usd = tenant_spend.reserved_usd + EXCLUDED.reserved_usd
        )
        SELECT * FROM claimed;
    END IF;
END
$$;
