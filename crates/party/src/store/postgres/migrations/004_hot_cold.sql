-- Migration 4: hot and cold storage. Mirrors sqlite/004_hot_cold.sql.
-- `tasks` keeps only live tasks (scheduled, running, retrying): the rows claims, heartbeats
-- and finishes touch. A task that finishes (done, dead, cancelled) moves to `task_history`,
-- which the hot path never reads; every run row stays in `runs`. Ids are stored as their 12
-- bytes. `task_counts` holds how many finished tasks there are per handler and state, as
-- signed deltas appended once per statement that changes the history (never one hot row that
-- every finishing worker would have to lock), folded by the pruner and by `stats`.
ALTER TABLE tasks ALTER COLUMN id TYPE bytea USING decode(id, 'hex');

CREATE TABLE task_history (
    id           bytea PRIMARY KEY,          -- the id's 12 bytes
    handler      text NOT NULL,
    data         text NOT NULL,
    timestamp    timestamptz NOT NULL,
    due_at       timestamptz NOT NULL,
    last_run_on  timestamptz,
    attempts     integer NOT NULL,
    max_attempts integer NOT NULL,
    is_recurring boolean NOT NULL,
    rule         text,
    state        text NOT NULL CHECK (state IN ('done', 'dead', 'cancelled')),
    queue        text NOT NULL,
    priority     integer NOT NULL,
    last_error   text,
    fence        bigint NOT NULL,            -- kept, so a retried task's claims fence on
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL
);
INSERT INTO task_history SELECT id, handler, data, timestamp, due_at, last_run_on, attempts,
    max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, created_at,
    updated_at
FROM tasks WHERE state IN ('done', 'dead', 'cancelled');
DELETE FROM tasks WHERE state IN ('done', 'dead', 'cancelled');
DROP INDEX tasks_finished;
ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('scheduled', 'running', 'retrying'));

-- Listing, all and by state, in due-time order; the pruner's finished tasks by kind and age.
CREATE INDEX history_list ON task_history (due_at, id);
CREATE INDEX history_state ON task_history (state, due_at, id);
CREATE INDEX history_finished ON task_history (is_recurring, state, finished_at);

ALTER TABLE runs ALTER COLUMN task_id TYPE bytea USING decode(task_id, 'hex');

CREATE TABLE task_counts (
    handler text NOT NULL,
    state   text NOT NULL,
    n       bigint NOT NULL
);
INSERT INTO task_counts SELECT handler, state, count(*) FROM task_history GROUP BY handler, state;

-- The functions resolve names in this schema whoever calls them.
CREATE FUNCTION task_history_counted_in() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, state, n)
        SELECT handler, state, count(*) FROM added GROUP BY handler, state;
    RETURN NULL;
END $$;
CREATE FUNCTION task_history_counted_out() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, state, n)
        SELECT handler, state, -count(*) FROM removed GROUP BY handler, state;
    RETURN NULL;
END $$;
CREATE FUNCTION task_history_counted_moved() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, state, n)
        SELECT handler, state, sum(n) FROM (
            SELECT handler, state, -1 AS n FROM before_rows
            UNION ALL SELECT handler, state, 1 FROM after_rows) c
        GROUP BY handler, state HAVING sum(n) <> 0;
    RETURN NULL;
END $$;
CREATE TRIGGER task_history_counted_in AFTER INSERT ON task_history
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION task_history_counted_in();
CREATE TRIGGER task_history_counted_out AFTER DELETE ON task_history
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION task_history_counted_out();
CREATE TRIGGER task_history_counted_moved AFTER UPDATE ON task_history
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows FOR EACH STATEMENT
    EXECUTE FUNCTION task_history_counted_moved();

-- The history only grows and is pruned in batches: vacuum it sooner than the defaults would.
ALTER TABLE task_history SET (autovacuum_vacuum_scale_factor = 0.05,
                              autovacuum_analyze_scale_factor = 0.02);
