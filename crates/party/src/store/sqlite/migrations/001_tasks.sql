-- Migration 1: tasks, their run history, and live workers.
-- Instants are INTEGER microseconds since the Unix epoch (UTC).
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
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
    state        TEXT NOT NULL,
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

CREATE TABLE runs (
    task_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    timestamp   INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    worker      TEXT NOT NULL
);
CREATE INDEX runs_task ON runs (task_id);
CREATE INDEX runs_finished ON runs (finished_at);

CREATE TABLE workers (
    id        TEXT PRIMARY KEY,
    handlers  TEXT NOT NULL,
    queues    TEXT NOT NULL,
    last_seen INTEGER NOT NULL
);
