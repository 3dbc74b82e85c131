-- A borrower's own say in how they are reached (set on their page): preferred channels, in
-- order, and quiet hours. No personal data: channel codes and minutes of the day.
CREATE TABLE borrower_preferences (
    borrower_id INTEGER PRIMARY KEY,
    -- channel codes, comma-separated, the most preferred first ('' for none)
    channels    TEXT NOT NULL,
    -- quiet hours as minutes after local midnight, [start, end), wrapping past midnight when
    -- end < start; both NULL for none
    quiet_start INTEGER,
    quiet_end   INTEGER,
    updated_at  INTEGER NOT NULL
);
