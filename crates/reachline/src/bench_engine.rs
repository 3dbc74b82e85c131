//! `reachline bench engine`: generates a book of N borrowers, imports it into a fresh SQLite
//! database (and a fresh PostgreSQL one, unless `--no-postgres`), then — in a child process, so the peak-memory figure is the engine's alone — plans
//! one business day and dispatches every notice it queued to the in-process sandbox SMSC over
//! SMPP on loopback (or to an SMSC of its own, `--smsc-host`), every attempt durably recorded
//! (with `--ledger`, every send and receipt also a ledger leaf, as `reachline run` writes
//! them), and waits for every receipt. Prints decisions/s, sends/s, receipts/s and peak memory.
//!
//! With `--nodes N` (N > 1) the PostgreSQL book is also run by N engine processes at once on
//! one fresh database, as N `reachline run` nodes share one: each claims planning slices,
//! leases outbox rows with `SKIP LOCKED`, and joins the one ledger (one sequences, the others
//! queue their leaves to it). The parent starts them together (each says it is ready on
//! stdout and waits for `go` on stdin), keeps them alive until all have finished (so no
//! sequencer hands over mid-run), and folds their figures: the span from the first node's
//! start to the last node's end, the sums of the counts, the largest node's memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{NaiveDate, NaiveTime};
use reachline_channels::smpp::sandbox::{Sandbox, DELIVERED_TLV};
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_engine::Engine;
use reachline_policy::Templates;
use tokio::io::AsyncBufReadExt;

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
    /// Also run the PostgreSQL book on this many engine processes at once, one database
    /// shared (as several `reachline run` nodes); 1 runs the single node only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nodes: u32,
    /// Plan the whole day, then dispatch it (each phase's own rate), instead of dispatching
    /// each batch of the planning pass as it is written, as `reachline run`'s step does.
    #[arg(long)]
    pub sequential: bool,
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
    let mut rows: Vec<(String, serde_json::Value)> = Vec::new();
    eprintln!("SQLite: importing, then planning {} and dispatching…", args.day);
    rows.push((
        "SQLite (WAL)".to_string(),
        one(import_and_run(
            &format!("sqlite://{}", db.display()),
            &book,
            &keys,
            &args,
            1,
        )?),
    ));
    if !args.pg.no_postgres {
        let name = format!("reachline_bench_engine_{}", std::process::id());
        reachline_store::postgres::create_database(&args.pg.postgres, &name).await?;
        let url = reachline_store::postgres::url_with_database(&args.pg.postgres, &name);
        eprintln!("PostgreSQL: importing, then planning {} and dispatching…", args.day);
        let res = import_and_run(&url, &book, &keys, &args, 1).map(one);
        if !args.keep {
            reachline_store::postgres::drop_database(&args.pg.postgres, &name).await?;
        }
        rows.push(("PostgreSQL".to_string(), res?));
        if args.nodes > 1 {
            let name = format!("reachline_bench_nodes_{}", std::process::id());
            reachline_store::postgres::create_database(&args.pg.postgres, &name).await?;
            let url = reachline_store::postgres::url_with_database(&args.pg.postgres, &name);
            eprintln!(
                "PostgreSQL, {} nodes: importing, then planning {} and dispatching together…",
                args.nodes, args.day
            );
            let res = match import_and_run(&url, &book, &keys, &args, args.nodes).and_then(|f| fold(&f)) {
                Ok(mut r) => ledger_size(cfg, &keys, &url).await.map(|leaves| {
                    r["ledger_leaves"] = leaves.into();
                    r
                }),
                Err(e) => Err(e),
            };
            if !args.keep {
                reachline_store::postgres::drop_database(&args.pg.postgres, &name).await?;
            }
            rows.push((format!("PostgreSQL ({} nodes)", args.nodes), res?));
        }
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
        let sequential = r["sequential"].as_bool() == Some(true);
        let beside = if sequential { "" } else { ", beside the dispatch" };
        println!(
            "| {backend} | plan: one pass over the book (every borrower's open installments looked at){beside} | {} | {:.2} | {:.0} |",
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
            "contact checks the pass asked for, run after the dispatch",
            "checks",
            "checks_seconds",
        );
        if sequential {
            line(
                "dispatch: notices sent over SMPP, each attempt recorded",
                "sent",
                "dispatch_seconds",
            );
        }
        line(
            "end to end: notices sent, from the start of planning to the last send",
            "sent",
            "end_to_end_seconds",
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

/// The size of the log the nodes left, by its latest checkpoint.
async fn ledger_size(cfg: &Config, keys: &std::path::Path, url: &str) -> anyhow::Result<u64> {
    let mut cfg = cfg.clone();
    cfg.keys.file = keys.to_path_buf();
    let ledger = reachline_store::open_ledger(url, cfg.keyring()?).await?;
    Ok(ledger.latest_checkpoint().await?.map_or(0, |c| c.size.0))
}

/// Imports the book into the database `url` names, then runs the engine on it in `nodes` child
/// processes at once (a child's peak memory is its engine's alone) and returns each one's
/// figures.
fn import_and_run(
    url: &str,
    book: &std::path::Path,
    keys: &std::path::Path,
    args: &EngineBenchArgs,
    nodes: u32,
) -> anyhow::Result<Vec<serde_json::Value>> {
    import_book(url, book, keys)?;
    let mut children = Vec::new();
    for _ in 0..nodes.max(1) {
        children.push(EngineChild::spawn(url, keys, args)?);
    }
    run_together(&mut children)
}

/// A single node's figures.
fn one(figures: Vec<serde_json::Value>) -> serde_json::Value {
    figures.into_iter().next().unwrap_or_default()
}

fn import_book(url: &str, book: &std::path::Path, keys: &std::path::Path) -> anyhow::Result<()> {
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
    Ok(())
}

/// One engine process: its stdin (the parent's `go`, then end of file when every node is
/// done) and its stdout (`ready`, then its figures), one JSON line each.
struct EngineChild {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl EngineChild {
    fn spawn(url: &str, keys: &std::path::Path, args: &EngineBenchArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the reachline executable")?;
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
        if args.sequential {
            child.arg("--sequential");
        }
        let mut child = child
            .env("REACHLINE_KEYS__FILE", keys)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().context("the engine process's stdout")?);
        Ok(EngineChild { child, stdin, stdout })
    }

    /// The next JSON line the process writes.
    fn read(&mut self, what: &str) -> anyhow::Result<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("the engine run failed before {what} ({status})");
        }
        serde_json::from_str(&line).with_context(|| format!("the engine process's {what}"))
    }

    fn say(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().context("the engine process's stdin is closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for EngineChild {
    fn drop(&mut self) {
        // End of file on stdin lets a finished node exit; one that is not finished is killed.
        self.stdin.take();
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Starts the nodes at one moment, once each is ready, and collects each one's figures; they
/// stay up until all have reported.
fn run_together(nodes: &mut [EngineChild]) -> anyhow::Result<Vec<serde_json::Value>> {
    for n in nodes.iter_mut() {
        n.read("being ready")?;
    }
    for n in nodes.iter_mut() {
        n.say("go")?;
    }
    let mut out = Vec::new();
    for n in nodes.iter_mut() {
        out.push(n.read("its figures")?);
    }
    for n in nodes.iter_mut() {
        n.stdin.take();
        let status = n.child.wait()?;
        if !status.success() {
            bail!("an engine process ended badly ({status})");
        }
    }
    Ok(out)
}

/// The nodes' figures as one run's: counts summed, times from the first node's start to the
/// last node's end (planning: to the last node's end of planning), the largest node's memory.
fn fold(nodes: &[serde_json::Value]) -> anyhow::Result<serde_json::Value> {
    let get = |n: &serde_json::Value, k: &str| -> anyhow::Result<f64> {
        n[k].as_f64()
            .with_context(|| format!("an engine process's figures lack {k}"))
    };
    let sum = |k: &str| -> anyhow::Result<u64> { nodes.iter().map(|n| get(n, k).map(|v| v as u64)).sum() };
    let min =
        |k: &str| -> anyhow::Result<f64> { nodes.iter().map(|n| get(n, k)).try_fold(f64::MAX, |a, v| Ok(a.min(v?))) };
    let max =
        |k: &str| -> anyhow::Result<f64> { nodes.iter().map(|n| get(n, k)).try_fold(f64::MIN, |a, v| Ok(a.max(v?))) };
    let start = min("started_at")?;
    let dispatch_start = min("dispatch_started_at")?;
    let plan_end = max("planned_at")?;
    let dispatch_end = max("dispatched_at")?;
    let receipts_end = max("receipts_at")?;
    Ok(serde_json::json!({
        "nodes": nodes.len(),
        "smsc": nodes.first().and_then(|n| n["smsc"].as_str()).unwrap_or("?"),
        "parts": sum("parts")?,
        "peer_parts": sum("peer_parts")?,
        "borrowers": sum("borrowers")?,
        "decisions": sum("decisions")?,
        "queued": sum("queued")?,
        "plan_seconds": plan_end - start,
        "checks": sum("checks")?,
        "checks_seconds": max("checks_seconds")?,
        "sent": sum("sent")?,
        "failed": sum("failed")?,
        "cancelled": sum("cancelled")?,
        "dispatch_seconds": dispatch_end - dispatch_start,
        "end_to_end_seconds": dispatch_end - start,
        "receipts": sum("receipts")?,
        "receipts_seconds": receipts_end - dispatch_start,
        "peak_rss_bytes": max("peak_rss_bytes")?,
        "peak_rss_bytes_all": sum("peak_rss_bytes")?,
        "sent_by_node": nodes.iter().map(|n| n["sent"].clone()).collect::<Vec<_>>(),
        "sequential": nodes.iter().all(|n| n["sequential"].as_bool() == Some(true)),
    }))
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
    // The day's notices are planned and sent at once: the send-time model would hold most first
    // sends for later hours of the day, which one planning pass then does not reach.
    ecfg.timing.enabled = false;
    let mut engine = Engine::new(
        store.clone(),
        vec![sms.clone()],
        Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?,
        ecfg,
    );
    // As `reachline run` keeps it: the node joins the database's one ledger (it sequences,
    // or queues its leaves to the node that does).
    let ledger = match args.ledger {
        true => Some(crate::run::ledger_sink(cfg).await?),
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
    // Ready; the parent says `go` when every node is.
    let mut control = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("{}", serde_json::json!({"ready": true}));
    control.next_line().await?;
    // A planning pass and its dispatch: side by side as `step` runs them, or one after the other.
    let pass = || async {
        match args.sequential {
            true => {
                let (planned, checks) = engine.plan_pass(now).await?;
                Ok::<_, reachline_engine::EngineError>((planned, checks, engine.dispatch(now).await?))
            }
            false => engine.plan_and_dispatch(now).await,
        }
    };
    let started_at = unix_seconds();
    let t = Instant::now();
    let (mut p, checks, mut d) = pass().await?;
    let plan_seconds = p.elapsed.as_secs_f64();
    let planned_at = started_at + plan_seconds;
    let dispatch_started_at = if args.sequential { planned_at } else { started_at };
    // Where planning is split into slices that several nodes claim (PostgreSQL), a node goes on
    // until a pass finds no slice left to plan and nothing to send: the slices other nodes
    // were still planning when this one's dispatch ran dry are sent by whoever is free.
    if store.plan_slices() > 1 {
        loop {
            let (more, checks, sent) = pass().await?;
            engine.contact_checks(checks, now).await?;
            if more.borrowers == 0 && sent.leased == 0 {
                break;
            }
            p.borrowers += more.borrowers;
            p.decisions += more.decisions;
            p.queued += more.queued;
            p.checks += more.checks;
            d += sent;
        }
    }
    let end_to_end_seconds = t.elapsed().as_secs_f64();
    let dispatched_at = unix_seconds();
    let parts = sms.stats().submitted.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(sandbox) = &sandbox {
        anyhow::ensure!(
            sandbox.accepted_count() as u64 == parts,
            "the sandbox accepted {} parts, the client counted {parts}",
            sandbox.accepted_count()
        );
    }
    engine.wait_receipts(parts, std::time::Duration::from_secs(120)).await;
    let receipts_at = unix_seconds();
    let receipts_seconds = receipts_at - dispatch_started_at;
    // Then the contact checks the pass asked for, as `reachline run`'s step runs them after
    // its dispatch; timed on their own.
    let t_checks = Instant::now();
    engine.contact_checks(checks, now).await?;
    let checks_seconds = t_checks.elapsed().as_secs_f64();
    // Every part the run put on the SMSC, the contact checks' links among them (`parts` are
    // the notices' alone).
    let peer_parts = sms.stats().submitted.load(std::sync::atomic::Ordering::Relaxed);
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
        "checks": p.checks,
        "checks_seconds": checks_seconds,
        "peer_parts": peer_parts,
        "sent": d.sent,
        "failed": d.failed,
        "cancelled": d.cancelled,
        "dispatch_seconds": dispatched_at - dispatch_started_at,
        "end_to_end_seconds": end_to_end_seconds,
        "receipts": engine.counters.receipts.load(std::sync::atomic::Ordering::Relaxed),
        "receipts_seconds": receipts_seconds,
        "peak_rss_bytes": crate::import::peak_rss(),
        "started_at": started_at,
        "planned_at": planned_at,
        "dispatch_started_at": dispatch_started_at,
        "sequential": args.sequential,
        "dispatched_at": dispatched_at,
        "receipts_at": receipts_at,
    });
    println!("{out}");
    // Up until the parent has every node's figures (a node that sequences the ledger stays
    // to commit the others' leaves).
    while control.next_line().await?.is_some() {}
    Ok(())
}

/// Now, as seconds since the Unix epoch (the nodes' times are compared across processes).
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
