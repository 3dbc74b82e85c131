//! Every inclusion and consistency vector of transparency-dev/merkle (including the mutated
//! proofs that must fail) through Reachline's verifiers.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reachline_ledger::proof::{verify_consistency_bytes, verify_inclusion_bytes};
use reachline_ledger::{LeafIndex, TreeSize};
use serde::Deserialize;

use crate::data;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn json_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn files(kind: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    json_files(&data(&format!("merkle/{kind}")), &mut out);
    out.sort();
    out
}

#[test]
fn every_inclusion_vector() {
    let (mut ok, mut failed) = (0, 0);
    for f in files("inclusion") {
        let v: Inclusion = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let got = verify_inclusion_bytes(
            LeafIndex(v.leaf_idx),
            TreeSize(v.tree_size),
            &b64(&v.leaf_hash),
            &proof,
            &b64(&v.root),
        );
        assert_eq!(got.is_err(), v.want_err, "{} ({}): {got:?}", f.display(), v.desc);
        if v.want_err {
            failed += 1;
        } else {
            ok += 1;
        }
    }
    // The counts pin the set, so a vector lost in copying shows up here.
    assert_eq!((ok, failed), (6, 92));
}

#[test]
fn every_consistency_vector() {
    let (mut ok, mut failed) = (0, 0);
    for f in files("consistency") {
        let v: Consistency = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let got = verify_consistency_bytes(
            TreeSize(v.size1),
            TreeSize(v.size2),
            &proof,
            &b64(&v.root1),
            &b64(&v.root2),
        );
        assert_eq!(got.is_err(), v.want_err, "{} ({}): {got:?}", f.display(), v.desc);
        if v.want_err {
            failed += 1;
        } else {
            ok += 1;
        }
    }
    assert_eq!((ok, failed), (6, 92));
}
