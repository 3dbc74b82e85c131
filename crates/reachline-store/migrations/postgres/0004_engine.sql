-- The notice engine: the outbox of sends (one row per attempt, keyed for idempotency), the
-- provider ids each attempt was given, every receipt as it came (matched or not), the evidence
-- the policy reads, the latest decision per notice with a history of changes, and when each
-- borrower is next due for a decision. No personal data: addresses stay in contact_points.
-- The same tables as SQLite's 0004_engine.sql, with PostgreSQL's types; several nodes share
-- them (leases are taken with FOR UPDATE SKIP LOCKED).

CREATE TABLE outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- installment/step/kind/contact/channel/try: a crash and a restart never queue a send twice.
    idem_key         TEXT NOT NULL UNIQUE,
    borrower_id      BIGINT NOT NULL,
    installment_id   BIGINT NOT NULL,
    step             INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    rung             INTEGER NOT NULL,
    contact_id       BIGINT NOT NULL,
    channel          TEXT NOT NULL,
    third_party      BOOLEAN NOT NULL,
    not_before       TIMESTAMPTZ NOT NULL,
    -- queued, leased, sending, sent, failed, in_doubt, cancelled
    state            TEXT NOT NULL,
    lease_owner      TEXT,
    lease_until      TIMESTAMPTZ,
    tries            INTEGER NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    sent_at          TIMESTAMPTZ,
    provider         TEXT,
    template_id      TEXT,
    template_version INTEGER,
    text_sha256      BYTEA,
    -- pending, delivered, engaged, failed
    outcome          TEXT NOT NULL DEFAULT 'pending',
    outcome_class    TEXT,
    outcome_code     TEXT,
    outcome_at       TIMESTAMPTZ,
    detail           TEXT
);
-- The rows a lease looks at are few beside the history: partial indexes keep them apart.
CREATE INDEX outbox_queued ON outbox (not_before, id) WHERE state = 'queued';
CREATE INDEX outbox_held ON outbox (lease_until) WHERE state IN ('leased', 'sending');
CREATE INDEX outbox_borrower ON outbox (borrower_id);

CREATE TABLE outbox_provider_ids (
    provider     TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    outbox_id    BIGINT NOT NULL,
    part         INTEGER NOT NULL,
    PRIMARY KEY (provider, provider_id)
);
CREATE INDEX outbox_provider_ids_outbox ON outbox_provider_ids (outbox_id);

-- Every receipt as it came; `outbox_id` is NULL for one no send matched (kept, flagged).
CREATE TABLE receipts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    provider     TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    outbox_id    BIGINT,
    class        TEXT NOT NULL,
    code         TEXT NOT NULL,
    is_final     BOOLEAN NOT NULL,
    raw          BYTEA NOT NULL,
    flag         TEXT
);
CREATE INDEX receipts_outbox ON receipts (outbox_id);
CREATE INDEX receipts_unmatched ON receipts (provider, provider_id) WHERE outbox_id IS NULL;

-- Observations about contact points (or the borrower), in the policy's JSON form (kept as the
-- text the policy wrote).
CREATE TABLE evidence (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    borrower_id  BIGINT NOT NULL,
    contact_id   BIGINT,
    at           TIMESTAMPTZ NOT NULL,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL
);
CREATE INDEX evidence_borrower ON evidence (borrower_id, at);

-- The latest decision per notice (or per borrower-level need, notice = '-').
CREATE TABLE notice_states (
    borrower_id  BIGINT NOT NULL,
    notice       TEXT NOT NULL,
    action       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    gate         TEXT,
    until_at     TIMESTAMPTZ,
    detail       TEXT,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (borrower_id, notice)
);

-- Every change of a notice's decision, in order: the explanation of what happened and why.
CREATE TABLE decisions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    borrower_id  BIGINT NOT NULL,
    notice       TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    action       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    gate         TEXT,
    until_at     TIMESTAMPTZ,
    detail       TEXT
);
CREATE INDEX decisions_borrower ON decisions (borrower_id, id);

-- When each borrower is next due for a decision (absent: now).
CREATE TABLE engine_wake (
    borrower_id  BIGINT PRIMARY KEY,
    wake_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX engine_wake_at ON engine_wake (wake_at);
