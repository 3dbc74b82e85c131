//! The right edge of a tiled log: the one partial tile of each tile level, which is all a
//! sequencer needs in memory to append leaves, compute the new root and know which tiles to write.
//!
//! Appending fills the level-0 edge tile; when it holds 256 hashes it is complete, its subtree
//! hash (tree level 8) is appended to the level-1 edge, and so on up. A batch of appends gives
//! the tiles it completed plus the edge tiles it changed; writing those (and nothing else) keeps
//! a store's tiles whole. Every node of a tree's root decomposition lies in the edge tiles, so
//! the root needs nothing else.

use crate::hash::{node_hash, Hash, TreeSize};
use crate::proof::{self, ProofError};
use crate::tiles::{Tile, TileError, TileIndex, TileLevel, TileSet, TILE_HEIGHT, TILE_WIDTH};

/// The partial tile of each level of a tree of `size` leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    size: u64,
    /// `levels[L]`: the hashes of the rightmost, not yet full, tile of level `L` (maybe empty).
    levels: Vec<Vec<Hash>>,
}

/// A tile's coordinates and bytes, as a store keeps it (a partial tile grows in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWrite {
    pub tile: Tile,
    pub data: Vec<u8>,
}

fn to_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// The subtree hash of a full tile's 256 hashes.
fn full_tile_hash(hashes: &[Hash]) -> Hash {
    let mut row: Vec<Hash> = hashes.to_vec();
    while row.len() > 1 {
        row = row.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    row[0]
}

impl Edge {
    pub fn new() -> Edge {
        Edge::default()
    }

    pub fn size(&self) -> TreeSize {
        TreeSize(self.size)
    }

    /// The edge tiles of a tree of `size` leaves, level 0 first: for each level `L` with
    /// `size >> 8L` > 0, the coordinates and width of its rightmost partial tile (width 0 means the
    /// level has no partial tile). The store reads these to rebuild an edge.
    pub fn tiles_for(size: TreeSize) -> Vec<(TileLevel, TileIndex, u16)> {
        let mut out = Vec::new();
        let mut level = 0u8;
        while let Some(hashes) = size.0.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT)) {
            if hashes == 0 {
                break;
            }
            out.push((
                TileLevel(level),
                TileIndex(hashes / TILE_WIDTH),
                (hashes % TILE_WIDTH) as u16,
            ));
            level += 1;
        }
        out
    }

    /// An edge from the stored bytes of the tiles [`Edge::tiles_for`] names (in that order; a
    /// stored tile may be wider than needed, the extra hashes are beyond `size` and ignored).
    pub fn from_tiles(size: TreeSize, tiles: &[Vec<u8>]) -> Result<Edge, TileError> {
        let want = Edge::tiles_for(size);
        if tiles.len() != want.len() {
            return Err(TileError::Bundle(format!(
                "an edge of size {} needs {} tiles, got {}",
                size.0,
                want.len(),
                tiles.len()
            )));
        }
        let mut levels = Vec::with_capacity(want.len());
        for ((level, index, width), data) in want.iter().zip(tiles) {
            let need = usize::from(*width) * Hash::LEN;
            if data.len() < need {
                return Err(TileError::Size {
                    tile: Tile {
                        level: *level,
                        index: *index,
                        width: *width,
                    }
                    .path(),
                    want: need,
                    got: data.len(),
                });
            }
            levels.push(
                data[..need]
                    .chunks_exact(Hash::LEN)
                    .map(|c| Hash::from_slice(c).expect("32-byte chunks"))
                    .collect(),
            );
        }
        Ok(Edge { size: size.0, levels })
    }

    /// Appends leaf hashes; returns every tile the appends completed or changed, with its bytes
    /// as of the new size (full tiles at width 256, edge tiles at their new width).
    pub fn append(&mut self, leaves: &[Hash]) -> Vec<TileWrite> {
        let mut full = Vec::new();
        let mut touched = vec![false; self.levels.len().max(1)];
        for leaf in leaves {
            let mut level = 0;
            let mut h = *leaf;
            loop {
                if self.levels.len() == level {
                    self.levels.push(Vec::new());
                    touched.push(false);
                }
                touched[level] = true;
                self.levels[level].push(h);
                if self.levels[level].len() as u64 != TILE_WIDTH {
                    break;
                }
                let hashes = std::mem::take(&mut self.levels[level]);
                let per_hash = 1u64 << (u32::from(TILE_HEIGHT) * level as u32);
                // The tile's first hash covers leaves from here: the tile ends at the new size.
                let end = (self.size + 1) / per_hash;
                full.push(TileWrite {
                    tile: Tile {
                        level: TileLevel(level as u8),
                        index: TileIndex(end / TILE_WIDTH - 1),
                        width: TILE_WIDTH as u16,
                    },
                    data: to_bytes(&hashes),
                });
                h = full_tile_hash(&hashes);
                level += 1;
            }
            self.size += 1;
        }
        let mut out = full;
        for (level, index, width) in Edge::tiles_for(self.size()) {
            let l = usize::from(level.0);
            if width > 0 && touched.get(l).copied().unwrap_or(false) {
                out.push(TileWrite {
                    tile: Tile { level, index, width },
                    data: to_bytes(&self.levels[l]),
                });
            }
        }
        out
    }

    /// The edge's partial tiles with their bytes (what a store holds at the right edge).
    pub fn edge_tiles(&self) -> Vec<TileWrite> {
        Edge::tiles_for(self.size())
            .into_iter()
            .filter(|(_, _, width)| *width > 0)
            .map(|(level, index, width)| TileWrite {
                tile: Tile { level, index, width },
                data: to_bytes(&self.levels[usize::from(level.0)]),
            })
            .collect()
    }

    /// The edge tiles as a [`TileSet`] (enough to compute the root).
    pub fn tile_set(&self) -> TileSet {
        let mut set = TileSet::new();
        for (level, index, width) in Edge::tiles_for(self.size()) {
            if width > 0 {
                let data = to_bytes(&self.levels[usize::from(level.0)]);
                set.insert(Tile { level, index, width }, data)
                    .expect("an edge tile's bytes match its width");
            }
        }
        set
    }

    /// The root of the tree of `size()` leaves.
    pub fn root(&self) -> Result<Hash, ProofError> {
        proof::tree_root(&self.tile_set(), self.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tiles::build_tile;
    use crate::MemoryTree;

    /// Appending in uneven batches writes exactly the tiles a tree publishes, byte for byte,
    /// and an edge rebuilt from those tiles carries on identically.
    #[test]
    fn edge_writes_the_published_tiles() {
        let mut tree = MemoryTree::new();
        let mut edge = Edge::new();
        let mut store: std::collections::BTreeMap<(u8, u64), Vec<u8>> = Default::default();
        let mut n = 0u64;
        for batch in [1usize, 7, 248, 1, 300, 65_000, 3, 1000] {
            let hashes: Vec<Hash> = (n..n + batch as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            for h in &hashes {
                tree.append(*h);
            }
            n += batch as u64;
            for w in edge.append(&hashes) {
                assert_eq!(w.data, build_tile(&tree, &w.tile).unwrap(), "{}", w.tile.path());
                store.insert((w.tile.level.0, w.tile.index.0), w.data);
            }
            assert_eq!(edge.root().unwrap(), tree.root(), "root at {n}");
            for t in Tile::all_in_tree(TreeSize(n)) {
                let stored = &store[&(t.level.0, t.index.0)];
                assert_eq!(stored, &build_tile(&tree, &t).unwrap(), "{} at {n}", t.path());
            }
            let reread: Vec<Vec<u8>> = Edge::tiles_for(TreeSize(n))
                .iter()
                .map(|(l, i, _)| store.get(&(l.0, i.0)).cloned().unwrap_or_default())
                .collect();
            assert_eq!(Edge::from_tiles(TreeSize(n), &reread).unwrap(), edge);
        }
        assert_eq!(Edge::new().root().unwrap(), crate::empty_root());
    }
}
