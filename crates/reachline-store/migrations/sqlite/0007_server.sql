-- The server: API tokens (argon2 hashes only; a token is shown once, when created), the access
-- log of every read of unmasked personal data (who, what, when, why), and the webhook
-- signatures seen inside the replay window. No personal data.

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE access_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    borrower_id INTEGER,
    reason      TEXT NOT NULL,
    request_id  TEXT NOT NULL
);
CREATE INDEX access_log_borrower ON access_log (borrower_id, at);

CREATE TABLE webhook_seen (
    provider    TEXT NOT NULL,
    digest      BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, digest)
);
CREATE INDEX webhook_seen_expiry ON webhook_seen (expires_at);
