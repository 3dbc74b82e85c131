-- The notice engine: the outbox of sends (one row per attempt, keyed for idempotency), the
-- provider ids each attempt was given, every receipt as it came (matched or not), the evidence
-- the policy reads, the latest decision per notice with a history of changes, and when each
-- borrower is next due for a decision. No personal data: addresses stay in contact_points.

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    -- installment/step/kind/contact/channel/try: a crash and a restart never queue a send twice.
    idem_key        TEXT NOT NULL UNIQUE,
    borrower_id     INTEGER NOT NULL,
    installment_id  INTEGER NOT NULL,
    step            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    rung            INTEGER NOT NULL,
    contact_id      INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    third_party     INTEGER NOT NULL,
    not_before      INTEGER NOT NULL,
    -- queued, leased, sending, sent, failed, in_doubt, cancelled
    state           TEXT NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    tries           INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    provider        TEXT,
    template_id     TEXT,
    template_version INTEGER,
    text_sha256     BLOB,
    -- pending, delivered, engaged, failed
    outcome         TEXT NOT NULL DEFAULT 'pending',
    outcome_class   TEXT,
    outcome_code    TEXT,
    outcome_at      INTEGER,
    detail          TEXT
);
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_borrower ON outbox (borrower_id);

CREATE TABLE outbox_provider_ids (
    provider     TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    outbox_id    INTEGER NOT NULL,
    part         INTEGER NOT NULL,
    PRIMARY KEY (provider, provider_id)
);

-- Every receipt as it came; `outbox_id` is NULL for one no send matched (kept, flagged).
CREATE TABLE receipts (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    provider     TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    outbox_id    INTEGER,
    class        TEXT NOT NULL,
    code         TEXT NOT NULL,
    is_final     INTEGER NOT NULL,
    raw          BLOB NOT NULL,
    flag         TEXT
);
CREATE INDEX receipts_outbox ON receipts (outbox_id);

-- Observations about contact points (or the borrower), in the policy's JSON form.
CREATE TABLE evidence (
    id           INTEGER PRIMARY KEY,
    borrower_id  INTEGER NOT NULL,
    contact_id   INTEGER,
    at           INTEGER NOT NULL,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL
);
CREATE INDEX evidence_borrower ON evidence (borrower_id, at);

-- The latest decision per notice (or per borrower-level need, notice = '-').
CREATE TABLE notice_states (
    borrower_id  INTEGER NOT NULL,
    notice       TEXT NOT NULL,
    action       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    gate         TEXT,
    until_at     INTEGER,
    detail       TEXT,
    at           INTEGER NOT NULL,
    PRIMARY KEY (borrower_id, notice)
);

-- Every change of a notice's decision, in order: the explanation of what happened and why.
CREATE TABLE decisions (
    id           INTEGER PRIMARY KEY,
    borrower_id  INTEGER NOT NULL,
    notice       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    action       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    gate         TEXT,
    until_at     INTEGER,
    detail       TEXT
);
CREATE INDEX decisions_borrower ON decisions (borrower_id, id);

-- When each borrower is next due for a decision (absent: now).
CREATE TABLE engine_wake (
    borrower_id  INTEGER PRIMARY KEY,
    wake_at      INTEGER NOT NULL
);
CREATE INDEX engine_wake_at ON engine_wake (wake_at);
