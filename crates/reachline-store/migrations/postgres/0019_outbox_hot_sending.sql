-- Marking a leased row `sending` changes only its state and its tries; it was never a HOT
-- update (written beside the old version, no new index entries), because `state` sat in the
-- predicates of the two partial indexes and PostgreSQL counts a predicate's columns as
-- indexed. The predicates now read two stored generated columns, which that step leaves as
-- they were (`queued` false, `held` true before and after), so the update can be HOT where
-- the page has room (0017 keeps room). A send puts 4 fewer entries into the outbox's indexes
-- (15 before). Queries that want these indexes name the columns (`WHERE queued …`,
-- `WHERE held AND state = …`): PostgreSQL cannot prove `queued` from `state = 'queued'`.
-- Adding the columns rewrites the table once.
ALTER TABLE outbox
    ADD COLUMN queued BOOLEAN GENERATED ALWAYS AS (state = 'queued') STORED,
    ADD COLUMN held BOOLEAN GENERATED ALWAYS AS (state IN ('leased', 'sending')) STORED;
DROP INDEX outbox_queued;
DROP INDEX outbox_held;
CREATE INDEX outbox_queued ON outbox (not_before, id) WHERE queued;
CREATE INDEX outbox_held ON outbox (lease_until) WHERE held;
