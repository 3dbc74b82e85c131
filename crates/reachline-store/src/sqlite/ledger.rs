//! The ledger on SQLite: its own connections to the database file, the writer with
//! `synchronous = FULL` so a committed batch survives power loss (WAL with `NORMAL`, as the rest
//! of the store runs, survives only a crash of the process). One sequencer at a time: every
//! batch takes the write lock (`BEGIN IMMEDIATE`) and checks that the latest checkpoint is still
//! the one it extends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use rand::RngCore;
use reachline_domain::BorrowerId;
use reachline_ledger::edge::TileWrite;
use reachline_ledger::leaf::CommitmentKey;
use reachline_ledger::tiles::{TileIndex, TileLevel};
use reachline_ledger::{Hash, LeafIndex, TreeSize};
use rusqlite::{params, Connection, OptionalExtension};

use super::{blocking, connect, data_key_for, shared_writer};
use crate::crypto::Keyring;
use crate::ledger::{Batch, Claimed, LeafRow, LedgerStore, StoredCheckpoint};
use crate::{Result, StoreError};

/// The associated data commitment keys are sealed under.
pub(crate) const COMMITMENT_KEY_FIELD: &str = "ledger.commitment_key";

pub struct SqliteLedger {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    keys: Arc<Keyring>,
    cache: Arc<crate::ledger::UpperTileCache>,
}

impl SqliteLedger {
    /// Opens (creating and migrating if needed) the ledger tables of the database at `path`.
    pub async fn open(path: impl AsRef<Path>, keys: Keyring) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (writer, reader) = blocking(move || {
            let w = shared_writer(&p)?;
            let r = connect(&p)?;
            Ok((w, r))
        })
        .await?;
        Ok(Self {
            path,
            writer,
            reader: Arc::new(Mutex::new(reader)),
            keys: Arc::new(keys),
            cache: Arc::default(),
        })
    }

    /// Runs `f` on the file's writer (shared with the store, `shared_writer`), its commits
    /// with `synchronous = FULL`: each one `fsync`s the WAL, and with it whatever the store
    /// committed before.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        Self::on(&self.writer, move |c| {
            c.pragma_update(None, "synchronous", "FULL")?;
            let out = f(c);
            let normal = c.pragma_update(None, "synchronous", "NORMAL");
            let out = out?;
            normal?;
            Ok(out)
        })
        .await
    }

    async fn on<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = conn.clone();
        blocking(move || {
            // A poisoned lock means a panic mid-call; SQLite rolled back what it had open.
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
    }
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Vec<u8>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn to_checkpoint((size, root, note): (i64, Vec<u8>, String)) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: TreeSize(size as u64),
        root: Hash::from_slice(&root).map_err(|e| StoreError::Corrupt(format!("checkpoint root: {e}")))?,
        note,
    })
}

fn latest(c: &Connection) -> Result<Option<StoredCheckpoint>> {
    c.prepare_cached("SELECT size, root, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")?
        .query_row([], checkpoint_row)
        .optional()?
        .map(to_checkpoint)
        .transpose()
}

fn put_tiles(c: &Connection, tiles: &[TileWrite]) -> Result<()> {
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO ledger_tiles (level, idx, data) VALUES (?1, ?2, ?3)")?;
    for t in tiles {
        stmt.execute(params![t.tile.level.0, t.tile.index.0 as i64, t.data])?;
    }
    Ok(())
}

fn leaf_rows(stmt: &mut rusqlite::CachedStatement<'_>, p: impl rusqlite::Params) -> Result<Vec<LeafRow>> {
    let rows = stmt.query_map(p, |r| {
        Ok(LeafRow {
            index: LeafIndex(r.get::<_, i64>(0)? as u64),
            notice: r.get(1)?,
            data: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[async_trait]
impl LedgerStore for SqliteLedger {
    async fn claim_sequencer(&self) -> Result<Claimed> {
        self.write(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let latest = latest(&tx)?;
            let size = latest.as_ref().map_or(0, |l| l.size.0 as i64);
            let discarded = tx.execute("DELETE FROM ledger_leaves WHERE idx >= ?1", [size])? as u64;
            tx.commit()?;
            Ok(Claimed { latest, discarded })
        })
        .await
    }

    async fn commit_batch(&self, batch: Batch) -> Result<()> {
        if !batch.stamped.is_empty() {
            return Err(StoreError::Conflict("SQLite has no ledger queue to stamp".into()));
        }
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = latest(&tx)?.map(|l| l.size);
            if now != batch.old_size {
                return Err(StoreError::Conflict(format!(
                    "the ledger moved on under this sequencer (latest checkpoint {now:?}, expected {:?}): \
                     is another sequencer running?",
                    batch.old_size
                )));
            }
            {
                let mut stmt =
                    tx.prepare_cached("INSERT INTO ledger_leaves (idx, notice, data) VALUES (?1, ?2, ?3)")?;
                for l in &batch.leaves {
                    stmt.execute(params![l.index.0 as i64, l.notice, l.data])?;
                }
            }
            put_tiles(&tx, &batch.tiles)?;
            tx.prepare_cached("INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![
                    batch.checkpoint.size.0 as i64,
                    batch.checkpoint.root.0.to_vec(),
                    batch.checkpoint.note,
                    chrono::Utc::now().timestamp_micros()
                ])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn write_tiles(&self, tiles: Vec<TileWrite>) -> Result<()> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            put_tiles(&tx, &tiles)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        Self::on(&self.reader, |c| latest(c)).await
    }

    async fn checkpoint_at(&self, size: TreeSize) -> Result<Option<StoredCheckpoint>> {
        Self::on(&self.reader, move |c| {
            c.prepare_cached("SELECT size, root, note FROM ledger_checkpoints WHERE size = ?1")?
                .query_row([size.0 as i64], checkpoint_row)
                .optional()?
                .map(to_checkpoint)
                .transpose()
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        Self::on(&self.reader, |c| {
            let mut stmt = c.prepare_cached("SELECT size, root, note FROM ledger_checkpoints ORDER BY size")?;
            let rows = stmt
                .query_map([], checkpoint_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(to_checkpoint).collect()
        })
        .await
    }

    async fn read_tiles(&self, tiles: &[(TileLevel, TileIndex)]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = self.cache.get(tiles);
        let missing: Vec<(usize, (TileLevel, TileIndex))> = tiles
            .iter()
            .enumerate()
            .filter(|(n, _)| out[*n].is_none())
            .map(|(n, k)| (n, *k))
            .collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let keys: Vec<(TileLevel, TileIndex)> = missing.iter().map(|(_, k)| *k).collect();
        let read_all = move |c: &mut Connection| {
            let mut stmt = c.prepare_cached("SELECT data FROM ledger_tiles WHERE level = ?1 AND idx = ?2")?;
            keys.iter()
                .map(|(l, i)| Ok(stmt.query_row(params![l.0, i.0 as i64], |r| r.get(0)).optional()?))
                .collect::<Result<Vec<Option<Vec<u8>>>>>()
        };
        // Proofs sit on this path: a read of a few cached pages is quicker done in place than
        // handed to another thread (the handoff alone costs milliseconds on a busy machine).
        let read = if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| {
                let mut c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
                read_all(&mut c)
            })?
        } else {
            Self::on(&self.reader, read_all).await?
        };
        let keys: Vec<(TileLevel, TileIndex)> = missing.iter().map(|(_, k)| *k).collect();
        self.cache.put(&keys, &read);
        for ((n, _), d) in missing.into_iter().zip(read) {
            out[n] = d;
        }
        Ok(out)
    }

    async fn leaves(&self, start: u64, limit: u64) -> Result<Vec<LeafRow>> {
        Self::on(&self.reader, move |c| {
            let mut stmt =
                c.prepare_cached("SELECT idx, notice, data FROM ledger_leaves WHERE idx >= ?1 ORDER BY idx LIMIT ?2")?;
            leaf_rows(&mut stmt, params![start as i64, limit as i64])
        })
        .await
    }

    async fn leaves_of_notice(&self, notice: i64) -> Result<Vec<LeafRow>> {
        Self::on(&self.reader, move |c| {
            let mut stmt =
                c.prepare_cached("SELECT idx, notice, data FROM ledger_leaves WHERE notice = ?1 ORDER BY idx")?;
            leaf_rows(&mut stmt, [notice])
        })
        .await
    }

    async fn commitment_keys(&self, borrowers: &[BorrowerId]) -> Result<Vec<CommitmentKey>> {
        let keys = self.keys.clone();
        let borrowers = borrowers.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(borrowers.len());
            let mut seen = std::collections::HashMap::new();
            for b in borrowers {
                if let Some(k) = seen.get(&b) {
                    out.push(CommitmentKey::from_bytes(*k));
                    continue;
                }
                let k = commitment_key_in(&tx, &keys, b)?;
                seen.insert(b, k);
                out.push(CommitmentKey::from_bytes(k));
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn disk_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let p = format!("{}{suffix}", self.path.display());
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
}

/// A commitment key from its sealed text form.
pub(crate) fn decode_key(text: &str) -> Result<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| StoreError::Corrupt("a commitment key is not 32 bytes of base64".into()))
}

/// A borrower's address-commitment key, read, or created and stored sealed, in `tx`.
fn commitment_key_in(tx: &Connection, keys: &Keyring, borrower: BorrowerId) -> Result<[u8; 32]> {
    let sealer = data_key_for(tx, keys, borrower)?.sealer();
    let sealed: Option<Vec<u8>> = tx
        .prepare_cached("SELECT sealed_key FROM ledger_commitment_keys WHERE borrower_id = ?1")?
        .query_row([borrower.0], |r| r.get(0))
        .optional()?;
    Ok(match sealed {
        Some(s) => decode_key(&sealer.open(COMMITMENT_KEY_FIELD, &s)?)?,
        None => {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            let text = base64::engine::general_purpose::STANDARD.encode(k);
            tx.prepare_cached("INSERT INTO ledger_commitment_keys (borrower_id, sealed_key) VALUES (?1, ?2)")?
                .execute(params![borrower.0, sealer.seal(COMMITMENT_KEY_FIELD, &text)])?;
            k
        }
    })
}
