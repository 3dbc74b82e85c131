//! C2SP `tlog-tiles`: the static layout in which a log publishes its stored hashes and entries,
//! so any file server can serve it and any client can build proofs from it.
//!
//! A tile at level `L` holds up to 256 consecutive hashes of tree level `8·L`, 32 bytes each;
//! full tiles live at `tile/<L>/<N>`, partial ones (width `W` < 256, only for the right edge)
//! at `tile/<L>/<N>.p/<W>`. `N` is written in groups of three digits, all but the last
//! prefixed with `x` (`1234067` → `x001/x234/067`). Entry bundles hold the entries of the leaves
//! of one level-0 tile, each preceded by its length as a big-endian u16, at `tile/entries/<N>`
//! (and `.p/<W>`). C2SP puts no tile height in the path, unlike Go's sumdb.
//!
//! Hashes of levels between multiples of 8 are not stored: they are computed from the tile
//! below (at most 128 node hashes), which is how a tile-backed [`HashReader`] answers any node.

use std::collections::HashMap;

use crate::hash::{node_hash, Hash, NodeId, TreeSize};
use crate::proof::{HashReader, ProofError, ReadError};

/// Tree levels per tile level.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile, and entries in a full bundle.
pub const TILE_WIDTH: u64 = 256;

/// A tile's level: tile level `L` holds tree level `8·L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileLevel(pub u8);

/// A tile's position within its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileIndex(pub u64);

/// One tile as published for a given tree size: full (width 256) or partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub level: TileLevel,
    pub index: TileIndex,
    /// How many hashes (or entries) it holds, 1..=256.
    pub width: u16,
}

/// What is wrong with a tile or an entry bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("tile {tile} should be {want} bytes, it is {got}")]
    Size { tile: String, want: usize, got: usize },
    #[error("entry bundle: {0}")]
    Bundle(String),
    #[error("an entry of {0} bytes does not fit a bundle's 16-bit length")]
    EntryTooLong(usize),
}

/// `N` as three-digit groups: `5` → `005`, `1234067` → `x001/x234/067`.
pub fn index_path(n: u64) -> String {
    let mut s = format!("{:03}", n % 1000);
    let mut n = n;
    while n >= 1000 {
        n /= 1000;
        s = format!("x{:03}/{s}", n % 1000);
    }
    s
}

fn width_suffix(width: u16) -> String {
    if u64::from(width) == TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    }
}

impl Tile {
    /// The path of this hash tile: `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}{}",
            self.level.0,
            index_path(self.index.0),
            width_suffix(self.width)
        )
    }

    /// The path of the entry bundle beside this level-0 tile: `tile/entries/<N>[.p/<W>]`.
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}{}", index_path(self.index.0), width_suffix(self.width))
    }

    /// The tile of a tree of `size` leaves at `(level, index)`, if that tree has it.
    pub fn in_tree(level: TileLevel, index: TileIndex, size: TreeSize) -> Option<Tile> {
        let shift = u32::from(level.0) * u32::from(TILE_HEIGHT);
        let hashes = size.0.checked_shr(shift).unwrap_or(0);
        let before = index.0.checked_mul(TILE_WIDTH)?;
        if hashes <= before {
            return None;
        }
        let width = (hashes - before).min(TILE_WIDTH) as u16;
        Some(Tile { level, index, width })
    }

    /// The tile (of a tree of `size` leaves) whose hashes give the node `id`.
    pub fn for_node(id: NodeId, size: TreeSize) -> Option<Tile> {
        if !id.is_complete_in(size) {
            return None;
        }
        let (level, rest) = (id.level / TILE_HEIGHT, id.level % TILE_HEIGHT);
        let first = id.index << rest;
        Tile::in_tree(TileLevel(level), TileIndex(first / TILE_WIDTH), size)
    }

    /// Every tile a tree of `size` leaves publishes, bottom level first.
    pub fn all_in_tree(size: TreeSize) -> Vec<Tile> {
        let mut out = Vec::new();
        for level in 0..=8u8 {
            let mut index = 0;
            while let Some(t) = Tile::in_tree(TileLevel(level), TileIndex(index), size) {
                out.push(t);
                index += 1;
            }
        }
        out
    }

    /// The tiles needed to read `nodes` in a tree of `size` leaves (each once).
    pub fn needed_for(nodes: &[NodeId], size: TreeSize) -> Vec<Tile> {
        let mut out: Vec<Tile> = nodes.iter().filter_map(|&n| Tile::for_node(n, size)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The tree-level-`8·L` nodes this tile holds, in order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        let level = self.level.0 * TILE_HEIGHT;
        (0..u64::from(self.width)).map(move |j| NodeId::new(level, self.index.0 * TILE_WIDTH + j))
    }

    fn check(&self, data: &[u8]) -> Result<(), TileError> {
        let want = usize::from(self.width) * Hash::LEN;
        if data.len() != want {
            return Err(TileError::Size {
                tile: self.path(),
                want,
                got: data.len(),
            });
        }
        Ok(())
    }
}

/// The bytes of `tile`, from a source of stored hashes.
pub fn build_tile(reader: &(impl HashReader + ?Sized), tile: &Tile) -> Result<Vec<u8>, ProofError> {
    let nodes: Vec<NodeId> = tile.nodes().collect();
    Ok(reader.read_hashes(&nodes)?.iter().flat_map(|h| h.0).collect())
}

/// The hash of `id` from the bytes of the tile that holds it (`None` if it does not).
pub fn hash_from_tile(tile: &Tile, data: &[u8], id: NodeId) -> Option<Hash> {
    let (level, rest) = (id.level / TILE_HEIGHT, id.level % TILE_HEIGHT);
    let first = id.index.checked_shl(u32::from(rest))?;
    let count = 1u64 << rest;
    if TileLevel(level) != tile.level || first / TILE_WIDTH != tile.index.0 {
        return None;
    }
    let off = (first % TILE_WIDTH) as usize;
    if off + count as usize > usize::from(tile.width) || data.len() < (off + count as usize) * Hash::LEN {
        return None;
    }
    let mut row: Vec<Hash> = data[off * Hash::LEN..(off + count as usize) * Hash::LEN]
        .chunks_exact(Hash::LEN)
        .map(|c| Hash::from_slice(c).expect("chunks_exact gives 32-byte chunks"))
        .collect();
    while row.len() > 1 {
        row = row.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    row.first().copied()
}

/// Tiles held in memory (fetched or read by the caller), answering node reads; the widest tile
/// at each coordinate wins, since a wider tile extends a narrower one.
#[derive(Debug, Clone, Default)]
pub struct TileSet {
    tiles: HashMap<(TileLevel, TileIndex), (Tile, Vec<u8>)>,
}

impl TileSet {
    pub fn new() -> TileSet {
        TileSet::default()
    }

    pub fn insert(&mut self, tile: Tile, data: Vec<u8>) -> Result<(), TileError> {
        tile.check(&data)?;
        let key = (tile.level, tile.index);
        if self.tiles.get(&key).is_none_or(|(t, _)| t.width < tile.width) {
            self.tiles.insert(key, (tile, data));
        }
        Ok(())
    }
}

impl HashReader for TileSet {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ReadError> {
        nodes
            .iter()
            .map(|&id| {
                let rest = id.level % TILE_HEIGHT;
                let first = id.index.checked_shl(u32::from(rest)).ok_or(ReadError::Missing(id))?;
                let key = (TileLevel(id.level / TILE_HEIGHT), TileIndex(first / TILE_WIDTH));
                let (tile, data) = self.tiles.get(&key).ok_or(ReadError::Missing(id))?;
                hash_from_tile(tile, data, id).ok_or(ReadError::Missing(id))
            })
            .collect()
    }
}

/// The entries of a bundle.
pub fn parse_bundle(data: &[u8]) -> Result<Vec<Vec<u8>>, TileError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some(len) = data.get(at..at + 2) else {
            return Err(TileError::Bundle(format!("a length is cut off at byte {at}")));
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let entry = data
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| TileError::Bundle(format!("entry {} is cut off", out.len())))?;
        out.push(entry.to_vec());
        at += 2 + len;
        if out.len() as u64 > TILE_WIDTH {
            return Err(TileError::Bundle("more than 256 entries".into()));
        }
    }
    Ok(out)
}

/// The bytes of a bundle of `entries` (at most 256, each under 64 KiB).
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.len() as u64 > TILE_WIDTH {
        return Err(TileError::Bundle("more than 256 entries".into()));
    }
    let mut out = Vec::new();
    for e in entries {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong(e.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::proof::{inclusion_proof, inclusion_spans, tree_root};
    use crate::tree::MemoryTree;
    use crate::LeafIndex;

    #[test]
    fn paths_as_the_spec_writes_them() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(5), "005");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(index_path(1234067), "x001/x234/067");
        let t = Tile {
            level: TileLevel(0),
            index: TileIndex(1234067),
            width: 256,
        };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        let t = Tile {
            level: TileLevel(1),
            index: TileIndex(7),
            width: 5,
        };
        assert_eq!(t.path(), "tile/1/007.p/5");
        assert_eq!(t.entries_path(), "tile/entries/007.p/5");
    }

    #[test]
    fn a_big_tree_reads_the_same_from_tiles() {
        let n = 70_000u64;
        let mut tree = MemoryTree::new();
        for i in 0..n {
            tree.append(leaf_hash(&i.to_be_bytes()));
        }
        let size = TreeSize(n);
        let mut tiles = TileSet::new();
        let all = Tile::all_in_tree(size);
        // 70,000 leaves: 273 full level-0 tiles and a partial one; 273 level-8 hashes make two
        // level-1 tiles; one level-16 hash makes a partial level-2 tile.
        assert_eq!(all.iter().filter(|t| t.level.0 == 0).count(), 274);
        assert_eq!(all.iter().filter(|t| t.level.0 == 2).count(), 1);
        for t in &all {
            tiles.insert(*t, build_tile(&tree, t).unwrap()).unwrap();
        }
        assert_eq!(tree_root(&tiles, size).unwrap(), tree.root());
        for i in [0, 255, 256, 65535, 65536, n - 1] {
            let p = inclusion_proof(&tiles, LeafIndex(i), size).unwrap();
            assert_eq!(p, tree.inclusion_proof(LeafIndex(i), size).unwrap());
            let nodes: Vec<NodeId> = inclusion_spans(LeafIndex(i), size)
                .unwrap()
                .iter()
                .flat_map(|s| s.nodes())
                .collect();
            assert!(Tile::needed_for(&nodes, size).len() <= 6, "a proof needs few tiles");
        }
    }

    #[test]
    fn bundles_round_trip_and_refuse_cut_data() {
        let b = encode_bundle(&[b"one".as_slice(), b"", b"three"]).unwrap();
        assert_eq!(b, b"\x00\x03one\x00\x00\x00\x05three");
        assert_eq!(
            parse_bundle(&b).unwrap(),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert!(parse_bundle(&b[..b.len() - 1]).is_err());
        assert!(parse_bundle(&[0]).is_err());
        assert!(encode_bundle(&[vec![0u8; 65536]]).is_err());
    }
}
