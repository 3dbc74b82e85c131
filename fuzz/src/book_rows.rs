//! The loan book's files: CSV with a header row, or JSON Lines, read the way `reachline import`
//! reads them (`crates/reachline/src/book/mod.rs`, `read_rows`: the csv crate with headers and
//! trimmed header names, the header checked against the kind's columns, each record
//! deserialised into its row; JSON Lines one `serde_json` row per non-blank line), then every
//! row parsed into domain values by `reachline_book::parse`.
//!
//! The file's kind is not in its bytes (the importer takes it from the file name), so every kind
//! is tried. Round trip: a row read is written back as JSON and as CSV (as `reachline gen-book`
//! writes them) and read again the same.

use std::sync::OnceLock;

use reachline_book::parse::{self, BookDefaults};
use reachline_book::rows::{BorrowerRow, ConsentRow, ContactRow, InstallmentRow, LoanRow};
use reachline_domain::{Currency, Jurisdiction, Locale, PhoneParser};
use serde::{Deserialize, Serialize};

/// A kind of book file: its row type, its columns (as the importer's `BookRow`s name them) and
/// what parsing a row is.
trait Kind {
    type Row<'a>: Deserialize<'a> + Serialize + std::fmt::Debug;
    const REQUIRED: &'static [&'static str];
    const OPTIONAL: &'static [&'static str];
    fn parse(row: &Self::Row<'_>);
}

struct Borrowers;
struct Contacts;
struct Loans;
struct Installments;
struct Consents;

fn phones() -> &'static PhoneParser {
    static P: OnceLock<PhoneParser> = OnceLock::new();
    P.get_or_init(PhoneParser::default)
}

impl Kind for Borrowers {
    type Row<'a> = BorrowerRow<'a>;
    const REQUIRED: &'static [&'static str] = &["external_id", "name"];
    const OPTIONAL: &'static [&'static str] = &[
        "national_id_scheme",
        "national_id",
        "locale",
        "time_zone",
        "jurisdiction",
    ];
    fn parse(row: &BorrowerRow<'_>) {
        let d = BookDefaults {
            locale: Locale::ZhCn,
            time_zone: chrono_tz::Asia::Shanghai,
            jurisdiction: Jurisdiction::Cn,
        };
        if let Err(errors) = parse::borrower(row, &d) {
            assert!(!errors.is_empty(), "a refused row names no field");
        }
    }
}

impl Kind for Contacts {
    type Row<'a> = ContactRow<'a>;
    const REQUIRED: &'static [&'static str] = &["borrower_id", "slot", "kind", "role", "value", "bound_since"];
    const OPTIONAL: &'static [&'static str] = &["relation", "holder_name", "verified_at"];
    fn parse(row: &ContactRow<'_>) {
        if let Err(errors) = parse::contact(row, phones()) {
            assert!(!errors.is_empty(), "a refused row names no field");
        }
    }
}

impl Kind for Loans {
    type Row<'a> = LoanRow<'a>;
    const REQUIRED: &'static [&'static str] = &[
        "external_id",
        "borrower_id",
        "product",
        "principal",
        "currency",
        "disbursed_on",
    ];
    const OPTIONAL: &'static [&'static str] = &[];
    fn parse(row: &LoanRow<'_>) {
        match parse::loan(row) {
            Ok(loan) => assert!(loan.principal.minor() > 0),
            Err(errors) => assert!(!errors.is_empty(), "a refused row names no field"),
        }
    }
}

impl Kind for Installments {
    type Row<'a> = InstallmentRow<'a>;
    const REQUIRED: &'static [&'static str] = &["loan_id", "seq", "due_date", "amount_due"];
    const OPTIONAL: &'static [&'static str] = &["amount_paid", "paid_at"];
    fn parse(row: &InstallmentRow<'_>) {
        for currency in [Currency::CNY, Currency::JPY] {
            match parse::installment(row, currency) {
                Ok(i) => assert!(i.seq >= 1),
                Err(errors) => assert!(!errors.is_empty(), "a refused row names no field"),
            }
        }
    }
}

impl Kind for Consents {
    type Row<'a> = ConsentRow<'a>;
    const REQUIRED: &'static [&'static str] = &["borrower_id", "purpose", "state", "at", "source", "text_version"];
    const OPTIONAL: &'static [&'static str] = &["channel"];
    fn parse(row: &ConsentRow<'_>) {
        if let Err(errors) = parse::consent(row) {
            assert!(!errors.is_empty(), "a refused row names no field");
        }
    }
}

/// The importer's header check.
fn header_fits<K: Kind>(headers: &csv::StringRecord) -> bool {
    headers
        .iter()
        .all(|h| K::REQUIRED.contains(&h) || K::OPTIONAL.contains(&h))
        && K::REQUIRED.iter().all(|r| headers.iter().any(|h| h == *r))
}

/// Row → JSON → row and row → CSV → row give the same row.
fn round_trip<K: Kind>(row: &K::Row<'_>) {
    let before = serde_json::to_value(row).expect("a row serialises");
    let json = serde_json::to_string(row).expect("a row serialises");
    let back: K::Row<'_> = serde_json::from_str(&json).expect("a row written as JSON reads back");
    assert_eq!(serde_json::to_value(&back).unwrap(), before);

    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(row).expect("a row writes as CSV");
    let bytes = w.into_inner().expect("the CSV writer flushes");
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(bytes.as_slice());
    let headers = rdr.headers().expect("our own header reads").clone();
    assert!(header_fits::<K>(&headers), "our own header does not fit: {headers:?}");
    let mut record = csv::StringRecord::new();
    assert!(rdr.read_record(&mut record).expect("our own record reads"));
    let again: K::Row<'_> = record.deserialize(Some(&headers)).unwrap_or_else(|e| {
        panic!(
            "a row written as CSV does not read back: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        before,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// At most this many rows of a file are parsed (a fuzz input is small anyway).
const MAX_ROWS: usize = 64;

fn csv_file<K: Kind>(data: &[u8]) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(data);
    let Ok(headers) = rdr.headers().cloned() else { return };
    if !header_fits::<K>(&headers) {
        return;
    }
    let mut record = csv::StringRecord::new();
    for _ in 0..MAX_ROWS {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let _ = record.position().map(|p| p.line());
                if let Ok(row) = record.deserialize::<K::Row<'_>>(Some(&headers)) {
                    K::parse(&row);
                    round_trip::<K>(&row);
                }
            }
            Err(e) => {
                let _ = e.position().map(|p| p.line());
                let _ = e.to_string();
            }
        }
    }
}

fn json_lines<K: Kind>(text: &str) {
    for line in text
        .split_inclusive('\n')
        .filter(|l| !l.trim().is_empty())
        .take(MAX_ROWS)
    {
        match serde_json::from_str::<K::Row<'_>>(line) {
            Ok(row) => {
                K::parse(&row);
                round_trip::<K>(&row);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

fn both<K: Kind>(data: &[u8]) {
    csv_file::<K>(data);
    // The importer reads JSON Lines with `read_line` into a String: not UTF-8 is an IO error.
    if let Ok(text) = std::str::from_utf8(data) {
        json_lines::<K>(text);
    }
}

pub fn check(data: &[u8]) {
    both::<Borrowers>(data);
    both::<Contacts>(data);
    both::<Loans>(data);
    both::<Installments>(data);
    both::<Consents>(data);
}
