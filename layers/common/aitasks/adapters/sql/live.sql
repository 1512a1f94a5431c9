-- Live updates: WebSocket tickets and connections (migration 0006).

-- name: insert_ticket
INSERT INTO websocket_tickets (ticket_hash, tenant_id, expires_at)
VALUES (%(ticket_hash)s, %(tenant_id)s, %(expires_at)s)
RETURNING tenant_id;

-- name: redeem_ticket
-- Single use: the first redemption deletes the row; an expired ticket redeems nothing.
DELETE FROM websocket_tickets
WHERE ticket_hash = %(ticket_hash)s AND expires_at > %(now)s
RETURNING tenant_id;

-- name: add_connection
INSERT INTO websocket_connections (connection_id, tenant_id, connected_at)
VALUES (%(connection_id)s, %(tenant_id)s, %(now)s)
ON CONFLICT (connection_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, connected_at = EXCLUDED.connected_at
RETURNING connection_id;

-- name: remove_connection
DELETE FROM websocket_connections WHERE connection_id = %(connection_id)s RETURNING connection_id;

-- name: connections_of_tenant
SELECT connection_id FROM websocket_connections WHERE tenant_id = %(tenant_id)s ORDER BY connected_at;

-- name: prune_expired_tickets
DELETE FROM websocket_tickets
WHERE ticket_hash IN (SELECT ticket_hash FROM websocket_tickets WHERE expires_at <= %(now)s LIMIT %(limit)s)
RETURNING ticket_hash;

-- name: prune_stale_connections
-- API Gateway closes a connection after two hours at most; a row older than that lost its $disconnect.
DELETE FROM websocket_connections
WHERE connection_id IN (
    SELECT connection_id FROM websocket_connections WHERE connected_at < %(cutoff)s LIMIT %(limit)s
)
RETURNING connection_id;
