-- Migration 4: hot and cold storage.
-- `tasks` keeps only live tasks (scheduled, running, retrying): the rows claims, heartbeats
-- and finishes touch. A task that finishes (done, dead, cancelled) moves to `task_history`,
-- which the hot path never reads; every run row stays in `runs`. Ids are stored as their 12
-- bytes. `task_counts` holds how many finished tasks there are per handler and state, kept
-- by triggers, so `stats` never counts history rows.
CREATE TABLE tasks_v4 (
    id           BLOB PRIMARY KEY,          -- the id's 12 bytes
    handler      TEXT NOT NULL,
    data         TEXT NOT NULL,             -- canonical JSON: keys sorted, compact
    timestamp    INTEGER NOT NULL,          -- the occurrence's scheduled instant
    due_at       INTEGER NOT NULL,          -- when it may next be claimed
    ready        INTEGER NOT NULL DEFAULT 0, -- 1 once due_at has passed (set by the claim)
    last_run_on  INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    is_recurring INTEGER NOT NULL,
    rule         TEXT,
    state        TEXT NOT NULL,             -- scheduled, running or retrying
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    last_error   TEXT,
    fence        INTEGER NOT NULL DEFAULT 0, -- fencing token: +1 on every claim
    worker       TEXT,
    started_at   INTEGER,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE task_history (
    id           BLOB PRIMARY KEY,
    handler      TEXT NOT NULL,
    data         TEXT NOT NULL,
    timestamp    INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    last_run_on  INTEGER,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    is_recurring INTEGER NOT NULL,
    rule         TEXT,
    state        TEXT NOT NULL,             -- done, dead or cancelled
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    last_error   TEXT,
    fence        INTEGER NOT NULL,          -- kept, so a retried task's claims fence on
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO tasks_v4 SELECT unhex(id), handler, data, timestamp, due_at, ready, last_run_on,
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence,
    worker, started_at, lease_until, created_at, updated_at
FROM tasks WHERE state IN ('scheduled', 'running', 'retrying');
INSERT INTO task_history SELECT unhex(id), handler, data, timestamp, due_at, last_run_on,
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence,
    created_at, updated_at
FROM tasks WHERE state IN ('done', 'dead', 'cancelled');
DROP TABLE tasks;
ALTER TABLE tasks_v4 RENAME TO tasks;

-- Claims walk due tasks in priority, then due-time order.
CREATE INDEX tasks_ready ON tasks (priority, due_at)
    WHERE ready = 1 AND state IN ('scheduled', 'retrying');
-- Tasks waiting for their time, soonest first: promotion to ready, and the worker's next wake-up.
CREATE INDEX tasks_waiting ON tasks (due_at)
    WHERE ready = 0 AND state IN ('scheduled', 'retrying');
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running';
CREATE INDEX tasks_list ON tasks (due_at, id);
-- The singleton rule: one live recurring task per handler and data.
CREATE UNIQUE INDEX tasks_singleton ON tasks (handler, data)
    WHERE is_recurring = 1 AND state IN ('scheduled', 'running', 'retrying');

-- Listing, all and by state, in due-time order; the pruner's finished tasks by kind and age.
CREATE INDEX history_list ON task_history (due_at, id);
CREATE INDEX history_state ON task_history (state, due_at, id);
CREATE INDEX history_finished ON task_history (is_recurring, state, finished_at);

CREATE TABLE runs_v4 (
    task_id     BLOB NOT NULL,
    attempt     INTEGER NOT NULL,
    timestamp   INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    worker      TEXT NOT NULL
);
INSERT INTO runs_v4 SELECT unhex(task_id), attempt, timestamp, started_at, finished_at,
    outcome, error, worker FROM runs ORDER BY rowid;
DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;
CREATE INDEX runs_task ON runs (task_id);
CREATE INDEX runs_finished ON runs (finished_at);

-- Finished tasks per handler and state, exact: every change to task_history counts itself.
CREATE TABLE task_counts (
    handler TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (handler, state)
) WITHOUT ROWID;
INSERT INTO task_counts SELECT handler, state, count(*) FROM task_history GROUP BY handler, state;

CREATE TRIGGER task_history_counted_in AFTER INSERT ON task_history BEGIN
    INSERT INTO task_counts (handler, state, n) VALUES (NEW.handler, NEW.state, 1)
        ON CONFLICT (handler, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_history_counted_out AFTER DELETE ON task_history BEGIN
    UPDATE task_counts SET n = n - 1 WHERE handler = OLD.handler AND state = OLD.state;
END;
CREATE TRIGGER task_history_counted_moved AFTER UPDATE OF state ON task_history
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE task_counts SET n = n - 1 WHERE handler = OLD.handler AND state = OLD.state;
    INSERT INTO task_counts (handler, state, n) VALUES (NEW.handler, NEW.state, 1)
        ON CONFLICT (handler, state) DO UPDATE SET n = n + 1;
END;
