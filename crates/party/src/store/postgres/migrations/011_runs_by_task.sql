-- Migration 11: a task's runs in the order they were recorded. Mirrors
-- sqlite/011_runs_by_task.sql, where nothing changes.
-- A recurring task keeps a row in `runs` for every attempt, for as long as retention keeps
-- them (400 days by default): a schedule every minute holds over half a million. The task page
-- of `party serve`, `GET /api/v1/tasks/{id}` and `party show` read its latest runs a page at a
-- time, newest first; over `runs_task (task_id)` each page sorted every one of the task's rows.
-- With `seq` in the index a page is one backward range of it, and a count stops after as many
-- entries as it counts. The index replaces `runs_task (task_id)`, which it serves as well
-- (reads of all of a task's runs, prunes, copies), so a run adds no more index entries than
-- before.
DROP INDEX runs_task;
CREATE INDEX runs_task ON runs (task_id, seq);
