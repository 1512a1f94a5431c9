-- The transactional outbox: rows written with each state change, published to EventBridge by the relay.

-- name: claim_unpublished
-- Inside the relay's transaction: the oldest unpublished rows no other relay holds (rows commit out of id and
-- time order, so they are claimed by lock, never by a cursor). seq keeps the order of rows written together
-- (task.created before task.queued); across relays and retries, order is not guaranteed (nor is it by EventBridge).
SELECT id, task_id, tenant_id, event_type, payload, occurred_at
FROM outbox_messages
WHERE published_at IS NULL
ORDER BY seq
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: mark_published
UPDATE outbox_messages SET published_at = %(now)s WHERE id = ANY(%(ids)s) RETURNING id;

-- name: prune_published
DELETE FROM outbox_messages
WHERE id IN (SELECT id FROM outbox_messages WHERE published_at < %(cutoff)s LIMIT %(limit)s)
RETURNING id;

-- name: backlog
-- Events the relay should have published by now (for the RelayBacklog alarm).
SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL AND occurred_at < %(before)s;
