-- Several nodes on one database: the node that holds the sequencer's advisory lock appends
-- every node's ledger leaves. A node that does not hold it writes its leaves here (one row per
-- caller's append, the leaves kept together) and waits; the sequencer takes queued rows into
-- its next batch and, in that batch's transaction, stamps each with the index of its first
-- leaf and the size of the checkpoint that covers it. The waiting node reads the stamp and
-- deletes the row. A row whose node died is still appended (the leaves describe sends that
-- happened) and removed by the sequencer an hour after it was stamped.
CREATE TABLE ledger_queue (
    id          BIGSERIAL PRIMARY KEY,
    notices     BIGINT[] NOT NULL,
    data        BYTEA[] NOT NULL,
    queued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    first_idx   BIGINT,
    size        BIGINT,
    stamped_at  TIMESTAMPTZ,
    CHECK (cardinality(notices) = cardinality(data) AND cardinality(data) > 0)
);
CREATE INDEX ledger_queue_waiting ON ledger_queue (id) WHERE first_idx IS NULL;

-- Several nodes plan side by side: a pass is cut into slices (borrower id modulo the number
-- of rows here), and a node claims one slice at a time (FOR UPDATE SKIP LOCKED), holding it
-- until `until`, so that each slice is planned by one node per pass, and a dead node's slice
-- is free again once its hold runs out.
CREATE TABLE plan_slices (
    slice  INTEGER PRIMARY KEY,
    owner  TEXT,
    until  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO plan_slices (slice) SELECT generate_series(0, 15);
