//! The notice ledger's pure core: RFC 6962 tree math and proofs, C2SP checkpoints, signed
//! notes, tiles and proof files, and the versioned leaf encoding. No IO, clock or randomness:
//! a store implements [`proof::HashReader`] and feeds bytes in; everything here is a function
//! of its inputs.

pub mod checkpoint;
pub mod edge;
pub mod hash;
pub mod leaf;
pub mod note;
pub mod proof;
pub mod proof_file;
pub mod tiles;
pub mod tree;

pub use hash::{empty_root, leaf_hash, node_hash, Hash, LeafIndex, NodeId, TreeSize};
pub use proof::{HashReader, ProofError, ReadError};
pub use tree::MemoryTree;
