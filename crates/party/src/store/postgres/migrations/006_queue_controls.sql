-- Migration 6: queue controls. Mirrors sqlite/006_queue_controls.sql.
-- `queues` holds a row for every queue a person paused or limited (none for the others, whose
-- tasks the claim takes without looking here); a claim of a limited queue locks its row, so
-- claims of one limited queue take turns across every worker. `queue_starts` logs when tasks
-- of a rate-limited queue started, per key ('' when the limit is for the whole queue), for as
-- long as the rate's window. `task_counts` now counts finished tasks per queue too.
CREATE TABLE queues (
    name           text PRIMARY KEY,
    paused         boolean NOT NULL DEFAULT false,
    concurrency    integer,              -- at most this many running at once (per key with per_key)
    per_key        text,                 -- a top-level data field the limits apply per value of
    rate_count     integer,              -- at most this many starts ...
    rate_period_ms bigint,               -- ... in any window this long
    updated_at     timestamptz NOT NULL
);

CREATE TABLE queue_starts (
    queue      text NOT NULL,
    key        text NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX queue_starts_window ON queue_starts (queue, started_at);

ALTER TABLE task_counts ADD COLUMN queue text;
TRUNCATE task_counts;
INSERT INTO task_counts (handler, queue, state, n)
    SELECT handler, queue, state, count(*) FROM task_history GROUP BY handler, queue, state;
ALTER TABLE task_counts ALTER COLUMN queue SET NOT NULL;

CREATE OR REPLACE FUNCTION task_history_counted_in() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, queue, state, n)
        SELECT handler, queue, state, count(*) FROM added GROUP BY handler, queue, state;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION task_history_counted_out() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, queue, state, n)
        SELECT handler, queue, state, -count(*) FROM removed GROUP BY handler, queue, state;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION task_history_counted_moved() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts (handler, queue, state, n)
        SELECT handler, queue, state, sum(n) FROM (
            SELECT handler, queue, state, -1 AS n FROM before_rows
            UNION ALL SELECT handler, queue, state, 1 FROM after_rows) c
        GROUP BY handler, queue, state HAVING sum(n) <> 0;
    RETURN NULL;
END $$;
