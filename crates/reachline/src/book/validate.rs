//! The first pass of an import: reads the whole book, checks every row and every reference
//! between files, and writes nothing. Only a book without a single error goes on to be written.
//!
//! Memory stays bounded by the number of ids, not the size of the book: ids are kept as 128-bit
//! hashes (xxh3-128; the chance of two distinct ids colliding in a book of ten million is below
//! 10^-24), and an installment's sequence numbers as a bit set per loan.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rustc_hash::{FxHashMap, FxHashSet};

use reachline_domain::{ContactAddress, Currency, LineType, PhoneNumber, PhoneParser};
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
    fn push(&mut self, file: &str, line: u64, field: Option<&'static str>, reason: impl Into<String>) {
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

    /// Appends `other`'s problems after this one's, keeping the cap.
    fn absorb(&mut self, other: Problems) {
        self.total += other.total;
        let room = MAX_REPORTED.saturating_sub(self.first.len());
        self.first.extend(other.first.into_iter().take(room));
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// What pass 1 learnt that pass 2 needs: row counts, and each contact's parsed number.
#[derive(Debug, Default)]
pub struct Index {
    pub rows: HashMap<&'static str, u64>,
    /// Each contact row's parsed phone number, in file order, so the second pass need not parse
    /// numbers again (libphonenumber's checks are the dearest step of an import).
    pub phones: Vec<PhoneMemo>,
}

/// A phone number as the first pass parsed it, with a check of the text it came from; 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhoneMemo {
    /// The E.164 digits (at most 15, so they fit), or 0 when the row held no phone number.
    digits: u64,
    line: u8,
    /// Low bits of a hash of the raw text, to notice a file that changed between passes.
    check: u32,
}

impl PhoneMemo {
    fn of(raw: &str, address: Option<&ContactAddress>) -> Self {
        match address {
            Some(ContactAddress::Phone(n)) => Self {
                digits: n.e164()[1..].parse().unwrap_or(0),
                line: LineType::ALL.iter().position(|l| *l == n.line_type()).unwrap_or(0) as u8,
                check: xxhash_rust::xxh3::xxh3_64(raw.as_bytes()) as u32,
            },
            _ => Self::default(),
        }
    }

    /// The number remembered for a row whose raw text is `raw`, if it is the same text.
    pub fn recall(&self, raw: &str) -> Option<PhoneNumber> {
        if self.digits == 0 || self.check != xxhash_rust::xxh3::xxh3_64(raw.as_bytes()) as u32 {
            return None;
        }
        PhoneNumber::from_trusted_e164(&format!("+{}", self.digits), LineType::ALL[self.line as usize]).ok()
    }
}

#[derive(Debug, Clone)]
pub struct LoanInfo {
    pub currency: Option<Currency>,
    /// Sequence numbers seen: bit `s - 1` for s in 1..=64, the rest in `more`.
    seqs: u64,
    // Boxed to keep `LoanInfo` small: almost no loan has a sequence number over 64.
    #[allow(clippy::box_collection)]
    more: Option<Box<HashSet<u32>>>,
}

impl LoanInfo {
    fn new(currency: Option<Currency>) -> Self {
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

/// Publishes an empty id set if the borrowers were never published (the thread reading them
/// panicked), so the contacts thread stops waiting and the panic can surface.
struct Publish<'a>(&'a OnceLock<FxHashSet<u128>>);

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(FxHashSet::default());
    }
}

/// What the second validation thread found: each file's problems and row count.
struct MoneyFiles {
    p_borrowers: Problems,
    n_borrowers: u64,
    p_loans: Problems,
    p_inst: Problems,
    n_loans: u64,
    n_inst: u64,
    p_consents: Problems,
    n_consents: u64,
}

/// Reads and checks every file of `book`; `progress` gets the bytes read so far across files.
///
/// Contacts are checked on one thread (numbers are the dearest check), and borrowers, loans,
/// installments and consents, in that order, on another.
pub fn validate(
    book: &Book,
    phones: &PhoneParser,
    defaults: &BookDefaults,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<(Index, Problems)> {
    let done = AtomicU64::new(0);
    let progress = &|delta: u64| progress(done.fetch_add(delta, Ordering::Relaxed) + delta);
    let mut index = Index::default();
    // The borrowers' ids, once the money thread has read them; every other file refers to them.
    let borrowers_read: OnceLock<FxHashSet<u128>> = OnceLock::new();
    let borrowers_read = &borrowers_read;
    let known = |borrowers: &FxHashSet<u128>, problems: &mut Problems, name: &str, line: u64, id: &str| {
        if !id.trim().is_empty() && !borrowers.contains(&key(id)) {
            problems.push(
                name,
                line,
                Some("borrower_id"),
                "no borrower with this id in borrowers file",
            );
        }
    };

    // Contacts get a thread of their own: parsing numbers costs more than all other files. It
    // starts at once; rows read before the borrowers are known have their reference checked
    // as soon as they are.
    let people = || -> anyhow::Result<(Problems, u64, Vec<PhoneMemo>)> {
        let started = std::time::Instant::now();
        // Contacts: the borrower must be in the book, and a slot given once per borrower.
        let mut p_contacts = Problems::default();
        let mut slots: FxHashSet<u128> = FxHashSet::default();
        let mut phone_cache = Vec::new();
        let mut waiting: Vec<(u64, String)> = Vec::new();
        let mut file = String::new();
        let n_contacts = each::<super::Contacts>(book, &mut p_contacts, progress, |name, problems, line, row| {
            match borrowers_read.get() {
                Some(borrowers) => {
                    for (line, id) in waiting.drain(..) {
                        known(borrowers, problems, name, line, &id);
                    }
                    known(borrowers, problems, name, line, &row.borrower_id);
                }
                None => {
                    waiting.push((line, row.borrower_id.to_string()));
                    if file.is_empty() {
                        file = name.to_string();
                    }
                }
            }
            let slot = key(&format!("{}\u{0}{}", row.borrower_id.trim(), row.slot.trim()));
            if !row.slot.trim().is_empty() && !slots.insert(slot) {
                let reason = "this borrower already has a contact in this slot earlier in the file";
                problems.push(name, line, Some("slot"), reason);
            }
            let parsed = parse::contact(&row, phones);
            phone_cache.push(PhoneMemo::of(&row.value, parsed.as_ref().ok().map(|(_, c)| &c.address)));
            report(problems, name, line, parsed);
        })?;
        drop(slots);
        if !waiting.is_empty() {
            let borrowers = borrowers_read.wait();
            for (line, id) in waiting.drain(..) {
                known(borrowers, &mut p_contacts, &file, line, &id);
            }
            p_contacts.first.sort_by_key(|p| p.at.line);
        }
        phone_cache.shrink_to_fit();
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "contacts checked");
        Ok((p_contacts, n_contacts, phone_cache))
    };

    let money = || -> anyhow::Result<MoneyFiles> {
        let started = std::time::Instant::now();
        let _unblock = Publish(borrowers_read);
        // Borrowers.
        let mut p_borrowers = Problems::default();
        let mut first_line: FxHashMap<u128, u64> = FxHashMap::default();
        let mut ids: FxHashSet<u128> = FxHashSet::default();
        let n_borrowers = each::<super::Borrowers>(book, &mut p_borrowers, progress, |name, problems, line, row| {
            let id = key(&row.external_id);
            if !row.external_id.trim().is_empty() {
                if let Some(prev) = first_line.get(&id) {
                    let reason = format!("duplicate borrower id; first seen on line {prev}");
                    problems.push(name, line, Some("external_id"), reason);
                } else {
                    first_line.insert(id, line);
                    ids.insert(id);
                }
            }
            report(problems, name, line, parse::borrower(&row, defaults));
        });
        drop(first_line);
        // Published even after an error, so the contacts thread never waits forever.
        let _ = borrowers_read.set(ids);
        let n_borrowers = n_borrowers?;
        let borrowers = borrowers_read.get().expect("set just above");
        let mut loans: FxHashMap<u128, LoanInfo> = FxHashMap::default();
        let mut p_loans = Problems::default();
        let n_loans = each::<super::Loans>(book, &mut p_loans, progress, |name, problems, line, row| {
            known(borrowers, problems, name, line, &row.borrower_id);
            let id = key(&row.external_id);
            if !row.external_id.trim().is_empty() {
                match loans.entry(id) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        problems.push(name, line, Some("external_id"), "duplicate loan id");
                    }
                    // Registered even when another field is wrong, so the loan's installments are
                    // still checked and do not each report a missing loan.
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(LoanInfo::new(row.currency.parse().ok()));
                    }
                }
            }
            report(problems, name, line, parse::loan(&row));
        })?;
        // Installments: in a known loan's currency, each sequence number once per loan.
        let mut p_inst = Problems::default();
        let n_inst = each::<super::Installments>(book, &mut p_inst, progress, |name, problems, line, row| {
            let Some(info) = loans.get_mut(&key(&row.loan_id)) else {
                if !row.loan_id.trim().is_empty() {
                    problems.push(name, line, Some("loan_id"), "no valid loan with this id in loans file");
                }
                return;
            };
            // A loan whose currency is wrong is reported once, on its own line; its
            // installments' amounts cannot be read without one.
            let Some(currency) = info.currency else { return };
            let parsed = parse::installment(&row, currency);
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
        })?;
        let mut p_consents = Problems::default();
        let n_consents = each::<super::Consents>(book, &mut p_consents, progress, |name, problems, line, row| {
            known(borrowers, problems, name, line, &row.borrower_id);
            report(problems, name, line, parse::consent(&row));
        })?;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "borrowers, loans, installments and consents checked"
        );
        Ok(MoneyFiles {
            p_borrowers,
            n_borrowers,
            p_loans,
            p_inst,
            n_loans,
            n_inst,
            p_consents,
            n_consents,
        })
    };

    let (people, money) = std::thread::scope(|s| {
        let people = s.spawn(people);
        let money = money();
        // A panic on the other thread is a bug; carry it over rather than hide it.
        (people.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), money)
    });
    let (p_contacts, n_contacts, phone_cache) = people?;
    index.phones = phone_cache;
    let money = money?;
    index.rows = HashMap::from([
        ("borrowers", money.n_borrowers),
        ("contacts", n_contacts),
        ("loans", money.n_loans),
        ("installments", money.n_inst),
        ("consents", money.n_consents),
    ]);
    // Reported in file order, whatever order the threads finished in.
    let mut problems = money.p_borrowers;
    for p in [p_contacts, money.p_loans, money.p_inst, money.p_consents] {
        problems.absorb(p);
    }
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
    progress: &(dyn Fn(u64) + Sync),
    mut f: impl FnMut(&str, &mut Problems, u64, T::Row<'_>),
) -> anyhow::Result<u64> {
    let Some((path, format)) = book.file(T::KIND) else {
        return Ok(0);
    };
    let mut rows = 0u64;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = 0;
    let res = read_rows::<T>(
        path,
        format,
        |b| {
            progress(b - last);
            last = b;
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
