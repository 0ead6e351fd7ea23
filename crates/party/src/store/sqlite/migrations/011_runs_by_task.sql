-- Migration 11: nothing changes here. Mirrors postgres/011_runs_by_task.sql, which orders
-- PostgreSQL's `runs_task` index by the runs' insertion order within a task, so a page of a
-- task's latest runs is one backward range of it. SQLite's `runs` is a rowid table: the
-- entries of `runs_task (task_id)` already end with their rowid, in the order the runs were
-- recorded. Both backends share one schema version.
SELECT 1;
