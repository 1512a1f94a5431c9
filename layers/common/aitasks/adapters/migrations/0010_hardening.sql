-- Hardening: server-side timeouts for the service's sessions, and what the relay needs to publish each task's events
-- in order.

-- Every session of the role that applied this migration, in this database (the service's role: the functions and the
-- migrations share it), gets these defaults. They are the role's, not startup options, because RDS Proxy refuses
-- startup options; a session may still SET its own (the migrations lift them). A statement that runs 10 s is
-- cancelled by the server (the functions' client-side deadlines are shorter); a lock waited for 5 s gives up instead
-- of queueing behind a long transaction; a transaction left idle 30 s (its client died mid-way) is ended and its
-- locks freed.
DO $$
BEGIN
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET statement_timeout = %L', current_user, current_database(), '10s');
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET lock_timeout = %L', current_user, current_database(), '5s');
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET idle_in_transaction_session_timeout = %L',
                   current_user, current_database(), '30s');
END
$$;

-- A task's unpublished events in order: the relay takes a task's events together, from its first unpublished one.
CREATE INDEX outbox_task_unpublished_idx ON outbox_messages (task_id, seq) WHERE published_at IS NULL;
