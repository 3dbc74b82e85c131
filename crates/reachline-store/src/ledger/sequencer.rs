//! The one sequencer of the log: callers hand it leaves, it pools them into a batch (whatever
//! has arrived while the last batch was committing, up to `batch_max_entries` leaves; with
//! `batch_max_ms` above zero it also lingers that long after the first for more), hashes them onto
//! the right edge, signs the new checkpoint and commits leaves, tiles and checkpoint in one
//! transaction. Only then does every caller of the batch get its index and the checkpoint that
//! covers it: an acknowledged append is durable and provable.
//!
//! On start it claims the log (discarding an uncommitted batch), reads the right edge from the
//! stored tiles and checks its root against the latest checkpoint; if they disagree it
//! re-derives the tiles from the leaves, and refuses to start if even the leaves disagree.
//!
//! Several nodes on one PostgreSQL database ([`Sequencer::join`]): the node that holds the
//! sequencer's advisory lock leads — it appends its own leaves and, in the same batches, the
//! leaves other nodes queued in the database (`ledger_queue`). A follower queues each caller's
//! leaves, waits for the batch that stamps them with their index and checkpoint (woken by
//! `NOTIFY`, polling as a fallback), and tries to take the lock every second, so that when the
//! leader dies (its connection, and the lock, go with it) one follower leads within about a
//! second and appends what waits in the queue. Callers see the same `append` either way.

use std::sync::Arc;
use std::time::Duration;

use reachline_ledger::checkpoint::Checkpoint;
use reachline_ledger::edge::Edge;
use reachline_ledger::leaf::Leaf;
use reachline_ledger::note::{SignerKey, VerifierKey};
use reachline_ledger::{leaf_hash, LeafIndex, TreeSize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{load_edge, rebuild_tiles, Batch, LeafRow, LedgerEvents, LedgerStore, QueuedAppend, StoredCheckpoint};
use crate::{Result, StoreError};

/// How long a follower's append waits for a leader to append its queued leaves before it fails
/// (the leaves stay queued, and are appended when a leader runs).
pub const FOLLOWER_WAIT: Duration = Duration::from_secs(120);
/// How often a follower tries to take the log over.
const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// How often the shared queue is looked at without an announcement (one can be lost while a
/// listening connection is re-established).
const POLL: Duration = Duration::from_millis(250);
/// Queue rows stamped this long ago whose node never came for them are removed.
const STAMP_KEEP_SECONDS: u64 = 3600;

/// How the sequencer batches (`[ledger]` in the configuration).
#[derive(Debug, Clone)]
pub struct SequencerConfig {
    /// The log's origin line (`reachline.example/ledger`); also the signing key's name.
    pub origin: String,
    /// A batch closes when it holds this many leaves…
    pub batch_max_entries: usize,
    /// …or this long after its first leaf arrived.
    pub batch_max_ms: u64,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            origin: "reachline.example/ledger".into(),
            batch_max_entries: 256,
            batch_max_ms: 0,
        }
    }
}

/// An acknowledged append: where the leaf is, and the signed checkpoint that covers it.
#[derive(Debug, Clone)]
pub struct Appended {
    pub index: LeafIndex,
    pub checkpoint: Arc<StoredCheckpoint>,
}

type Reply = oneshot::Sender<std::result::Result<(u64, Arc<StoredCheckpoint>), String>>;

struct Request {
    leaves: Vec<(Option<i64>, Vec<u8>)>,
    reply: Reply,
}

/// A handle to the running sequencer; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Sequencer {
    tx: mpsc::Sender<Request>,
    verifier: VerifierKey,
    leading: Arc<std::sync::atomic::AtomicBool>,
}

struct State {
    store: Arc<dyn LedgerStore>,
    signer: SignerKey,
    origin: String,
    edge: Edge,
    latest: Arc<StoredCheckpoint>,
}

impl Sequencer {
    /// Claims the log, recovers it to its latest checkpoint (publishing the empty tree's
    /// checkpoint on a new log) and starts the batching task. Fails with
    /// [`StoreError::SequencerHeld`] while another node sequences the log (PostgreSQL).
    pub async fn start(store: Arc<dyn LedgerStore>, signer: SignerKey, config: SequencerConfig) -> Result<Sequencer> {
        check_name(&signer, &config)?;
        let events = store.events().await?;
        let state = State::recover(store.clone(), signer.clone(), config.origin.clone()).await?;
        Ok(Self::spawn(store, signer, config, events, Some(state)))
    }

    /// Joins a log that several nodes share: leads (as [`Sequencer::start`]) when no other node
    /// sequences it, else follows — queues its callers' leaves for the leader and takes over
    /// when the leader is gone. Where the store is one process's own (SQLite), the same as
    /// `start`.
    pub async fn join(store: Arc<dyn LedgerStore>, signer: SignerKey, config: SequencerConfig) -> Result<Sequencer> {
        check_name(&signer, &config)?;
        let events = store.events().await?;
        let state = match State::recover(store.clone(), signer.clone(), config.origin.clone()).await {
            Ok(s) => Some(s),
            Err(StoreError::SequencerHeld(lock)) if events.is_some() => {
                tracing::info!(
                    lock,
                    "another node sequences the ledger: this node queues its leaves for it"
                );
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self::spawn(store, signer, config, events, state))
    }

    fn spawn(
        store: Arc<dyn LedgerStore>,
        signer: SignerKey,
        config: SequencerConfig,
        events: Option<LedgerEvents>,
        mut leader: Option<State>,
    ) -> Sequencer {
        let verifier = signer.verifier();
        let (tx, mut rx) = mpsc::channel::<Request>(config.batch_max_entries.max(1) * 4);
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(leader.is_some()));
        let flag = leading.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            loop {
                flag.store(leader.is_some(), Relaxed);
                let mut state = match leader.take() {
                    Some(s) => s,
                    None => match &events {
                        Some(ev) => match follow(&mut rx, &store, &signer, &config, ev).await {
                            Some(s) => s,
                            None => return,
                        },
                        None => return,
                    },
                };
                flag.store(true, Relaxed);
                match lead(&mut state, &mut rx, &config, events.as_ref()).await {
                    Exit::Closed => return,
                    Exit::Demoted => {
                        tracing::warn!("another node took the ledger over: this node queues its leaves for it")
                    }
                }
            }
        });
        Sequencer { tx, verifier, leading }
    }

    /// Whether this node sequences the log now (else it queues its leaves for the node that
    /// does).
    pub fn is_leader(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Appends one leaf; returns once its batch is committed under a signed checkpoint.
    pub async fn append(&self, leaf: &Leaf) -> Result<Appended> {
        Ok(self.append_all(std::slice::from_ref(leaf)).await?.remove(0))
    }

    /// Appends leaves that will sit next to each other in the log (a caller's own batch).
    pub async fn append_all(&self, leaves: &[Leaf]) -> Result<Vec<Appended>> {
        let encoded = leaves
            .iter()
            .map(|l| {
                Ok((
                    l.notice,
                    l.encode().map_err(|e| StoreError::Conflict(format!("leaf: {e}")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let (first, checkpoint) = self.append_encoded(encoded).await?;
        Ok((0..leaves.len() as u64)
            .map(|k| Appended {
                index: LeafIndex(first + k),
                checkpoint: checkpoint.clone(),
            })
            .collect())
    }

    /// Appends already-encoded leaves (with their notice ids); returns the first index.
    pub async fn append_encoded(&self, leaves: Vec<(Option<i64>, Vec<u8>)>) -> Result<(u64, Arc<StoredCheckpoint>)> {
        let (reply, rx) = oneshot::channel();
        let gone = || StoreError::Conflict("the ledger sequencer has stopped".into());
        self.tx.send(Request { leaves, reply }).await.map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|e| StoreError::Conflict(format!("the ledger batch failed: {e}")))
    }
}

fn check_name(signer: &SignerKey, config: &SequencerConfig) -> Result<()> {
    if signer.name() != config.origin {
        return Err(StoreError::Conflict(format!(
            "the ledger signing key is named {:?} but the log's origin is {:?}",
            signer.name(),
            config.origin
        )));
    }
    Ok(())
}

/// Why a leader stopped leading.
enum Exit {
    /// Every handle is gone: the node is stopping.
    Closed,
    /// Another node holds the log now (this node lost its lock with its connection).
    Demoted,
}

/// Leads: pools the callers' leaves and the shared queue's into batches until every handle is
/// dropped, or the log is lost to another node.
async fn lead(
    state: &mut State,
    rx: &mut mpsc::Receiver<Request>,
    config: &SequencerConfig,
    events: Option<&LedgerEvents>,
) -> Exit {
    let max_entries = config.batch_max_entries.max(1);
    let max_wait = Duration::from_millis(config.batch_max_ms);
    let mut queued_rx = events.map(|e| e.queued.clone());
    // Look at the queue at once: leaves may have waited while no node led.
    let mut look = queued_rx.is_some();
    let mut last_look = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        let mut batch = Vec::new();
        match queued_rx.as_mut() {
            None => match rx.recv().await {
                Some(r) => batch.push(r),
                None => return Exit::Closed,
            },
            Some(q) if !look => {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => batch.push(r),
                        None => return Exit::Closed,
                    },
                    changed = q.changed() => match changed {
                        Ok(()) => look = true,
                        // The announcements stopped: poll.
                        Err(_) => tokio::time::sleep(POLL).await,
                    },
                    () = tokio::time::sleep(POLL) => look = true,
                }
            }
            Some(_) => {}
        }
        let mut n: usize = batch.iter().map(|r: &Request| r.leaves.len()).sum();
        let deadline = Instant::now() + max_wait;
        if !batch.is_empty() {
            // What queued up while the last batch committed joins at once: a lone caller is not
            // kept waiting, and a busy log still commits in large batches.
            while n < max_entries {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.leaves.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            while n < max_entries && !max_wait.is_zero() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => {
                        n += r.leaves.len();
                        batch.push(r);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let mut queued = Vec::new();
        if let Some(q) = queued_rx.as_mut() {
            if look || q.has_changed().unwrap_or(true) || last_look.elapsed() >= POLL {
                q.borrow_and_update();
                last_look = Instant::now();
                match state.store.queued(max_entries.saturating_sub(n).max(1)).await {
                    Ok(found) => queued = found,
                    Err(e) => tracing::warn!(error = %e, "could not read the ledger queue"),
                }
                // A full take may have left more behind.
                let taken: usize = queued.iter().map(|a: &QueuedAppend| a.leaves.len()).sum();
                look = taken > 0 && n + taken >= max_entries;
            }
            if last_sweep.elapsed() >= Duration::from_secs(60) {
                last_sweep = Instant::now();
                if let Err(e) = state.store.forget_stamped(STAMP_KEEP_SECONDS).await {
                    tracing::warn!(error = %e, "could not sweep the ledger queue");
                }
            }
        }
        if batch.is_empty() && queued.is_empty() {
            continue;
        }
        if !state.commit(batch, queued).await {
            return Exit::Demoted;
        }
    }
}

/// Follows: queues each caller's leaves for the leader and waits for them in its own task; tries
/// to take the log over every [`CLAIM_RETRY`]. Returns the recovered state once this node
/// leads, `None` when every handle is gone.
async fn follow(
    rx: &mut mpsc::Receiver<Request>,
    store: &Arc<dyn LedgerStore>,
    signer: &SignerKey,
    config: &SequencerConfig,
    events: &LedgerEvents,
) -> Option<State> {
    loop {
        let retry = tokio::time::sleep(CLAIM_RETRY);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(req) => {
                        let store = store.clone();
                        let committed = events.committed.clone();
                        tokio::spawn(async move {
                            let result = forward(store.as_ref(), committed, req.leaves).await;
                            let _ = req.reply.send(result.map_err(|e| e.to_string()));
                        });
                    }
                    None => return None,
                },
                () = &mut retry => break,
            }
        }
        match State::recover(store.clone(), signer.clone(), config.origin.clone()).await {
            Ok(s) => {
                tracing::warn!("the node that sequenced the ledger is gone: this node sequences it now");
                return Some(s);
            }
            Err(StoreError::SequencerHeld(_)) => {}
            Err(e) => tracing::error!(error = %e, "could not take the ledger over; trying again"),
        }
    }
}

/// A follower's append: queue the leaves, wait for the batch that stamps them.
async fn forward(
    store: &dyn LedgerStore,
    mut committed: watch::Receiver<u64>,
    leaves: Vec<(Option<i64>, Vec<u8>)>,
) -> Result<(u64, Arc<StoredCheckpoint>)> {
    let id = store.enqueue(leaves).await?;
    let deadline = Instant::now() + FOLLOWER_WAIT;
    loop {
        committed.borrow_and_update();
        if let Some((first, size)) = store.take_stamp(id).await? {
            let checkpoint = store.checkpoint_at(size).await?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the checkpoint of size {size} that covers queued leaves is missing"
                ))
            })?;
            return Ok((first.0, Arc::new(checkpoint)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StoreError::Conflict(format!(
                "no node appended queued ledger leaves (queue row {id}) within {} s; they stay queued",
                FOLLOWER_WAIT.as_secs()
            )));
        }
        if tokio::time::timeout(POLL.min(left), committed.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            // The announcements stopped: poll.
            tokio::time::sleep(POLL.min(left)).await;
        }
    }
}

impl State {
    async fn recover(store: Arc<dyn LedgerStore>, signer: SignerKey, origin: String) -> Result<State> {
        let claimed = store.claim_sequencer().await?;
        if claimed.discarded > 0 {
            tracing::warn!(
                leaves = claimed.discarded,
                "discarded ledger leaves of a batch that never committed"
            );
        }
        let Some(latest) = claimed.latest else {
            // A new log: publish the empty tree so there is always a checkpoint to show.
            let mut state = State {
                store,
                signer,
                origin,
                edge: Edge::new(),
                latest: Arc::new(StoredCheckpoint {
                    size: TreeSize(0),
                    root: reachline_ledger::empty_root(),
                    note: String::new(),
                }),
            };
            let cp = state.sign(&state.edge)?;
            state
                .store
                .commit_batch(Batch {
                    old_size: None,
                    leaves: Vec::new(),
                    tiles: Vec::new(),
                    checkpoint: cp.clone(),
                    stamped: Vec::new(),
                })
                .await?;
            state.latest = Arc::new(cp);
            return Ok(state);
        };
        let edge = match load_edge(store.as_ref(), latest.size).await {
            Ok(e) if e.root().ok() == Some(latest.root) => e,
            _ => {
                tracing::warn!(
                    size = latest.size.0,
                    "ledger tiles disagree with the latest checkpoint; re-deriving them"
                );
                rebuild_tiles(store.as_ref(), latest.size).await?
            }
        };
        if edge.root().ok() != Some(latest.root) {
            return Err(StoreError::Corrupt(format!(
                "the stored leaves do not hash to the latest checkpoint (size {}); run `reachline ledger audit`",
                latest.size
            )));
        }
        Ok(State {
            store,
            signer,
            origin,
            edge,
            latest: Arc::new(latest),
        })
    }

    fn sign(&self, edge: &Edge) -> Result<StoredCheckpoint> {
        let root = edge.root().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let cp = Checkpoint::new(&self.origin, edge.size(), root).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let note = cp.sign(&self.signer).map_err(|e| StoreError::Conflict(e.to_string()))?;
        Ok(StoredCheckpoint {
            size: edge.size(),
            root,
            note,
        })
    }

    /// Commits one batch: the callers' leaves, then the queued appends. Returns `false` when
    /// the batch failed and another node leads the log now.
    async fn commit(&mut self, mut batch: Vec<Request>, queued: Vec<QueuedAppend>) -> bool {
        let first = self.edge.size().0;
        let mut edge = self.edge.clone();
        let mut rows = Vec::new();
        let mut hashes = Vec::new();
        let counts: Vec<u64> = batch.iter().map(|r| r.leaves.len() as u64).collect();
        let mut push = |leaves: Vec<(Option<i64>, Vec<u8>)>, rows: &mut Vec<LeafRow>| {
            for (notice, data) in leaves {
                hashes.push(leaf_hash(&data));
                rows.push(LeafRow {
                    index: LeafIndex(first + rows.len() as u64),
                    notice,
                    data,
                });
            }
        };
        for r in &mut batch {
            push(std::mem::take(&mut r.leaves), &mut rows);
        }
        let mut stamped = Vec::with_capacity(queued.len());
        for q in queued {
            stamped.push((q.id, LeafIndex(first + rows.len() as u64)));
            push(q.leaves, &mut rows);
        }
        let tiles = edge.append(&hashes);
        let result = match self.sign(&edge) {
            Ok(cp) => self
                .store
                .commit_batch(Batch {
                    old_size: Some(self.latest.size),
                    leaves: rows,
                    tiles,
                    checkpoint: cp.clone(),
                    stamped,
                })
                .await
                .map(|()| cp),
            Err(e) => Err(e),
        };
        match result {
            Ok(cp) => {
                self.edge = edge;
                self.latest = Arc::new(cp);
                let mut at = first;
                for (r, n) in batch.into_iter().zip(counts) {
                    let _ = r.reply.send(Ok((at, self.latest.clone())));
                    at += n;
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "a ledger batch did not commit");
                for r in batch {
                    let _ = r.reply.send(Err(e.to_string()));
                }
                // The commit may have happened before the error (a lost connection): start again
                // from what the store holds. Queued appends stay queued for the next batch.
                match State::recover(self.store.clone(), self.signer.clone(), self.origin.clone()).await {
                    Ok(s) => {
                        *self = s;
                        true
                    }
                    Err(StoreError::SequencerHeld(_)) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "the ledger could not be recovered after a failed batch");
                        true
                    }
                }
            }
        }
    }
}
