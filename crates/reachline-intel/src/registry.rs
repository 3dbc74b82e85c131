//! The disconnection registry: records loaded from a file into the store, and the recycled-number
//! answers computed from them locally.
//!
//! The file has the FCC Reassigned Numbers Database's data shape: one number and the date it was
//! permanently disconnected per line, as CSV with a header. Accepted headers: `number` (or
//! `phone_number`, `tn`) and `disconnect_date` (or `date`, `disconnected_on`); dates as
//! `YYYY-MM-DD` or `YYYYMMDD`; numbers in E.164, or national form for the configured region (a
//! 10-digit US number is read as +1), quoted or not (read with the `csv` crate). A file loads
//! whole or not at all.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use reachline_domain::date::parse_ymd;
use reachline_domain::{PhoneNumber, PhoneParser};
use reachline_policy::intel::{recycled_since, ChangeSince, NumberStatus, RecycleAnswer};
use reachline_store::Store;

use crate::{unsupported, NumberIntel, Query, Result};

/// Answers recycled-number questions from the loaded records.
pub struct RegistryIntel {
    store: Arc<dyn Store>,
    complete_since: NaiveDate,
}

impl RegistryIntel {
    pub fn new(store: Arc<dyn Store>, complete_since: NaiveDate) -> Self {
        Self { store, complete_since }
    }
}

#[async_trait]
impl NumberIntel for RegistryIntel {
    fn name(&self) -> &str {
        "registry"
    }

    async fn status(&self, _: &PhoneNumber) -> Result<NumberStatus> {
        unsupported(self.name(), Query::Status)
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer> {
        let last = self.store.last_disconnect(number).await?;
        Ok(recycled_since(last, since, self.complete_since))
    }

    async fn sim_swap_since(&self, _: &PhoneNumber, _: NaiveDate) -> Result<ChangeSince> {
        unsupported(self.name(), Query::SimSwap)
    }

    async fn ported_since(&self, _: &PhoneNumber, _: NaiveDate) -> Result<ChangeSince> {
        unsupported(self.name(), Query::Ported)
    }
}

/// A line of a disconnection file that cannot be read. Names the line and field, never the
/// number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, field {field}: {message}")]
pub struct DisconnectError {
    pub line: usize,
    pub field: &'static str,
    pub message: String,
}

/// Reads a whole disconnection file. Every bad line is reported (up to `max_errors`); rows are
/// returned only when there is none.
pub fn parse_disconnects(
    text: &str,
    phones: &PhoneParser,
    max_errors: usize,
) -> std::result::Result<Vec<(PhoneNumber, NaiveDate)>, Vec<DisconnectError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let bad_header = |message: String| {
        vec![DisconnectError {
            line: 1,
            field: "header",
            message,
        }]
    };
    let cols: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return Err(bad_header(e.to_string())),
    };
    if cols.iter().all(|c| c.is_empty()) {
        return Err(bad_header("the file is empty".into()));
    }
    let find = |names: &[&str]| cols.iter().position(|c| names.contains(&c.as_str()));
    let (Some(num_col), Some(date_col)) = (
        find(&["number", "phone_number", "tn"]),
        find(&["disconnect_date", "date", "disconnected_on"]),
    ) else {
        return Err(bad_header(format!(
            "expected columns number (or phone_number, tn) and disconnect_date (or date, disconnected_on); found {}",
            cols.join(", ")
        )));
    };
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                // The csv error names the position and the kind of fault, not the field's text.
                errors.push(DisconnectError {
                    line,
                    field: "record",
                    message: "not a well-formed CSV record".into(),
                });
                if errors.len() >= max_errors {
                    break;
                }
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        let number = match phones.parse(record.get(num_col).unwrap_or("")) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(DisconnectError {
                    line,
                    field: "number",
                    message: e.to_string(),
                });
                None
            }
        };
        let raw = record.get(date_col).unwrap_or("");
        let date = parse_ymd(raw).or_else(|| NaiveDate::parse_from_str(raw, "%Y%m%d").ok());
        if date.is_none() {
            errors.push(DisconnectError {
                line,
                field: "disconnect_date",
                message: format!("{raw:?} is not a date (YYYY-MM-DD or YYYYMMDD)"),
            });
        }
        if let (Some(p), Some(d)) = (number, date) {
            rows.push((p, d));
        }
        if errors.len() >= max_errors {
            break;
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> PhoneParser {
        PhoneParser::new("US", Vec::new()).unwrap()
    }

    #[test]
    fn reads_both_date_forms_and_national_numbers() {
        let rows = parse_disconnects(
            "phone_number,disconnect_date\n2025550123,2023-04-01\n\"+1 202 555 0124\",20240915\n",
            &us(),
            10,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.e164(), "+12025550123");
        assert_eq!(rows[1].1, NaiveDate::from_ymd_opt(2024, 9, 15).unwrap());
    }

    #[test]
    fn every_bad_line_is_named_without_echoing_the_number() {
        let errs = parse_disconnects(
            "number,date\n2025550123,2023-04-01\n99,2023-01-01\n2025550125,last week\n",
            &us(),
            10,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].field), (3, "number"));
        assert_eq!((errs[1].line, errs[1].field), (4, "disconnect_date"));
        for e in &errs {
            assert!(!e.to_string().contains("2025550125"), "{e}");
        }
    }

    #[test]
    fn a_file_without_the_columns_is_refused() {
        let errs = parse_disconnects("msisdn,when\n1,2\n", &us(), 10).unwrap_err();
        assert_eq!(errs[0].field, "header");
        assert!(errs[0].to_string().contains("msisdn, when"));
    }
}
