-- Migration 1: tasks, their run history, and live workers.
-- Runs inside the party schema (search_path is set to it), under the migration lock.
-- Columns, states and indexes mirror sqlite/001_tasks.sql; instants are timestamptz (UTC,
-- microseconds).
CREATE TABLE tasks (
    id           text PRIMARY KEY,          -- 24 hex characters
    handler      text NOT NULL,
    data         text NOT NULL,             -- canonical JSON: keys sorted, compact
    timestamp    timestamptz NOT NULL,      -- the occurrence's scheduled instant
    due_at       timestamptz NOT NULL,      -- when it may next be claimed
    ready        boolean NOT NULL DEFAULT false, -- true once due_at has passed (set by claims)
    last_run_on  timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    is_recurring boolean NOT NULL,
    rule         text,
    state        text NOT NULL CHECK (state IN
                     ('scheduled', 'running', 'retrying', 'done', 'dead', 'cancelled')),
    queue        text NOT NULL,
    priority     integer NOT NULL,
    last_error   text,
    fence        bigint NOT NULL DEFAULT 0, -- fencing token: +1 on every claim
    worker       text,
    started_at   timestamptz,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Claims walk due tasks in priority, then due-time order; future tasks are not in this index.
CREATE INDEX tasks_ready ON tasks (priority, due_at)
    WHERE ready AND state IN ('scheduled', 'retrying');
-- Tasks waiting for their time, soonest first: promotion to ready, and the worker's next wake-up.
CREATE INDEX tasks_waiting ON tasks (due_at)
    WHERE NOT ready AND state IN ('scheduled', 'retrying');
-- Running tasks by lease end, for rescues. A lease is set exactly while a task runs; the
-- predicate names the lease rather than the state so that fenced writes, which look rows up
-- by id, are never planned through this index.
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX tasks_list ON tasks (due_at, id);
-- The singleton rule: one live recurring task per handler and data. The data is hashed so
-- that large objects fit in the index; lookups compare the data itself as well.
CREATE UNIQUE INDEX tasks_singleton ON tasks (handler, md5(data))
    WHERE is_recurring AND state IN ('scheduled', 'running', 'retrying');

-- A queue table churns: vacuum and refresh its statistics sooner than the defaults would.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.05,
                       autovacuum_analyze_scale_factor = 0.02);

CREATE TABLE runs (
    seq         bigint GENERATED ALWAYS AS IDENTITY, -- insertion order (read per task only)
    task_id     text NOT NULL,
    attempt     integer NOT NULL,
    timestamp   timestamptz NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL,
    error       text,
    worker      text NOT NULL
);
CREATE INDEX runs_task ON runs (task_id);
-- Runs are appended roughly in finishing order: a block-range index is enough for "finished
-- in the last minute" and costs next to nothing to maintain.
CREATE INDEX runs_finished ON runs USING brin (finished_at);

CREATE TABLE workers (
    id        text PRIMARY KEY,
    handlers  text[] NOT NULL,
    queues    text[] NOT NULL,
    last_seen timestamptz NOT NULL
);
