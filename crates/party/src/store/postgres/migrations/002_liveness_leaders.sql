-- Migration 2: a worker is live until its own lease ends, and maintenance services elect a
-- leader among the processes sharing the store.
ALTER TABLE workers ADD COLUMN live_until timestamptz;
-- Workers recorded before: live as long as the fixed 30 s window used to say.
UPDATE workers SET live_until = last_seen + interval '30 seconds';
ALTER TABLE workers ALTER COLUMN live_until SET NOT NULL;

CREATE TABLE leaders (
    name   text PRIMARY KEY,            -- the maintenance service
    holder text NOT NULL,               -- the worker that leads it
    until  timestamptz NOT NULL         -- the end of its term unless renewed
);
