-- Borrower self-service and the number-change flow. Personal data is sealed under the
-- borrower's data key (the new number, the borrower's words in a plan request); the rest are
-- ids, times and short codes.

-- A borrower asked, on their other channels, to confirm their number.
CREATE TABLE contact_checks (
    id          INTEGER PRIMARY KEY,
    borrower_id INTEGER NOT NULL,
    contact_id  INTEGER,
    -- open, operator_task, confirmed, closed
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX contact_checks_borrower ON contact_checks (borrower_id, state);
CREATE INDEX contact_checks_state ON contact_checks (state, id);

CREATE TABLE contact_changes (
    id               INTEGER PRIMARY KEY,
    borrower_id      INTEGER NOT NULL,
    old_contact_id   INTEGER,
    new_address_enc  BLOB NOT NULL,
    new_address_bidx BLOB NOT NULL,
    source           TEXT NOT NULL,
    -- pending, review, applied, rejected, lapsed
    state            TEXT NOT NULL,
    flow             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    new_contact_id   INTEGER,
    decided_by       TEXT,
    decision_reason  TEXT
);
CREATE INDEX contact_changes_borrower ON contact_changes (borrower_id, id);
CREATE INDEX contact_changes_state ON contact_changes (state, id);

-- Every step of a check or a change, in order (each is also a ledger leaf).
CREATE TABLE contact_change_steps (
    id          INTEGER PRIMARY KEY,
    borrower_id INTEGER NOT NULL,
    change_id   INTEGER,
    check_id    INTEGER,
    at          INTEGER NOT NULL,
    step        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX contact_change_steps_borrower ON contact_change_steps (borrower_id, id);

-- Nonces of single-use links already opened.
CREATE TABLE link_nonces (
    nonce    INTEGER PRIMARY KEY,
    used_at  INTEGER NOT NULL
);

-- Borrowers' sessions on the self-service pages (the SHA-256 of the cookie, never the cookie).
CREATE TABLE borrower_sessions (
    digest      BLOB PRIMARY KEY,
    borrower_id INTEGER NOT NULL,
    factors     TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX borrower_sessions_expiry ON borrower_sessions (expires_at);

-- Consecutive failed one-time codes per borrower (the code rules' lock at 100).
CREATE TABLE code_failures (
    borrower_id INTEGER PRIMARY KEY,
    failures    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE plan_requests (
    id              INTEGER PRIMARY KEY,
    borrower_id     INTEGER NOT NULL,
    loan_id         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    reason_enc      BLOB NOT NULL,
    -- open, accepted, declined
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    decided_by      TEXT,
    decision_reason TEXT
);
CREATE INDEX plan_requests_state ON plan_requests (state, id);
CREATE INDEX plan_requests_borrower ON plan_requests (borrower_id, id);
