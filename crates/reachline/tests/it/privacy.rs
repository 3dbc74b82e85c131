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
