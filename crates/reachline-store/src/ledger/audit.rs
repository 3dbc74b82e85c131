//! `ledger audit`: re-hashes every stored leaf, in order, and checks the result against every
//! stored checkpoint (signature and root), every stored tile, and any checkpoints the auditor
//! kept from earlier (a witness's, or one printed into an old bundle), naming the leaf index of
//! each problem it finds: a changed byte, a missing leaf, two leaves swapped, a log rolled back.

use std::collections::BTreeMap;

use reachline_ledger::checkpoint;
use reachline_ledger::edge::{Edge, TileWrite};
use reachline_ledger::note::VerifierKey;
use reachline_ledger::tiles::{TileIndex, TileLevel, TILE_WIDTH};
use reachline_ledger::{leaf_hash, Hash};

use super::{LedgerStore, StoredCheckpoint};
use crate::Result;

/// One thing wrong with the log; `index` is the first leaf it concerns, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub index: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "leaf {i}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// What the audit saw.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub leaves: u64,
    pub checkpoints: usize,
    pub latest: Option<StoredCheckpoint>,
    pub problems: Vec<Problem>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 50;

/// The audit. `known` are signed checkpoints kept outside the database.
pub async fn audit(store: &dyn LedgerStore, key: &VerifierKey, known: &[String]) -> Result<AuditReport> {
    let mut problems = Vec::new();
    let stored = store.checkpoints().await?;
    let latest = stored.last().cloned();
    let latest_size = latest.as_ref().map_or(0, |c| c.size.0);

    // Roots to check, by size: every stored checkpoint whose signature holds, and every known one.
    let mut expect: BTreeMap<u64, Vec<(Hash, String)>> = BTreeMap::new();
    for c in &stored {
        match checkpoint::open(c.note.as_bytes(), std::slice::from_ref(key)) {
            Ok(v) if v.checkpoint.size == c.size && v.checkpoint.root == c.root => {
                expect
                    .entry(c.size.0)
                    .or_default()
                    .push((c.root, format!("the stored checkpoint of size {}", c.size)));
            }
            Ok(_) => problems.push(Problem {
                index: None,
                what: format!(
                    "the stored checkpoint of size {}: its columns differ from its signed note",
                    c.size
                ),
            }),
            Err(e) => problems.push(Problem {
                index: None,
                what: format!("the stored checkpoint of size {}: {e}", c.size),
            }),
        }
    }
    for (n, text) in known.iter().enumerate() {
        match checkpoint::open(text.as_bytes(), std::slice::from_ref(key)) {
            Ok(v) if v.checkpoint.size.0 > latest_size => problems.push(Problem {
                index: Some(latest_size),
                what: format!(
                    "rolled back: a checkpoint of size {} was published (known checkpoint {}), but the log's latest \
                     checkpoint has size {latest_size}; leaves from {latest_size} on are gone",
                    v.checkpoint.size,
                    n + 1
                ),
            }),
            Ok(v) => expect.entry(v.checkpoint.size.0).or_default().push((
                v.checkpoint.root,
                format!("known checkpoint {} (size {})", n + 1, v.checkpoint.size),
            )),
            Err(e) => problems.push(Problem {
                index: None,
                what: format!("known checkpoint {}: {e}", n + 1),
            }),
        }
    }
    if let Some(roots) = expect.get(&0) {
        for (root, what) in roots {
            if *root != reachline_ledger::empty_root() {
                problems.push(Problem {
                    index: None,
                    what: format!("{what}: not the empty tree's root"),
                });
            }
        }
    }

    // Re-hash, in chunks that end on tile boundaries, stopping at every size to check.
    const CHUNK: u64 = 256 * 256;
    let mut edge = Edge::new();
    let mut at = 0u64;
    let mut first_bad_root: Option<u64> = None;
    let mut gap = false;
    let mut leaf_named = false;
    loop {
        let rows = store.leaves(at, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        let mut hashes = Vec::with_capacity(rows.len());
        for r in &rows {
            if r.index.0 != at + hashes.len() as u64 {
                problems.push(Problem {
                    index: Some(at + hashes.len() as u64),
                    what: format!(
                        "missing: the next stored leaf is {} (deleted leaves, or a log rolled back)",
                        r.index
                    ),
                });
                gap = true;
                break;
            }
            hashes.push(leaf_hash(&r.data));
        }
        let mut writes: Vec<TileWrite> = Vec::new();
        let mut done = 0usize;
        let end = at + hashes.len() as u64;
        for (&size, roots) in expect.range(at + 1..=end) {
            let upto = (size - at) as usize;
            writes.extend(edge.append(&hashes[done..upto]));
            done = upto;
            let root = edge.root().map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
            for (want, what) in roots {
                if *want != root {
                    if first_bad_root.is_none() {
                        problems.push(Problem {
                            index: None,
                            what: format!("{what}: its root is not the root of the stored leaves"),
                        });
                    }
                    first_bad_root.get_or_insert(size);
                }
            }
        }
        writes.extend(edge.append(&hashes[done..]));
        check_tiles(store, &writes, &mut problems, &mut leaf_named).await?;
        at = end;
        if gap {
            break;
        }
    }
    // The edge tiles, as the re-hash left them.
    check_tiles(store, &edge.edge_tiles(), &mut problems, &mut leaf_named).await?;
    if !gap && at < latest_size {
        problems.push(Problem {
            index: Some(at),
            what: format!("missing: the latest checkpoint has size {latest_size} but the log has {at} leaves"),
        });
    }
    if at > latest_size {
        problems.push(Problem {
            index: Some(latest_size),
            what: format!(
                "{} leaves beyond the latest checkpoint (size {latest_size}): a batch that never committed, \
                 discarded when the sequencer next starts",
                at - latest_size
            ),
        });
    }
    if let Some(size) = first_bad_root {
        let later = expect.range(size..).count();
        if later > 1 {
            problems.push(Problem {
                index: None,
                what: format!("… and the {} checkpoints after it disagree too", later - 1),
            });
        }
    }
    // Leaves first, by index; then what concerns the log as a whole.
    problems.sort_by_key(|p| (p.index.is_none(), p.index));
    if problems.len() > MAX_PROBLEMS {
        let rest = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(Problem {
            index: None,
            what: format!("… and {rest} more problems"),
        });
    }
    Ok(AuditReport {
        leaves: at,
        checkpoints: stored.len(),
        latest,
        problems,
    })
}

/// Compares re-derived tiles with the stored ones; a level-0 difference names the leaf.
/// `leaf_named` carries over calls: once a leaf is named, the tiles above it are not.
async fn check_tiles(
    store: &dyn LedgerStore,
    writes: &[TileWrite],
    problems: &mut Vec<Problem>,
    leaf_named: &mut bool,
) -> Result<()> {
    // A partial tile can be written several times in one chunk; the last is the widest.
    let mut last: BTreeMap<(TileLevel, TileIndex), &TileWrite> = BTreeMap::new();
    for w in writes {
        last.insert((w.tile.level, w.tile.index), w);
    }
    let keys: Vec<(TileLevel, TileIndex)> = last.keys().copied().collect();
    let stored = store.read_tiles(&keys).await?;
    for (w, s) in last.values().zip(stored) {
        let s = s.unwrap_or_default();
        let mine = &w.data;
        if s.len() >= mine.len() && s[..mine.len()] == mine[..] {
            continue;
        }
        let differ: Vec<u64> = mine
            .chunks(Hash::LEN)
            .zip(s.chunks(Hash::LEN).chain(std::iter::repeat(&[][..])))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(j, _)| w.tile.index.0 * TILE_WIDTH + j as u64)
            .collect();
        let position = differ.first().copied().unwrap_or(w.tile.index.0 * TILE_WIDTH);
        if w.tile.level.0 == 0 {
            *leaf_named = true;
            for i in differ {
                problems.push(Problem {
                    index: Some(i),
                    what: "its bytes do not hash to the stored leaf hash (the leaf, or the stored hash, was \
                           changed or moved)"
                        .into(),
                });
            }
        } else if !*leaf_named {
            // A changed leaf changes every tile above it too; name only the leaf then.
            problems.push(Problem {
                index: Some(position << (8 * u32::from(w.tile.level.0))),
                what: format!("stored tile {} differs from the re-hashed leaves", w.tile.path()),
            });
        }
    }
    Ok(())
}
