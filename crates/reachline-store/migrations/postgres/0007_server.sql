-- The server's tables, as SQLite's 0007_server.sql with PostgreSQL's types: API tokens
-- (argon2 hashes only), the access log of unmasked reads, webhook signatures seen inside the
-- replay window. No personal data.

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

CREATE TABLE access_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    borrower_id BIGINT,
    reason      TEXT NOT NULL,
    request_id  TEXT NOT NULL
);
CREATE INDEX access_log_borrower ON access_log (borrower_id, at);

CREATE TABLE webhook_seen (
    provider    TEXT NOT NULL,
    digest      BYTEA NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, digest)
);
CREATE INDEX webhook_seen_expiry ON webhook_seen (expires_at);
