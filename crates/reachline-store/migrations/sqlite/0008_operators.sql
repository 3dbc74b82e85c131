-- Operators who log in to the dashboard (argon2 password hashes), and their sessions (the
-- SHA-256 of the session cookie, never the cookie; the CSRF token its forms carry).

CREATE TABLE operators (
    login       TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE sessions (
    digest      BLOB PRIMARY KEY,
    login       TEXT NOT NULL REFERENCES operators (login),
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
