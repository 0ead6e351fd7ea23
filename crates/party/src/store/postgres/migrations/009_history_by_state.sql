-- Migration 9: nothing changes here. Mirrors sqlite/009_history_by_state.sql, which drops the
-- SQLite history's (due_at, id) index as migration 8 dropped PostgreSQL's; both backends
-- share one schema version.
SELECT 1;
