//! Erasure (PIPL art. 47) as the API, the command line and the retention job carry it out:
//! check the retention rules, shred the borrower in the database (see
//! `reachline_store::privacy`), record the erasure as a ledger leaf, and shred the borrower in
//! the backups `reachline backup` wrote.
//!
//! An erasure is refused while an installment is unpaid (the contract still needs the data,
//! art. 13(2)); asked before the collection-record floor has run from the borrower's last
//! contact, it is refused with the date it becomes possible, or — asked "when allowed" — kept
//! as a request the retention job carries out on that date. Erasing an erased borrower
//! completes what an interrupted erasure left (the leaf, the backups) and changes nothing else.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use reachline_domain::BorrowerId;
use reachline_store::ledger::Sequencer;
use reachline_store::privacy::{ErasureRequest, ErasureRow, RetentionRules, Shredded};
use reachline_store::{StoreError, Stores};
use serde::Serialize;
use utoipa::ToSchema;

/// What erasure needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct PrivacySettings {
    pub retention: RetentionRules,
    /// Where `reachline backup` writes; erasure shreds the borrower in the SQLite backups there.
    pub backup_dir: Option<PathBuf>,
}

/// Why an erasure was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error(
        "the borrower has {0} unpaid installment(s): their data is needed to perform the loan \
         contract (PIPL art. 13(2)); erase once the loan is settled"
    )]
    Unpaid(u64),
    #[error(
        "collection records are kept {days} days after the last contact (retention.collection_min_days): \
         the borrower can be erased from {from}; ask again then, or ask to erase when allowed"
    )]
    TooEarly { from: DateTime<Utc>, days: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the erasure is done but its ledger leaf could not be written ({0}); erase again to complete it")]
    Ledger(String),
    #[error("the erasure is done but backup {file} could not be shredded ({error}); erase again to complete it")]
    Backup { file: String, error: String },
}

/// What an erasure did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureOutcome {
    /// `erased`, `already_erased` (completed if it was interrupted) or `scheduled`.
    pub state: &'static str,
    /// When the data was erased.
    pub erased_at: Option<DateTime<Utc>>,
    /// When a scheduled erasure will be carried out.
    pub not_before: Option<DateTime<Utc>>,
    /// The ledger leaf recording the erasure (none when this process keeps no ledger).
    pub ledger_index: Option<u64>,
    /// What was overwritten, by count (this call's; zero for `already_erased`).
    #[schema(value_type = Object)]
    pub shredded: Shredded,
    /// Backups in the backup directory in which the borrower was shredded now.
    pub backups_shredded: u64,
    /// Backups there that erasure cannot rewrite (PostgreSQL dumps), which still hold the
    /// borrower's wrapped key until they are deleted.
    pub backups_not_shredded: Vec<String>,
}

/// One erasure to carry out.
#[derive(Debug, Clone)]
pub struct EraseAsk<'a> {
    pub borrower: BorrowerId,
    /// Who asks: `cli:<user>`, `token:<id>`, `retention-job`.
    pub actor: &'a str,
    /// `borrower_request` or `retention`.
    pub basis: &'a str,
    /// Why, checked by the caller to hold no address or number.
    pub reason: &'a str,
    /// If the retention floor has not run yet: keep the request for the retention job instead
    /// of refusing.
    pub when_allowed: bool,
}

/// Carries out (or schedules, or completes) one erasure.
pub async fn erase(
    stores: &Stores,
    sequencer: Option<&Sequencer>,
    settings: &PrivacySettings,
    ask: &EraseAsk<'_>,
    now: DateTime<Utc>,
) -> Result<ErasureOutcome, EraseError> {
    let facts = stores.privacy.erasure_facts(ask.borrower).await?;
    let mut out = ErasureOutcome {
        state: "erased",
        erased_at: None,
        not_before: None,
        ledger_index: None,
        shredded: Shredded::default(),
        backups_shredded: 0,
        backups_not_shredded: Vec::new(),
    };
    let row = match facts.erased {
        Some(row) => {
            out.state = "already_erased";
            row
        }
        None => {
            if facts.unpaid_installments > 0 {
                return Err(EraseError::Unpaid(facts.unpaid_installments));
            }
            if let Some(from) = settings.retention.erasable_from(facts.last_contact) {
                if from > now {
                    if !ask.when_allowed {
                        return Err(EraseError::TooEarly {
                            from,
                            days: settings.retention.collection_min_days,
                        });
                    }
                    stores
                        .privacy
                        .request_erasure(
                            ask.borrower,
                            &ErasureRequest {
                                requested_at: now,
                                not_before: from,
                                actor: ask.actor.into(),
                                reason: ask.reason.into(),
                            },
                        )
                        .await?;
                    out.state = "scheduled";
                    out.not_before = Some(from);
                    return Ok(out);
                }
            }
            out.shredded = stores
                .privacy
                .erase(ask.borrower, now, ask.actor, ask.basis, ask.reason)
                .await?;
            tracing::info!(borrower = %ask.borrower, basis = ask.basis, "borrower erased");
            ErasureRow {
                at: now,
                actor: ask.actor.into(),
                basis: ask.basis.into(),
                reason: ask.reason.into(),
                ledger_index: None,
            }
        }
    };
    out.erased_at = Some(row.at);
    out.ledger_index = row.ledger_index;
    if let (None, Some(seq)) = (row.ledger_index, sequencer) {
        let leaf = reachline_engine::ledger::erased_leaf(ask.borrower, row.at, &row.basis)
            .map_err(|e| EraseError::Ledger(e.to_string()))?;
        let appended = seq.append(&leaf).await.map_err(|e| EraseError::Ledger(e.to_string()))?;
        stores.privacy.erasure_logged(ask.borrower, appended.index.0).await?;
        out.ledger_index = Some(appended.index.0);
    }
    if let Some(dir) = &settings.backup_dir {
        let (n, skipped) = shred_backups(dir, &[(ask.borrower, row)]).await?;
        out.backups_shredded = n;
        out.backups_not_shredded = skipped;
    }
    Ok(out)
}

/// The file name `reachline backup` gives a SQLite backup: `reachline-<UTC time>.db`.
pub fn is_sqlite_backup(name: &str) -> bool {
    name.starts_with("reachline-") && name.ends_with(".db")
}

/// The file name `reachline backup` gives a PostgreSQL dump.
pub fn is_pg_dump(name: &str) -> bool {
    name.starts_with("reachline-") && name.ends_with(".dump")
}

/// When a dump named by `reachline backup` was taken.
fn dump_time(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix("reachline-")?.strip_suffix(".dump")?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Shreds `erased` in every SQLite backup in `dir`; returns how many shreddings it did and the
/// PostgreSQL dumps it cannot rewrite.
pub async fn shred_backups(dir: &Path, erased: &[(BorrowerId, ErasureRow)]) -> Result<(u64, Vec<String>), EraseError> {
    let dir = dir.to_path_buf();
    let erased = erased.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut n = 0;
        let mut skipped = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, skipped)),
            Err(e) => {
                return Err(EraseError::Backup {
                    file: dir.display().to_string(),
                    error: e.to_string(),
                })
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if is_sqlite_backup(&name) {
                n +=
                    reachline_store::sqlite::privacy::shred_backup(&path, &erased).map_err(|e| EraseError::Backup {
                        file: name.clone(),
                        error: e.to_string(),
                    })?;
            } else if is_pg_dump(&name) && erased.iter().any(|(_, e)| dump_time(&name).is_none_or(|t| t < e.at)) {
                skipped.push(name);
            }
        }
        Ok((n, skipped))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
