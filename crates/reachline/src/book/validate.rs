//! The first pass of an import: reads the whole book, checks every row and every reference
//! between files, and writes nothing. Only a book without a single error goes on to be written.
//!
//! Memory stays bounded by the number of ids, not the size of the book: ids are kept as 128-bit
//! hashes (xxh3-128; the chance of two distinct ids colliding in a book of ten million is below
//! 10^-24), and an installment's sequence numbers as a bit set per loan.

use std::collections::{HashMap, HashSet};

use reachline_domain::{Currency, PhoneParser};
use serde::Serialize;

use super::{parse, read_rows, Book, BookRow, FileError, Location};
use crate::config::BookDefaults;

/// How many problems are reported in full; the rest are counted.
pub const MAX_REPORTED: usize = 100;

pub fn key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.trim().as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub at: Location,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Problems {
    pub first: Vec<Problem>,
    pub total: u64,
}

impl Problems {
    fn push(
        &mut self,
        file: &str,
        line: u64,
        field: Option<&'static str>,
        reason: impl Into<String>,
    ) {
        self.total += 1;
        if self.first.len() < MAX_REPORTED {
            self.first.push(Problem {
                at: Location {
                    file: file.to_string(),
                    line,
                    field,
                },
                reason: reason.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// What pass 1 learnt that pass 2 needs: which loans exist and in which currency.
#[derive(Debug, Default)]
pub struct Index {
    pub borrowers: HashSet<u128>,
    pub loans: HashMap<u128, LoanInfo>,
    pub rows: HashMap<&'static str, u64>,
}

#[derive(Debug, Clone)]
pub struct LoanInfo {
    pub currency: Currency,
    /// Sequence numbers seen: bit `s - 1` for s in 1..=64, the rest in `more`.
    seqs: u64,
    more: Option<Box<HashSet<u32>>>,
}

impl LoanInfo {
    fn new(currency: Currency) -> Self {
        Self {
            currency,
            seqs: 0,
            more: None,
        }
    }

    /// Records `seq`; false if it was already there.
    fn insert(&mut self, seq: u32) -> bool {
        if (1..=64).contains(&seq) {
            let bit = 1u64 << (seq - 1);
            let fresh = self.seqs & bit == 0;
            self.seqs |= bit;
            fresh
        } else {
            self.more.get_or_insert_with(Default::default).insert(seq)
        }
    }
}

/// Reads and checks every file of `book`; `progress` gets the bytes read so far across files.
pub fn validate(
    book: &Book,
    phones: &PhoneParser,
    defaults: &BookDefaults,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<(Index, Problems)> {
    let mut problems = Problems::default();
    let mut index = Index::default();
    let mut done = 0u64;

    // Borrowers.
    let mut first_line: HashMap<u128, u64> = HashMap::new();
    let n_borrowers = each::<super::BorrowerRow>(
        book,
        &mut problems,
        &mut done,
        progress,
        |name, problems, line, row| {
            let id = key(&row.external_id);
            if !row.external_id.trim().is_empty() {
                if let Some(prev) = first_line.get(&id) {
                    problems.push(
                        name,
                        line,
                        Some("external_id"),
                        format!("duplicate borrower id; first seen on line {prev}"),
                    );
                } else {
                    first_line.insert(id, line);
                    index.borrowers.insert(id);
                }
            }
            report(problems, name, line, parse::borrower(&row, defaults));
        },
    )?;
    drop(first_line);

    // Contacts: the borrower must be in the book, and a slot given once per borrower.
    let mut slots: HashSet<u128> = HashSet::new();
    let n_contacts = each::<super::ContactRow>(
        book,
        &mut problems,
        &mut done,
        progress,
        |name, problems, line, row| {
            let b = key(&row.borrower_id);
            if !row.borrower_id.trim().is_empty() && !index.borrowers.contains(&b) {
                problems.push(
                    name,
                    line,
                    Some("borrower_id"),
                    "no borrower with this id in borrowers file",
                );
            }
            let slot = key(&format!(
                "{}\u{0}{}",
                row.borrower_id.trim(),
                row.slot.trim()
            ));
            if !row.slot.trim().is_empty() && !slots.insert(slot) {
                problems.push(
                    name,
                    line,
                    Some("slot"),
                    "this borrower already has a contact in this slot earlier in the file",
                );
            }
            report(problems, name, line, parse::contact(&row, phones));
        },
    )?;
    drop(slots);

    // Loans.
    let n_loans = each::<super::LoanRow>(
        book,
        &mut problems,
        &mut done,
        progress,
        |name, problems, line, row| {
            if !row.borrower_id.trim().is_empty()
                && !index.borrowers.contains(&key(&row.borrower_id))
            {
                problems.push(
                    name,
                    line,
                    Some("borrower_id"),
                    "no borrower with this id in borrowers file",
                );
            }
            let parsed = parse::loan(&row);
            let id = key(&row.external_id);
            if !row.external_id.trim().is_empty() {
                if index.loans.contains_key(&id) {
                    problems.push(name, line, Some("external_id"), "duplicate loan id");
                } else if let Ok(l) = &parsed {
                    index.loans.insert(id, LoanInfo::new(l.currency()));
                }
            }
            report(problems, name, line, parsed);
        },
    )?;

    // Installments: in a known loan's currency, each sequence number once per loan.
    let n_installments = each::<super::InstallmentRow>(
        book,
        &mut problems,
        &mut done,
        progress,
        |name, problems, line, row| {
            let Some(info) = index.loans.get_mut(&key(&row.loan_id)) else {
                if !row.loan_id.trim().is_empty() {
                    problems.push(
                        name,
                        line,
                        Some("loan_id"),
                        "no valid loan with this id in loans file",
                    );
                }
                return;
            };
            let parsed = parse::installment(&row, info.currency);
            if let Ok(i) = &parsed {
                if !info.insert(i.seq) {
                    problems.push(
                        name,
                        line,
                        Some("seq"),
                        "this loan already has an installment with this seq",
                    );
                }
            }
            report(problems, name, line, parsed);
        },
    )?;

    // Consents.
    let n_consents = each::<super::ConsentRow>(
        book,
        &mut problems,
        &mut done,
        progress,
        |name, problems, line, row| {
            if !row.borrower_id.trim().is_empty()
                && !index.borrowers.contains(&key(&row.borrower_id))
            {
                problems.push(
                    name,
                    line,
                    Some("borrower_id"),
                    "no borrower with this id in borrowers file",
                );
            }
            report(problems, name, line, parse::consent(&row));
        },
    )?;

    index.rows = HashMap::from([
        ("borrowers", n_borrowers),
        ("contacts", n_contacts),
        ("loans", n_loans),
        ("installments", n_installments),
        ("consents", n_consents),
    ]);
    Ok((index, problems))
}

fn report<T>(problems: &mut Problems, file: &str, line: u64, r: Result<T, Vec<parse::FieldError>>) {
    if let Err(errs) = r {
        for e in errs {
            problems.push(file, line, Some(e.field), e.reason);
        }
    }
}

/// Reads every row of the book's file of kind `T::KIND` (if the book has one), sending
/// unreadable rows and file-level errors to `problems` and readable rows to `f`.
fn each<T: BookRow>(
    book: &Book,
    problems: &mut Problems,
    done: &mut u64,
    progress: &(dyn Fn(u64) + Sync),
    mut f: impl FnMut(&str, &mut Problems, u64, T),
) -> anyhow::Result<u64> {
    let Some((path, format)) = book.file(T::KIND) else {
        return Ok(0);
    };
    let mut rows = 0u64;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = *done;
    let mut last = 0;
    let res = read_rows::<T>(
        path,
        format,
        |b| {
            last = b;
            progress(base + b)
        },
        |row| {
            rows += 1;
            match row {
                Ok((line, r)) => f(&name, problems, line, r),
                Err((line, reason)) => problems.push(&name, line, None, reason),
            }
            Ok(())
        },
    );
    *done = base + last;
    match res {
        Ok(()) => Ok(rows),
        Err(e) => match e.downcast::<FileError>() {
            Ok(fe) => {
                problems.push(&name, fe.line, None, fe.reason);
                Ok(rows)
            }
            Err(e) => Err(e),
        },
    }
}
