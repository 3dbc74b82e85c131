-- A borrower is dispatched by one node at a time. A dispatcher checks a row against the
-- borrower's sends so far (caps, the emergency contact asked once) before handing it over; two
-- nodes each leasing one of a borrower's rows would each pass that check without the other's
-- send. The first node to lease a borrower's row holds the borrower until its lease has run out
-- and a grace (a quarter of the lease) has passed; no other node leases that borrower's rows
-- before. A send is marked only while its lease runs (`mark_sending_many`), so by the time a
-- hold lapses its holder's sends are recorded `sending` or later, and the next node's check
-- reads them. The grace covers clock drift between nodes.
--
-- One row per borrower ever dispatched (an id, a node name and a time: nothing personal),
-- overwritten by the next hold and never pruned: the table is bounded by the book. Updated on
-- every lease, so pages keep room for updates in place.
CREATE TABLE dispatch_holds (
    borrower_id BIGINT PRIMARY KEY,
    owner       TEXT NOT NULL,
    until       TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 70);
