//! Merkle tree roots, inclusion proofs and consistency proofs (RFC 6962 §2.1, RFC 9162 §2.1):
//! generation over any source of stored node hashes, and verification with errors that say what
//! did not match.
//!
//! Proofs are planned as [`Span`]s — runs of leaves whose hash the proof carries — and each
//! span is the hash of at most 64 complete nodes ([`NodeId`]) that a store keeps once. A proof
//! of a tree of `n` leaves therefore reads O(log n) stored hashes, in one batch.
//!
//! Consistency from size 0 is not a tree question (every tree extends the empty one) and is
//! refused here with [`ProofError::OldSizeZero`]; the protocol layer (the witness protocol
//! accepts `old 0` with an empty proof) decides it. Equal sizes need an empty proof and equal
//! roots.

use crate::hash::{empty_root, node_hash, Hash, LeafIndex, NodeId, TreeSize};

/// The leaves `start..end` of a tree: the unit a proof carries one hash for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// The complete nodes that make up this span, left to right. The span's hash folds them from
    /// the right: `node(n0, node(n1, … node(n_{k-1}, n_k)))`, which is RFC 6962's hash of the
    /// leaves in between because every span a tree proof uses starts on a boundary as aligned as
    /// its length allows.
    pub fn nodes(self) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut at = self.start;
        while at < self.end {
            let align = if at == 0 { 63 } else { at.trailing_zeros() };
            let fit = 63 - (self.end - at).leading_zeros();
            let level = align.min(fit);
            out.push(NodeId::new(level as u8, at >> level));
            at += 1u64 << level;
        }
        out
    }
}

/// Why a source of stored hashes could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{0} is not stored")]
    Missing(NodeId),
    #[error("reading stored hashes failed: {0}")]
    Backend(String),
}

/// A source of the hashes of complete nodes: an in-memory tree, tiles, or a database table.
pub trait HashReader {
    /// The hashes of `nodes`, in the same order. Implementations should answer the whole batch
    /// with one read (one query, one round of tile fetches).
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ReadError>;
}

/// What failed when a proof was made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: LeafIndex, size: TreeSize },
    #[error("the old tree size {old} is larger than the new tree size {new}")]
    SizesReversed { old: TreeSize, new: TreeSize },
    #[error("consistency from the empty tree is for the protocol layer to decide (every tree extends it)")]
    OldSizeZero,
    #[error("the proof has {got} hashes, but a {what} proof has {want}")]
    WrongLength {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{what} is {len} bytes, not a 32-byte hash")]
    HashLength { what: String, len: usize },
    #[error("the proof leads to root {computed}, but the expected root is {expected}")]
    RootMismatch { computed: Hash, expected: Hash },
    #[error("the proof leads to old root {computed}, but the expected old root is {expected}")]
    OldRootMismatch { computed: Hash, expected: Hash },
    #[error("the sizes are equal but the roots differ")]
    EqualSizesDifferentRoots,
    #[error("the old tree size {0} is a power of two, so its root is not part of the proof")]
    OldRootNotInProof(TreeSize),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The spans whose hashes form the inclusion proof of leaf `index` in a tree of `size` leaves,
/// from the leaf's sibling up to the root's child (RFC 9162 §2.1.3.1).
pub fn inclusion_spans(index: LeafIndex, size: TreeSize) -> Result<Vec<Span>, ProofError> {
    if !size.contains(index) {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (m, mut lo, mut hi) = (index.0, 0u64, size.0);
    let mut out = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < lo + k {
            out.push(Span { start: lo + k, end: hi });
            hi = lo + k;
        } else {
            out.push(Span { start: lo, end: lo + k });
            lo += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The spans whose hashes form the consistency proof from `old` to `new` leaves (RFC 9162
/// §2.1.4.1). Equal sizes give an empty plan.
pub fn consistency_spans(old: TreeSize, new: TreeSize) -> Result<Vec<Span>, ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    if old.0 == 0 {
        return Err(ProofError::OldSizeZero);
    }
    let mut out = Vec::new();
    if old == new {
        return Ok(out);
    }
    let (mut m, mut lo, mut hi, mut whole_old_tree) = (old.0, 0u64, new.0, true);
    loop {
        if lo + m == hi {
            if !whole_old_tree {
                out.push(Span { start: lo, end: hi });
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            out.push(Span { start: lo + k, end: hi });
            hi = lo + k;
        } else {
            out.push(Span { start: lo, end: lo + k });
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// The hash of each span, reading every node the spans need in one batch.
pub fn hash_spans(reader: &(impl HashReader + ?Sized), spans: &[Span]) -> Result<Vec<Hash>, ProofError> {
    let per_span: Vec<Vec<NodeId>> = spans.iter().map(|s| s.nodes()).collect();
    let all: Vec<NodeId> = per_span.iter().flatten().copied().collect();
    let hashes = reader.read_hashes(&all)?;
    if hashes.len() != all.len() {
        return Err(ReadError::Backend(format!("asked for {} hashes, got {}", all.len(), hashes.len())).into());
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(spans.len());
    for nodes in &per_span {
        let part = &hashes[at..at + nodes.len()];
        at += nodes.len();
        let mut acc = part[part.len() - 1];
        for h in part[..part.len() - 1].iter().rev() {
            acc = node_hash(h, &acc);
        }
        out.push(acc);
    }
    Ok(out)
}

/// The root of the tree of the first `size` leaves.
pub fn tree_root(reader: &(impl HashReader + ?Sized), size: TreeSize) -> Result<Hash, ProofError> {
    if size.0 == 0 {
        return Ok(empty_root());
    }
    Ok(hash_spans(reader, &[Span { start: 0, end: size.0 }])?[0])
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(
    reader: &(impl HashReader + ?Sized),
    index: LeafIndex,
    size: TreeSize,
) -> Result<Vec<Hash>, ProofError> {
    hash_spans(reader, &inclusion_spans(index, size)?)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves.
pub fn consistency_proof(
    reader: &(impl HashReader + ?Sized),
    old: TreeSize,
    new: TreeSize,
) -> Result<Vec<Hash>, ProofError> {
    hash_spans(reader, &consistency_spans(old, new)?)
}

/// RFC 6962's MTH over a list of leaf hashes, straight from the definition (for tests and
/// small trees).
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of_leaves(&leaves[..k]), &root_of_leaves(&leaves[k..]))
        }
    }
}

/// The root an inclusion proof leads to from `leaf` at `index` in a tree of `size` leaves
/// (RFC 9162 §2.1.3.2, without the final comparison).
pub fn root_from_inclusion_proof(
    index: LeafIndex,
    size: TreeSize,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    let want = inclusion_spans(index, size)?.len();
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            what: "inclusion",
            got: proof.len(),
            want,
        });
    }
    let (mut f, mut s) = (index.0, size.0 - 1);
    let mut r = *leaf;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    // The length check above makes this hold; it is the RFC's own final test.
    debug_assert_eq!(s, 0);
    Ok(r)
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: LeafIndex,
    size: TreeSize,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// The two roots a consistency proof leads to (RFC 9162 §2.1.4.2). `seed` is the old root, which
/// the proof leaves out when the old size is a power of two.
fn consistency_roots(
    old: TreeSize,
    new: TreeSize,
    proof: &[Hash],
    seed: Option<&Hash>,
) -> Result<(Hash, Hash), ProofError> {
    let want = consistency_spans(old, new)?.len();
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            what: "consistency",
            got: proof.len(),
            want,
        });
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.0.is_power_of_two() {
        match seed {
            Some(s) => path.push(*s),
            None => return Err(ProofError::OldRootNotInProof(old)),
        }
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old.0 - 1, new.0 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    debug_assert_eq!(s, 0);
    Ok((fr, sr))
}

/// Checks that the tree of `new` leaves with root `new_root` extends the tree of `old` leaves
/// with root `old_root`.
pub fn verify_consistency(
    old: TreeSize,
    new: TreeSize,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old == new && old.0 > 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                what: "consistency",
                got: proof.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(ProofError::EqualSizesDifferentRoots);
        }
        return Ok(());
    }
    let (fr, sr) = consistency_roots(old, new, proof, Some(old_root))?;
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

/// The old root a consistency proof commits to, after checking that it leads to `new_root`.
/// Useful when only the new tree head is at hand (an auditor with one signed head); it works
/// only when the old size is not a power of two, since otherwise the old root is not in the
/// proof.
pub fn old_root_from_consistency_proof(
    old: TreeSize,
    new: TreeSize,
    proof: &[Hash],
    new_root: &Hash,
) -> Result<Hash, ProofError> {
    if old == new {
        return Err(ProofError::OldRootNotInProof(old));
    }
    let (fr, sr) = consistency_roots(old, new, proof, None)?;
    if sr != *new_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(fr)
}

fn typed(what: impl FnOnce() -> String, b: &[u8]) -> Result<Hash, ProofError> {
    Hash::from_slice(b).map_err(|_| ProofError::HashLength {
        what: what(),
        len: b.len(),
    })
}

/// [`verify_inclusion`] for values as they arrive from another log's API, as bytes whose length
/// is not yet checked.
pub fn verify_inclusion_bytes(
    index: LeafIndex,
    size: TreeSize,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), ProofError> {
    let leaf = typed(|| "the leaf hash".into(), leaf)?;
    let root = typed(|| "the root".into(), root)?;
    let proof = proof
        .iter()
        .enumerate()
        .map(|(i, p)| typed(|| format!("proof hash {i}"), p))
        .collect::<Result<Vec<_>, _>>()?;
    verify_inclusion(index, size, &leaf, &proof, &root)
}

/// [`verify_consistency`] for values as they arrive from another log's API. Roots of equal
/// sizes are compared as given, without being read as hashes (as transparency-dev/merkle does).
pub fn verify_consistency_bytes(
    old: TreeSize,
    new: TreeSize,
    proof: &[Vec<u8>],
    old_root: &[u8],
    new_root: &[u8],
) -> Result<(), ProofError> {
    if old == new && old.0 > 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                what: "consistency",
                got: proof.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(ProofError::EqualSizesDifferentRoots);
        }
        return Ok(());
    }
    let proof = proof
        .iter()
        .enumerate()
        .map(|(i, p)| typed(|| format!("proof hash {i}"), p))
        .collect::<Result<Vec<_>, _>>()?;
    let old_root = typed(|| "the old root".into(), old_root)?;
    let new_root = typed(|| "the new root".into(), new_root)?;
    verify_consistency(old, new, &proof, &old_root, &new_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::MemoryTree;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn spans_decompose_into_aligned_complete_nodes() {
        assert_eq!(
            Span { start: 0, end: 7 }.nodes(),
            vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        assert_eq!(
            Span { start: 4, end: 7 }.nodes(),
            vec![NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        assert_eq!(Span { start: 8, end: 16 }.nodes(), vec![NodeId::new(3, 1)]);
    }

    /// Every proof of every leaf and every pair of sizes up to 40 leaves, made from stored
    /// hashes, verifies against the root of the definition, and fails against a wrong one.
    #[test]
    fn generated_proofs_verify_for_every_small_tree() {
        let all = leaves(40);
        let mut tree = MemoryTree::new();
        for h in &all {
            tree.append(*h);
        }
        for n in 1..=40u64 {
            let size = TreeSize(n);
            let root = root_of_leaves(&all[..n as usize]);
            assert_eq!(tree_root(&tree, size).unwrap(), root, "root of {n}");
            for i in 0..n {
                let proof = inclusion_proof(&tree, LeafIndex(i), size).unwrap();
                verify_inclusion(LeafIndex(i), size, &all[i as usize], &proof, &root).unwrap();
                let wrong = verify_inclusion(LeafIndex(i), size, &all[(i as usize + 1) % 40], &proof, &root);
                assert!(matches!(wrong, Err(ProofError::RootMismatch { .. })), "{i} in {n}");
            }
            for m in 1..=n {
                let old_root = root_of_leaves(&all[..m as usize]);
                let proof = consistency_proof(&tree, TreeSize(m), size).unwrap();
                verify_consistency(TreeSize(m), size, &proof, &old_root, &root).unwrap();
                if m < n && !m.is_power_of_two() {
                    assert_eq!(
                        old_root_from_consistency_proof(TreeSize(m), size, &proof, &root),
                        Ok(old_root)
                    );
                }
                if m < n {
                    let bad = verify_consistency(TreeSize(m), size, &proof, &Hash::default(), &root);
                    assert!(bad.is_err(), "{m} to {n}");
                }
            }
        }
    }

    #[test]
    fn errors_say_what_failed() {
        let e = verify_inclusion(LeafIndex(5), TreeSize(5), &Hash::default(), &[], &Hash::default()).unwrap_err();
        assert_eq!(e.to_string(), "leaf index 5 is outside a tree of size 5");
        let e = verify_inclusion(LeafIndex(0), TreeSize(8), &Hash::default(), &[], &Hash::default()).unwrap_err();
        assert_eq!(e.to_string(), "the proof has 0 hashes, but a inclusion proof has 3");
        let e = verify_consistency(TreeSize(0), TreeSize(3), &[], &empty_root(), &Hash::default()).unwrap_err();
        assert_eq!(e, ProofError::OldSizeZero);
        let e = verify_consistency(TreeSize(4), TreeSize(3), &[], &Hash::default(), &Hash::default()).unwrap_err();
        assert!(matches!(e, ProofError::SizesReversed { .. }));
        let e = verify_consistency(TreeSize(3), TreeSize(3), &[], &Hash::default(), &empty_root()).unwrap_err();
        assert_eq!(e, ProofError::EqualSizesDifferentRoots);
    }

    #[test]
    fn u64_sizes_do_not_overflow() {
        let big = TreeSize(u64::MAX);
        assert_eq!(inclusion_spans(LeafIndex(u64::MAX - 1), big).unwrap().len(), 63);
        assert_eq!(inclusion_spans(LeafIndex(0), big).unwrap().len(), 64);
        assert!(consistency_spans(TreeSize(u64::MAX - 1), big).unwrap().len() <= 128);
        let top = inclusion_spans(LeafIndex(0), big).unwrap();
        assert_eq!(top.last().unwrap().nodes().len(), 63);
    }
}
