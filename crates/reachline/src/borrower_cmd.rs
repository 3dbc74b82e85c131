//! `reachline borrower export`: everything held about one borrower, as the API's export
//! builds it, written to a file (or standard output) and recorded in the access log.

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
}

pub async fn run(cfg: &Config, command: BorrowerCommand) -> anyhow::Result<()> {
    let BorrowerCommand::Export { id, reason, out } = command;
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
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    stores
        .server
        .log_access(&reachline_store::server::AccessEntry {
            at: now,
            actor: format!("cli:{who}"),
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
