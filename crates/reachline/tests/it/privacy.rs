//! PII hygiene: `reachline run` with every log at `trace` (the most a lender's operator could
//! turn on) writes no number, email, name or ID number of the book it sends to — not through
//! our own logs, and not through the libraries' (the SMPP codec prints whole PDUs at debug; the
//! binary caps such libraries, see `PEER_LOG_CAPS`).

use std::process::Command;

use crate::crash::start_smsc;
use crate::helpers::*;

/// Every personal value of a CSV book: contact values (as written and as national digits),
/// names, ID numbers.
fn personal_values(book: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let rows = |file: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(book.join(file))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    for r in rows("contacts.csv") {
        let value = r[5].trim().to_string();
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 11 {
            out.push(digits[digits.len() - 11..].to_string());
        }
        if !value.is_empty() {
            out.push(value);
        }
    }
    for r in rows("borrowers.csv") {
        out.push(r[1].clone());
        out.push(r[3].clone());
    }
    out.retain(|v| v.chars().count() >= 2);
    out
}

#[test]
fn trace_logs_of_a_run_hold_no_number_email_name_or_id() {
    let s = Scratch::new();
    let book = s.gen("book", 40, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let (mut smsc, port) = start_smsc(&s, &s.path("smsc.jsonl"));
    let clock = s.path("clock");
    let out = Command::new(env!("CARGO_BIN_EXE_reachline"))
        .args([
            "run",
            "--clock-file",
            clock.to_str().unwrap(),
            "--clock-start",
            "2026-11-01T00:00:00Z",
            "--until",
            "2026-11-06T00:00:00Z",
        ])
        .current_dir(s.dir.path())
        .env("REACHLINE_KEYS__FILE", s.keys())
        .env("REACHLINE_DATABASE__URL", s.db_url())
        .env("REACHLINE_SMPP__HOST", "127.0.0.1")
        .env("REACHLINE_SMPP__PORT", &port)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let _ = smsc.kill();
    let _ = smsc.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(logs.contains("DEBUG"), "the logs are at their most detailed");
    // Something was sent, so something could have leaked.
    let sent = std::fs::read_to_string(s.path("smsc.jsonl")).unwrap_or_default();
    assert!(
        sent.lines().count() > 10,
        "the SMSC took {} parts",
        sent.lines().count()
    );
    let values = personal_values(&book);
    assert!(values.len() > 100);
    let leaked: Vec<&String> = values.iter().filter(|v| logs.contains(v.as_str())).collect();
    assert!(
        leaked.is_empty(),
        "{} personal values in the logs, e.g. {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(3)]
    );
}

/// Byte strings of the borrower `who` that would decrypt to, or find, their personal data: the
/// wrapped data key, the sealed commitment key, every ciphertext and blind index.
fn secrets_of(db: &std::path::Path, who: &str) -> Vec<Vec<u8>> {
    let c = rusqlite::Connection::open(db).unwrap();
    let id: i64 = c
        .query_row("SELECT id FROM borrowers WHERE external_id = ?1", [who], |r| r.get(0))
        .unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT wrapped_key FROM borrower_keys WHERE borrower_id = ?1",
        "SELECT sealed_key FROM ledger_commitment_keys WHERE borrower_id = ?1",
        "SELECT name_enc FROM borrowers WHERE id = ?1",
        "SELECT national_id_enc FROM borrowers WHERE id = ?1",
        "SELECT national_id_bidx FROM borrowers WHERE id = ?1",
        "SELECT address_enc FROM contact_points WHERE borrower_id = ?1",
        "SELECT address_bidx FROM contact_points WHERE borrower_id = ?1",
        "SELECT holder_name_enc FROM contact_points WHERE borrower_id = ?1",
    ] {
        let mut stmt = c.prepare(sql).unwrap();
        let blobs = stmt
            .query_map([id], |r| r.get::<_, Option<Vec<u8>>>(0))
            .unwrap()
            .filter_map(|b| b.unwrap())
            .filter(|b| !b.is_empty());
        out.extend(blobs);
    }
    out
}

/// Marks every installment of `who`'s loans paid in the CSV book.
fn pay_all(book: &std::path::Path, who: &str) {
    let loans: Vec<String> = std::fs::read_to_string(book.join("loans.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1) == Some(who))
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert!(!loans.is_empty());
    let file = book.join("installments.csv");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut f: Vec<String> = line.split(',').map(str::to_string).collect();
        if i > 0 && loans.contains(&f[0]) {
            f[4] = f[3].clone();
            if f[5].is_empty() {
                f[5] = "2026-11-01T00:00:00Z".into();
            }
        }
        out.push_str(&f.join(","));
        out.push('\n');
    }
    std::fs::write(file, out).unwrap();
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn erasure_leaves_nothing_that_decrypts_in_the_database_or_its_backups() {
    let s = Scratch::new();
    let book = s.gen("book", 20, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let who = "B00000003";
    s.ok(&[
        "ledger",
        "stress",
        "--leaves",
        "6",
        "--writers",
        "1",
        "--borrower",
        who,
        "--notice",
        "900001",
    ]);
    let secrets = secrets_of(&s.db(), who);
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    // The borrower's own values in clear (name, ID number, numbers), from the book.
    let mine: Vec<String> = personal_values(&book)
        .into_iter()
        .filter(|v| {
            let rows = std::fs::read_to_string(book.join("borrowers.csv")).unwrap()
                + &std::fs::read_to_string(book.join("contacts.csv")).unwrap();
            rows.lines()
                .filter(|l| l.starts_with(who))
                .any(|l| l.contains(v.as_str()))
        })
        .collect();
    assert!(mine.len() >= 3, "{mine:?}");
    s.ok(&["backup"]);

    // Unpaid installments: refused, and nothing changed.
    let out = s.run(&["borrower", "erase", who, "--reason", "borrower request case 42"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unpaid installment"), "{}", stderr(&out));
    assert_eq!(secrets_of(&s.db(), who), secrets);

    pay_all(&book, who);
    s.ok(&["import", book.to_str().unwrap()]);
    let out: serde_json::Value = serde_json::from_str(&s.ok(&[
        "borrower",
        "erase",
        who,
        "--reason",
        "borrower request case 42",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["state"], "erased", "{out}");
    assert_eq!(out["ledger_index"], 6, "the erasure is the leaf after the six");
    assert_eq!(out["backups_shredded"], 1, "{out}");
    assert!(out["shredded"]["contact_points"].as_u64().unwrap() >= 2, "{out}");

    // Nothing that decrypts to (or finds) the borrower's data, nor the data itself, in the
    // database file, its WAL, or the backup written before the erasure.
    let files: Vec<_> = files_under(s.dir.path())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("test.db") || name.ends_with(".db")
        })
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (k, secret) in secrets.iter().enumerate() {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "secret {k} ({} bytes) is still in {}",
                secret.len(),
                f.display()
            );
        }
        for v in &mine {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "a personal value is in {} in clear",
                f.display()
            );
        }
    }

    // The ledger still verifies; its leaves can no longer be tied to a number.
    s.ok(&["ledger", "audit"]);
    s.ok(&["ledger", "bundle", "900001", "--out", "plain.proof"]);
    let out = s.run(&["ledger", "bundle", "900001", "--out", "x.proof", "--reveal-address"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("destroyed"), "{}", stderr(&out));

    // Asking again completes nothing new; export and re-import are refused, naming why.
    let again = s.ok(&["borrower", "erase", who, "--reason", "borrower request case 42"]);
    assert!(again.contains("was erased"), "{again}");
    let out = s.run(&["borrower", "export", who, "--reason", "borrower request case 42"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("erased"), "{}", stderr(&out));
    let out = s.run(&["import", book.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("borrower {who} was erased")),
        "{}",
        stderr(&out)
    );
    // Others are untouched.
    s.ok(&[
        "borrower",
        "export",
        "B00000004",
        "--reason",
        "borrower request case 43",
    ]);
}

#[test]
fn master_key_rotation_stops_halfway_resumes_and_refuses_the_wrong_keys() {
    master_key_rotation(&Scratch::new(), true);
}

#[test]
fn key_rotations_on_postgres() {
    let Some(db) = PgDatabase::fresh("rotation") else {
        return;
    };
    let s = db.scratch();
    master_key_rotation(&s, false);
    blind_index_rotation(&s);
}

fn master_key_rotation(s: &Scratch, sqlite: bool) {
    let book = s.gen("book", 30, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let before = s.ok(&["borrower", "export", "B00000007", "--reason", "borrower request case 7"]);
    let status = s.ok(&["keys", "status"]);
    assert!(status.contains(": 30"), "{status}");

    // Stopped after one batch of 10: the key file holds both keys, the data is readable.
    let out = s.ok(&[
        "keys",
        "rotate-master",
        "--new-key-id",
        "k2",
        "--batch",
        "10",
        "--batches",
        "1",
    ]);
    assert!(out.contains("stopped after 1 batch"), "{out}");
    let file = std::fs::read_to_string(s.keys()).unwrap();
    assert!(
        file.contains("key_id = \"k2\"") && file.contains("previous_master_keys"),
        "{file}"
    );
    let status = s.ok(&["keys", "status"]);
    assert!(status.contains("\"k2\": 10") && status.contains(": 20"), "{status}");
    let during = s.ok(&["borrower", "export", "B00000007", "--reason", "borrower request case 7"]);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&before).unwrap(),
        serde_json::from_str(&during).unwrap(),
    );
    assert_eq!(a["borrower"], b["borrower"], "the name and ID number still open");
    assert_eq!(a["contacts"], b["contacts"], "the numbers still open");
    // A new rotation cannot start over the one in progress.
    let out = s.run(&["keys", "rotate-master", "--new-key-id", "k3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in progress"), "{}", stderr(&out));

    // Resumed: the rest is re-wrapped and the old key leaves the file.
    let out = s.ok(&["keys", "rotate-master", "--batch", "10"]);
    assert!(out.contains("rotation finished"), "{out}");
    let file = std::fs::read_to_string(s.keys()).unwrap();
    assert!(!file.contains("previous_master_keys"), "{file}");
    let status = s.ok(&["keys", "status"]);
    assert!(status.contains("\"k2\": 30"), "{status}");
    s.ok(&["borrower", "export", "B00000007", "--reason", "borrower request case 7"]);

    // The key file from before the rotation, or another one, is refused before anything is
    // written: the error says which key, and the database file does not change.
    let other = s.path("other.keys");
    s.ok(&["keys", "init", "--out", other.to_str().unwrap(), "--key-id", "k2"]);
    let db_before = std::fs::read(s.db()).unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_reachline"))
        .args(["import", book.to_str().unwrap()])
        .current_dir(s.dir.path())
        .env("REACHLINE_KEYS__FILE", &other)
        .env("REACHLINE_DATABASE__URL", s.db_url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"k2\"") && stderr(&out).contains("wrong key file"),
        "{}",
        stderr(&out)
    );
    if sqlite {
        assert_eq!(std::fs::read(s.db()).unwrap(), db_before);
    }
}

#[test]
fn blind_index_rotation_stops_halfway_holds_other_commands_off_and_resumes() {
    blind_index_rotation(&Scratch::new());
}

fn blind_index_rotation(s: &Scratch) {
    let book = s.gen("book", 30, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let contacts = std::fs::read_to_string(book.join("contacts.csv")).unwrap();
    let number = contacts
        .lines()
        .find(|l| l.starts_with("B00000005,mobile,"))
        .map(|l| l.split(',').nth(5).unwrap().to_string())
        .unwrap();
    let found = s.ok(&["contacts", "lookup", &number]);
    assert!(found.contains("borrower #6"), "{found}");
    let key_before = std::fs::read_to_string(s.keys()).unwrap();

    let out = s.ok(&["keys", "rotate-blind-index", "--batch", "10", "--batches", "1"]);
    assert!(out.contains("stopped after 1 batch"), "{out}");
    let file = std::fs::read_to_string(s.keys()).unwrap();
    assert!(file.contains("previous_blind_index_key"), "{file}");
    // Half-way, lookups would miss borrowers: every other command refuses, saying why.
    let out = s.run(&["contacts", "lookup", &number]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rotation is in progress"), "{}", stderr(&out));

    let out = s.ok(&["keys", "rotate-blind-index", "--batch", "10"]);
    assert!(out.contains("rotation finished"), "{out}");
    let file = std::fs::read_to_string(s.keys()).unwrap();
    assert!(!file.contains("previous_blind_index_key"), "{file}");
    let line = |f: &str| {
        f.lines()
            .find(|l| l.starts_with("blind_index_key"))
            .unwrap()
            .to_string()
    };
    assert_ne!(line(&file), line(&key_before), "a new key");
    // Under the new key the same number finds the same borrower, and the book re-imports
    // unchanged (the same address is the same index).
    assert_eq!(s.ok(&["contacts", "lookup", &number]), found);
    let again = s.import_json(&book);
    assert_eq!(again["report"]["contacts_added"], 0, "{again}");
    assert_eq!(again["report"]["contacts_replaced"], 0, "{again}");
}
