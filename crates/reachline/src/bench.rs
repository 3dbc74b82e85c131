//! `reachline bench import`: generates a book and imports it into a fresh SQLite database and a
//! fresh PostgreSQL database, each in its own child process so each peak-memory figure is that
//! import's alone, and prints a table. `reachline bench ledger`: durable batched appends to the
//! ledger on both back ends, then proof latency at that size (`bench_ledger.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::book::gen::{generate, GenOptions};
use crate::book::Format;
use crate::keys::KeyFile;

/// The PostgreSQL server a benchmark runs against, shared by the benchmarks that have one.
#[derive(clap::Args)]
pub struct PostgresTarget {
    /// A PostgreSQL server to benchmark against (a fresh database is created and dropped);
    /// the URL's database is only used to connect.
    #[arg(
        long,
        env = "REACHLINE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    pub no_postgres: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Plan synthetic borrowers through the decision core (contact health, then `decide`) and
    /// print borrowers planned per second, on one thread and on several.
    Policy {
        #[arg(long, default_value_t = 200_000)]
        borrowers: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a book of N borrowers and time its import into SQLite and PostgreSQL.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        borrowers: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        pg: PostgresTarget,
        /// Working directory for the book and the SQLite file.
        #[arg(long, default_value = "./reachline-bench")]
        dir: PathBuf,
        /// Keep the generated book and databases afterwards.
        #[arg(long)]
        keep: bool,
        /// Print one JSON object instead of the tables: the book's counts and each back end's
        /// import summary (as `reachline import --json` prints it).
        #[arg(long)]
        json: bool,
    },
    /// Append N leaves durably to a fresh ledger on SQLite and PostgreSQL, then time proofs.
    Ledger(LedgerBenchArgs),
    /// Send N messages to an SMSC (or the in-process sandbox) and print submits/s, receipts
    /// matched and the classes seen.
    Smpp(crate::channels_cli::BenchSmppArgs),
    /// Plan one business day for a book of N borrowers and dispatch it to the sandbox SMSC,
    /// durably; print decisions/s, sends/s, receipts/s and peak memory.
    Engine(crate::bench_engine::EngineBenchArgs),
    /// Signed receipt webhooks against the server on loopback, durably recorded, beside a bare
    /// axum "hello" as the ceiling; prints requests/s and latency.
    Webhooks(crate::bench_server::WebhookBenchArgs),
}

pub use crate::bench_ledger::LedgerBenchArgs;

struct Row {
    backend: String,
    summary: serde_json::Value,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let (borrowers, seed, postgres, no_postgres, dir, keep, json) = match cmd {
        BenchCommand::Ledger(args) => return crate::bench_ledger::run(args).await,
        BenchCommand::Webhooks(args) => return crate::bench_server::run(args).await,
        BenchCommand::Policy {
            borrowers,
            threads,
            seed,
            json,
        } => return crate::bench_policy::run(borrowers, threads, seed, json),
        BenchCommand::Smpp(_) => unreachable!("bench smpp is dispatched by channels_cli::run"),
        BenchCommand::Engine(_) => unreachable!("bench engine is dispatched with the configuration"),
        BenchCommand::Import {
            borrowers,
            seed,
            pg: PostgresTarget { postgres, no_postgres },
            dir,
            keep,
            json,
        } => (borrowers, seed, postgres, no_postgres, dir, keep, json),
    };
    std::fs::create_dir_all(&dir)?;
    let book = dir.join("book");
    let keys = dir.join("bench.keys");
    if !keys.exists() {
        KeyFile::generate("bench").write_new(&keys)?;
    }

    eprintln!("generating {borrowers} borrowers…");
    let t = Instant::now();
    let opts = GenOptions {
        borrowers,
        seed,
        as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date"),
        revision: 0,
        format: Format::Csv,
    };
    let pb = indicatif::ProgressBar::new(borrowers);
    let counts = generate(&book, &opts, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    let gen_secs = t.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    let sqlite_path = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    eprintln!("importing into SQLite…");
    rows.push(Row {
        backend: "SQLite (WAL)".into(),
        summary: child_import(&format!("sqlite://{}", sqlite_path.display()), &book, &keys)?,
    });
    if !no_postgres {
        let db = format!("reachline_bench_{}", std::process::id());
        reachline_store::postgres::create_database(&postgres, &db).await?;
        eprintln!("importing into PostgreSQL…");
        let url = reachline_store::postgres::url_with_database(&postgres, &db);
        let res = child_import(&url, &book, &keys);
        if !keep {
            reachline_store::postgres::drop_database(&postgres, &db).await?;
        }
        rows.push(Row {
            backend: "PostgreSQL".into(),
            summary: res?,
        });
    }

    if !keep {
        std::fs::remove_dir_all(&book).ok();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
        }
    }
    if json {
        let out = serde_json::json!({
            "borrowers": borrowers,
            "rows": counts.total(),
            "generate_seconds": gen_secs,
            "backends": rows.iter().map(|r| serde_json::json!({"backend": r.backend, "summary": r.summary})).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "book: {borrowers} borrowers, {} rows ({} contacts, {} loans, {} installments, {} consents), generated in {gen_secs:.1}s",
        counts.total(),
        counts.contacts,
        counts.loans,
        counts.installments,
        counts.consents
    );
    println!();
    println!("| back end | rows | validate s | write s | total s | rows/s | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let s = &r.summary;
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.backend,
            s["rows_read"],
            f("validate_seconds"),
            f("write_seconds"),
            f("total_seconds"),
            f("rows_per_second"),
            f("peak_rss_bytes") / (1 << 20) as f64
        );
    }
    println!();
    println!("Seconds per step (and resident MiB at its end):");
    println!();
    if let Some(first) = rows.first() {
        let names: Vec<String> = first.summary["phases"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p[0].as_str().map(String::from)).collect())
            .unwrap_or_default();
        println!("| back end | {} |", names.join(" | "));
        println!("|---|{}", "---:|".repeat(names.len()));
        for r in &rows {
            let cells: Vec<String> = r.summary["phases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let mib = p[2].as_f64().map(|b| b / (1 << 20) as f64).unwrap_or(f64::NAN);
                            format!("{:.1} ({mib:.0})", p[1].as_f64().unwrap_or(f64::NAN))
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!("| {} | {} |", r.backend, cells.join(" | "));
        }
    }
    Ok(())
}

fn child_import(url: &str, book: &Path, keys: &Path) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("finding the reachline executable")?;
    let out = std::process::Command::new(exe)
        .args(["--database", url, "import", "--json"])
        .arg(book)
        .env("REACHLINE_KEYS__FILE", keys)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the import")?;
    if !out.status.success() {
        bail!(
            "import into {} failed ({})",
            url.split("://").next().unwrap_or(""),
            out.status
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
