//! Checks of the rules `ARCHITECTURE.md` writes down that a machine can check: which crate may
//! depend on which, that every module says what it is for, that no test is ignored, and that
//! the pure crates touch neither clock, disk, network nor global randomness.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    rust_files(&root().join("crates"), &mut out);
    assert!(out.len() > 20, "found only {} files", out.len());
    out
}

/// The internal crates each crate may depend on (Architecture Invariant: dependencies point
/// inwards, to the domain).
const ALLOWED: &[(&str, &[&str])] = &[
    ("reachline-domain", &[]),
    ("reachline-store", &["reachline-domain", "reachline-ledger"]),
    ("reachline-policy", &["reachline-domain"]),
    ("reachline-ledger", &["reachline-domain"]),
    ("reachline-sim", &["reachline-domain", "reachline-policy"]),
    ("reachline-channels", &["reachline-domain"]),
    ("reachline-book", &["reachline-domain"]),
    (
        "reachline-server",
        &[
            "reachline-book",
            "reachline-channels",
            "reachline-domain",
            "reachline-engine",
            "reachline-intel",
            "reachline-ledger",
            "reachline-policy",
            "reachline-store",
        ],
    ),
    (
        "reachline-intel",
        &["reachline-domain", "reachline-policy", "reachline-store"],
    ),
    (
        "reachline-engine",
        &[
            "reachline-channels",
            "reachline-domain",
            "reachline-intel",
            "reachline-ledger",
            "reachline-policy",
            "reachline-store",
        ],
    ),
    (
        "reachline",
        &[
            "reachline-book",
            "reachline-channels",
            "reachline-domain",
            "reachline-engine",
            "reachline-intel",
            "reachline-ledger",
            "reachline-policy",
            "reachline-server",
            "reachline-sim",
            "reachline-store",
        ],
    ),
];

#[test]
fn crates_depend_only_inwards() {
    let crates = root().join("crates");
    let mut seen = 0;
    for e in std::fs::read_dir(&crates).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let manifest: toml::Value = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let allowed = ALLOWED
            .iter()
            .find(|(c, _)| *c == name)
            .unwrap_or_else(|| {
                panic!("crate {name} is not in the dependency rules; add it to ALLOWED and ARCHITECTURE.md")
            })
            .1;
        for section in ["dependencies", "dev-dependencies"] {
            if let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) {
                for dep in deps.keys().filter(|d| d.starts_with("reachline")) {
                    assert!(allowed.contains(&dep.as_str()), "{name} may not depend on {dep}");
                }
            }
        }
        seen += 1;
    }
    assert_eq!(seen, ALLOWED.len());
}

/// The crates that must stay pure: no IO, clock or global randomness (Architecture Invariant).
const PURE: &[&str] = &[
    "reachline-book",
    "reachline-domain",
    "reachline-policy",
    "reachline-ledger",
    "reachline-sim",
];

#[test]
fn the_pure_crates_do_no_io() {
    for krate in PURE {
        let dir = root().join("crates").join(krate);
        let manifest: toml::Value = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let deps: Vec<&String> = manifest["dependencies"].as_table().unwrap().keys().collect();
        // Seeded generators passed in are fine (`rand`, `rand_distr`); entropy is not.
        for banned in ["tokio", "sqlx", "rusqlite", "reqwest", "getrandom", "reachline-store"] {
            assert!(!deps.iter().any(|d| *d == banned), "{krate} depends on {banned}");
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        assert!(!files.is_empty(), "{krate} has no sources");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for banned in [
                "std::fs",
                "std::net",
                "Utc::now",
                "Local::now",
                "SystemTime",
                "Instant::now",
                "thread_rng",
                "OsRng",
                "from_entropy",
                "rand::random",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", f.display());
            }
        }
    }
}

#[test]
fn every_module_says_what_it_is_for() {
    for f in all_rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} does not start with a //! module doc line",
            f.display()
        );
    }
}

#[test]
fn no_test_is_ignored() {
    let attr = ["#[", "ignore"].concat();
    for f in all_rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&attr), "{} ignores a test", f.display());
    }
}

#[test]
fn architecture_md_lists_every_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for (c, _) in ALLOWED {
        assert!(
            arch.contains(&format!("`{c}`")),
            "ARCHITECTURE.md does not mention `{c}`"
        );
    }
}
