-- Borrowers, their contact points (effective-dated), loans, installments and consents.
-- Personal fields are AES-256-GCM ciphertext (`*_enc`) under the borrower's data key; lookups go
-- through keyed blind indexes (`*_bidx`). Timestamps are INTEGER microseconds since the Unix
-- epoch (UTC): a third of the bytes of RFC 3339 text in the largest tables. Dates are YYYY-MM-DD.

CREATE TABLE borrowers (
    id                  INTEGER PRIMARY KEY,
    external_id         TEXT NOT NULL UNIQUE,
    name_enc            BLOB NOT NULL,
    national_id_scheme  TEXT,
    national_id_enc     BLOB,
    national_id_bidx    BLOB,
    locale              TEXT NOT NULL,
    time_zone           TEXT NOT NULL,
    jurisdiction        TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX borrowers_national_id_bidx ON borrowers (national_id_bidx);

-- The borrower's data key, wrapped by the master key named by key_id. Erasure sets wrapped_key
-- to NULL (crypto-shredding) and keeps the row as the record that it happened.
CREATE TABLE borrower_keys (
    borrower_id   INTEGER PRIMARY KEY REFERENCES borrowers (id),
    key_id        TEXT NOT NULL,
    wrapped_key   BLOB,
    created_at    INTEGER NOT NULL,
    destroyed_at  INTEGER
);

-- No uniqueness on address_bidx: a recycled number belongs to two people at different times.
-- At most one current contact point per (borrower, slot).
CREATE TABLE contact_points (
    id               INTEGER PRIMARY KEY,
    borrower_id      INTEGER NOT NULL REFERENCES borrowers (id),
    slot             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    role             TEXT NOT NULL,
    relation         TEXT,
    line_type        TEXT,
    address_enc      BLOB NOT NULL,
    address_bidx     BLOB NOT NULL,
    holder_name_enc  BLOB,
    bound_since      TEXT NOT NULL,
    source           TEXT NOT NULL,
    verified_at      INTEGER,
    added_at         INTEGER NOT NULL,
    retired_at       INTEGER,
    retire_reason    TEXT
);
CREATE INDEX contact_points_address_bidx ON contact_points (address_bidx);
CREATE INDEX contact_points_borrower ON contact_points (borrower_id);
CREATE UNIQUE INDEX contact_points_current_slot ON contact_points (borrower_id, slot) WHERE retired_at IS NULL;

-- contact_events and installments carry no foreign keys, as in the PostgreSQL schema (where the
-- per-row check doubled bulk-load time): the store writes them only with ids it obtained in
-- the same transaction, and the storage suite checks that no row is orphaned.
CREATE TABLE contact_events (
    id           INTEGER PRIMARY KEY,
    contact_id   INTEGER NOT NULL,
    borrower_id  INTEGER NOT NULL,
    event        TEXT NOT NULL,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT
);
CREATE INDEX contact_events_borrower ON contact_events (borrower_id, at);

CREATE TABLE loans (
    id               INTEGER PRIMARY KEY,
    external_id      TEXT NOT NULL UNIQUE,
    borrower_id      INTEGER NOT NULL REFERENCES borrowers (id),
    product          TEXT NOT NULL,
    principal_minor  INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    disbursed_on     TEXT NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX loans_borrower ON loans (borrower_id);

CREATE TABLE installments (
    id                 INTEGER PRIMARY KEY,
    loan_id            INTEGER NOT NULL,
    seq                INTEGER NOT NULL,
    due_date           TEXT NOT NULL,
    amount_due_minor   INTEGER NOT NULL,
    amount_paid_minor  INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    paid_at            INTEGER,
    updated_at         INTEGER NOT NULL,
    UNIQUE (loan_id, seq)
);
CREATE INDEX installments_due_date ON installments (due_date);

CREATE TABLE consents (
    id            INTEGER PRIMARY KEY,
    borrower_id   INTEGER NOT NULL REFERENCES borrowers (id),
    purpose       TEXT NOT NULL,
    channel       TEXT NOT NULL,
    state         TEXT NOT NULL,
    at            INTEGER NOT NULL,
    source        TEXT NOT NULL,
    text_version  TEXT NOT NULL,
    UNIQUE (borrower_id, purpose, channel, state, at)
);
