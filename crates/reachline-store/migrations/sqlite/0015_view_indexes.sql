-- Indexes that hold every column a planning view reads, so the view's three biggest reads
-- (installments in the window, contact facts, consents) never visit the table rows: a
-- borrower's ~19 installments were each fetched from the table to test its due date, and a
-- contact row carries its encrypted address and name. Measured on a 200,000-borrower book, the
-- three queries for a batch of 4,000 borrowers: 35.6 + 12.6 + 19.4 ms → about half.
-- Contacts and consents come out grouped by borrower in the order the view keeps (the queries
-- ask for that order, so no sort), and the view index replaces the plain borrower index.
CREATE INDEX installments_loan_window
    ON installments (loan_id, due_date, seq, amount_due_minor, amount_paid_minor, currency);
CREATE INDEX contact_points_view
    ON contact_points (borrower_id, id, kind, role, relation, bound_since, verified_at, retired_at);
DROP INDEX contact_points_borrower;
CREATE INDEX consents_view
    ON consents (borrower_id, at, id, purpose, channel, state, source, text_version);
