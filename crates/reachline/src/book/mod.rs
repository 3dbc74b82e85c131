//! The loan-book format (see `docs/book-format.md`): one file per kind of record, as CSV with a
//! header row or as JSON Lines, read as streams of rows with their line numbers.

pub mod gen;
pub mod validate;

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use reachline_book::parse;
pub use reachline_book::rows::{BorrowerRow, ConsentRow, ContactRow, InstallmentRow, LoanRow, Text};

/// The kinds of file in a book, in the order they are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Borrowers,
    Contacts,
    Loans,
    Installments,
    Consents,
}

impl FileKind {
    pub const ALL: [FileKind; 5] = [
        FileKind::Borrowers,
        FileKind::Contacts,
        FileKind::Loans,
        FileKind::Installments,
        FileKind::Consents,
    ];

    pub fn stem(self) -> &'static str {
        match self {
            FileKind::Borrowers => "borrowers",
            FileKind::Contacts => "contacts",
            FileKind::Loans => "loans",
            FileKind::Installments => "installments",
            FileKind::Consents => "consents",
        }
    }

    /// Consents may be left out of a book; everything else is required.
    pub fn required(self) -> bool {
        !matches!(self, FileKind::Consents)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }
}

/// A book on disk: which files it has, in which format.
#[derive(Debug, Clone)]
pub struct Book {
    pub files: Vec<(FileKind, PathBuf, Format)>,
}

impl Book {
    /// Finds the book's files in `dir`. Each kind must be present once, as `.csv` or `.jsonl`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory holding a loan book", dir.display());
        }
        let mut files = Vec::new();
        for kind in FileKind::ALL {
            let csv = dir.join(format!("{}.csv", kind.stem()));
            let jsonl = dir.join(format!("{}.jsonl", kind.stem()));
            match (csv.exists(), jsonl.exists()) {
                (true, true) => anyhow::bail!(
                    "{} has both {}.csv and {}.jsonl; keep one",
                    dir.display(),
                    kind.stem(),
                    kind.stem()
                ),
                (true, false) => files.push((kind, csv, Format::Csv)),
                (false, true) => files.push((kind, jsonl, Format::JsonLines)),
                (false, false) if kind.required() => anyhow::bail!(
                    "{} has no {}.csv (or {}.jsonl); a book needs borrowers, contacts, loans and installments",
                    dir.display(),
                    kind.stem(),
                    kind.stem()
                ),
                (false, false) => {}
            }
        }
        Ok(Self { files })
    }

    pub fn file(&self, kind: FileKind) -> Option<(&Path, Format)> {
        self.files
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, p, f)| (p.as_path(), *f))
    }

    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|(_, p, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Where a problem is: file name, line (1-based; the CSV header is line 1) and field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub field: Option<&'static str>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(field) = self.field {
            write!(f, ": field {field}")?;
        }
        Ok(())
    }
}

/// A row type of the book, with the columns its CSV header must and may hold.
///
/// Rows borrow their text from the reader's buffer (`Cow`), so reading a row allocates nothing
/// unless a JSON string holds escapes.
pub trait BookRow: Send + 'static {
    type Row<'a>: Deserialize<'a>;
    const KIND: FileKind;
    const REQUIRED: &'static [&'static str];
    const OPTIONAL: &'static [&'static str];
}

/// Checks a CSV header once, so a missing or misspelt column is one error on line 1 rather than
/// one on every row.
fn check_header<T: BookRow>(headers: &csv::StringRecord) -> Result<(), String> {
    for h in headers {
        if !T::REQUIRED.contains(&h) && !T::OPTIONAL.contains(&h) {
            return Err(format!(
                "unknown column {h:?}; expected columns: {}",
                T::REQUIRED
                    .iter()
                    .chain(T::OPTIONAL)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(missing) = T::REQUIRED.iter().find(|r| !headers.iter().any(|h| h == **r)) {
        return Err(format!("missing required column {missing:?}"));
    }
    Ok(())
}

/// A file-level problem that stops a file from being read at all (its header, or IO).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct FileError {
    pub line: u64,
    pub reason: String,
}

/// One row read from a book file, or why it could not be read.
pub type RowResult<T> = Result<(u64, T), (u64, String)>;

/// Reads rows of type `T` from a CSV or JSON Lines file, calling `f` with each row's line number
/// and content (or the reason it could not be read), and `progress` with bytes read so far.
///
/// A header that does not fit `T`, or a file that cannot be opened, is a [`FileError`].
pub fn read_rows<T: BookRow>(
    path: &Path,
    format: Format,
    mut progress: impl FnMut(u64),
    mut f: impl FnMut(RowResult<T::Row<'_>>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = File::open(path).map_err(|e| FileError {
        line: 0,
        reason: format!("cannot be opened: {e}"),
    })?;
    let reader = BufReader::with_capacity(1 << 20, file);
    match format {
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(true)
                .trim(csv::Trim::Headers)
                .from_reader(reader);
            let headers = rdr
                .headers()
                .map_err(|e| FileError {
                    line: 1,
                    reason: format!("header row cannot be read: {}", csv_reason(&e)),
                })?
                .clone();
            check_header::<T>(&headers).map_err(|reason| FileError { line: 1, reason })?;
            let mut record = csv::StringRecord::new();
            let mut n = 0u64;
            loop {
                match rdr.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map(|p| p.line()).unwrap_or(0);
                        let row = record
                            .deserialize::<T::Row<'_>>(Some(&headers))
                            .map_err(|e| (line, csv_reason(&e)));
                        f(row.map(|r| (line, r)))?;
                    }
                    Err(e) => {
                        let line = e.position().map(|p| p.line()).unwrap_or(0);
                        f(Err((line, csv_reason(&e))))?;
                    }
                }
                n += 1;
                if n % 4096 == 0 {
                    progress(rdr.position().byte());
                }
            }
            progress(rdr.position().byte());
        }
        Format::JsonLines => {
            let mut bytes = 0u64;
            let mut buf = String::new();
            let mut reader = reader;
            let mut line = 0u64;
            loop {
                buf.clear();
                let n = reader.by_ref().read_line(&mut buf)?;
                if n == 0 {
                    break;
                }
                line += 1;
                bytes += n as u64;
                if buf.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<T::Row<'_>>(&buf).map_err(|e| (line, json_reason(&e)));
                f(row.map(|r| (line, r)))?;
                if line % 4096 == 0 {
                    progress(bytes);
                }
            }
            progress(bytes);
        }
    }
    Ok(())
}

/// The csv crate's message, without the position it repeats (we print our own) and without the
/// offending value (it may be personal data).
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("row has {len} fields; the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "row is not valid UTF-8".into(),
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!("field {}: {}", i + 1, deserialize_reason(err)),
            None => deserialize_reason(err),
        },
        _ => e.to_string(),
    }
}

fn deserialize_reason(err: &csv::DeserializeError) -> String {
    match err.kind() {
        csv::DeserializeErrorKind::Message(m) => m.clone(),
        csv::DeserializeErrorKind::Unsupported(m) => format!("unsupported: {m}"),
        _ => "value has the wrong type".into(),
    }
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json quotes names and values in backticks or double quotes ("invalid type: integer
    // `13812345678`, expected a string"). Field names are kept; anything else may be personal
    // data and is cut out.
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    let mut out = String::with_capacity(msg.len());
    let mut quoted: Option<(char, String)> = None;
    for c in msg.chars() {
        match &mut quoted {
            None if c == '`' || c == '"' => quoted = Some((c, String::new())),
            None => out.push(c),
            Some((q, text)) if c == *q => {
                let name = !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                out.push(*q);
                out.push_str(if name { text } else { "…" });
                out.push(*q);
                quoted = None;
            }
            Some((_, text)) => text.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_keep_field_names_and_drop_values() {
        let e = serde_json::from_str::<ContactRow<'_>>(r#"{"borrower_id": 13812345678}"#).unwrap_err();
        let r = json_reason(&e);
        assert!(!r.contains("13812345678"), "{r}");
        let e = serde_json::from_str::<LoanRow<'_>>(r#"{"external_id": "L1"}"#).unwrap_err();
        assert_eq!(json_reason(&e), "missing field `borrower_id`");
    }
}

macro_rules! book_row {
    ($marker:ident, $ty:ident, $kind:expr, required: [$($r:literal),*], optional: [$($o:literal),*]) => {
        #[doc = concat!("The `", stringify!($marker), "` file of a book.")]
        pub struct $marker;
        impl BookRow for $marker {
            type Row<'a> = $ty<'a>;
            const KIND: FileKind = $kind;
            const REQUIRED: &'static [&'static str] = &[$($r),*];
            const OPTIONAL: &'static [&'static str] = &[$($o),*];
        }
    };
}

book_row!(Borrowers, BorrowerRow, FileKind::Borrowers,
    required: ["external_id", "name"],
    optional: ["national_id_scheme", "national_id", "locale", "time_zone", "jurisdiction"]);
book_row!(Contacts, ContactRow, FileKind::Contacts,
    required: ["borrower_id", "slot", "kind", "role", "value", "bound_since"],
    optional: ["relation", "holder_name", "verified_at"]);
book_row!(Loans, LoanRow, FileKind::Loans,
    required: ["external_id", "borrower_id", "product", "principal", "currency", "disbursed_on"],
    optional: []);
book_row!(Installments, InstallmentRow, FileKind::Installments,
    required: ["loan_id", "seq", "due_date", "amount_due"],
    optional: ["amount_paid", "paid_at"]);
book_row!(Consents, ConsentRow, FileKind::Consents,
    required: ["borrower_id", "purpose", "state", "at", "source", "text_version"],
    optional: ["channel"]);
