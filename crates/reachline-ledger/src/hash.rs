//! RFC 6962 hashing (SHA-256 with 0x00/0x01 domain separation), the `Hash` value, and the index
//! types of the tree: leaf indices, tree sizes and node coordinates, kept apart by type.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// A hash in text that is not 32 bytes of standard base64 (or of hex).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    #[error("not valid base64")]
    Base64,
    #[error("not valid hex")]
    Hex,
    #[error("a hash is 32 bytes, this is {0}")]
    Length(usize),
}

impl Hash {
    pub const LEN: usize = 32;

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash from a byte slice that must be exactly 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Result<Hash, HashParseError> {
        <[u8; 32]>::try_from(b)
            .map(Hash)
            .map_err(|_| HashParseError::Length(b.len()))
    }

    /// Standard base64 with padding (RFC 4648 §4), as checkpoints, proofs and JSON APIs write it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Hash, HashParseError> {
        let b = STANDARD.decode(s).map_err(|_| HashParseError::Base64)?;
        Hash::from_slice(&b)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Result<Hash, HashParseError> {
        Hash::from_slice(&unhex(s).ok_or(HashParseError::Hex)?)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Bytes from hex (either case); `None` for odd length or a non-hex character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The hash of a leaf: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The zero-based position of a leaf in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafIndex(pub u64);

/// The number of leaves in a tree (one more than its last leaf's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TreeSize(pub u64);

impl LeafIndex {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TreeSize {
    pub fn get(self) -> u64 {
        self.0
    }

    /// Whether the leaf at `i` is inside a tree of this size.
    pub fn contains(self, i: LeafIndex) -> bool {
        i.0 < self.0
    }
}

impl fmt::Display for LeafIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TreeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A complete subtree: the `2^level` leaves starting at leaf `index << level`.
///
/// Every hash a log ever needs to keep is the hash of such a node; the same `(level, index)`
/// names it in every later tree, so a store keeps each one once. tlog-tiles stores level `8·L`
/// of these in tile level `L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    pub fn leaf(i: LeafIndex) -> NodeId {
        NodeId { level: 0, index: i.0 }
    }

    /// The first leaf this node covers.
    pub fn first_leaf(self) -> u64 {
        self.index << self.level
    }

    /// One past the last leaf this node covers (saturating at `u64::MAX`).
    pub fn end_leaf(self) -> u64 {
        (self.index + 1).checked_shl(u32::from(self.level)).unwrap_or(u64::MAX)
    }

    /// Whether the tree of `size` leaves already contains this whole node.
    pub fn is_complete_in(self, size: TreeSize) -> bool {
        self.level < 64
            && (self.index + 1)
                .checked_shl(u32::from(self.level))
                .is_some_and(|end| end <= size.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node (level {}, index {})", self.level, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6962_hashes_of_known_inputs() {
        assert_eq!(empty_root().to_base64(), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        // The first leaf of the transparency-dev test trees is the empty string.
        assert_eq!(
            leaf_hash(b"").to_base64(),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
        );
        let l = leaf_hash(b"");
        assert_ne!(node_hash(&l, &l), l);
    }

    #[test]
    fn hex_and_base64_round_trip() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_hex(&h.to_hex()), Ok(h));
        assert_eq!(Hash::from_hex(&h.to_hex().to_uppercase()), Ok(h));
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        assert_eq!(Hash::from_base64("ZG9uJ3QgY2FyZSAy"), Err(HashParseError::Length(12)));
        assert_eq!(Hash::from_base64("!"), Err(HashParseError::Base64));
        assert_eq!(Hash::from_hex("abc"), Err(HashParseError::Hex));
    }

    #[test]
    fn nodes_know_their_leaves() {
        let n = NodeId::new(3, 2);
        assert_eq!((n.first_leaf(), n.end_leaf()), (16, 24));
        assert!(n.is_complete_in(TreeSize(24)));
        assert!(!n.is_complete_in(TreeSize(23)));
        assert!(!NodeId::new(64, 0).is_complete_in(TreeSize(u64::MAX)));
    }
}
