-- Migration 7: a finished task keeps its final run on its history row. Mirrors
-- postgres/007_final_run.sql.
-- A task that finishes for good after an attempt (done, dead, or cancelled while running)
-- used to write that attempt's row into `runs` beside its move to the history: one more row
-- and two more index entries per task, and one more row for the pruner to delete. The
-- attempt is now kept in the `run_*` columns of its history row (`run_worker` is set exactly
-- when a run is kept there); earlier attempts stay in `runs`. Reading a task's runs appends
-- the kept one after those; a retry writes it back into `runs` before the task leaves the
-- history. Rows finished before this migration keep every run in `runs`.
ALTER TABLE task_history ADD COLUMN run_attempt INTEGER;
ALTER TABLE task_history ADD COLUMN run_timestamp INTEGER;
ALTER TABLE task_history ADD COLUMN run_started_at INTEGER;
ALTER TABLE task_history ADD COLUMN run_finished_at INTEGER;
ALTER TABLE task_history ADD COLUMN run_outcome TEXT;
ALTER TABLE task_history ADD COLUMN run_error TEXT;
ALTER TABLE task_history ADD COLUMN run_worker TEXT;

-- The statements that insert history rows add them to `task_counts` themselves, once per
-- statement and per handler, queue and state: with one writer, a trigger run for every
-- inserted row cost about a tenth of a worker's throughput. Deletes and changes of state are
-- still counted by the triggers of migration 6.
DROP TRIGGER task_history_counted_in;
