-- A planning read finds a batch's loans by borrower and needs each one's product and reference:
-- with the plain borrower index every loan was also fetched from the table. This index holds
-- what the read needs (as 0015's do for installments, contacts and consents).
CREATE INDEX loans_view ON loans (borrower_id, id, product, external_id);
DROP INDEX loans_borrower;
