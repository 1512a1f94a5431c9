-- name: insert_api_key
INSERT INTO api_keys (id, tenant_id, name, key_hash, created_at)
VALUES (%(id)s, %(tenant_id)s, %(name)s, %(key_hash)s, %(now)s)
RETURNING id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = %(now)s WHERE id = %(id)s AND revoked_at IS NULL RETURNING id;

-- name: principal_for_key
SELECT k.tenant_id, t.usage_key
FROM api_keys k LEFT JOIN tenants t ON t.tenant_id = k.tenant_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL;
