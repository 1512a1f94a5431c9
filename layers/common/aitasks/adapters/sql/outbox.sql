-- The transactional outbox: rows written with each state change, published to EventBridge by the relay.

-- name: claim_unpublished
-- Inside the relay's transaction: the unpublished events of the tasks whose first unpublished event no other relay
-- holds, oldest tasks first, each task's in seq order. A relay holds a task's first unpublished event whenever it
-- holds any of its events, so two relays never publish one task's events side by side, and a task's later event is
-- never published before its earlier one. (Rows commit out of seq order across tasks, so they are claimed by lock,
-- never by a cursor.) seq grows with each event of a task: every statement that writes a task's event first takes
-- the task's row lock.
WITH heads AS (
    SELECT o.task_id, o.seq FROM outbox_messages o
    WHERE o.published_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM outbox_messages p
          WHERE p.task_id = o.task_id AND p.published_at IS NULL AND p.seq < o.seq
      )
    ORDER BY o.seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT o.id, o.task_id, o.tenant_id, o.event_type, o.payload, o.occurred_at, o.seq
FROM outbox_messages o JOIN heads h ON h.task_id = o.task_id
WHERE o.published_at IS NULL
ORDER BY h.seq, o.seq
FOR UPDATE OF o;

-- name: mark_published
UPDATE outbox_messages SET published_at = %(now)s WHERE id = ANY(%(ids)s) RETURNING id;

-- name: prune_published
DELETE FROM outbox_messages
WHERE id IN (SELECT id FROM outbox_messages WHERE published_at < %(cutoff)s LIMIT %(limit)s)
RETURNING id;

-- name: backlog
-- Events the relay should have published by now (for the RelayBacklog alarm).
SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL AND occurred_at < %(before)s;
