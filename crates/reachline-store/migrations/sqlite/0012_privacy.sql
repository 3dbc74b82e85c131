-- Privacy: erasures (the record that a borrower's data was destroyed, kept after it is gone),
-- erasure requests waiting for the retention floors, and the key check values that let a store
-- refuse a wrong key file before it writes anything.

-- One row per erased borrower. basis: borrower_request | retention. The reason was checked to
-- hold no address or number. ledger_index: the leaf that records the erasure (NULL until it is
-- under a checkpoint; `reachline borrower erase` run again completes it).
CREATE TABLE erasures (
    borrower_id   INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    basis         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    ledger_index  INTEGER
);

-- An erasure asked for before the retention rules allow it: the retention job carries it out
-- from not_before.
CREATE TABLE erasure_requests (
    borrower_id   INTEGER PRIMARY KEY,
    requested_at  INTEGER NOT NULL,
    not_before    INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL
);

-- `master:<key id>`: a fixed text sealed under that master key; `blind_index`: the index of a
-- fixed text. Written on first open, checked on every open.
CREATE TABLE key_checks (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);

-- SQLite only: facts about the file itself. `scrubbed`: the file was vacuumed with
-- secure_delete on (as every connection now runs), so no free or unallocated space holds a
-- copy of data written before; erasure does it once when it is missing.
CREATE TABLE store_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
