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
INSERT INTO model_limits (model, rpm, tpm, updated_at)
VALUES (%(model)s, %(rpm)s, %(tpm)s, %(now)s)
ON CONFLICT (model) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, updated_at = EXCLUDED.updated_at
RETURNING model;

-- name: models
-- Every model with a price or limits: its limits, its pause, and what it started in the last 60 s.
SELECT m.model, p.provider, p.input_per_m, p.output_per_m, l.rpm, l.tpm,
       CASE WHEN l.paused_until > %(now)s THEN l.paused_until END AS paused_until,
       (SELECT count(*) FROM model_calls k WHERE k.model = m.model AND k.at > %(now)s - interval '60 seconds') AS calls,
       (SELECT COALESCE(sum(k.tokens), 0) FROM model_calls k
        WHERE k.model = m.model AND k.at > %(now)s - interval '60 seconds') AS tokens
FROM (SELECT model FROM model_prices UNION SELECT model FROM model_limits) AS m
LEFT JOIN model_prices p ON p.model = m.model
LEFT JOIN model_limits l ON l.model = m.model
ORDER BY l.model IS NULL, m.model;

-- name: prune_calls
-- What no 60 s window looks at any more.
DELETE FROM model_calls WHERE ctid IN (SELECT ctid FROM model_calls WHERE at < %(cutoff)s LIMIT %(limit)s)
RETURNING 1;
