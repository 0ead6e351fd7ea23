-- Migration 10: successful runs by task and occurrence. Mirrors
-- sqlite/010_succeeded_runs.sql.
-- A recurring task keeps a row in `runs` for every attempt, for as long as retention keeps
-- them (400 days by default): a schedule every minute holds over half a million. The metrics
-- of `party serve` read, for each live recurring task, its latest successful run and the
-- successful occurrences of a trailing window; `runs_task (task_id)` would make each of those
-- a walk through all of the task's rows. This index holds successful runs only, in occurrence
-- order within a task, with their finish time: the latest is its last entry, a window one
-- range. Failed attempts add no entry, nor do one-off tasks that succeed at their first
-- attempt (their run is kept on the history row).
CREATE INDEX runs_succeeded ON runs (task_id, timestamp, finished_at)
    WHERE outcome = 'succeeded';
