-- Migration 3: finished tasks by kind and by when they finished (their last update), so the
-- pruner finds those past their retention without reading live tasks.
CREATE INDEX tasks_finished ON tasks (is_recurring, state, updated_at)
    WHERE state IN ('done', 'dead', 'cancelled');
