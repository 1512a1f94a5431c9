-- Records of the Powertools idempotency utility (adapters/idempotency.py).

-- name: put_in_progress
-- Takes the key when it is free, expired, or held by an INPROGRESS record whose holder ran out of time;
-- returns nothing when another live record holds it.
INSERT INTO idempotency_records AS r (id, status, expires_at, in_progress_expires_at, payload_hash)
VALUES (%(id)s, 'INPROGRESS', %(expires_at)s, %(in_progress_expires_at)s, %(payload_hash)s)
ON CONFLICT (id) DO UPDATE
SET status = 'INPROGRESS', expires_at = EXCLUDED.expires_at,
    in_progress_expires_at = EXCLUDED.in_progress_expires_at, payload_hash = EXCLUDED.payload_hash,
    response_data = NULL, created_at = now()
WHERE r.expires_at < %(now_s)s
   OR (r.status = 'INPROGRESS' AND r.in_progress_expires_at < %(now_ms)s)
RETURNING id;

-- name: get_record
SELECT * FROM idempotency_records WHERE id = %(id)s;

-- name: complete
UPDATE idempotency_records
SET status = %(status)s, expires_at = %(expires_at)s, response_data = %(response_data)s
WHERE id = %(id)s
RETURNING id;

-- name: delete_record
DELETE FROM idempotency_records WHERE id = %(id)s RETURNING id;


-- name: prune_expired
DELETE FROM idempotency_records
WHERE id IN (SELECT id FROM idempotency_records WHERE expires_at < %(now_s)s LIMIT %(limit)s)
RETURNING id;
