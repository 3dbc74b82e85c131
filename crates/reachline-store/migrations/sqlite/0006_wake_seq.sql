-- Evidence that wakes a borrower counts up `seq`; a planning pass sets the next wake time only
-- if `seq` is what it read with the borrower's view. Otherwise a receipt that came between the
-- read and the write would have its wake overwritten by a later one, and go unheeded until then.
ALTER TABLE engine_wake ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
