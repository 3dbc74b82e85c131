//! `reachline import`: validate the whole book (pass 1, nothing written), then write it in one
//! transaction (pass 2). A reader thread parses rows into batches while the store writes the
//! previous batch, so parsing and writing overlap.

use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use reachline_domain::{BorrowerId, ContactAddress, ContactKind, Currency, LineType, LoanId, PhoneParser};
use reachline_store::{ImportReport, Store};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::book::validate::{key, validate, Problems};
use crate::book::{parse, read_rows, Book, BookRow};
use crate::config::BookDefaults;

#[derive(Debug, Serialize)]
pub struct ImportSummary {
    pub book: String,
    pub rows_read: u64,
    pub report: ImportReport,
    pub validate_seconds: f64,
    pub write_seconds: f64,
    pub total_seconds: f64,
    /// Rows read per second over the whole import (validation and writing).
    pub rows_per_second: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Each step of the import in order: its name, seconds, and resident memory at its end
    /// (bytes).
    pub phases: Vec<(String, f64, Option<u64>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("the book has {} error(s); nothing was imported", .0.total)]
pub struct Rejected(pub Problems);

pub struct ImportOptions {
    pub batch_size: usize,
    pub progress: bool,
}

fn bar(total: u64, msg: &'static str, on: bool) -> ProgressBar {
    if !on {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Imports the book in `dir`. On a book with errors returns [`Rejected`] and writes nothing.
pub async fn import(
    store: &dyn Store,
    dir: &Path,
    phones: &PhoneParser,
    defaults: &BookDefaults,
    opts: &ImportOptions,
) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let book = Book::open(dir)?;
    let total = book.total_bytes();

    let pb = bar(total, "validating", opts.progress);
    let (index, problems) = {
        let (book, phones, defaults, pb) = (book.clone(), phones.clone(), *defaults, pb.clone());
        tokio::task::spawn_blocking(move || validate(&book, &phones, &defaults, &|b| pb.set_position(b)))
            .await
            .context("validation thread")??
    };
    pb.finish_and_clear();
    if !problems.is_empty() {
        return Err(Rejected(problems).into());
    }
    let validated = started.elapsed();
    let rows_read: u64 = index.rows.values().sum();
    // Pass 2 needs only the parsed phone numbers; pass 1's id sets are gone, and their memory
    // goes back before the id maps grow.
    let phone_memo = Arc::new(index.phones);
    release_freed_memory();

    let pb = bar(total, "importing", opts.progress);
    let mut tx = store.begin_import(Utc::now()).await?;
    let batch = opts.batch_size;
    let base = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut phases = vec![("validate".to_string(), validated.as_secs_f64(), rss("VmRSS:"))];
    let mut clock = Instant::now();
    let mut lap = |name: &str| {
        phases.push((name.to_string(), clock.elapsed().as_secs_f64(), rss("VmRSS:")));
        clock = Instant::now();
    };

    // Borrowers → ids.
    let mut borrower_ids: FxHashMap<u128, BorrowerId> = FxHashMap::default();
    let d = *defaults;
    let mut rx = stream::<crate::book::Borrowers, _>(&book, batch, &pb, &base, move |r| {
        let b = parse::borrower(&r, &d).map_err(first)?;
        Ok((key(b.external_id.as_str()), b))
    });
    while let Some(rows) = rx.recv().await {
        let rows = rows?;
        let (keys, rows): (Vec<u128>, Vec<_>) = rows.into_iter().unzip();
        let ids = tx.upsert_borrowers(rows).await?;
        borrower_ids.extend(keys.into_iter().zip(ids));
    }
    let borrower_ids = Arc::new(borrower_ids);
    lap("borrowers");

    // Contacts.
    let (p, ids, memo) = (phones.clone(), borrower_ids.clone(), phone_memo.clone());
    let mut row = 0usize;
    let mut rx = stream::<crate::book::Contacts, _>(&book, batch, &pb, &base, move |r| {
        let known = memo.get(row).and_then(|m| m.recall(&r.value));
        row += 1;
        // The remembered number stands in for parsing only where parsing would accept it.
        let (b, c) = parse::contact_with(&r, |kind, value| match (kind, known) {
            (ContactKind::Landline, Some(n)) => Ok(ContactAddress::Phone(n)),
            (ContactKind::Mobile, Some(n))
                if matches!(n.line_type(), LineType::Mobile | LineType::FixedLineOrMobile) =>
            {
                Ok(ContactAddress::Phone(n))
            }
            _ => ContactAddress::parse(kind, value, &p),
        })
        .map_err(first)?;
        Ok((borrower_id(&ids, b.as_str())?, c))
    });
    while let Some(rows) = rx.recv().await {
        tx.upsert_contacts(rows?).await?;
    }
    drop(phone_memo);
    lap("contacts");

    // Loans → ids.
    let mut loan_ids: FxHashMap<u128, (LoanId, Currency)> = FxHashMap::default();
    let ids = borrower_ids.clone();
    let mut rx = stream::<crate::book::Loans, _>(&book, batch, &pb, &base, move |r| {
        let l = parse::loan(&r).map_err(first)?;
        Ok((borrower_id(&ids, l.borrower.as_str())?, l))
    });
    while let Some(rows) = rx.recv().await {
        let rows = rows?;
        let meta: Vec<(u128, Currency)> = rows
            .iter()
            .map(|(_, l)| (key(l.external_id.as_str()), l.currency()))
            .collect();
        let ids = tx.upsert_loans(rows).await?;
        loan_ids.extend(meta.into_iter().zip(ids).map(|((k, c), id)| (k, (id, c))));
    }
    let loan_ids = Arc::new(loan_ids);
    lap("loans");

    // Installments.
    let ids = loan_ids.clone();
    let mut rx = stream::<crate::book::Installments, _>(&book, batch, &pb, &base, move |r| {
        let (id, currency) = *ids
            .get(&key(&r.loan_id))
            .ok_or_else(|| anyhow::anyhow!("loan vanished between passes"))?;
        Ok((id, parse::installment(&r, currency).map_err(first)?))
    });
    while let Some(rows) = rx.recv().await {
        tx.upsert_installments(rows?).await?;
    }
    lap("installments");

    // Consents.
    let ids = borrower_ids.clone();
    let mut rx = stream::<crate::book::Consents, _>(&book, batch, &pb, &base, move |r| {
        let (b, c) = parse::consent(&r).map_err(first)?;
        Ok((borrower_id(&ids, b.as_str())?, c))
    });
    while let Some(rows) = rx.recv().await {
        tx.add_consents(rows?).await?;
    }
    lap("consents");

    pb.set_message("committing");
    let report = tx.commit().await?;
    lap("commit");
    pb.finish_and_clear();
    let total_time = started.elapsed();
    Ok(ImportSummary {
        book: dir.display().to_string(),
        rows_read,
        report,
        validate_seconds: validated.as_secs_f64(),
        write_seconds: (total_time - validated).as_secs_f64(),
        total_seconds: total_time.as_secs_f64(),
        rows_per_second: rows_read as f64 / total_time.as_secs_f64().max(1e-9),
        peak_rss_bytes: peak_rss(),
        phases,
    })
}

fn first(errs: Vec<parse::FieldError>) -> anyhow::Error {
    // Pass 1 accepted this row, so pass 2 cannot fail to parse it unless the file changed
    // under us; say so rather than import something else than what was checked.
    let e = errs
        .into_iter()
        .next()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .unwrap_or_default();
    anyhow::anyhow!("a row that passed validation no longer parses ({e}); was the book changed during the import?")
}

fn borrower_id(ids: &FxHashMap<u128, BorrowerId>, ext: &str) -> anyhow::Result<BorrowerId> {
    ids.get(&key(ext))
        .copied()
        .ok_or_else(|| anyhow::anyhow!("borrower vanished between passes; was the book changed during the import?"))
}

/// Reads the book's file of kind `T::KIND` on a blocking thread, parses each row with `f`, and
/// sends batches of `batch` rows. At most two batches wait, so memory stays bounded.
fn stream<T: BookRow, U: Send + 'static>(
    book: &Book,
    batch: usize,
    pb: &ProgressBar,
    base: &Arc<std::sync::atomic::AtomicU64>,
    mut f: impl for<'a> FnMut(T::Row<'a>) -> anyhow::Result<U> + Send + 'static,
) -> mpsc::Receiver<anyhow::Result<Vec<U>>> {
    let (txc, rx) = mpsc::channel(2);
    let Some((path, format)) = book.file(T::KIND).map(|(p, f)| (p.to_path_buf(), f)) else {
        return rx;
    };
    let (pb, base) = (pb.clone(), base.clone());
    tokio::task::spawn_blocking(move || {
        use std::sync::atomic::Ordering;
        let start = base.load(Ordering::Relaxed);
        let mut last = 0;
        let mut buf = Vec::with_capacity(batch);
        let res = read_rows::<T>(
            &path,
            format,
            |b| {
                last = b;
                pb.set_position(start + b);
            },
            |row| {
                let (_, r) = row.map_err(|(line, reason)| anyhow::anyhow!("line {line}: {reason}"))?;
                buf.push(f(r)?);
                if buf.len() >= batch {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                    // The receiver is gone only if the import already failed; stop reading.
                    txc.blocking_send(Ok(full))
                        .map_err(|_| anyhow::anyhow!("import stopped"))?;
                }
                Ok(())
            },
        );
        base.store(start + last, Ordering::Relaxed);
        let _ = match res {
            Ok(()) if !buf.is_empty() => txc.blocking_send(Ok(buf)),
            Ok(()) => Ok(()),
            Err(e) => txc.blocking_send(Err(e)),
        };
    });
    rx
}

/// Hands memory freed by pass 1 back to the operating system. glibc keeps freed heap pages for
/// reuse, and pass 1's id sets (hundreds of MB for a large book) would otherwise still count
/// against the process while pass 2 builds its own maps.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and takes their locks; it has no
    // preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    rss("VmHWM:")
}

/// A memory figure from `/proc/self/status` (Linux), in bytes.
fn rss(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
