-- Scheduling, the sweeper, redrive and retention.

ALTER TABLE tasks
    -- When a wake-up was last sent (or is about to be, right after the commit): the sweeper re-sends one for a
    -- due task whose last wake-up is older than its grace period (a lost message costs delay, never the task).
    ADD COLUMN dispatched_at timestamptz,
    -- Attempts before this number belong to earlier budgets: a redrive gives the task a new budget of
    -- max_attempts attempts and keeps the history (attempt numbers go on).
    ADD COLUMN budget_from smallint NOT NULL DEFAULT 0 CHECK (budget_from >= 0),
    ADD COLUMN redrive_count smallint NOT NULL DEFAULT 0 CHECK (redrive_count >= 0);

-- Retention: finished tasks by the time they finished.
CREATE INDEX tasks_finished_idx ON tasks (updated_at) WHERE status IN ('succeeded', 'cancelled', 'dead_letter');
-- Redrive: a tenant's or everyone's dead letters.
CREATE INDEX tasks_dead_letter_idx ON tasks (updated_at) WHERE status = 'dead_letter';
-- Pruning published outbox rows.
CREATE INDEX outbox_published_idx ON outbox_messages (published_at) WHERE published_at IS NOT NULL;
