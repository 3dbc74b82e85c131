-- A borrower is dispatched by one dispatcher at a time (see the PostgreSQL migration of the
-- same name for why): processes sharing one database file hold a borrower from their lease
-- until the lease and a grace have run out. `until` in microseconds since the epoch.
CREATE TABLE dispatch_holds (
    borrower_id INTEGER PRIMARY KEY,
    owner       TEXT NOT NULL,
    until       INTEGER NOT NULL
);
