//! The notice ledger's storage: the [`LedgerStore`] trait both back ends implement, the
//! [`Sequencer`] that appends in durable batches, proofs and bundles read from stored tiles, and
//! the [`audit`] that re-hashes the whole log.
//!
//! Architecture Invariant: a batch's leaves, the tiles it changes and its signed checkpoint are
//! written in one transaction, and the checkpoint row is the commit point. The latest stored
//! checkpoint is authoritative: leaves beyond it are a batch that never committed and are
//! discarded when a sequencer claims the log; tiles that disagree with it are re-derived from
//! the leaves.

pub mod audit;
pub mod sequencer;

use async_trait::async_trait;
use reachline_domain::BorrowerId;
use reachline_ledger::edge::{Edge, TileWrite};
use reachline_ledger::leaf::CommitmentKey;
use reachline_ledger::proof::{consistency_spans, hash_spans, inclusion_spans, Span};
use reachline_ledger::proof_file::ProofFile;
use reachline_ledger::tiles::{Tile, TileIndex, TileLevel, TileSet};
use reachline_ledger::{Hash, LeafIndex, NodeId, TreeSize};

pub use audit::{audit, AuditReport, Problem};
pub use sequencer::{Appended, Sequencer, SequencerConfig, FOLLOWER_WAIT};

use crate::{Result, StoreError};

/// PostgreSQL advisory lock key the one ledger sequencer holds for its whole life (the import
/// takes 7321001).
pub const SEQUENCER_LOCK: i64 = 7_321_002;

/// A signed checkpoint as stored: its size and root, and the signed note verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: TreeSize,
    pub root: Hash,
    pub note: String,
}

/// One stored leaf: its index, the notice it belongs to (for bundles), its encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRow {
    pub index: LeafIndex,
    pub notice: Option<i64>,
    pub data: Vec<u8>,
}

/// What one sequencer transaction writes.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The size of the latest checkpoint this batch extends (`None`: the log has none yet). The
    /// store refuses the batch if another checkpoint was committed since (compare and swap).
    pub old_size: Option<TreeSize>,
    pub leaves: Vec<LeafRow>,
    pub tiles: Vec<TileWrite>,
    pub checkpoint: StoredCheckpoint,
    /// Queued appends this batch takes, each with the index of its first leaf: the store marks
    /// them with it and with the checkpoint's size, in the same transaction.
    pub stamped: Vec<(i64, LeafIndex)>,
}

/// A caller's leaves queued in the database by a node that does not sequence the log, for the
/// node that does (several nodes on PostgreSQL).
#[derive(Debug, Clone)]
pub struct QueuedAppend {
    pub id: i64,
    /// The leaves, in order, with their notice ids; they get consecutive indices.
    pub leaves: Vec<(Option<i64>, Vec<u8>)>,
}

/// What changed in the shared log, as other nodes announce it (PostgreSQL `NOTIFY`): each
/// receiver's value is a counter that moves on every announcement. A waiter marks the value
/// seen, checks the database, and waits for a change (with a poll interval as a fallback: an
/// announcement made while the listening connection was being re-established is lost).
#[derive(Debug, Clone)]
pub struct LedgerEvents {
    /// Leaves were queued for the sequencer.
    pub queued: tokio::sync::watch::Receiver<u64>,
    /// A batch was committed that appended queued leaves.
    pub committed: tokio::sync::watch::Receiver<u64>,
}

/// What a sequencer found when it claimed the log.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub latest: Option<StoredCheckpoint>,
    /// Leaves beyond the latest checkpoint that were discarded (an uncommitted batch).
    pub discarded: u64,
}

/// The ledger's tables, behind one interface both back ends implement.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Makes this store the log's one sequencer (SQLite: every batch takes the write lock and
    /// checks the latest checkpoint; PostgreSQL: a session advisory lock, [`SEQUENCER_LOCK`],
    /// held until the store is dropped) and discards leaves beyond the latest checkpoint.
    async fn claim_sequencer(&self) -> Result<Claimed>;

    /// Writes a batch in one transaction; fails with [`StoreError::Conflict`] if the latest
    /// checkpoint is no longer `old_size`.
    async fn commit_batch(&self, batch: Batch) -> Result<()>;

    /// Overwrites tiles (re-deriving them after damage).
    async fn write_tiles(&self, tiles: Vec<TileWrite>) -> Result<()>;

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>>;

    async fn checkpoint_at(&self, size: TreeSize) -> Result<Option<StoredCheckpoint>>;

    /// Every checkpoint ever published, smallest first.
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>>;

    /// The stored bytes of tiles (as wide as the last write made them), `None` where missing.
    async fn read_tiles(&self, tiles: &[(TileLevel, TileIndex)]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Up to `limit` leaves with index ≥ `start`, in index order (gaps show as missing indices).
    async fn leaves(&self, start: u64, limit: u64) -> Result<Vec<LeafRow>>;

    /// Every leaf of a notice, in index order.
    async fn leaves_of_notice(&self, notice: i64) -> Result<Vec<LeafRow>>;

    /// The borrower's address-commitment key: random, created on first use, stored sealed under
    /// the borrower's data key, so erasing the borrower (destroying the data key) destroys it.
    async fn commitment_key(&self, borrower: BorrowerId) -> Result<CommitmentKey> {
        self.commitment_keys(&[borrower])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no commitment key came back for the borrower asked".into()))
    }

    /// The keys of several borrowers, in the order asked (a borrower may be asked twice), read
    /// and created in one transaction: a dispatcher asks for a whole chunk's senders at once.
    async fn commitment_keys(&self, borrowers: &[BorrowerId]) -> Result<Vec<CommitmentKey>>;

    /// Bytes the ledger's tables take on disk (for the benchmark; SQLite: the whole file).
    async fn disk_bytes(&self) -> Result<u64>;

    /// The announcements of a log several nodes share, or `None` where one process owns the
    /// log (SQLite): then there is no queue, and a second sequencer is refused.
    async fn events(&self) -> Result<Option<LedgerEvents>> {
        Ok(None)
    }

    /// Queues leaves for the node that sequences the log; returns the queue row's id.
    async fn enqueue(&self, _leaves: Vec<(Option<i64>, Vec<u8>)>) -> Result<i64> {
        Err(StoreError::Conflict("this database has no ledger queue".into()))
    }

    /// Queued appends not yet in the log, oldest first, up to about `max_leaves` leaves (at least
    /// one append when any waits).
    async fn queued(&self, _max_leaves: usize) -> Result<Vec<QueuedAppend>> {
        Ok(Vec::new())
    }

    /// Once queued append `id` is in the log: the index of its first leaf and the size of the
    /// checkpoint that covers it, and the queue row is removed. `None` while it waits.
    async fn take_stamp(&self, _id: i64) -> Result<Option<(LeafIndex, TreeSize)>> {
        Ok(None)
    }

    /// Removes queue rows appended more than `seconds` ago whose node never came for them (it
    /// died waiting); returns how many.
    async fn forget_stamped(&self, _seconds: u64) -> Result<u64> {
        Ok(0)
    }
}

/// Full tiles above level 0, kept in memory by a back end: a full tile never changes, there are
/// few of them (153 for ten million leaves), and every proof reads one of each level, so a proof
/// needs only its level-0 tile from the database.
#[derive(Default)]
pub(crate) struct UpperTileCache {
    tiles: std::sync::Mutex<std::collections::HashMap<(TileLevel, TileIndex), Vec<u8>>>,
}

impl UpperTileCache {
    const MAX: usize = 4096;

    /// The cached tiles among `keys` (`None` where not cached).
    pub(crate) fn get(&self, keys: &[(TileLevel, TileIndex)]) -> Vec<Option<Vec<u8>>> {
        let tiles = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| tiles.get(k).cloned()).collect()
    }

    /// Remembers the full upper tiles among what was read.
    pub(crate) fn put(&self, keys: &[(TileLevel, TileIndex)], data: &[Option<Vec<u8>>]) {
        let mut tiles = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        for (k, d) in keys.iter().zip(data) {
            if let Some(d) = d {
                let full = d.len() as u64 == reachline_ledger::tiles::TILE_WIDTH * Hash::LEN as u64;
                if k.0 .0 > 0 && full && tiles.len() < Self::MAX {
                    tiles.insert(*k, d.clone());
                }
            }
        }
    }
}

use crate::codec::corrupt;

/// The tiles holding `nodes` of the tree of `size` leaves, read in one call.
pub async fn tiles_for_nodes(store: &dyn LedgerStore, nodes: &[NodeId], size: TreeSize) -> Result<TileSet> {
    let needed = Tile::needed_for(nodes, size);
    let keys: Vec<(TileLevel, TileIndex)> = needed.iter().map(|t| (t.level, t.index)).collect();
    let data = store.read_tiles(&keys).await?;
    let mut set = TileSet::new();
    for (tile, bytes) in needed.iter().zip(data) {
        let want = usize::from(tile.width) * Hash::LEN;
        match bytes {
            Some(b) if b.len() >= want => set.insert(*tile, b[..want].to_vec()).map_err(corrupt)?,
            _ => return Err(corrupt(format!("stored tile {} is missing or short", tile.path()))),
        }
    }
    Ok(set)
}

async fn span_hashes(store: &dyn LedgerStore, spans: &[Span], size: TreeSize) -> Result<Vec<Hash>> {
    let nodes: Vec<NodeId> = spans.iter().flat_map(|s| s.nodes()).collect();
    let set = tiles_for_nodes(store, &nodes, size).await?;
    hash_spans(&set, spans).map_err(corrupt)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves, from stored tiles.
pub async fn inclusion_proof(store: &dyn LedgerStore, index: LeafIndex, size: TreeSize) -> Result<Vec<Hash>> {
    let spans = inclusion_spans(index, size).map_err(corrupt)?;
    span_hashes(store, &spans, size).await
}

/// The consistency proof from `old` to `new` leaves (empty from size 0, as the witness protocol
/// has it).
pub async fn consistency_proof(store: &dyn LedgerStore, old: TreeSize, new: TreeSize) -> Result<Vec<Hash>> {
    if old.0 == 0 && new.0 > 0 {
        return Ok(Vec::new());
    }
    let spans = consistency_spans(old, new).map_err(corrupt)?;
    span_hashes(store, &spans, new).await
}

/// The root of the tree of `size` leaves, from stored tiles.
pub async fn root_at(store: &dyn LedgerStore, size: TreeSize) -> Result<Hash> {
    if size.0 == 0 {
        return Ok(reachline_ledger::empty_root());
    }
    Ok(span_hashes(store, &[Span { start: 0, end: size.0 }], size).await?[0])
}

/// The right edge of the tree of `size` leaves, read from stored tiles.
pub async fn load_edge(store: &dyn LedgerStore, size: TreeSize) -> Result<Edge> {
    let want = Edge::tiles_for(size);
    let keys: Vec<(TileLevel, TileIndex)> = want.iter().map(|(l, i, _)| (*l, *i)).collect();
    let data = store.read_tiles(&keys).await?;
    Edge::from_tiles(
        size,
        &data.into_iter().map(Option::unwrap_or_default).collect::<Vec<_>>(),
    )
    .map_err(corrupt)
}

/// Re-derives every tile of the first `size` leaves from the stored leaves; returns the edge.
pub async fn rebuild_tiles(store: &dyn LedgerStore, size: TreeSize) -> Result<Edge> {
    const CHUNK: u64 = 65_536;
    let mut edge = Edge::new();
    let mut at = 0u64;
    while at < size.0 {
        let rows = store.leaves(at, CHUNK.min(size.0 - at)).await?;
        let mut hashes = Vec::with_capacity(rows.len());
        for (k, r) in rows.iter().enumerate() {
            if r.index.0 != at + k as u64 {
                return Err(corrupt(format!("leaf {} is missing", at + k as u64)));
            }
            hashes.push(reachline_ledger::leaf_hash(&r.data));
        }
        if rows.is_empty() {
            return Err(corrupt(format!("leaf {at} is missing")));
        }
        at += rows.len() as u64;
        // Full tiles as they complete; the edge tiles once, at the end.
        let writes: Vec<TileWrite> = edge
            .append(&hashes)
            .into_iter()
            .filter(|w| u64::from(w.tile.width) == reachline_ledger::tiles::TILE_WIDTH)
            .collect();
        store.write_tiles(writes).await?;
    }
    store.write_tiles(edge.edge_tiles()).await?;
    Ok(edge)
}

/// The evidence bundle of a notice: every leaf with its notice id, proved against the latest
/// checkpoint.
pub async fn bundle(store: &dyn LedgerStore, notice: i64) -> Result<ProofFile> {
    let latest = store.latest_checkpoint().await?.ok_or_else(|| StoreError::NotFound {
        what: "ledger checkpoint",
        id: "latest".into(),
    })?;
    let rows: Vec<LeafRow> = store
        .leaves_of_notice(notice)
        .await?
        .into_iter()
        .filter(|r| latest.size.contains(r.index))
        .collect();
    if rows.is_empty() {
        return Err(StoreError::NotFound {
            what: "ledger leaves of notice",
            id: notice.to_string(),
        });
    }
    let spans: Vec<Vec<Span>> = rows
        .iter()
        .map(|r| inclusion_spans(r.index, latest.size).map_err(corrupt))
        .collect::<Result<_>>()?;
    let nodes: Vec<NodeId> = spans.iter().flatten().flat_map(|s| s.nodes()).collect();
    let set = tiles_for_nodes(store, &nodes, latest.size).await?;
    let leaves: Vec<(LeafIndex, Vec<u8>)> = rows.into_iter().map(|r| (r.index, r.data)).collect();
    ProofFile::build(&set, &latest.note, &leaves).map_err(corrupt)
}
