//! Replays every file of `corpus/<target>/` through its target's `check`, on stable and without
//! libFuzzer: the seeds and every input a fuzz run ever crashed on stay passing.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failed = Vec::new();
    let mut total = 0;
    for (name, check) in reachline_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a readable corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no input", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(f.display().to_string());
            }
        }
        println!("{name}: {} inputs", files.len());
        total += files.len();
    }
    // Every folder of the corpus is a target's.
    for entry in std::fs::read_dir(&root).expect("the corpus folder") {
        let name = entry.expect("a readable corpus entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            reachline_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
            "corpus/{name} is no target's"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {total} inputs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
