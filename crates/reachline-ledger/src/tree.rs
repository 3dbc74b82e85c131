//! An in-memory appendable tree that keeps every complete node once (the hashes tlog-tiles
//! publishes), so it can give the root and proofs of any earlier size. Tests use it as a
//! reference, a store can use it as a cache of the newest tiles, and the benchmark measures it.

use crate::hash::{node_hash, Hash, LeafIndex, NodeId, TreeSize};
use crate::proof::{self, HashReader, ProofError, ReadError};

/// The complete nodes of a growing tree: `levels[l][i]` is the hash of [`NodeId`] `(l, i)`.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree {
            levels: vec![Vec::new()],
        }
    }

    /// Room for `leaves` leaves without reallocating the bottom levels.
    pub fn with_capacity(leaves: usize) -> MemoryTree {
        MemoryTree {
            levels: vec![Vec::with_capacity(leaves), Vec::with_capacity(leaves / 2 + 1)],
        }
    }

    pub fn size(&self) -> TreeSize {
        TreeSize(self.levels.first().map_or(0, |l| l.len() as u64))
    }

    /// Appends a leaf hash and completes every node it closes; returns the leaf's index.
    pub fn append(&mut self, leaf: Hash) -> LeafIndex {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = LeafIndex(self.levels[0].len() as u64);
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len() % 2 == 0 {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.size())
            .expect("the tree holds every node of its own size")
    }

    /// The root of the tree of its first `size` leaves.
    pub fn root_at(&self, size: TreeSize) -> Result<Hash, ProofError> {
        proof::tree_root(self, size)
    }

    pub fn inclusion_proof(&self, index: LeafIndex, size: TreeSize) -> Result<Vec<Hash>, ProofError> {
        proof::inclusion_proof(self, index, size)
    }

    pub fn consistency_proof(&self, old: TreeSize, new: TreeSize) -> Result<Vec<Hash>, ProofError> {
        proof::consistency_proof(self, old, new)
    }

    /// The stored hash of one complete node, if the tree has it.
    pub fn node(&self, id: NodeId) -> Option<Hash> {
        let index = usize::try_from(id.index).ok()?;
        self.levels.get(usize::from(id.level))?.get(index).copied()
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ReadError> {
        nodes
            .iter()
            .map(|&id| self.node(id).ok_or(ReadError::Missing(id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::proof::root_of_leaves;

    #[test]
    fn the_root_grows_with_the_tree() {
        let mut tree = MemoryTree::new();
        let mut leaves = Vec::new();
        assert_eq!(tree.root(), root_of_leaves(&[]));
        for i in 0u32..70 {
            let h = leaf_hash(&i.to_le_bytes());
            leaves.push(h);
            assert_eq!(tree.append(h), LeafIndex(u64::from(i)));
            assert_eq!(tree.root(), root_of_leaves(&leaves), "size {}", i + 1);
        }
        assert_eq!(tree.size(), TreeSize(70));
        assert_eq!(tree.node(NodeId::new(6, 0)), Some(root_of_leaves(&leaves[..64])));
        assert_eq!(tree.node(NodeId::new(6, 1)), None);
        assert!(matches!(
            tree.root_at(TreeSize(71)),
            Err(ProofError::Read(ReadError::Missing(_)))
        ));
    }
}
