//! The integration tests of `reachline-ledger`: known-answer vectors from other implementations
//! and real logs (copied into `tests/data`, with their sources in `tests/data/README.md`).

mod merkle_vectors;
mod notes;
mod proof_file;
mod real_logs;

use std::path::PathBuf;

/// A file under `tests/data`.
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(data(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}
