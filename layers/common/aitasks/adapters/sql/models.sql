-- Models: their prices (USD per million tokens) and their limits, shared by every executor.

-- name: prices
SELECT model, provider, input_per_m, output_per_m, cached_input_per_m FROM model_prices;

-- name: priced_models
SELECT model, provider, input_per_m, output_per_m, cached_input_per_m, source, updated_at FROM model_prices
ORDER BY provider, model;

-- name: save_price
INSERT INTO model_prices (model, provider, input_per_m, output_per_m, cached_input_per_m, source, updated_at)
VALUES (%(model)s, %(provider)s, %(input_per_m)s, %(output_per_m)s, %(cached_input_per_m)s, %(source)s, %(now)s)
ON CONFLICT (model) DO UPDATE
SET provider = EXCLUDED.provider, input_per_m = EXCLUDED.input_per_m, output_per_m = EXCLUDED.output_per_m,
    cached_input_per_m = EXCLUDED.cached_input_per_m, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at;

-- name: forget_prices_not_in
-- A price the data no longer has (a model withdrawn): dropped, so that it is not charged at a stale rate.
DELETE FROM model_prices WHERE NOT (model = ANY(%(models)s)) RETURNING model;

-- name: set_limits
-- Under the model's canonical name (the caller maps it). What a claim found blocked under the old limits is
-- forgotten, so the next claim judges it afresh (the caller wakes the model's work right after).
WITH saved AS (
    INSERT INTO model_limits (model, rpm, tpm, updated_at)
    VALUES (%(model)s, %(rpm)s, %(tpm)s, %(now)s)
    ON CONFLICT (model) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, updated_at = EXCLUDED.updated_at
    RETURNING model
), state AS (
    UPDATE model_state SET blocked_until = NULL, wake_at = NULL, rpm_tat = NULL WHERE model_key = %(model)s
)
SELECT model FROM saved;

-- name: resume_model
-- An operator lifts a provider's pause at once (the caller wakes the model's work right after).
WITH resumed AS (
    UPDATE model_limits SET paused_until = NULL, updated_at = %(now)s WHERE model = %(model)s RETURNING model
), state AS (
    UPDATE model_state SET blocked_until = NULL, wake_at = NULL WHERE model_key = %(model)s
)
SELECT model FROM resumed;

-- name: model_wake_list
-- Due tasks of a model, one per tenant with due work on it (at most %(limit)s): what an operator's change may have
-- released, to wake right away.
SELECT t.* FROM task_queues q
CROSS JOIN LATERAL (
    SELECT t.* FROM tasks t
    WHERE t.tenant_id = q.tenant_id AND t.model_key = q.model_key AND t.status IN ('queued', 'failed')
      AND t.available_at <= %(now)s
    ORDER BY task_rank(t.available_at, t.priority), t.id
    LIMIT 1
) t
WHERE q.model_key = %(model)s AND q.ready_at <= %(now)s
ORDER BY q.vtime, q.tenant_id
LIMIT %(limit)s;

-- name: models
-- Every model with a price or limits: its limits, its pause, and what it started in the last 60 s.
SELECT m.model, p.provider, p.input_per_m, p.output_per_m, l.rpm, l.tpm,
       CASE WHEN l.paused_until > %(now)s THEN l.paused_until END AS paused_until,
       (SELECT count(*) FROM model_calls k WHERE k.model = m.model AND k.at > %(now)s - rate_window()) AS calls,
       (SELECT COALESCE(sum(k.tokens), 0) FROM model_calls k
        WHERE k.model = m.model AND k.at > %(now)s - rate_window()) AS tokens
FROM (SELECT model FROM model_prices UNION SELECT model FROM model_limits) AS m
LEFT JOIN model_prices p ON p.model = m.model
LEFT JOIN model_limits l ON l.model = m.model
ORDER BY l.model IS NULL, m.model;

-- name: prune_calls
-- What no rate window looks at any more, and queues that hold nothing and whose use the model's fair-share clock has
-- passed (a queue made again starts at that clock anyway: nothing is lost). A create that adds to a queue meanwhile
-- moves its ready_at, so the row is kept.
WITH queues AS (
    DELETE FROM task_queues q
    WHERE q.ctid IN (
        SELECT q2.ctid FROM task_queues q2 JOIN model_state s ON s.model_key = q2.model_key
        WHERE q2.ready_at = 'infinity' AND q2.vtime <= s.vclock
          AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.tenant_id = q2.tenant_id AND t.model_key = q2.model_key
                          AND t.status IN ('queued', 'failed', 'running'))
        LIMIT %(limit)s)
      AND q.ready_at = 'infinity'
)
DELETE FROM model_calls WHERE ctid IN (SELECT ctid FROM model_calls WHERE at < %(cutoff)s LIMIT %(limit)s)
RETURNING 1;
