-- Indexes that hold every column a planning view reads (as SQLite's 0015): a borrower's
-- installments in the window found by a range on (loan, due date) instead of each installment
-- of the loan fetched to test its date; contact facts and consents read from the index, in the
-- order the view keeps. The view index replaces the plain borrower index on contact points.
CREATE INDEX installments_loan_window
    ON installments (loan_id, due_date) INCLUDE (seq, amount_due_minor, amount_paid_minor, currency);
CREATE INDEX contact_points_view
    ON contact_points (borrower_id, id) INCLUDE (kind, role, relation, bound_since, verified_at, retired_at);
DROP INDEX contact_points_borrower;
CREATE INDEX consents_view
    ON consents (borrower_id, at, id) INCLUDE (purpose, channel, state, source, text_version);
