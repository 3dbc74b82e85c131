-- An outbox row is updated four times in its life (leased, sending, sent, its outcome). The
-- first three change indexed columns; the outcome does not, and PostgreSQL can write it beside
-- the old version on the same page (a HOT update: no new index entries) when that page has room.
-- Filled to 70%, pages keep that room. Measured on a 1M-borrower book (303,177 sends):
-- HOT updates 42,266 → 228,298 of 1,212,708, dispatch 70.6 s → 63.6 s. New pages only.
ALTER TABLE outbox SET (fillfactor = 70);
