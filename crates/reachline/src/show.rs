//! Printing for operators: import summaries, counts, and contact histories with every
//! personal value masked.

use clap::Subcommand;
use reachline_domain::{ExternalId, PhoneNumber};
use reachline_store::{Counts, Store};

use crate::config::Config;
use crate::import::ImportSummary;

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// A borrower's contact points and every event in their history.
    History {
        /// The borrower's id in the loan book.
        borrower: String,
    },
    /// Every borrower who ever held a phone number, with when (a recycled number shows twice).
    Lookup { number: String },
}

pub fn print_import_summary(s: &ImportSummary) {
    let r = &s.report;
    println!("imported {}", s.book);
    println!(
        "  borrowers     {:>9} created {:>9} updated {:>9} unchanged",
        r.borrowers_created, r.borrowers_updated, r.borrowers_unchanged
    );
    println!(
        "  contacts      {:>9} added   {:>9} replaced {:>8} unchanged {:>7} newly verified",
        r.contacts_added, r.contacts_replaced, r.contacts_unchanged, r.contacts_verified
    );
    println!("  loans         {:>9} written", r.loans_written);
    println!("  installments  {:>9} written", r.installments_written);
    println!("  consents      {:>9} added", r.consents_added);
    println!(
        "  {} rows in {:.2}s (validate {:.2}s, write {:.2}s): {:.0} rows/s{}",
        s.rows_read,
        s.total_seconds,
        s.validate_seconds,
        s.write_seconds,
        s.rows_per_second,
        s.peak_rss_bytes
            .map(|b| format!(", peak memory {} MiB", b / (1 << 20)))
            .unwrap_or_default()
    );
}

pub fn print_counts(c: &Counts) {
    println!("borrowers          {:>10}", c.borrowers);
    println!(
        "contact points     {:>10} current, {} retired",
        c.contacts_current, c.contacts_retired
    );
    println!("loans              {:>10}", c.loans);
    println!("installments       {:>10}", c.installments);
    println!("consent events     {:>10}", c.consents);
}

pub async fn contacts(store: &dyn Store, cfg: &Config, cmd: ContactsCommand) -> anyhow::Result<()> {
    match cmd {
        ContactsCommand::History { borrower } => print_history(store, &ExternalId::parse(&borrower)?).await,
        ContactsCommand::Lookup { number } => {
            let n: PhoneNumber = cfg.phone_parser()?.parse(&number)?;
            let holders = store.contacts_by_phone(&n).await?;
            if holders.is_empty() {
                println!("no borrower has held {}", n.masked());
            }
            for h in holders {
                println!(
                    "{}  borrower #{}  {} {}  since {}  added {}  {}",
                    h.point.address.masked(),
                    h.borrower_id,
                    h.point.role.name(),
                    h.point.slot,
                    h.point.bound_since,
                    h.added_at.format("%Y-%m-%d %H:%M"),
                    match &h.retired {
                        Some(r) => format!("retired {} ({})", r.at.format("%Y-%m-%d %H:%M"), r.reason),
                        None => "current".into(),
                    }
                );
            }
            Ok(())
        }
    }
}

pub async fn print_history(store: &dyn Store, borrower: &ExternalId) -> anyhow::Result<()> {
    let Some(b) = store.borrower_by_external_id(borrower).await? else {
        anyhow::bail!("no borrower {borrower}");
    };
    println!(
        "borrower {} ({}, {}, {}, {})",
        b.borrower.external_id,
        b.borrower.name.masked(),
        b.borrower.locale,
        b.borrower.time_zone,
        b.borrower.jurisdiction
    );
    let contacts = store.contacts(b.id).await?;
    for c in &contacts {
        println!(
            "  #{:<6} {:<11} {:<10} {:<9} {:<20} bound since {}  {}",
            c.id.0,
            c.point.slot,
            c.point.kind,
            c.point.role.name(),
            c.point.address.masked(),
            c.point.bound_since,
            match &c.retired {
                Some(r) => format!("retired: {}", r.reason),
                None => "current".into(),
            }
        );
    }
    println!("  history:");
    for e in store.contact_history(b.id).await? {
        println!(
            "    {}  #{:<6} {:<9} by {}{}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.contact_id.0,
            e.kind,
            e.actor,
            e.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    Ok(())
}
