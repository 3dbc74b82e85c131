//! The ledger on PostgreSQL. The one sequencer holds a session advisory lock
//! ([`SEQUENCER_LOCK`](crate::ledger::SEQUENCER_LOCK)) on a connection of its own for its whole
//! life and commits every batch on that connection; a second node's `claim_sequencer` fails
//! until the first is gone (its connection closed releases the lock). Batches are written with
//! one statement per table over `UNNEST`ed arrays.

use std::collections::HashMap;

use async_trait::async_trait;
use base64::Engine as _;
use rand::RngCore;
use reachline_domain::BorrowerId;
use reachline_ledger::edge::TileWrite;
use reachline_ledger::leaf::CommitmentKey;
use reachline_ledger::tiles::{encode_bundle, parse_bundle, TileIndex, TileLevel, TILE_WIDTH};
use reachline_ledger::{Hash, LeafIndex, TreeSize};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use crate::crypto::Keyring;
use crate::ledger::{
    Batch, Claimed, LeafRow, LedgerEvents, LedgerStore, QueuedAppend, StoredCheckpoint, SEQUENCER_LOCK,
};
use crate::sqlite::ledger::{decode_key, COMMITMENT_KEY_FIELD};
use crate::{Result, StoreError};

pub struct PgLedger {
    pool: PgPool,
    keys: Keyring,
    /// The sequencer's connection, holding the advisory lock, once claimed. Detached from the
    /// pool, so dropping the store closes it and the lock goes with it.
    sequencer: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    cache: crate::ledger::UpperTileCache,
    /// The announcements of the shared log, listened to once asked for.
    events: tokio::sync::OnceCell<LedgerEvents>,
}

/// The `NOTIFY` channel on which a node announces leaves it queued…
const QUEUED: &str = "reachline_ledger_queued";
/// …and the one on which the sequencer announces a batch that appended queued leaves.
const COMMITTED: &str = "reachline_ledger_committed";

impl Drop for PgLedger {
    fn drop(&mut self) {
        // Closing the pool ends the listening task (its wait returns `PoolClosed`).
        if self.events.initialized() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let pool = self.pool.clone();
                rt.spawn(async move { pool.close().await });
            }
        }
    }
}

impl PgLedger {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str, keys: Keyring) -> Result<Self> {
        let pool = super::connect_migrated(url, 4).await?;
        Ok(Self {
            pool,
            keys,
            sequencer: tokio::sync::Mutex::new(None),
            cache: Default::default(),
            events: tokio::sync::OnceCell::new(),
        })
    }
}

fn to_checkpoint(r: &PgRow) -> Result<StoredCheckpoint> {
    let root: Vec<u8> = r.try_get("root")?;
    Ok(StoredCheckpoint {
        size: TreeSize(r.try_get::<i64, _>("size")? as u64),
        root: Hash::from_slice(&root).map_err(|e| StoreError::Corrupt(format!("checkpoint root: {e}")))?,
        note: r.try_get("note")?,
    })
}

async fn latest(c: &mut sqlx::PgConnection) -> Result<Option<StoredCheckpoint>> {
    sqlx::query("SELECT size, root, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(to_checkpoint)
        .transpose()
}

async fn put_tiles(c: &mut sqlx::PgConnection, tiles: &[TileWrite]) -> Result<()> {
    if tiles.is_empty() {
        return Ok(());
    }
    let levels: Vec<i16> = tiles.iter().map(|t| i16::from(t.tile.level.0)).collect();
    let idx: Vec<i64> = tiles.iter().map(|t| t.tile.index.0 as i64).collect();
    let data: Vec<&[u8]> = tiles.iter().map(|t| t.data.as_slice()).collect();
    sqlx::query(
        "INSERT INTO ledger_tiles (level, idx, data) SELECT * FROM UNNEST($1::int2[], $2::int8[], $3::bytea[]) \
         ON CONFLICT (level, idx) DO UPDATE SET data = EXCLUDED.data",
    )
    .bind(levels)
    .bind(idx)
    .bind(data)
    .execute(c)
    .await?;
    Ok(())
}

/// Leaves to a bundle row: entry bundles are as wide as level-0 tiles.
const BUNDLE: u64 = TILE_WIDTH;

/// Writes a batch's leaves, which start at `old` (the log's size before it): those that fill a
/// bundle go into it, with the leaves of that bundle earlier batches left one per row (moved
/// out of `ledger_leaves`); the rest go one per row into `ledger_leaves`.
async fn put_leaves(c: &mut sqlx::PgConnection, old: u64, leaves: &[LeafRow]) -> Result<()> {
    let Some(last) = leaves.last() else {
        return Ok(());
    };
    let open = old / BUNDLE * BUNDLE;
    let sealed = (last.index.0 + 1) / BUNDLE * BUNDLE;
    let mut rest = leaves;
    if sealed > open {
        let mut entries =
            sqlx::query("SELECT idx, notice, data FROM ledger_leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(open as i64)
                .bind(old as i64)
                .fetch_all(&mut *c)
                .await?
                .iter()
                .map(leaf_row)
                .collect::<Result<Vec<_>>>()?;
        let n = (sealed - old) as usize;
        entries.extend_from_slice(&leaves[..n]);
        rest = &leaves[n..];
        if let Some((k, l)) = entries.iter().enumerate().find(|(k, l)| l.index.0 != open + *k as u64) {
            return Err(StoreError::Corrupt(format!(
                "ledger leaf {} is missing: the bundle it belongs to cannot be sealed (found leaf {} there)",
                open + k as u64,
                l.index
            )));
        }
        let mut idx = Vec::new();
        let mut data = Vec::new();
        for chunk in entries.chunks(BUNDLE as usize) {
            idx.push((chunk[0].index.0 / BUNDLE) as i64);
            data.push(
                encode_bundle(&chunk.iter().map(|l| l.data.as_slice()).collect::<Vec<_>>())
                    .map_err(crate::codec::corrupt)?,
            );
        }
        let notices: Vec<Option<i64>> = entries.iter().map(|l| l.notice).collect();
        sqlx::query(&format!(
            "INSERT INTO ledger_bundles (idx, notices, data) \
             SELECT b.idx, ($2::int8[])[(b.k - 1) * {BUNDLE} + 1 : b.k * {BUNDLE}], b.data \
             FROM UNNEST($1::int8[], $3::bytea[]) WITH ORDINALITY AS b(idx, data, k)"
        ))
        .bind(idx)
        .bind(notices)
        .bind(data)
        .execute(&mut *c)
        .await?;
        sqlx::query("DELETE FROM ledger_leaves WHERE idx >= $1 AND idx < $2")
            .bind(open as i64)
            .bind(old as i64)
            .execute(&mut *c)
            .await?;
    }
    put_rows(c, rest).await
}

/// Leaves one per row, in `ledger_leaves`.
async fn put_rows(c: &mut sqlx::PgConnection, rows: &[LeafRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let idx: Vec<i64> = rows.iter().map(|l| l.index.0 as i64).collect();
    let notice: Vec<Option<i64>> = rows.iter().map(|l| l.notice).collect();
    let data: Vec<&[u8]> = rows.iter().map(|l| l.data.as_slice()).collect();
    sqlx::query(
        "INSERT INTO ledger_leaves (idx, notice, data) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::bytea[])",
    )
    .bind(idx)
    .bind(notice)
    .bind(data)
    .execute(c)
    .await?;
    Ok(())
}

/// The leaves of a stored bundle row (`idx`, `notices`, `data`) whose notice is `only`'s, or all.
fn bundle_rows(r: &PgRow, only: Option<i64>) -> Result<Vec<LeafRow>> {
    let b: i64 = r.try_get("idx")?;
    let notices: Vec<Option<i64>> = r.try_get("notices")?;
    let data: Vec<u8> = r.try_get("data")?;
    let entries = parse_bundle(&data).map_err(|e| {
        StoreError::Corrupt(format!(
            "ledger bundle {b} (leaves {} to {}): {e}",
            b as u64 * BUNDLE,
            (b as u64 + 1) * BUNDLE - 1
        ))
    })?;
    if entries.len() != notices.len() {
        return Err(StoreError::Corrupt(format!(
            "ledger bundle {b}: {} entries but {} notices",
            entries.len(),
            notices.len()
        )));
    }
    Ok(entries
        .into_iter()
        .zip(notices)
        .enumerate()
        .filter(|(_, (_, n))| only.is_none() || *n == only)
        .map(|(k, (data, notice))| LeafRow {
            index: LeafIndex(b as u64 * BUNDLE + k as u64),
            notice,
            data,
        })
        .collect())
}

fn leaf_row(r: &PgRow) -> Result<LeafRow> {
    Ok(LeafRow {
        index: LeafIndex(r.try_get::<i64, _>("idx")? as u64),
        notice: r.try_get("notice")?,
        data: r.try_get("data")?,
    })
}

impl PgLedger {
    /// The connection holding the sequencer's advisory lock: the one held, while it answers; a
    /// new one that takes the lock, when none is held or the held one is gone (a database
    /// restart or a network cut took the lock with it); `SequencerHeld` when another node
    /// holds the lock now.
    async fn hold_lock<'a>(
        &self,
        guard: &'a mut tokio::sync::MutexGuard<'_, Option<sqlx::postgres::PgConnection>>,
    ) -> Result<&'a mut sqlx::postgres::PgConnection> {
        if let Some(conn) = guard.as_mut() {
            if sqlx::Connection::ping(conn).await.is_err() {
                **guard = None;
            }
        }
        if guard.is_none() {
            let mut conn = self.pool.acquire().await?.detach();
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(SEQUENCER_LOCK)
                .fetch_one(&mut conn)
                .await?;
            if !got {
                return Err(StoreError::SequencerHeld(SEQUENCER_LOCK));
            }
            **guard = Some(conn);
        }
        guard
            .as_mut()
            .ok_or_else(|| StoreError::Conflict("the sequencer's lock connection was just set".into()))
    }
}

#[async_trait]
impl LedgerStore for PgLedger {
    async fn claim_sequencer(&self) -> Result<Claimed> {
        let mut guard = self.sequencer.lock().await;
        let conn = self.hold_lock(&mut guard).await?;
        let mut tx = sqlx::Connection::begin(conn).await?;
        let latest = latest(&mut tx).await?;
        let size = latest.as_ref().map_or(0, |l| l.size.0 as i64);
        let mut discarded = sqlx::query("DELETE FROM ledger_leaves WHERE idx >= $1")
            .bind(size)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A bundle reaching past the checkpoint (a batch commits its bundles with its
        // checkpoint, so only a restore of a mismatched backup leaves one): its leaves below
        // the checkpoint go back to single rows, the rest are discarded with it.
        let beyond = sqlx::query(&format!(
            "DELETE FROM ledger_bundles WHERE (idx + 1) * {BUNDLE} > $1 RETURNING idx, notices, data"
        ))
        .bind(size)
        .fetch_all(&mut *tx)
        .await?;
        let mut kept = Vec::new();
        for r in &beyond {
            for l in bundle_rows(r, None)? {
                if l.index.0 < size as u64 {
                    kept.push(l);
                } else {
                    discarded += 1;
                }
            }
        }
        put_rows(&mut tx, &kept).await?;
        tx.commit().await?;
        Ok(Claimed { latest, discarded })
    }

    async fn commit_batch(&self, batch: Batch) -> Result<()> {
        let mut guard = self.sequencer.lock().await;
        if guard.is_none() {
            return Err(StoreError::Conflict(
                "the ledger was not claimed by this sequencer".into(),
            ));
        }
        // A database restart took the lock's connection, and the lock with it, while the node
        // waited: take the lock again before writing anything (the batch is checked against
        // the latest checkpoint below, so a log another node extended meanwhile is refused).
        let conn = self.hold_lock(&mut guard).await?;
        let mut tx = sqlx::Connection::begin(conn).await?;
        let now = latest(&mut tx).await?.map(|l| l.size);
        if now != batch.old_size {
            return Err(StoreError::Conflict(format!(
                "the ledger moved on under this sequencer (latest checkpoint {now:?}, expected {:?})",
                batch.old_size
            )));
        }
        put_leaves(&mut tx, batch.old_size.map_or(0, |s| s.0), &batch.leaves).await?;
        put_tiles(&mut tx, &batch.tiles).await?;
        if !batch.stamped.is_empty() {
            let ids: Vec<i64> = batch.stamped.iter().map(|s| s.0).collect();
            let first: Vec<i64> = batch.stamped.iter().map(|s| s.1 .0 as i64).collect();
            let done = sqlx::query(
                "UPDATE ledger_queue q SET first_idx = s.first, size = $3, stamped_at = now() \
                 FROM UNNEST($1::int8[], $2::int8[]) AS s(id, first) WHERE q.id = s.id AND q.first_idx IS NULL",
            )
            .bind(&ids)
            .bind(first)
            .bind(batch.checkpoint.size.0 as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done != ids.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "{} of {} queued ledger appends were already stamped",
                    ids.len() as u64 - done,
                    ids.len()
                )));
            }
            // Delivered on commit, to every node waiting for its leaves.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(COMMITTED)
                .bind(batch.checkpoint.size.0.to_string())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, now())")
            .bind(batch.checkpoint.size.0 as i64)
            .bind(batch.checkpoint.root.0.to_vec())
            .bind(&batch.checkpoint.note)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_tiles(&self, tiles: Vec<TileWrite>) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        put_tiles(&mut conn, &tiles).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let mut conn = self.pool.acquire().await?;
        latest(&mut conn).await
    }

    async fn checkpoint_at(&self, size: TreeSize) -> Result<Option<StoredCheckpoint>> {
        sqlx::query("SELECT size, root, note FROM ledger_checkpoints WHERE size = $1")
            .bind(size.0 as i64)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(to_checkpoint)
            .transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        sqlx::query("SELECT size, root, note FROM ledger_checkpoints ORDER BY size")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(to_checkpoint)
            .collect()
    }

    async fn read_tiles(&self, all: &[(TileLevel, TileIndex)]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = self.cache.get(all);
        let tiles: Vec<(TileLevel, TileIndex)> = all
            .iter()
            .zip(&out)
            .filter(|(_, d)| d.is_none())
            .map(|(k, _)| *k)
            .collect();
        if tiles.is_empty() {
            return Ok(out);
        }
        let levels: Vec<i16> = tiles.iter().map(|(l, _)| i16::from(l.0)).collect();
        let idx: Vec<i64> = tiles.iter().map(|(_, i)| i.0 as i64).collect();
        let rows = sqlx::query(
            "SELECT t.level, t.idx, t.data FROM ledger_tiles t \
             JOIN UNNEST($1::int2[], $2::int8[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx",
        )
        .bind(levels)
        .bind(idx)
        .fetch_all(&self.pool)
        .await?;
        let mut found: HashMap<(i16, i64), Vec<u8>> = HashMap::with_capacity(rows.len());
        for r in rows {
            found.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        let read: Vec<Option<Vec<u8>>> = tiles
            .iter()
            .map(|(l, i)| found.get(&(i16::from(l.0), i.0 as i64)).cloned())
            .collect();
        self.cache.put(&tiles, &read);
        let mut read = read.into_iter();
        for d in out.iter_mut().filter(|d| d.is_none()) {
            *d = read.next().flatten();
        }
        Ok(out)
    }

    async fn leaves(&self, start: u64, limit: u64) -> Result<Vec<LeafRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Enough bundles to hold `limit` leaves from `start` on, and as many single rows: the
        // first `limit` of both, in index order (a missing bundle shows as a gap).
        let mut out = Vec::new();
        for r in sqlx::query("SELECT idx, notices, data FROM ledger_bundles WHERE idx >= $1 ORDER BY idx LIMIT $2")
            .bind((start / BUNDLE) as i64)
            .bind((limit / BUNDLE + 2) as i64)
            .fetch_all(&self.pool)
            .await?
        {
            out.extend(bundle_rows(&r, None)?.into_iter().filter(|l| l.index.0 >= start));
        }
        for r in sqlx::query("SELECT idx, notice, data FROM ledger_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2")
            .bind(start as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?
        {
            out.push(leaf_row(&r)?);
        }
        out.sort_by_key(|l| l.index);
        out.truncate(limit as usize);
        Ok(out)
    }

    async fn leaves_of_notice(&self, notice: i64) -> Result<Vec<LeafRow>> {
        let mut out = Vec::new();
        for r in
            sqlx::query("SELECT idx, notices, data FROM ledger_bundles WHERE notices @> ARRAY[$1::int8] ORDER BY idx")
                .bind(notice)
                .fetch_all(&self.pool)
                .await?
        {
            out.extend(bundle_rows(&r, Some(notice))?);
        }
        for r in sqlx::query("SELECT idx, notice, data FROM ledger_leaves WHERE notice = $1 ORDER BY idx")
            .bind(notice)
            .fetch_all(&self.pool)
            .await?
        {
            out.push(leaf_row(&r)?);
        }
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    async fn commitment_keys(&self, borrowers: &[BorrowerId]) -> Result<Vec<CommitmentKey>> {
        let mut ids: Vec<i64> = borrowers.iter().map(|b| b.0).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let wrapped: Vec<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT borrower_id, wrapped_key FROM borrower_keys WHERE borrower_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let wrapped: HashMap<i64, Option<Vec<u8>>> = wrapped.into_iter().collect();
        let mut sealers = HashMap::with_capacity(ids.len());
        for id in &ids {
            let key = match wrapped.get(id) {
                None => {
                    return Err(StoreError::NotFound {
                        what: "data key of borrower",
                        id: BorrowerId(*id).to_string(),
                    })
                }
                Some(None) => return Err(crate::CryptoError::Shredded.into()),
                Some(Some(w)) => self.keys.unwrap_key(w)?,
            };
            sealers.insert(*id, key.sealer());
        }
        let read = |rows: Vec<(i64, Vec<u8>)>, into: &mut HashMap<i64, CommitmentKey>| -> Result<()> {
            for (id, sealed) in rows {
                let sealer = &sealers[&id];
                into.insert(
                    id,
                    CommitmentKey::from_bytes(decode_key(&sealer.open(COMMITMENT_KEY_FIELD, &sealed)?)?),
                );
            }
            Ok(())
        };
        let mut keys = HashMap::with_capacity(ids.len());
        read(
            sqlx::query_as("SELECT borrower_id, sealed_key FROM ledger_commitment_keys WHERE borrower_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?,
            &mut keys,
        )?;
        let missing: Vec<i64> = ids.iter().copied().filter(|id| !keys.contains_key(id)).collect();
        if !missing.is_empty() {
            let sealed: Vec<Vec<u8>> = missing
                .iter()
                .map(|id| {
                    let mut k = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut k);
                    let text = base64::engine::general_purpose::STANDARD.encode(k);
                    sealers[id].seal(COMMITMENT_KEY_FIELD, &text)
                })
                .collect();
            // Another node may create one of them first: whichever was stored wins.
            sqlx::query(
                "INSERT INTO ledger_commitment_keys (borrower_id, sealed_key) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) ON CONFLICT (borrower_id) DO NOTHING",
            )
            .bind(&missing)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
            read(
                sqlx::query_as(
                    "SELECT borrower_id, sealed_key FROM ledger_commitment_keys WHERE borrower_id = ANY($1)",
                )
                .bind(&missing)
                .fetch_all(&mut *tx)
                .await?,
                &mut keys,
            )?;
        }
        tx.commit().await?;
        borrowers
            .iter()
            .map(|b| {
                keys.get(&b.0).cloned().ok_or_else(|| StoreError::NotFound {
                    what: "commitment key of borrower",
                    id: b.to_string(),
                })
            })
            .collect()
    }

    async fn events(&self) -> Result<Option<LedgerEvents>> {
        let events = self
            .events
            .get_or_try_init(|| async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen_all([QUEUED, COMMITTED]).await?;
                let (queued_tx, queued) = tokio::sync::watch::channel(0u64);
                let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
                let bump = |w: &tokio::sync::watch::Sender<u64>| w.send_modify(|n| *n = n.wrapping_add(1));
                tokio::spawn(async move {
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) if n.channel() == QUEUED => bump(&queued_tx),
                            Ok(Some(_)) => bump(&committed_tx),
                            Ok(None) => {
                                // The connection was lost and is re-established on the next
                                // wait: whatever was announced meanwhile is lost, so every
                                // waiter looks again.
                                bump(&queued_tx);
                                bump(&committed_tx);
                            }
                            Err(sqlx::Error::PoolClosed) => return,
                            Err(e) => {
                                tracing::warn!(error = %e, "listening for ledger announcements failed; retrying");
                                bump(&queued_tx);
                                bump(&committed_tx);
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                Ok::<_, StoreError>(LedgerEvents { queued, committed })
            })
            .await?;
        Ok(Some(events.clone()))
    }

    async fn enqueue(&self, leaves: Vec<(Option<i64>, Vec<u8>)>) -> Result<i64> {
        let notices: Vec<Option<i64>> = leaves.iter().map(|l| l.0).collect();
        let data: Vec<&[u8]> = leaves.iter().map(|l| l.1.as_slice()).collect();
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO ledger_queue (notices, data) VALUES ($1, $2) RETURNING id")
            .bind(notices)
            .bind(data)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn queued(&self, max_leaves: usize) -> Result<Vec<QueuedAppend>> {
        let rows =
            sqlx::query("SELECT id, notices, data FROM ledger_queue WHERE first_idx IS NULL ORDER BY id LIMIT $1")
                .bind(max_leaves.max(1) as i64)
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::new();
        let mut n = 0;
        for r in rows {
            let notices: Vec<Option<i64>> = r.try_get("notices")?;
            let data: Vec<Vec<u8>> = r.try_get("data")?;
            if !out.is_empty() && n + data.len() > max_leaves {
                break;
            }
            n += data.len();
            out.push(QueuedAppend {
                id: r.try_get("id")?,
                leaves: notices.into_iter().zip(data).collect(),
            });
        }
        Ok(out)
    }

    async fn take_stamp(&self, id: i64) -> Result<Option<(LeafIndex, TreeSize)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "DELETE FROM ledger_queue WHERE id = $1 AND first_idx IS NOT NULL RETURNING first_idx, size",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(first, size)| (LeafIndex(first as u64), TreeSize(size as u64))))
    }

    async fn forget_stamped(&self, seconds: u64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM ledger_queue WHERE first_idx IS NOT NULL AND stamped_at < now() - make_interval(secs => $1)",
        )
        .bind(seconds as f64)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn disk_bytes(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT sum(pg_total_relation_size(c::regclass))::int8 FROM \
             unnest(ARRAY['ledger_leaves', 'ledger_bundles', 'ledger_tiles', 'ledger_checkpoints']) AS c",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }
}
