-- Verification messages (codes, contact-check links, news of a change) as the provider took
-- them, so that their receipts are matched like a notice's: kept as evidence about the contact
-- point they went to, not flagged as answering nothing.
CREATE TABLE verification_messages (
    id            BIGSERIAL PRIMARY KEY,
    borrower_id   BIGINT NOT NULL,
    -- NULL for an address that is not a contact point yet (a new number or email)
    contact_id    BIGINT,
    channel       TEXT NOT NULL,
    sent_at       TIMESTAMPTZ NOT NULL,
    -- pending, delivered, engaged, failed (raised only, like an attempt's)
    outcome       TEXT NOT NULL DEFAULT 'pending',
    outcome_class TEXT
);

-- The provider's ids of each message (one per part of a long SMS).
CREATE TABLE verification_provider_ids (
    provider    TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    message_id  BIGINT NOT NULL,
    PRIMARY KEY (provider, provider_id)
);
