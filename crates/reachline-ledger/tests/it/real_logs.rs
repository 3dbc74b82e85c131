//! Logs other implementations wrote: the tessera tiles log (rebuilt, re-proved and re-tiled
//! byte for byte) and RFC 6962 answers of the Argon 2020 Certificate Transparency log.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reachline_ledger::checkpoint::{self, Checkpoint};
use reachline_ledger::note::VerifierKey;
use reachline_ledger::proof::{
    consistency_proof, consistency_spans, inclusion_proof, inclusion_spans, old_root_from_consistency_proof,
    root_from_inclusion_proof, root_of_leaves, tree_root, verify_consistency, verify_inclusion, Span,
};
use reachline_ledger::tiles::{build_tile, encode_bundle, parse_bundle, Tile, TileIndex, TileLevel, TileSet};
use reachline_ledger::{leaf_hash, Hash, LeafIndex, MemoryTree, TreeSize};
use serde_json::Value;

use crate::notes::TESSERA_VKEY;
use crate::read;

fn tessera_checkpoints() -> Vec<Checkpoint> {
    let key = VerifierKey::parse(TESSERA_VKEY).unwrap();
    (0..=15)
        .map(|n| {
            checkpoint::open(
                &read(&format!("ledger-real/tessera-log/checkpoint.{n}")),
                std::slice::from_ref(&key),
            )
            .unwrap()
            .checkpoint
        })
        .collect()
}

/// The tessera log as published at size `n`: its one level-0 tile and its entry bundle.
fn tessera_at(n: u16) -> (Tile, Vec<u8>, Vec<Vec<u8>>) {
    let tile = Tile::in_tree(TileLevel(0), TileIndex(0), TreeSize(u64::from(n))).unwrap();
    assert_eq!(tile.width, n);
    let hashes = read(&format!("ledger-real/tessera-log/{}", tile.path()));
    let entries = parse_bundle(&read(&format!("ledger-real/tessera-log/{}", tile.entries_path()))).unwrap();
    (tile, hashes, entries)
}

#[test]
fn the_tessera_log_rebuilds_from_entries_and_from_tiles() {
    let cps = tessera_checkpoints();
    assert_eq!(cps[0].root, reachline_ledger::empty_root());
    // The full log: every entry, and our own tree of them.
    let (_, _, entries) = tessera_at(15);
    assert_eq!(entries.len(), 15);
    assert_eq!(entries[0], b"one");
    let mut tree = MemoryTree::new();
    for e in &entries {
        tree.append(leaf_hash(e));
    }
    for k in 1..=15u16 {
        let size = TreeSize(u64::from(k));
        let cp = &cps[usize::from(k)];
        let (tile, hashes, bundle) = tessera_at(k);
        // The bundle at size k holds exactly the first k entries.
        assert_eq!(bundle, entries[..usize::from(k)]);
        assert_eq!(
            encode_bundle(&bundle).unwrap(),
            read(&format!("ledger-real/tessera-log/{}", tile.entries_path()))
        );
        // Root from the entries, from our tree and from the published tile.
        let leaves: Vec<Hash> = bundle.iter().map(|e| leaf_hash(e)).collect();
        assert_eq!(root_of_leaves(&leaves), cp.root, "root from entries at {k}");
        assert_eq!(tree.root_at(size).unwrap(), cp.root);
        let mut tiles = TileSet::new();
        tiles.insert(tile, hashes.clone()).unwrap();
        assert_eq!(tree_root(&tiles, size).unwrap(), cp.root, "root from tiles at {k}");
        // Our tiles are the published bytes.
        assert_eq!(Tile::all_in_tree(size), vec![tile]);
        assert_eq!(build_tile(&tree, &tile).unwrap(), hashes);
        // Every entry is in every checkpoint that covers it, by proofs read from the tiles.
        for (i, leaf) in leaves.iter().enumerate() {
            let proof = inclusion_proof(&tiles, LeafIndex(i as u64), size).unwrap();
            verify_inclusion(LeafIndex(i as u64), size, leaf, &proof, &cp.root).unwrap();
        }
        // Every earlier checkpoint is consistent with this one.
        for m in 1..=k {
            let old = &cps[usize::from(m)];
            let proof = consistency_proof(&tiles, old.size, size).unwrap();
            verify_consistency(old.size, size, &proof, &old.root, &cp.root).unwrap();
        }
    }
}

#[test]
fn tampering_with_a_tessera_entry_is_caught() {
    let cps = tessera_checkpoints();
    let (_, _, mut entries) = tessera_at(15);
    entries[7][0] ^= 1;
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    assert_ne!(root_of_leaves(&leaves), cps[15].root);
}

/// One answer of the log; the file names are the API paths, cut short.
fn json(file: &str) -> Value {
    serde_json::from_slice(&read(&format!("ledger-real/ct-argon2020/{file}"))).unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
        .collect()
}

/// The Argon 2020 answers hold one signed root (size 961,984,011), an audit path of leaf 10000,
/// a consistency proof from size 3,654,490 and the entry. What they allow, and what this checks:
/// - the entry's leaf hash is included at index 10000 under the STH root (full RFC 9162 check);
/// - the consistency proof leads to the STH root, and fixes the old root it commits to (the old
///   size is not a power of two, so that root is in the proof); no old STH is in the files, so
///   it cannot be compared with a signed one;
/// - leaf 10000 is inside that old tree: the two proofs share the subtree `[0, 2^21)` (whose
///   hash the audit path rebuilds from the leaf) and every higher sibling span, and those
///   hashes agree.
///   The STH's signature (ECDSA, RFC 6962 `TreeHeadSignature`) is not checked: the files hold no
///   log public key and Reachline signs with Ed25519 notes.
#[test]
fn argon2020_audit_path_and_consistency_proof() {
    let sth = json("get-sth");
    let size = TreeSize(sth["tree_size"].as_u64().unwrap());
    assert_eq!(size, TreeSize(961_984_011));
    let root = Hash::from_base64(sth["sha256_root_hash"].as_str().unwrap()).unwrap();

    let entries = json("get-entries-start-10000-end-10000");
    let leaf_input = STANDARD
        .decode(entries["entries"][0]["leaf_input"].as_str().unwrap())
        .unwrap();
    let leaf = leaf_hash(&leaf_input);

    let audit = json("get-proof-by-hash-tree-size-961984011-ha");
    let index = LeafIndex(audit["leaf_index"].as_u64().unwrap());
    assert_eq!(index, LeafIndex(10000));
    let path = hashes(&audit["audit_path"]);
    verify_inclusion(index, size, &leaf, &path, &root).unwrap();
    let mut wrong = leaf_input.clone();
    wrong[20] ^= 1;
    assert!(verify_inclusion(index, size, &leaf_hash(&wrong), &path, &root).is_err());

    let old = TreeSize(3_654_490);
    let consistency = hashes(&json("get-sth-consistency-first-3654490-second")["consistency"]);
    let old_root = old_root_from_consistency_proof(old, size, &consistency, &root).unwrap();
    verify_consistency(old, size, &consistency, &old_root, &root).unwrap();
    let mut bent = consistency.clone();
    bent[3].0[0] ^= 1;
    assert!(old_root_from_consistency_proof(old, size, &bent, &root).is_err());

    // Leaf 10000 inside the old tree.
    let in_spans = inclusion_spans(index, size).unwrap();
    let con_spans = consistency_spans(old, size).unwrap();
    let first = Span { start: 0, end: 1 << 21 };
    let at = con_spans
        .iter()
        .position(|s| *s == first)
        .expect("[0, 2^21) is a span of the consistency proof");
    let below = in_spans.iter().take_while(|s| s.end - s.start < 1 << 21).count();
    assert_eq!(below, 21);
    let subtree = root_from_inclusion_proof(index, TreeSize(1 << 21), &leaf, &path[..below]).unwrap();
    assert_eq!(subtree, consistency[at]);
    let mut shared = 0;
    for (s, h) in in_spans.iter().zip(&path) {
        if let Some(j) = con_spans.iter().position(|c| c == s) {
            assert_eq!(*h, consistency[j], "span {s:?}");
            shared += 1;
        }
    }
    assert_eq!(shared, 8, "the spans above 2^22 leaves");
}
