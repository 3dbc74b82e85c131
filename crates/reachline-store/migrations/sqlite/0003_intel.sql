-- Disconnection records loaded from a registry file (the FCC Reassigned Numbers Database's data
-- shape: a number and the date it was permanently disconnected). Numbers are kept only as their
-- blind index, the same one contact points use, so the two can be joined without plaintext.
CREATE TABLE disconnects (
    number_bidx BLOB NOT NULL,
    disconnected_on TEXT NOT NULL,
    source TEXT NOT NULL,
    loaded_at INTEGER NOT NULL,
    PRIMARY KEY (number_bidx, disconnected_on)
) WITHOUT ROWID;
