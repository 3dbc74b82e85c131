//! `reachline backup` and `reachline retention`: copies of the database that erasure can reach,
//! and the retention job (a report by default; `--apply` carries it out).

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use reachline_store::privacy::RetentionLine;
use serde::Serialize;

use crate::config::Config;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The directory to write into (default: [backup] dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Writes `reachline-<UTC time>.db` (SQLite: a compact consistent copy) or `.dump`
/// (PostgreSQL: `pg_dump --format=custom`) into the backup directory.
pub async fn backup(cfg: &Config, args: BackupArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| cfg.backup.dir.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let url = cfg.database.url.as_str();
    let started = std::time::Instant::now();
    let out = if let Some(db) = url.strip_prefix("sqlite://") {
        // Open once through the store: it checks the keys belong to this database.
        reachline_store::open_all(url, cfg.keyring()?)
            .await
            .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
        let out = dir.join(format!("reachline-{stamp}.db"));
        let (db, o) = (PathBuf::from(db), out.clone());
        tokio::task::spawn_blocking(move || reachline_store::sqlite::privacy::backup(&db, &o)).await??;
        out
    } else {
        let out = dir.join(format!("reachline-{stamp}.dump"));
        let status = std::process::Command::new("pg_dump")
            .arg("--format=custom")
            .arg("--file")
            .arg(&out)
            .arg(url)
            .status()
            .context("running pg_dump (install PostgreSQL's client tools)")?;
        anyhow::ensure!(status.success(), "pg_dump failed ({status})");
        out
    };
    let size = std::fs::metadata(&out)?.len();
    println!(
        "backup written: {} ({:.1} MB in {:.1} s)",
        out.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RetentionArgs {
    /// Carry it out (without: a report of what it would do, changing nothing).
    #[arg(long)]
    apply: bool,
    /// The report for another moment (RFC 3339), to plan ahead; only without --apply.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    at: DateTime<Utc>,
    applied: bool,
    lines: Vec<RetentionLine>,
}

pub async fn retention(cfg: &Config, args: RetentionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !(args.apply && args.at.is_some()),
        "--at plans ahead and cannot be applied: the job applies the rules as of now"
    );
    let now = args.at.unwrap_or_else(Utc::now);
    let rules = cfg.retention;
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    let requested = stores.privacy.due_erasure_requests(now).await?;
    let expired = stores.privacy.expired_borrowers(&rules, now).await?;
    let mut lines = Vec::new();
    let erase_line = |what: &'static str, min: Option<u32>, max: Option<u32>, count: u64| RetentionLine {
        class: "personal data",
        what,
        keep_at_least_days: min,
        delete_after_days: max,
        action: if args.apply { "erased" } else { "would erase" },
        count,
    };
    if args.apply {
        let sink = crate::run::ledger_sink(cfg).await?;
        let settings = cfg.privacy();
        let mut done = [0u64; 2];
        for (k, (ids, basis, reason)) in [
            (
                &requested,
                "borrower_request",
                "erasure requested earlier; retention floor reached",
            ),
            (
                &expired,
                "retention",
                "no activity for retention.personal_data_max_days",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            for b in ids {
                let ask = reachline_server::privacy::EraseAsk {
                    borrower: *b,
                    actor: "retention-job",
                    basis,
                    reason,
                    when_allowed: true,
                };
                match reachline_server::privacy::erase(&stores, Some(&sink.sequencer), &settings, &ask, now).await {
                    Ok(o) if o.state == "erased" => done[k] += 1,
                    Ok(_) => {}
                    // A borrower who owes again (a new loan) is not erased; the request stays.
                    Err(reachline_server::privacy::EraseError::Unpaid(n)) => {
                        tracing::warn!(borrower = %b, unpaid = n, "erasure waits: installments unpaid");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        lines.push(erase_line(
            "erasure requests due",
            Some(rules.collection_min_days),
            None,
            done[0],
        ));
        lines.push(erase_line(
            "borrowers inactive",
            None,
            Some(rules.personal_data_max_days),
            done[1],
        ));
    } else {
        lines.push(erase_line(
            "erasure requests due",
            Some(rules.collection_min_days),
            None,
            requested.len() as u64,
        ));
        lines.push(erase_line(
            "borrowers inactive",
            None,
            Some(rules.personal_data_max_days),
            expired.len() as u64,
        ));
    }
    lines.extend(stores.privacy.purge(&rules, now, args.apply).await?);
    let report = Report {
        at: now,
        applied: args.apply,
        lines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "retention {} as of {}",
        if args.apply {
            "applied"
        } else {
            "report (dry run: nothing changed)"
        },
        now.to_rfc3339()
    );
    println!(
        "{:<20} {:<26} {:>12} {:>14} {:<13} {:>8}",
        "class", "records", "keep ≥ days", "delete > days", "action", "count"
    );
    let days = |d: Option<u32>| d.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
    for l in &report.lines {
        println!(
            "{:<20} {:<26} {:>12} {:>14} {:<13} {:>8}",
            l.class,
            l.what,
            days(l.keep_at_least_days),
            days(l.delete_after_days),
            l.action,
            l.count
        );
    }
    println!(
        "{:<20} {:<26} {:>12} {:>14} {:<13} {:>8}",
        "ledger", "leaves, tiles, checkpoints", "-", "never", "kept", "-"
    );
    println!("(the ledger holds no personal data and is append-only; an erased borrower's leaves stay, unlinkable)");
    Ok(())
}
