-- Migration 8: fewer index entries for a claim and a finish. Mirrors
-- sqlite/008_fewer_index_entries.sql.
-- A claim writes a new version of the task's row, and PostgreSQL then adds an entry for it to
-- every index of the table whose condition the row meets, though the listing's key (due
-- time, id) did not change. Left out of the live listing index, running tasks cost a claim
-- one index entry fewer; a listing reads them through the lease index instead (`lease_until`
-- is set exactly while a task runs) and sorts them, as many as the workers run at once.
-- A finish inserts the history row with an entry in each of the history's indexes; the one
-- on (due_at, id) served only listings of every finished state, which now read the three
-- ranges of `history_state (state, due_at, id)` and merge them. Each change gained 5-10% in
-- drains of no-op tasks.
DROP INDEX tasks_list;
CREATE INDEX tasks_list ON tasks (due_at, id) WHERE state <> 'running';
DROP INDEX history_list;
