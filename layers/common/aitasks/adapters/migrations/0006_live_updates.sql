-- Live updates for the dashboard: short-lived tickets that open a WebSocket, and the open connections per tenant.

-- A ticket is what a browser puts in the WebSocket URL instead of its API key (it cannot set headers there, and
-- a URL ends in logs): single use, valid for a minute, stored as its SHA-256 like the keys.
CREATE TABLE websocket_tickets (
    ticket_hash bytea       PRIMARY KEY,
    tenant_id   text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX websocket_tickets_expiry_idx ON websocket_tickets (expires_at);

-- One row per open WebSocket connection (API Gateway's connection id); the notifier posts a tenant's events to
-- its rows only, and deletes a row when API Gateway says the connection is gone.
CREATE TABLE websocket_connections (
    connection_id text        PRIMARY KEY,
    tenant_id     text        NOT NULL,
    connected_at  timestamptz NOT NULL
);
CREATE INDEX websocket_connections_tenant_idx ON websocket_connections (tenant_id);
CREATE INDEX websocket_connections_age_idx ON websocket_connections (connected_at);
