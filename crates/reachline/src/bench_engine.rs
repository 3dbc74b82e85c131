//! `reachline bench engine`: generates a book of N borrowers, imports it into a fresh SQLite
//! database (and a fresh PostgreSQL one, unless `--no-postgres`), then — in a child process, so the peak-memory figure is the engine's alone — plans
//! one business day and dispatches every notice it queued to the in-process sandbox SMSC over
//! SMPP on loopback (or to an SMSC of its own, `--smsc-host`), every attempt durably recorded
//! (with `--ledger`, every send and receipt also a ledger leaf, as `reachline run` writes
//! them), and waits for every receipt. Prints decisions/s, sends/s, receipts/s and peak memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{NaiveDate, NaiveTime};
use reachline_channels::smpp::sandbox::{Sandbox, DELIVERED_TLV};
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_engine::Engine;
use reachline_policy::Templates;

use crate::book::gen::{generate, GenOptions};
use crate::book::Format;
use crate::config::Config;
use crate::keys::KeyFile;

#[derive(clap::Args)]
pub struct EngineBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub borrowers: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The business day planned (the book is generated as of the day before).
    #[arg(long, default_value = "2026-11-02")]
    pub day: NaiveDate,
    /// Working directory for the book and the SQLite file.
    #[arg(long, default_value = "./reachline-bench")]
    pub dir: PathBuf,
    /// Keep the generated book and database afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Borrowers per planning batch.
    #[arg(long, default_value_t = 4_000)]
    pub plan_batch: usize,
    /// Planning batches read ahead while one is decided and written.
    #[arg(long, default_value_t = 2)]
    pub plan_reads: usize,
    #[command(flatten)]
    pub pg: crate::bench::PostgresTarget,
    /// Send to this SMSC instead of an in-process sandbox (for comparing gateways through one
    /// peer, e.g. `reachline sandbox-smsc --all-delivered`); it must deliver every number.
    #[arg(long)]
    pub smsc_host: Option<String>,
    #[arg(long, default_value_t = 2775)]
    pub smsc_port: u16,
    /// Keep the notice ledger as `reachline run` does: every send and every receipt a leaf,
    /// committed under a signed checkpoint.
    #[arg(long)]
    pub ledger: bool,
    /// Print one JSON object (each back end's figures) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run the engine part on an imported database and print JSON.
    #[arg(long, hide = true)]
    pub child: bool,
}

pub async fn run(cfg: &Config, args: EngineBenchArgs) -> anyhow::Result<()> {
    let db = args.dir.join("engine.db");
    let keys = args.dir.join("bench.keys");
    if args.child {
        return child(cfg, &args).await;
    }
    std::fs::create_dir_all(&args.dir)?;
    if !keys.exists() {
        KeyFile::generate("bench").write_new(&keys)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let book = args.dir.join("engine-book");
    eprintln!("generating {} borrowers…", args.borrowers);
    let opts = GenOptions {
        borrowers: args.borrowers,
        seed: args.seed,
        as_of: args.day.pred_opt().unwrap_or(args.day),
        revision: 0,
        format: Format::Csv,
    };
    let pb = indicatif::ProgressBar::new(args.borrowers);
    generate(&book, &opts, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    let mut rows: Vec<(&str, serde_json::Value)> = Vec::new();
    eprintln!("SQLite: importing, then planning {} and dispatching…", args.day);
    rows.push((
        "SQLite (WAL)",
        import_and_run(&format!("sqlite://{}", db.display()), &book, &keys, &args)?,
    ));
    if !args.pg.no_postgres {
        let name = format!("reachline_bench_engine_{}", std::process::id());
        reachline_store::postgres::create_database(&args.pg.postgres, &name).await?;
        let url = reachline_store::postgres::url_with_database(&args.pg.postgres, &name);
        eprintln!("PostgreSQL: importing, then planning {} and dispatching…", args.day);
        let res = import_and_run(&url, &book, &keys, &args);
        if !args.keep {
            reachline_store::postgres::drop_database(&args.pg.postgres, &name).await?;
        }
        rows.push(("PostgreSQL", res?));
    }
    if !args.keep {
        std::fs::remove_dir_all(&book).ok();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    if args.json {
        let out = serde_json::json!({
            "borrowers": args.borrowers,
            "day": args.day.to_string(),
            "backends": rows.iter().map(|(b, r)| serde_json::json!({"backend": b, "figures": r})).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("book: {} borrowers; day planned: {}", args.borrowers, args.day);
    println!();
    println!("| back end | step | count | seconds | per second |");
    println!("|---|---|---:|---:|---:|");
    for (backend, r) in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let line = |step: &str, count: &str, secs: &str| {
            println!(
                "| {backend} | {step} | {} | {:.2} | {:.0} |",
                r[count],
                f(secs),
                f(count) / f(secs)
            )
        };
        println!(
            "| {backend} | plan: one pass over the book (every borrower's open installments looked at) | {} | {:.2} | {:.0} |",
            args.borrowers,
            f("plan_seconds"),
            args.borrowers as f64 / f("plan_seconds")
        );
        line(
            "plan: borrowers with a notice in their window, decided",
            "borrowers",
            "plan_seconds",
        );
        line("plan: decisions", "decisions", "plan_seconds");
        line(
            "dispatch: notices sent over SMPP, each attempt recorded",
            "sent",
            "dispatch_seconds",
        );
        line(
            "receipts recorded (from the first send)",
            "receipts",
            "receipts_seconds",
        );
    }
    println!();
    for (backend, r) in &rows {
        println!(
            "{backend}: queued {}, cancelled at send time {}, failed {}; {} parts to {}; ledger leaves {}; peak RSS of the engine process {:.0} MiB",
            r["queued"],
            r["cancelled"],
            r["failed"],
            r["parts"],
            r["smsc"].as_str().unwrap_or("?"),
            r["ledger_leaves"],
            r["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64
        );
    }
    Ok(())
}

/// Imports the book into the database `url` names, then runs the engine on it in a child
/// process (its peak memory is the engine's alone) and returns the child's figures.
fn import_and_run(
    url: &str,
    book: &std::path::Path,
    keys: &std::path::Path,
    args: &EngineBenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("finding the reachline executable")?;
    let status = std::process::Command::new(&exe)
        .args(["--database", url, "import"])
        .arg(book)
        .env("REACHLINE_KEYS__FILE", keys)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("the import failed ({status})");
    }
    let mut child = std::process::Command::new(&exe);
    child
        .args(["--database", url, "bench", "engine", "--child", "--day"])
        .arg(args.day.to_string())
        .arg("--plan-batch")
        .arg(args.plan_batch.to_string())
        .arg("--plan-reads")
        .arg(args.plan_reads.to_string())
        .arg("--dir")
        .arg(&args.dir);
    if let Some(host) = &args.smsc_host {
        child
            .args(["--smsc-host", host, "--smsc-port"])
            .arg(args.smsc_port.to_string());
    }
    if args.ledger {
        child.arg("--ledger");
    }
    let out = child
        .env("REACHLINE_KEYS__FILE", keys)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the engine run failed ({})", out.status);
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn child(cfg: &Config, args: &EngineBenchArgs) -> anyhow::Result<()> {
    let store = crate::run::open_engine_store(cfg).await?;
    let (sandbox, host, port) = match &args.smsc_host {
        Some(host) => (None, host.clone(), args.smsc_port),
        None => {
            let sandbox = Sandbox::start("127.0.0.1:0").await?;
            sandbox.set_script(Arc::new(|_: &str| DELIVERED_TLV));
            let port = sandbox.addr().port();
            (Some(sandbox), "127.0.0.1".to_string(), port)
        }
    };
    let smsc = match &sandbox {
        Some(_) => "the in-process sandbox SMSC".to_string(),
        None => format!("the SMSC at {host}:{port}"),
    };
    let sms = Arc::new(SmppChannel::start(SmppConfig {
        host,
        port,
        window: 64,
        ..SmppConfig::default()
    }));
    if !sms.wait_bound(std::time::Duration::from_secs(5)).await {
        bail!("could not bind to {smsc}");
    }
    let mut ecfg = crate::run::engine_config(cfg, &cfg.keyring()?)?;
    ecfg.plan_batch = args.plan_batch;
    ecfg.plan_reads = args.plan_reads;
    ecfg.lease_batch = 2_000;
    ecfg.concurrency = 256;
    let mut engine = Engine::new(
        store.clone(),
        vec![sms.clone()],
        Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?,
        ecfg,
    );
    let ledger = match args.ledger {
        true => {
            let store: Arc<dyn reachline_store::ledger::LedgerStore> =
                reachline_store::open_ledger(cfg.database.url.as_str(), cfg.keyring()?)
                    .await?
                    .into();
            let sequencer =
                reachline_store::ledger::Sequencer::start(store.clone(), cfg.ledger_signer()?, cfg.sequencer_config())
                    .await?;
            Some(reachline_engine::LedgerSink {
                sequencer: Arc::new(sequencer),
                store,
            })
        }
        false => None,
    };
    if let Some(sink) = &ledger {
        engine = engine.with_ledger(sink.clone());
    }
    let engine = Arc::new(engine);
    // 09:00 in Shanghai: inside every profile's hours for the borrowers of the book.
    let now = args
        .day
        .and_time(NaiveTime::from_hms_opt(1, 0, 0).unwrap_or(NaiveTime::MIN))
        .and_utc();
    engine.spawn_intake(Arc::new(move || now));
    let t = Instant::now();
    let p = engine.plan(now).await?;
    let plan_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = engine.dispatch(now).await?;
    let dispatch_seconds = t.elapsed().as_secs_f64();
    let parts = sms.stats().submitted.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(sandbox) = &sandbox {
        anyhow::ensure!(
            sandbox.accepted_count() as u64 == parts,
            "the sandbox accepted {} parts, the client counted {parts}",
            sandbox.accepted_count()
        );
    }
    engine.wait_receipts(parts, std::time::Duration::from_secs(120)).await;
    let receipts_seconds = t.elapsed().as_secs_f64();
    let ledger_leaves = match &ledger {
        Some(sink) => sink.store.latest_checkpoint().await?.map_or(0, |c| c.size.0),
        None => 0,
    };
    let out = serde_json::json!({
        "smsc": smsc,
        "parts": parts,
        "ledger_leaves": ledger_leaves,
        "borrowers": p.borrowers,
        "decisions": p.decisions,
        "queued": p.queued,
        "plan_seconds": plan_seconds,
        "sent": d.sent,
        "failed": d.failed,
        "cancelled": d.cancelled,
        "dispatch_seconds": dispatch_seconds,
        "receipts": engine.counters.receipts.load(std::sync::atomic::Ordering::Relaxed),
        "receipts_seconds": receipts_seconds,
        "peak_rss_bytes": crate::import::peak_rss(),
    });
    println!("{out}");
    Ok(())
}
