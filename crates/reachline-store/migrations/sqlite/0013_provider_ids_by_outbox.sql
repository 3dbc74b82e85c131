-- Recording a send looks for receipts that came before it through the send's provider ids
-- (`outbox_provider_ids WHERE outbox_id = ?`). Without this index every send scanned every part
-- sent before it, and dispatch slowed as the day went on (found by bench/run.sh: 72% of the
-- dispatching process's time). PostgreSQL has had the same index since 0004.
CREATE INDEX outbox_provider_ids_outbox ON outbox_provider_ids (outbox_id);
