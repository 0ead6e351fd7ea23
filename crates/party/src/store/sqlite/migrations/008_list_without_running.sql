-- Migration 8: nothing changes on SQLite. Mirrors postgres/008_list_without_running.sql,
-- where the live tasks' listing index leaves out running tasks so that a claim, which writes
-- a new version of the row, adds no entry to it. SQLite changes only the indexes whose
-- columns or conditions an update touches: a claim leaves `tasks_list (due_at, id)` alone
-- already, and leaving running tasks out would make every claim delete an entry instead.
SELECT 1;
