//! `reachline classify-reply`, `reachline intel …` and `reachline health replay`: the reply
//! classifier, the number intelligence sources and contact health, from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::Subcommand;
use reachline_domain::original_carrier;
use reachline_intel::NumberIntel;
use reachline_policy::ReplyClassifier;
use serde_json::json;

use crate::config::Config;

#[derive(Subcommand)]
pub enum IntelCommand {
    /// Load a disconnection file (CSV with columns number and disconnect_date, the FCC
    /// Reassigned Numbers Database's data shape) into the local registry. All or nothing: a file
    /// with any bad line is reported and nothing is loaded.
    LoadDisconnects {
        file: PathBuf,
        /// A name for where the file came from, kept with each record (default: the file name).
        #[arg(long)]
        source: Option<String>,
    },
    /// Print what the configured sources say about a number: its original carrier, its status,
    /// and whether it was disconnected (and so may have changed hands) since a date.
    Check {
        number: String,
        /// The day the lender last knew the number was the borrower's.
        #[arg(long)]
        since: NaiveDate,
    },
}

/// Prints the class of a reply, the cue that decided it, and any number stated in it, as JSON.
pub fn classify_reply(cfg: &Config, text: &str) -> anyhow::Result<()> {
    let classifier = ReplyClassifier::new(cfg.phone_parser()?);
    let c = classifier.classify(text);
    // The operator typed the text: the number found in it is shown in full, as they gave it.
    println!("{}", serde_json::to_string_pretty(&c.revealed())?);
    Ok(())
}

pub async fn run(cfg: &Config, command: IntelCommand) -> anyhow::Result<()> {
    match command {
        IntelCommand::LoadDisconnects { file, source } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let rows = match reachline_intel::parse_disconnects(&text, &cfg.phone_parser()?, 100) {
                Ok(rows) => rows,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    anyhow::bail!(
                        "{} refused: {} bad line(s){}; nothing was loaded",
                        file.display(),
                        errors.len(),
                        if errors.len() >= 100 { " (first 100 shown)" } else { "" }
                    );
                }
            };
            let source = source.unwrap_or_else(|| {
                file.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into())
            });
            let store = crate::open_store(cfg).await?;
            let read = rows.len();
            let added = store.load_disconnects(rows, &source, chrono::Utc::now()).await?;
            println!("{read} disconnection records read, {added} new, from {source}");
            Ok(())
        }
        IntelCommand::Check { number, since } => {
            let number = cfg
                .phone_parser()?
                .parse(&number)
                .map_err(|e| anyhow::anyhow!("NUMBER: {e}"))?;
            let store: Arc<dyn reachline_store::Store> = Arc::from(crate::open_store(cfg).await?);
            let intel = reachline_intel::from_config(&cfg.intel, store)?;
            let answer = |r: Result<String, reachline_intel::IntelError>| match r {
                Ok(a) => json!({ "answer": a }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            let status = intel.status(&number).await.map(|s| s.as_str().to_string());
            let recycled = intel
                .recycled_since(&number, since)
                .await
                .map(|a| a.as_str().to_string());
            let out = json!({
                "number": number.masked(),
                "original_carrier": original_carrier(&number),
                "status": answer(status),
                "recycled_since": { "since": since.to_string(), "result": answer(recycled) },
                "sources": intel.name(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum HealthCommand {
    /// Replay an evidence timeline (the format of `crates/reachline-policy/src/timeline.rs`)
    /// through contact health and print each contact's state, transitions and events. Exits 1
    /// when an `expect` line of the timeline does not hold.
    Replay {
        file: PathBuf,
        /// Replay up to the end of this day instead of the timeline's `now`.
        #[arg(long)]
        at: Option<NaiveDate>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn health(cfg: &Config, command: HealthCommand) -> anyhow::Result<bool> {
    match command {
        HealthCommand::Replay { file, at, json } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let t = reachline_policy::timeline::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let when = at.map_or(t.now, |d| reachline_policy::timeline::end_of_day(t.zone, d));
            let h = t.assess_at(when, &cfg.health);
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!("{}", t.render(&h));
            }
            let failures = t.failed_expectations(&cfg.health);
            for f in &failures {
                eprintln!("{}: {f}", file.display());
            }
            if !t.expects.is_empty() && failures.is_empty() {
                eprintln!("{}: all {} expectations hold", file.display(), t.expects.len());
            }
            Ok(failures.is_empty())
        }
    }
}
