-- Migration 8: the live tasks' listing index leaves out running tasks. Mirrors
-- sqlite/008_list_without_running.sql.
-- A claim writes a new version of the task's row, and PostgreSQL then adds an entry for it to
-- every index of the table whose condition the row meets, though the listing's key (due
-- time, id) did not change. Left out of this index, running tasks cost a claim one index
-- entry fewer (5-10% of a drain of no-op tasks); a listing reads them through the lease
-- index instead (`lease_until` is set exactly while a task runs) and sorts them, as many as
-- the workers run at once.
DROP INDEX tasks_list;
CREATE INDEX tasks_list ON tasks (due_at, id) WHERE state <> 'running';
