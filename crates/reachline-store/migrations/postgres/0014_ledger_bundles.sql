-- The ledger's leaves on PostgreSQL, 256 to a row once their bundle is full.
--
-- A row per leaf costs PostgreSQL ~46 bytes beside the leaf (tuple header, line pointer, the
-- index and notice columns) and two B-tree entries; for a ~95-byte leaf that was 60% of the log
-- on disk. A full bundle is stored as one row in the C2SP tlog-tiles entry-bundle format (each
-- leaf preceded by its length as a big-endian u16: the bytes a static server would publish at
-- `tile/entries/<N>`), with each entry's notice (NULL where none) in an array beside it, indexed
-- by GIN so a notice's leaves are still found without a scan. A full bundle never changes,
-- like a full tile. The leaves of the bundle still filling stay in `ledger_leaves`, one row each;
-- the batch that fills a bundle moves them into it, in the batch's transaction.

CREATE TABLE ledger_bundles (
    idx      BIGINT PRIMARY KEY,   -- bundle N holds leaves 256N .. 256N + 255
    notices  BIGINT[] NOT NULL,    -- entry k's notice, or NULL
    data     BYTEA NOT NULL
);
CREATE INDEX ledger_bundles_notices ON ledger_bundles USING GIN (notices);

-- Leaves are mostly hashes, which do not compress; store the bundle out of line as it is.
ALTER TABLE ledger_bundles ALTER COLUMN data SET STORAGE EXTERNAL;

-- Full bundles already in the log (below the latest checkpoint, all 256 leaves present) move.
WITH sealed AS (
    SELECT coalesce(max(size), 0) / 256 AS bundles FROM ledger_checkpoints
), complete AS (
    SELECT l.idx / 256 AS b
    FROM ledger_leaves l, sealed
    WHERE l.idx < sealed.bundles * 256
    GROUP BY l.idx / 256
    HAVING count(*) = 256
)
INSERT INTO ledger_bundles (idx, notices, data)
SELECT l.idx / 256,
       array_agg(l.notice ORDER BY l.idx),
       string_agg(substring(int4send(length(l.data)) FROM 3 FOR 2) || l.data, ''::bytea ORDER BY l.idx)
FROM ledger_leaves l
JOIN complete c ON l.idx / 256 = c.b
GROUP BY l.idx / 256;

DELETE FROM ledger_leaves l USING ledger_bundles b WHERE l.idx / 256 = b.idx;
