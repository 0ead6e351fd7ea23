-- Migration 8: nothing changes on SQLite. Mirrors postgres/008_fewer_index_entries.sql, which
-- leaves running tasks out of the live tasks' listing index and drops the history's
-- (due_at, id) index, each one entry fewer for every claim or finish there. SQLite changes
-- only the indexes whose columns or conditions an update touches: a claim leaves
-- `tasks_list (due_at, id)` alone already, and leaving running tasks out would make every
-- claim delete an entry instead. Dropping `history_list` gained nothing measurable here.
SELECT 1;
