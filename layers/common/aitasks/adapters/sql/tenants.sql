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

-- name: limits
-- The claim's view of a tenant (migrations/0008_engine.sql): its cap, its runs, its waiting work.
SELECT t.tier, l.max_concurrency AS max_concurrency_override, tenant_max_concurrency(%(tenant_id)s) AS max_concurrency,
       tenant_running(%(tenant_id)s) AS running,
       (SELECT count(*) FROM tasks WHERE tenant_id = %(tenant_id)s AND status IN ('queued', 'failed')) AS queued
FROM (SELECT 1) AS one
LEFT JOIN tenants t ON t.tenant_id = %(tenant_id)s
LEFT JOIN tenant_limits l ON l.tenant_id = %(tenant_id)s;
