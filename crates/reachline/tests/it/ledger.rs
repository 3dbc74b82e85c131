//! The ledger from the command line: a bundle verifies offline with the printed key and fails
//! when tampered with; the audit names the index of each kind of tampering in the SQLite file;
//! a consistency proof comes out in the witness's form; and a sequencer killed at random
//! moments, again and again, never loses an acknowledged append nor publishes a checkpoint the
//! latest one does not extend.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use reachline_ledger::proof::verify_consistency;
use reachline_ledger::{checkpoint, Hash, TreeSize};

use crate::helpers::*;

fn key(s: &Scratch) -> String {
    s.ok(&["ledger", "key"]).trim().to_string()
}

fn db(s: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(s.db()).unwrap()
}

#[test]
fn bundle_verifies_offline_and_tampering_fails() {
    let s = Scratch::new();
    let book = s.gen("book", 5, 0, "csv");
    s.import_json(&book);
    // Leaves about borrower B00000001, all of notice 77, among leaves of other notices.
    s.ok(&["ledger", "stress", "--leaves", "40"]);
    s.ok(&[
        "ledger",
        "stress",
        "--leaves",
        "6",
        "--writers",
        "1",
        "--borrower",
        "B00000001",
        "--notice",
        "77",
    ]);
    s.ok(&["ledger", "stress", "--leaves", "40"]);
    let bundle = s.path("notice-77.proof");
    let wrote = s.ok(&[
        "ledger",
        "bundle",
        "77",
        "--out",
        bundle.to_str().unwrap(),
        "--reveal-address",
    ]);
    assert!(wrote.contains("wrote 6 leaves of notice 77"), "{wrote}");
    let key = key(&s);

    // Offline: no configuration, no key file, no database, another directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let verify = |file: &std::path::Path, key: &str| {
        Command::new(env!("CARGO_BIN_EXE_reachline"))
            .args(["ledger", "verify", file.to_str().unwrap(), "--key", key])
            .current_dir(elsewhere.path())
            .env_clear()
            .output()
            .unwrap()
    };
    let out = verify(&bundle, &key);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("verified: 6 leaves"), "{text}");
    assert!(
        text.contains("the revealed address matches the commitment of 2 leaves"),
        "{text}"
    );

    // A changed proof hash, a changed leaf, a changed revealed address, another key: each fails.
    let original = std::fs::read_to_string(&bundle).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let proof_line = lines.iter().position(|l| l.starts_with("index ")).unwrap() + 1;
    let extra_line = lines.iter().position(|l| l.starts_with("extra ")).unwrap();
    let contact_line = lines.iter().position(|l| l.starts_with("contact ")).unwrap();
    let flip = |line: usize, at: usize| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let mut b = l[line].clone().into_bytes();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        l[line] = String::from_utf8(b).unwrap();
        let p = s.path("tampered.proof");
        std::fs::write(&p, l.join("\n") + "\n").unwrap();
        p
    };
    for (line, at, why) in [
        (proof_line, 3, "not proved"),
        (extra_line, 12, "not proved"),
        (
            contact_line,
            lines[contact_line].len() - 2,
            "does not match the revealed address",
        ),
    ] {
        let out = verify(&flip(line, at), &key);
        assert!(!out.status.success(), "line {line} changed and still verified");
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    let other = "reachline.example/ledger+00000000+AWlQyOgjzfqDLkL1y7pq5p8zDbBCWrZP8rTW8Ay2hGqn";
    assert!(!verify(&bundle, other).status.success());
}

#[test]
fn audit_names_the_index_of_each_tampering_and_consistency_is_witness_ready() {
    let s = Scratch::new();
    s.ok(&["ledger", "stress", "--leaves", "300"]);
    let audit = |known: &[&str]| {
        let mut args = vec!["ledger", "audit"];
        for k in known {
            args.extend(["--known", k]);
        }
        s.run(&args)
    };
    assert!(audit(&[]).status.success(), "{}", stderr(&audit(&[])));
    let saved = s.path("latest.checkpoint");
    std::fs::write(&saved, s.ok(&["ledger", "checkpoint"])).unwrap();
    let report = |known: &[&str]| {
        let out = audit(known);
        assert!(!out.status.success(), "the audit passed a tampered log");
        String::from_utf8(out.stdout).unwrap()
    };
    let c = db(&s);
    let leaf = |i: i64| -> Vec<u8> {
        c.query_row("SELECT data FROM ledger_leaves WHERE idx = ?1", [i], |r| r.get(0))
            .unwrap()
    };
    let set = |i: i64, d: &[u8]| {
        c.execute(
            "UPDATE ledger_leaves SET data = ?1 WHERE idx = ?2",
            rusqlite::params![d, i],
        )
        .unwrap()
    };

    // One byte of one leaf.
    let orig = leaf(10);
    let mut bad = orig.clone();
    bad[20] ^= 0x40;
    set(10, &bad);
    let r = report(&[]);
    assert!(r.starts_with("leaf 10: "), "{r}");
    set(10, &orig);

    // A deleted leaf.
    let (notice, data): (i64, Vec<u8>) = c
        .query_row("SELECT notice, data FROM ledger_leaves WHERE idx = 20", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    c.execute("DELETE FROM ledger_leaves WHERE idx = 20", []).unwrap();
    let r = report(&[]);
    assert!(r.starts_with("leaf 20: missing"), "{r}");
    c.execute(
        "INSERT INTO ledger_leaves (idx, notice, data) VALUES (20, ?1, ?2)",
        rusqlite::params![notice, data],
    )
    .unwrap();

    // Two leaves swapped.
    let (a, b) = (leaf(30), leaf(40));
    set(30, &b);
    set(40, &a);
    let r = report(&[]);
    assert!(r.starts_with("leaf 30: ") && r.contains("\nleaf 40: "), "{r}");
    set(30, &a);
    set(40, &b);
    assert!(audit(&[]).status.success());

    // A consistency proof from an old checkpoint, in the witness's add-checkpoint form.
    let sizes: Vec<i64> = c
        .prepare("SELECT size FROM ledger_checkpoints WHERE size > 0 ORDER BY size")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let old = sizes[sizes.len() / 3];
    let body = s.ok(&["ledger", "consistency", &old.to_string(), saved.to_str().unwrap()]);
    let (head, new_note) = body.split_once("\n\n").unwrap();
    let mut head = head.lines();
    assert_eq!(head.next(), Some(format!("old {old}").as_str()));
    let proof: Vec<Hash> = head.map(|l| Hash::from_base64(l).unwrap()).collect();
    let verifier = reachline_ledger::note::VerifierKey::parse(&key(&s)).unwrap();
    let new = checkpoint::open(new_note.as_bytes(), std::slice::from_ref(&verifier)).unwrap();
    let old_note = s.ok(&["ledger", "checkpoint", "--size", &old.to_string()]);
    let old_cp = checkpoint::open(old_note.as_bytes(), std::slice::from_ref(&verifier)).unwrap();
    verify_consistency(
        TreeSize(old as u64),
        new.checkpoint.size,
        &proof,
        &old_cp.checkpoint.root,
        &new.checkpoint.root,
    )
    .unwrap();

    // Rolled back to an older checkpoint, as a restored backup would be: the checkpoint kept
    // outside the database names where the log was cut.
    c.execute("DELETE FROM ledger_checkpoints WHERE size > ?1", [old])
        .unwrap();
    c.execute("DELETE FROM ledger_leaves WHERE idx >= ?1", [old]).unwrap();
    assert!(audit(&[]).status.success(), "alone, a cut log is consistent");
    let r = report(&[saved.to_str().unwrap()]);
    assert!(r.starts_with(&format!("leaf {old}: rolled back")), "{r}");
}

/// One run of the stress child, killed `ms` milliseconds after its first acknowledgement (so
/// the kill lands while it appends, however slowly the machine starts it); returns its
/// acknowledgements.
fn run_and_kill(s: &Scratch, ms: u64) -> Vec<(u64, u64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reachline"))
        .args(["ledger", "stress", "--writers", "8"])
        .current_dir(s.dir.path())
        .env("REACHLINE_KEYS__FILE", s.keys())
        .env("REACHLINE_DATABASE__URL", format!("sqlite://{}", s.db().display()))
        .env("REACHLINE_LEDGER__BATCH_MAX_MS", "3")
        .env("REACHLINE_LEDGER__BATCH_MAX_ENTRIES", "64")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace().skip(1).map(|x| x.parse::<u64>().unwrap());
            if let (Some(i), Some(size)) = (w.next(), w.next()) {
                let _ = tx.send((i, size));
            }
        }
    });
    let mut acks = Vec::new();
    if let Ok(first) = rx.recv_timeout(Duration::from_secs(20)) {
        acks.push(first);
    }
    std::thread::sleep(Duration::from_millis(ms));
    // SIGKILL: no destructor, no rollback, whatever the child was doing.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    acks.extend(rx.try_iter());
    acks
}

#[test]
fn killed_sequencers_lose_no_acknowledged_append() {
    let s = Scratch::new();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rounds_with_acks = 0;
    for _ in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let acks = run_and_kill(&s, seed % 300);
        rounds_with_acks += usize::from(!acks.is_empty());
        acked.extend(acks);
    }
    assert!(rounds_with_acks >= 20, "only {rounds_with_acks} runs appended anything");

    // The log reopens clean: every stored checkpoint verifies and is a prefix of the latest.
    let out = s.run(&["ledger", "audit"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let latest = s.ok(&["ledger", "checkpoint"]);
    let size: u64 = latest.lines().nth(1).unwrap().parse().unwrap();
    let c = db(&s);
    let stored: std::collections::HashSet<u64> = c
        .prepare("SELECT size FROM ledger_checkpoints")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as u64)
        .collect();
    let leaves: i64 = c
        .query_row(
            "SELECT count(*) FROM ledger_leaves WHERE idx < ?1",
            [size as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaves as u64, size);
    let mut seen = std::collections::HashSet::new();
    for (index, cp) in &acked {
        assert!(*index < size, "acknowledged leaf {index} is not in the log of {size}");
        assert!(*index < *cp, "leaf {index} acknowledged under checkpoint {cp}");
        assert!(stored.contains(cp), "acknowledged checkpoint {cp} is not stored");
        assert!(seen.insert(*index), "index {index} acknowledged twice");
    }
    assert!(acked.len() > 100, "only {} acknowledgements", acked.len());
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Rebuilds the tree from the published entry bundles alone and checks it against the published
/// checkpoint (signed by `key`) and the published level-0 tiles; returns the tree size.
fn check_published(dir: &std::path::Path, key: &str, bundles: &[&str]) -> u64 {
    let key = reachline_ledger::note::VerifierKey::parse(key).unwrap();
    let signed = std::fs::read(dir.join("checkpoint")).unwrap();
    let cp = checkpoint::open(&signed, &[key]).unwrap().checkpoint;
    let mut tree = reachline_ledger::MemoryTree::new();
    for name in bundles {
        let bytes = std::fs::read(dir.join("tile/entries").join(name)).unwrap();
        let leaves = reachline_ledger::tiles::parse_bundle(&bytes).unwrap();
        let hashes: Vec<u8> = leaves.iter().flat_map(|l| reachline_ledger::leaf_hash(l).0).collect();
        assert_eq!(
            std::fs::read(dir.join("tile/0").join(name)).unwrap(),
            hashes,
            "tile/0/{name}"
        );
        for l in &leaves {
            tree.append(reachline_ledger::leaf_hash(l));
        }
    }
    assert_eq!(tree.size(), cp.size);
    assert_eq!(tree.root(), cp.root, "the published entries rebuild the signed root");
    cp.size.0
}

#[test]
fn the_log_publishes_as_tiles_a_static_server_can_serve() {
    let s = Scratch::new();
    s.ok(&["ledger", "stress", "--leaves", "600"]);
    let dir = s.path("public");
    let out = s.ok(&["ledger", "publish", dir.to_str().unwrap()]);
    assert!(out.contains("tree size 600"), "{out}");
    assert_eq!(
        files_under(&dir),
        [
            "checkpoint",
            "tile/0/000",
            "tile/0/001",
            "tile/0/002.p/88",
            "tile/1/000.p/2",
            "tile/entries/000",
            "tile/entries/001",
            "tile/entries/002.p/88",
        ]
    );
    let key = key(&s);
    assert_eq!(check_published(&dir, &key, &["000", "001", "002.p/88"]), 600);
    // Level 1 holds the roots of the two full level-0 tiles.
    let level1 = std::fs::read(dir.join("tile/1/000.p/2")).unwrap();
    let mut tree = reachline_ledger::MemoryTree::new();
    for name in ["000", "001"] {
        for l in
            reachline_ledger::tiles::parse_bundle(&std::fs::read(dir.join("tile/entries").join(name)).unwrap()).unwrap()
        {
            tree.append(reachline_ledger::leaf_hash(&l));
        }
    }
    let node = |k: u64| tree.node(reachline_ledger::NodeId { level: 8, index: k }).unwrap().0;
    assert_eq!(level1, [node(0), node(1)].concat());

    // Later: full tiles and bundles stay as they were, the rest is brought up to date.
    s.ok(&["ledger", "stress", "--leaves", "300"]);
    let out = s.ok(&["ledger", "publish", dir.to_str().unwrap()]);
    assert!(
        out.contains("tree size 900") && out.contains("4 full tiles and bundles already there"),
        "{out}"
    );
    assert_eq!(check_published(&dir, &key, &["000", "001", "002", "003.p/132"]), 900);
    assert!(dir.join("tile/1/000.p/3").exists());

    // A database whose leaves no longer match its tiles is refused, naming the leaf.
    let c = db(&s);
    let mut leaf: Vec<u8> = c
        .query_row("SELECT data FROM ledger_leaves WHERE idx = 700", [], |r| r.get(0))
        .unwrap();
    leaf[10] ^= 1;
    c.execute("UPDATE ledger_leaves SET data = ?1 WHERE idx = 700", [leaf])
        .unwrap();
    let out = s.run(&["ledger", "publish", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("leaf 700"), "{}", stderr(&out));
}
