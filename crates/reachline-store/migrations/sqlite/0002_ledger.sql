-- The notice ledger: leaves in log order, the tiles of stored hashes (C2SP tlog-tiles, a partial
-- tile grows in place), every signed checkpoint ever published, and each borrower's random
-- address-commitment key sealed under the borrower's data key (destroyed with it).
-- A batch writes leaves, tiles and its checkpoint in one transaction: the checkpoint row is the
-- commit point, and on open the latest checkpoint is authoritative.

CREATE TABLE ledger_leaves (
    idx     INTEGER PRIMARY KEY,
    notice  INTEGER,
    data    BLOB NOT NULL
);
CREATE INDEX ledger_leaves_notice ON ledger_leaves (notice) WHERE notice IS NOT NULL;

CREATE TABLE ledger_tiles (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE ledger_checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB NOT NULL,
    note        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE ledger_commitment_keys (
    borrower_id  INTEGER PRIMARY KEY REFERENCES borrowers (id),
    sealed_key   BLOB NOT NULL
);
