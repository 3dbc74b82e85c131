-- The notice ledger: leaves in log order, the tiles of stored hashes (C2SP tlog-tiles, a partial
-- tile grows in place), every signed checkpoint ever published, and each borrower's random
-- address-commitment key sealed under the borrower's data key (destroyed with it).
-- A batch writes leaves, tiles and its checkpoint in one transaction: the checkpoint row is the
-- commit point, and on open the latest checkpoint is authoritative.

CREATE TABLE ledger_leaves (
    idx     BIGINT PRIMARY KEY,
    notice  BIGINT,
    data    BYTEA NOT NULL
);
CREATE INDEX ledger_leaves_notice ON ledger_leaves (notice) WHERE notice IS NOT NULL;

CREATE TABLE ledger_tiles (
    level  SMALLINT NOT NULL,
    idx    BIGINT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE ledger_checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BYTEA NOT NULL,
    note        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE ledger_commitment_keys (
    borrower_id  BIGINT PRIMARY KEY REFERENCES borrowers (id),
    sealed_key   BYTEA NOT NULL
);

-- Hashes do not compress; skip TOAST's attempt on every rewrite of an edge tile.
ALTER TABLE ledger_tiles ALTER COLUMN data SET STORAGE EXTERNAL;
