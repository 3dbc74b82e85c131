//! `reachline borrower export`: everything held about one borrower, as the API's export
//! builds it, written to a file (or standard output) and recorded in the access log; and
//! `reachline borrower erase`, as the API's erasure.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum BorrowerCommand {
    /// Write everything held about a borrower (in clear) as one JSON document; the export is
    /// recorded in the access log with the reason.
    Export {
        /// The lender's borrower id.
        id: String,
        /// Why (kept in the access log): the borrower's request and its case reference.
        #[arg(long)]
        reason: String,
        /// Where to write it (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a borrower's personal data (PIPL art. 47) by destroying their keys; the erasure is
    /// recorded (database, access log, ledger) and repeated in the backups in [backup] dir.
    /// Refused while an installment is unpaid or before the retention rules allow it.
    Erase {
        /// The lender's borrower id.
        id: String,
        /// Why (kept in the access log and the erasure's record): the borrower's request and
        /// its case reference. No address or number.
        #[arg(long)]
        reason: String,
        /// If the retention rules do not allow it yet, keep the request: `reachline retention
        /// --apply` erases on the first day allowed.
        #[arg(long)]
        when_allowed: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cfg: &Config, command: BorrowerCommand) -> anyhow::Result<()> {
    let (id, reason, out) = match command {
        BorrowerCommand::Export { id, reason, out } => (id, reason, out),
        BorrowerCommand::Erase {
            id,
            reason,
            when_allowed,
            json,
        } => return erase(cfg, &id, &reason, when_allowed, json).await,
    };
    let reason = reachline_server::api::access_reason(&reason)
        .map_err(|e| anyhow::anyhow!("--reason: {}", e.message))?
        .to_string();
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    let ext = reachline_domain::ExternalId::parse(&id).map_err(|e| anyhow::anyhow!("borrower id: {e}"))?;
    let b = stores
        .store
        .borrower_by_external_id(&ext)
        .await?
        .with_context(|| format!("no borrower {id}"))?;
    let now = chrono::Utc::now();
    stores
        .server
        .log_access(&reachline_store::server::AccessEntry {
            at: now,
            actor: cli_actor(),
            action: "borrower.export".into(),
            borrower: Some(b.id),
            reason,
            request_id: format!("cli-{}", std::process::id()),
        })
        .await?;
    let doc = reachline_server::export::document(&stores, &b, now)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let text = serde_json::to_string_pretty(&doc)?;
    match out {
        Some(path) => {
            std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
            eprintln!("borrower {id} exported to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Who runs a command, as the access log names them.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

async fn erase(cfg: &Config, id: &str, reason: &str, when_allowed: bool, json: bool) -> anyhow::Result<()> {
    let reason = reachline_server::api::access_reason(reason)
        .map_err(|e| anyhow::anyhow!("--reason: {}", e.message))?
        .to_string();
    let ext = reachline_domain::ExternalId::parse(id).map_err(|e| anyhow::anyhow!("borrower id: {e}"))?;
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    let b = stores
        .privacy
        .borrower_id(&ext)
        .await?
        .with_context(|| format!("no borrower {id}"))?;
    // The ledger first: if it cannot take the erasure's leaf, nothing is erased.
    let sink = crate::run::ledger_sink(cfg).await?;
    let now = chrono::Utc::now();
    let actor = cli_actor();
    stores
        .server
        .log_access(&reachline_store::server::AccessEntry {
            at: now,
            actor: actor.clone(),
            action: "borrower.erase".into(),
            borrower: Some(b),
            reason: reason.clone(),
            request_id: format!("cli-{}", std::process::id()),
        })
        .await?;
    let ask = reachline_server::privacy::EraseAsk {
        borrower: b,
        actor: &actor,
        basis: "borrower_request",
        reason: &reason,
        when_allowed,
    };
    let out = reachline_server::privacy::erase(&stores, Some(&sink.sequencer), &cfg.privacy(), &ask, now).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match out.state {
        "scheduled" => println!(
            "borrower {id}: erasure scheduled for {} (the retention floor); `reachline retention --apply` carries it out",
            out.not_before.map(|t| t.to_rfc3339()).unwrap_or_default()
        ),
        state => {
            println!(
                "borrower {id}: {} at {}; ledger leaf {}",
                if state == "erased" { "erased" } else { "was erased" },
                out.erased_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                out.ledger_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
            );
            let s = &out.shredded;
            if state == "erased" {
                println!(
                    "  keys destroyed; blanked: {} contact point(s), {} number change(s), {} plan request(s), \
                     {} raw receipt(s); {} session(s) ended; {} queued send(s) cancelled",
                    s.contact_points, s.number_changes, s.plan_requests, s.raw_receipts, s.sessions, s.sends_cancelled
                );
            }
            println!("  backups shredded in {}: {}", cfg.backup.dir.display(), out.backups_shredded);
            for f in &out.backups_not_shredded {
                println!("  NOT shredded (a PostgreSQL dump older than the erasure; delete it): {f}");
            }
        }
    }
    Ok(())
}
