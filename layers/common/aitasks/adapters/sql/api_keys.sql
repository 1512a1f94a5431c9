-- name: insert_api_key
INSERT INTO api_keys (id, tenant_id, name, key_hash, created_at)
VALUES (%(id)s, %(tenant_id)s, %(name)s, %(key_hash)s, %(now)s)
RETURNING id;

-- name: tenant_for_key
SELECT tenant_id FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = %(now)s WHERE id = %(id)s AND revoked_at IS NULL RETURNING id;
