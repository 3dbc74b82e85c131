-- Receipts no send has claimed yet, by the id the provider gave (PostgreSQL has had this index
-- since 0004), and a verification message's provider ids by message. Recording a send or a
-- verification message looks there for receipts that beat it; the queries name the index
-- (`INDEXED BY`), since without statistics SQLite prefers `receipts_outbox`, which finds every
-- unmatched receipt: about 1 ms a send once a busy day had left tens of thousands of them,
-- most of a dispatch's time.
CREATE INDEX receipts_unmatched ON receipts (provider, provider_id) WHERE outbox_id IS NULL;
CREATE INDEX verification_provider_ids_message ON verification_provider_ids (message_id);
