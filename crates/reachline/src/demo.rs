//! `reachline demo`: the main job end to end on the embedded default. Generates a loan book,
//! imports it into a fresh SQLite database, imports next month's export in which some borrowers
//! changed number, shows one such borrower's history, and shows a damaged export refused whole.

use std::path::Path;

use anyhow::{bail, Context};
use chrono::Utc;

use crate::book::gen::{generate, GenOptions};
use crate::book::Format;
use crate::config::{Config, DatabaseUrl};
use crate::import::{import, ImportOptions, Rejected};
use crate::keys::KeyFile;
use crate::show;

const MARKER: &str = ".reachline-demo";

pub async fn run(dir: &Path, borrowers: u64, seed: u64) -> anyhow::Result<()> {
    prepare(dir)?;
    let keys = dir.join("reachline.keys");
    KeyFile::generate("demo").write_new(&keys)?;
    let mut cfg = Config::default();
    cfg.database.url = DatabaseUrl(format!("sqlite://{}", dir.join("reachline.db").display()));
    cfg.keys.file = keys.clone();
    cfg.validate()?;
    let store = crate::open_store(&cfg).await?;
    let phones = cfg.phone_parser()?;
    let defaults = cfg.book_defaults()?;
    let opts = ImportOptions {
        batch_size: cfg.book.batch_size,
        progress: true,
    };
    let as_of = Utc::now().date_naive();
    let gen = |rev: u32| GenOptions {
        borrowers,
        seed,
        as_of,
        revision: rev,
        format: Format::Csv,
    };

    println!("== 1. The lender's loan book: {borrowers} synthetic borrowers (seed {seed}) ==");
    let first = dir.join("book-1");
    let counts = generate(&first, &gen(0), &|_| {})?;
    println!("wrote {} rows to {}", counts.total(), first.display());
    let s = import(store.as_ref(), &first, &phones, &defaults, &opts).await?;
    show::print_import_summary(&s);

    println!("\n== 2. Next month's export: some borrowers changed number ==");
    let second = dir.join("book-2");
    generate(&second, &gen(1), &|_| {})?;
    let s = import(store.as_ref(), &second, &phones, &defaults, &opts).await?;
    show::print_import_summary(&s);

    if let Some(changed) = first_changed_borrower(&first, &second)? {
        println!("\n== 3. One borrower whose number changed (personal data masked) ==");
        show::print_history(store.as_ref(), &reachline_domain::ExternalId::parse(&changed)?).await?;
    }

    println!("\n== 4. A damaged export is refused whole ==");
    let bad = dir.join("book-bad");
    std::fs::create_dir_all(&bad)?;
    for f in ["borrowers", "loans", "installments", "consents"] {
        std::fs::copy(second.join(format!("{f}.csv")), bad.join(format!("{f}.csv")))?;
    }
    let contacts = std::fs::read_to_string(second.join("contacts.csv"))?;
    let damaged: Vec<String> = contacts
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            3 => l.replacen(",mobile,primary,", ",mobile,primry,", 1),
            7 => l.replacen(",mobile,", ",fax,", 1),
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(bad.join("contacts.csv"), damaged.join("\n") + "\n")?;
    let before = store.counts().await?;
    match import(store.as_ref(), &bad, &phones, &defaults, &opts).await {
        Err(e) => match e.downcast_ref::<Rejected>() {
            Some(Rejected(p)) => {
                for problem in &p.first {
                    println!("  {problem}");
                }
                println!("  → {e}");
            }
            None => return Err(e),
        },
        Ok(_) => bail!("the damaged book was accepted"),
    }
    if store.counts().await? != before {
        bail!("a refused import changed the database");
    }
    println!("  database unchanged:");
    show::print_counts(&before);

    println!(
        "\nThe database and keys are in {}. Look around with, for example:",
        dir.display()
    );
    let env = format!(
        "REACHLINE_KEYS__FILE={} REACHLINE_DATABASE__URL={}",
        keys.display(),
        cfg.database.url.as_str()
    );
    println!("  {env} cargo run --release -- summary");
    println!("  {env} cargo run --release -- contacts history B00000001");
    Ok(())
}

/// Empties `dir` if it is an earlier demo's, refuses if it holds anything else.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a Reachline demo directory; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "This directory is recreated by `reachline demo`.\n")?;
    Ok(())
}

/// The id of the first borrower whose contacts differ between two exports.
fn first_changed_borrower(a: &Path, b: &Path) -> anyhow::Result<Option<String>> {
    let x = std::fs::read_to_string(a.join("contacts.csv"))?;
    let y = std::fs::read_to_string(b.join("contacts.csv"))?;
    Ok(x.lines()
        .zip(y.lines())
        .find(|(l, r)| l != r)
        .and_then(|(_, r)| r.split(',').next().map(String::from)))
}
