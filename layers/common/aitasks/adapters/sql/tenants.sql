-- name: get_tenant
SELECT tenant_id, tier, usage_key_id, usage_key FROM tenants WHERE tenant_id = %(tenant_id)s;

-- name: save_tenant
INSERT INTO tenants (tenant_id, tier, usage_key_id, usage_key, updated_at)
VALUES (%(tenant_id)s, %(tier)s, %(usage_key_id)s, %(usage_key)s, %(now)s)
ON CONFLICT (tenant_id) DO UPDATE
SET tier = EXCLUDED.tier, usage_key_id = EXCLUDED.usage_key_id, usage_key = EXCLUDED.usage_key,
    updated_at = EXCLUDED.updated_at
RETURNING tenant_id;
