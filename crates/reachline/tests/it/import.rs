//! The loan-book import as the issue checks it: planted errors, changed numbers, the raw file.

use crate::helpers::*;

/// Plants one error in each of 20 rows across all five files; expects exactly those 20
/// reported with file, line and field, and nothing written.
#[test]
fn twenty_planted_errors_are_all_reported_and_nothing_is_written() {
    let s = Scratch::new();
    let book = s.gen("book", 200, 0, "csv");
    let f = |n: &str| book.join(n);
    let contacts = f("contacts.csv");
    let emergency = lines_where(&contacts, |c| c[3] == "emergency");
    let inst = f("installments.csv");
    // Two installments of the same loan, one after the other.
    let second = lines_where(&inst, |c| c[1] == "2")[0];

    let mut expect: Vec<(String, usize, &str)> = Vec::new();
    let mut plant = |file: &str, line: usize, col: usize, value: &str, field: &'static str| {
        set_field(&f(file), line, col, value);
        expect.push((file.to_string(), line, field));
    };
    plant("borrowers.csv", 3, 3, "11010519491231002Y", "national_id");
    plant("borrowers.csv", 5, 5, "Mars/Base", "time_zone");
    plant("borrowers.csv", 9, 1, "", "name");
    plant("borrowers.csv", 11, 4, "fr", "locale");
    plant("contacts.csv", 4, 5, "1381234567", "value");
    plant("contacts.csv", 6, 2, "fax", "kind");
    plant("contacts.csv", 8, 3, "boss", "role");
    plant("contacts.csv", emergency[0], 4, "", "relation");
    plant("contacts.csv", 12, 7, "2024-13-01", "bound_since");
    plant("contacts.csv", 14, 0, "NOPE", "borrower_id");
    plant("loans.csv", 3, 3, "12.345", "principal");
    plant("loans.csv", 5, 5, "yesterday", "disbursed_on");
    plant("loans.csv", 7, 1, "B99999999", "borrower_id");
    plant("installments.csv", 4, 0, "L-NONE", "loan_id");
    plant("installments.csv", 6, 3, "-5.00", "amount_due");
    plant("installments.csv", second, 1, "1", "seq");
    plant("installments.csv", 20, 5, "noon", "paid_at");
    plant("consents.csv", 3, 1, "marketing", "purpose");
    plant("consents.csv", 5, 4, "2026-02-30T00:00:00Z", "at");
    // The 20th: a duplicate borrower id, appended so no other row loses its borrower.
    let first_borrower = std::fs::read_to_string(f("borrowers.csv"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let mut text = std::fs::read_to_string(f("borrowers.csv")).unwrap();
    text.push_str(&first_borrower);
    text.push('\n');
    std::fs::write(f("borrowers.csv"), &text).unwrap();
    expect.push(("borrowers.csv".into(), text.lines().count(), "external_id"));

    let out = s.run(&["import", book.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let reported: Vec<&str> = err.lines().filter(|l| l.contains(".csv:")).collect();
    assert_eq!(reported.len(), 20, "expected exactly the 20 planted errors:\n{err}");
    for (file, line, field) in &expect {
        let needle = format!("{file}:{line}: field {field}: ");
        assert!(
            reported.iter().any(|l| l.starts_with(&needle)),
            "missing {needle} in:\n{err}"
        );
    }
    assert!(err.contains("the book has 20 error(s); nothing was imported"), "{err}");
    // Errors must not repeat the personal values they complain about.
    assert!(!err.contains("1381234567"), "{err}");
    // Nothing written.
    assert!(s.counts().contains("borrowers                   0"), "{}", s.counts());
}

#[test]
fn more_than_a_hundred_errors_are_counted_after_the_first_hundred() {
    let s = Scratch::new();
    let book = s.gen("book", 60, 0, "csv");
    let contacts = book.join("contacts.csv");
    let n = std::fs::read_to_string(&contacts).unwrap().lines().count();
    for line in 2..=n {
        set_field(&contacts, line, 2, "fax");
    }
    let out = s.run(&["import", book.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains(".csv:")).count(), 100);
    assert!(err.contains(&format!("… and {} more", n - 1 - 100)), "{err}");
}

#[test]
fn a_bad_header_is_one_error_on_line_one() {
    let s = Scratch::new();
    let book = s.gen("book", 5, 0, "csv");
    edit_line(&book.join("loans.csv"), 1, |l| l.replace("principal", "principle"));
    let err = stderr(&s.run(&["import", book.to_str().unwrap()]));
    assert!(err.contains("loans.csv:1: unknown column \"principle\""), "{err}");
}

#[test]
fn reimport_with_changed_numbers_keeps_history_and_adds_no_duplicates() {
    let s = Scratch::new();
    let first = s.gen("r0", 400, 0, "csv");
    let second = s.gen("r1", 400, 1, "csv");
    let r0 = s.import_json(&first);
    assert_eq!(r0["report"]["borrowers_created"], 400);

    let a = std::fs::read_to_string(first.join("contacts.csv")).unwrap();
    let b = std::fs::read_to_string(second.join("contacts.csv")).unwrap();
    let changed: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
    assert!(!changed.is_empty());

    let r1 = s.import_json(&second);
    let rep = &r1["report"];
    assert_eq!(rep["contacts_replaced"], changed.len());
    assert_eq!(rep["contacts_added"], 0);
    assert_eq!(rep["borrowers_created"], 0);
    assert_eq!(rep["borrowers_unchanged"], 400);
    assert_eq!(rep["consents_added"], 0);
    let counts = s.counts();
    assert!(counts.contains(&format!("{} retired", changed.len())), "{counts}");
    assert!(
        counts.contains(&format!("borrowers                 {:>3}", 400)),
        "{counts}"
    );

    // The history of a borrower whose number changed shows the old one retired by the book.
    let borrower = changed[0].1.split(',').next().unwrap();
    let history = s.ok(&["contacts", "history", borrower]);
    assert!(history.contains("retired: replaced by book"), "{history}");
    assert!(history.contains("retired   by book (replaced by book)"), "{history}");
    // Numbers appear masked only.
    let new_number = changed[0].1.split(',').nth(5).unwrap();
    assert!(!history.contains(new_number.trim_start_matches('+')), "{history}");

    // The old number still leads to the borrower who held it, marked retired.
    let old_number = changed[0].0.split(',').nth(5).unwrap();
    let holders = s.ok(&["contacts", "lookup", old_number]);
    assert!(
        holders.contains("retired") && holders.contains("replaced by book"),
        "{holders}"
    );

    // Importing the same export again changes nothing.
    let r2 = s.import_json(&second);
    assert_eq!(r2["report"]["contacts_replaced"], 0);
    assert_eq!(
        r2["report"]["contacts_unchanged"],
        r1["report"]["contacts_unchanged"].as_u64().unwrap() + changed.len() as u64
    );
    assert_eq!(s.counts(), counts);
}

#[test]
fn the_raw_database_file_holds_no_plaintext_number_email_or_name() {
    let s = Scratch::new();
    let book = s.gen("book", 300, 0, "csv");
    s.import_json(&book);
    // Fold the WAL into the file and read every file SQLite keeps.
    let c = rusqlite::Connection::open(s.db()).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(c);
    let mut raw = Vec::new();
    for e in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("test.db") {
            raw.extend(std::fs::read(p).unwrap());
        }
    }
    let found = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    let mut checked = 0;
    let contacts = std::fs::read_to_string(book.join("contacts.csv")).unwrap();
    for line in contacts.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let value = cols[5];
        // The national part of a number (138…): found inside +86138… as well.
        let digits = value.trim_start_matches('+').trim_start_matches("86");
        assert!(!found(digits), "number {value} is in the database in clear");
        assert!(!found(value), "contact value {value} is in the database in clear");
        if !cols[6].is_empty() {
            assert!(!found(cols[6]), "holder name {} is in the database in clear", cols[6]);
        }
        checked += 1;
    }
    let borrowers = std::fs::read_to_string(book.join("borrowers.csv")).unwrap();
    for line in borrowers.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        assert!(!found(cols[1]), "name {} is in the database in clear", cols[1]);
        if !cols[3].is_empty() {
            assert!(!found(cols[3]), "national id is in the database in clear");
        }
    }
    assert!(checked > 600);
    // Not vacuous: what is not personal is stored as is.
    assert!(found("B00000001") && found("consumer-12m") || found("cash-3m"));
}

#[test]
fn json_lines_books_import_like_csv_books() {
    let s = Scratch::new();
    let csv = s.gen("csv", 150, 0, "csv");
    let jsonl = s.gen("jsonl", 150, 0, "jsonl");
    assert!(jsonl.join("borrowers.jsonl").exists());
    let a = s.import_json(&csv);
    let b = s.import_json(&jsonl);
    assert_eq!(a["rows_read"], b["rows_read"]);
    assert_eq!(b["report"]["borrowers_unchanged"], 150);
    assert_eq!(b["report"]["contacts_unchanged"], a["report"]["contacts_added"]);
    assert_eq!(b["report"]["contacts_replaced"], 0);
    assert_eq!(b["report"]["consents_added"], 0);
}

#[test]
fn a_jsonl_error_names_line_and_field() {
    let s = Scratch::new();
    let book = s.gen("book", 5, 0, "jsonl");
    edit_line(&book.join("loans.jsonl"), 2, |l| {
        l.replace("\"currency\":\"CNY\"", "\"currency\":\"cny\"")
    });
    edit_line(&book.join("consents.jsonl"), 3, |_| "{\"borrower_id\": 5}".into());
    let out = s.run(&["import", book.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("loans.jsonl:2: field currency: unknown currency"), "{err}");
    assert!(err.contains("consents.jsonl:3: "), "{err}");
}

/// The example in docs/book-format.md, file by file.
fn doc_example() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/book-format.md")).unwrap();
    let example = doc.split("## Example").nth(1).unwrap();
    let mut files = Vec::new();
    let mut name: Option<String> = None;
    let mut lines = example.lines();
    while let Some(l) = lines.next() {
        if l.starts_with('`') && l.ends_with('`') && l.contains('.') {
            name = Some(l.trim_matches('`').to_string());
        } else if l.starts_with("```") && name.is_some() {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            files.push((name.take().unwrap(), body.join("\n") + "\n"));
        }
    }
    files
}

#[test]
fn the_documented_example_imports() {
    let s = Scratch::new();
    let files = doc_example();
    assert_eq!(files.len(), 6, "{files:?}");
    let book = s.path("doc");
    std::fs::create_dir_all(&book).unwrap();
    for (name, body) in files.iter().filter(|(n, _)| n.ends_with(".csv")) {
        std::fs::write(book.join(name), body).unwrap();
    }
    let r = s.import_json(&book);
    assert_eq!(r["report"]["borrowers_created"], 2);
    assert_eq!(r["report"]["contacts_added"], 4);
    assert_eq!(r["report"]["installments_written"], 3);
    assert_eq!(r["report"]["consents_added"], 3);

    // The JSON Lines borrower, in a book that mixes formats.
    let mixed = s.path("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    let (_, jsonl) = files.iter().find(|(n, _)| n == "borrowers.jsonl").unwrap();
    std::fs::write(mixed.join("borrowers.jsonl"), jsonl).unwrap();
    for (name, body) in files
        .iter()
        .filter(|(n, _)| n.ends_with(".csv") && n != "borrowers.csv")
    {
        let keep: Vec<&str> = body
            .lines()
            .enumerate()
            .filter(|(i, l)| *i == 0 || l.contains("B00000001") || l.starts_with("L1,"))
            .map(|(_, l)| l)
            .collect();
        std::fs::write(mixed.join(name), keep.join("\n") + "\n").unwrap();
    }
    let r = s.import_json(&mixed);
    assert_eq!(r["report"]["borrowers_unchanged"], 1, "{r}");
}
