-- Migration 6: queue controls. Mirrors postgres/006_queue_controls.sql.
-- `queues` holds a row for every queue a person paused or limited (none for the others, whose
-- tasks the claim takes without looking here). `queue_starts` logs when tasks of a
-- rate-limited queue started, per key ('' when the limit is for the whole queue), for as long
-- as the rate's window. `task_counts` now counts finished tasks per queue too.
CREATE TABLE queues (
    name           TEXT PRIMARY KEY,
    paused         INTEGER NOT NULL DEFAULT 0,
    concurrency    INTEGER,              -- at most this many running at once (per key with per_key)
    per_key        TEXT,                 -- a top-level data field the limits apply per value of
    rate_count     INTEGER,              -- at most this many starts ...
    rate_period_ms INTEGER,              -- ... in any window this long
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE queue_starts (
    queue      TEXT NOT NULL,
    key        TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX queue_starts_window ON queue_starts (queue, started_at);

DROP TRIGGER task_history_counted_in;
DROP TRIGGER task_history_counted_out;
DROP TRIGGER task_history_counted_moved;
DROP TABLE task_counts;
CREATE TABLE task_counts (
    handler TEXT NOT NULL,
    queue   TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (handler, queue, state)
) WITHOUT ROWID;
INSERT INTO task_counts SELECT handler, queue, state, count(*) FROM task_history
    GROUP BY handler, queue, state;

CREATE TRIGGER task_history_counted_in AFTER INSERT ON task_history BEGIN
    INSERT INTO task_counts (handler, queue, state, n) VALUES (NEW.handler, NEW.queue, NEW.state, 1)
        ON CONFLICT (handler, queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_history_counted_out AFTER DELETE ON task_history BEGIN
    UPDATE task_counts SET n = n - 1
        WHERE handler = OLD.handler AND queue = OLD.queue AND state = OLD.state;
END;
CREATE TRIGGER task_history_counted_moved AFTER UPDATE OF state ON task_history
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE task_counts SET n = n - 1
        WHERE handler = OLD.handler AND queue = OLD.queue AND state = OLD.state;
    INSERT INTO task_counts (handler, queue, state, n) VALUES (NEW.handler, NEW.queue, NEW.state, 1)
        ON CONFLICT (handler, queue, state) DO UPDATE SET n = n + 1;
END;
