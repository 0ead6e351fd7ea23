-- Migration 2: a worker is live until its own lease ends, and maintenance services elect a
-- leader among the processes sharing the store.
ALTER TABLE workers ADD COLUMN live_until INTEGER NOT NULL DEFAULT 0;
-- Workers recorded before: live as long as the fixed 30 s window used to say.
UPDATE workers SET live_until = last_seen + 30000000;

CREATE TABLE leaders (
    name   TEXT PRIMARY KEY,            -- the maintenance service
    holder TEXT NOT NULL,               -- the worker that leads it
    until  INTEGER NOT NULL             -- the end of its term unless renewed
) WITHOUT ROWID;
