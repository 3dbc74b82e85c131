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

use std::sync::Arc;
use std::time::Duration;

use reachline_ledger::checkpoint::Checkpoint;
use reachline_ledger::edge::Edge;
use reachline_ledger::leaf::Leaf;
use reachline_ledger::note::{SignerKey, VerifierKey};
use reachline_ledger::{leaf_hash, LeafIndex, TreeSize};
use tokio::sync::{mpsc, oneshot};

use super::{load_edge, rebuild_tiles, Batch, LeafRow, LedgerStore, StoredCheckpoint};
use crate::{Result, StoreError};

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
    /// checkpoint on a new log) and starts the batching task.
    pub async fn start(store: Arc<dyn LedgerStore>, signer: SignerKey, config: SequencerConfig) -> Result<Sequencer> {
        if signer.name() != config.origin {
            return Err(StoreError::Conflict(format!(
                "the ledger signing key is named {:?} but the log's origin is {:?}",
                signer.name(),
                config.origin
            )));
        }
        let mut state = State::recover(store, signer, config.origin.clone()).await?;
        let verifier = state.signer.verifier();
        let (tx, mut rx) = mpsc::channel::<Request>(config.batch_max_entries.max(1) * 4);
        let max_entries = config.batch_max_entries.max(1);
        let max_wait = Duration::from_millis(config.batch_max_ms);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let deadline = tokio::time::Instant::now() + max_wait;
                let mut n = first.leaves.len();
                let mut batch = vec![first];
                // What queued up while the last batch committed joins at once: a lone caller
                // is not kept waiting, and a busy log still commits in large batches.
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
                state.commit(batch).await;
            }
        });
        Ok(Sequencer { tx, verifier })
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

    async fn commit(&mut self, mut batch: Vec<Request>) {
        let first = self.edge.size().0;
        let mut edge = self.edge.clone();
        let mut rows = Vec::new();
        let mut hashes = Vec::new();
        let counts: Vec<u64> = batch.iter().map(|r| r.leaves.len() as u64).collect();
        for r in &mut batch {
            for (notice, data) in std::mem::take(&mut r.leaves) {
                hashes.push(leaf_hash(&data));
                rows.push(LeafRow {
                    index: LeafIndex(first + rows.len() as u64),
                    notice,
                    data,
                });
            }
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
            }
            Err(e) => {
                tracing::error!(error = %e, "a ledger batch did not commit");
                for r in batch {
                    let _ = r.reply.send(Err(e.to_string()));
                }
                // The commit may have happened before the error (a lost connection): start again
                // from what the store holds.
                match State::recover(self.store.clone(), self.signer.clone(), self.origin.clone()).await {
                    Ok(s) => *self = s,
                    Err(e) => tracing::error!(error = %e, "the ledger could not be recovered after a failed batch"),
                }
            }
        }
    }
}
