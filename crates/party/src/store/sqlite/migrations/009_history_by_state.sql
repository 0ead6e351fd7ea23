-- Migration 9: the history's (due_at, id) index goes, as PostgreSQL's did in migration 8.
-- It served only listings of every finished state, which now read the three ranges of
-- `history_state (state, due_at, id)` and merge them. Every task that finishes for good wrote
-- an entry into it and every prune removed one: one b-tree of the four a history row is in.
-- Migration 8 kept it because dropping it gained nothing measurable then; once the writer
-- thread stopped waiting on the allocator's locks it was 10% of a no-op drain
-- (docs/BENCHMARKS.md, "The history without its list index").
DROP INDEX history_list;
