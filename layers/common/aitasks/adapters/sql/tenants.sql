-- name: get_tenant
SELECT tenant_id, tier, usage_key_id, usage_key FROM tenants WHERE tenant_id = %(tenant_id)s;

-- name: save_tenant
INSERT INTO tenants (tenant_id, tier, usage_key_id, usage_key, updated_at)
VALUES (%(tenant_id)s, %(tier)s, %(usage_key_id)s, %(usage_key)s, %(now)s)
ON CONFLICT (tenant_id) DO UPDATE
SET tier = EXCLUDED.tier, usage_key_id = EXCLUDED.usage_key_id, usage_key = EXCLUDED.usage_key,
    updated_at = EXCLUDED.updated_at
RETURNING tenant_id;

-- name: set_max_concurrency
INSERT INTO tenant_limits (tenant_id, max_concurrency, updated_at)
VALUES (%(tenant_id)s, %(max_concurrency)s, %(now)s)
ON CONFLICT (tenant_id) DO UPDATE SET max_concurrency = EXCLUDED.max_concurrency, updated_at = EXCLUDED.updated_at
RETURNING tenant_id;

-- name: set_monthly_budget
-- Taken under the claim gate, so that no claim that read the old budget commits after it. The work it lets go is
-- woken by the caller right after (a budget held back nothing that was marked: claims read it afresh).
WITH gate AS (
    SELECT 1 FROM claim_gate FOR UPDATE
)
INSERT INTO tenant_limits (tenant_id, monthly_budget_usd, updated_at)
SELECT %(tenant_id)s, %(monthly_budget_usd)s, %(now)s FROM gate
ON CONFLICT (tenant_id) DO UPDATE
SET monthly_budget_usd = EXCLUDED.monthly_budget_usd, updated_at = EXCLUDED.updated_at
RETURNING tenant_id;

-- name: set_weight
-- A tenant's share of a scarce model against the others' (null: its tier's).
INSERT INTO tenant_limits (tenant_id, weight, updated_at)
VALUES (%(tenant_id)s, %(weight)s, %(now)s)
ON CONFLICT (tenant_id) DO UPDATE SET weight = EXCLUDED.weight, updated_at = EXCLUDED.updated_at
RETURNING tenant_id;

-- name: limits
-- The claim's view of a tenant (migrations/0008_engine.sql, 0009_limits_budgets.sql): its cap, its runs, its
-- waiting work, its budget and what its month has spent and holds.
SELECT t.tier, l.max_concurrency AS max_concurrency_override, tenant_max_concurrency(%(tenant_id)s) AS max_concurrency,
       l.weight AS weight_override, tenant_weight(%(tenant_id)s) AS weight,
       tenant_running(%(tenant_id)s) AS running,
       (SELECT count(*) FROM tasks WHERE tenant_id = %(tenant_id)s AND status IN ('queued', 'failed')) AS queued,
       l.monthly_budget_usd AS budget_override, tenant_budget(%(tenant_id)s) AS monthly_budget_usd,
       s.spent_usd, s.reserved_usd
FROM (SELECT 1) AS one
LEFT JOIN tenants t ON t.tenant_id = %(tenant_id)s
LEFT JOIN tenant_limits l ON l.tenant_id = %(tenant_id)s
CROSS JOIN (
    SELECT COALESCE(sum(spent_usd), 0) AS spent_usd, COALESCE(sum(reserved_usd), 0) AS reserved_usd
    FROM tenant_spend WHERE tenant_id = %(tenant_id)s AND period = budget_period(%(now)s)
) s;

-- name: spend_by_model
-- The tenant's month, per model.
SELECT model, spent_usd, reserved_usd, tokens_in, tokens_out, attempts FROM tenant_spend
WHERE tenant_id = %(tenant_id)s AND period = budget_period(%(now)s)
ORDER BY spent_usd + reserved_usd DESC, model;
