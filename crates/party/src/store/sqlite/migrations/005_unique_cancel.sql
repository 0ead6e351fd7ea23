-- Migration 5: unique keys of one-off tasks, and cancelling running tasks. Mirrors
-- postgres/005_unique_cancel.sql.
-- A one-off task may carry a unique key: no two live tasks of a handler share one (a unique
-- index), and a finished one refuses another for as long as the adder's window says (the
-- history's index). A running task a person cancelled carries `cancel_requested` until it
-- leaves the live table; its worker reads it, and a later claim of it sees it too.
ALTER TABLE tasks ADD COLUMN unique_key TEXT;
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_history ADD COLUMN unique_key TEXT;

CREATE UNIQUE INDEX tasks_unique ON tasks (handler, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX history_unique ON task_history (handler, unique_key, finished_at)
    WHERE unique_key IS NOT NULL;
