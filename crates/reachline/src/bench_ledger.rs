//! `reachline bench ledger`: appends N synthetic leaves through the sequencer to a fresh ledger
//! (each append acknowledged only after its batch committed with a signed checkpoint), then
//! times inclusion-proof generation from the stored tiles and its verification at that size,
//! and compares the in-memory append rate with the machine's raw SHA-256 rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use reachline_domain::{BorrowerId, ContactId};
use reachline_ledger::proof::verify_inclusion;
use reachline_ledger::{leaf_hash, Hash, LeafIndex, MemoryTree};
use reachline_store::ledger::{self, LedgerStore, Sequencer, SequencerConfig};
use reachline_store::Keyring;
use sha2::Digest;

use crate::ledger::synthetic_leaf;

#[derive(Args)]
pub struct LedgerBenchArgs {
    #[arg(long, default_value_t = 10_000_000)]
    leaves: u64,
    /// Leaves per batch (one transaction and one signed checkpoint each).
    #[arg(long, default_value_t = 8192)]
    batch_max_entries: usize,
    #[arg(long, default_value_t = 50)]
    batch_max_ms: u64,
    /// Concurrent callers, each appending its own run of `--chunk` leaves at a time.
    #[arg(long, default_value_t = 16)]
    callers: u64,
    #[arg(long, default_value_t = 1024)]
    chunk: u64,
    /// Proofs to time.
    #[arg(long, default_value_t = 5000)]
    proofs: usize,
    #[command(flatten)]
    pg: crate::bench::PostgresTarget,
    #[arg(long)]
    no_sqlite: bool,
    /// Where the SQLite file goes (removed afterwards unless --keep).
    #[arg(long, default_value = "./reachline-bench")]
    dir: std::path::PathBuf,
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

struct Row {
    backend: &'static str,
    leaves: u64,
    secs: f64,
    disk: u64,
    gen: (f64, f64),
    verify: (f64, f64),
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

async fn run_one(backend: &'static str, store: Arc<dyn LedgerStore>, a: &LedgerBenchArgs) -> anyhow::Result<Row> {
    let signer = reachline_ledger::note::SignerKey::from_seed("reachline.bench/ledger", &[3; 32])?;
    let config = SequencerConfig {
        origin: "reachline.bench/ledger".into(),
        batch_max_entries: a.batch_max_entries,
        batch_max_ms: a.batch_max_ms,
    };
    let seq = Sequencer::start(store.clone(), signer.clone(), config).await?;
    let next = Arc::new(AtomicU64::new(0));
    let pb = indicatif::ProgressBar::new(a.leaves);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.callers.max(1) {
        let (seq, next, pb, n, chunk) = (seq.clone(), next.clone(), pb.clone(), a.leaves, a.chunk.max(1));
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(chunk, Ordering::Relaxed);
                if start >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let end = (start + chunk).min(n);
                let leaves = (start..end)
                    .map(|k| {
                        let notice = (k / 3) as i64 + 1;
                        let leaf =
                            synthetic_leaf(k, BorrowerId((k / 30) as i64 + 1), notice, ContactId(7), Hash([9; 32]));
                        Ok((Some(notice), leaf.encode()?))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let (first, cp) = seq.append_encoded(leaves).await?;
                anyhow::ensure!(
                    first + (end - start) <= cp.size.0,
                    "acknowledged outside its checkpoint"
                );
                pb.inc(end - start);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    drop(seq);
    let latest = store
        .latest_checkpoint()
        .await?
        .expect("the sequencer published checkpoints");
    anyhow::ensure!(
        latest.size.0 == a.leaves,
        "the log has {} leaves, not {}",
        latest.size,
        a.leaves
    );

    let mut rng = rand::thread_rng();
    let (mut gen, mut ver) = (Vec::new(), Vec::new());
    for _ in 0..a.proofs {
        let i = LeafIndex(rng.gen_range(0..latest.size.0));
        let leaf = leaf_hash(&store.leaves(i.0, 1).await?[0].data);
        let t = Instant::now();
        let proof = ledger::inclusion_proof(store.as_ref(), i, latest.size).await?;
        gen.push(t.elapsed());
        let t = Instant::now();
        verify_inclusion(i, latest.size, &leaf, &proof, &latest.root)?;
        ver.push(t.elapsed());
    }
    Ok(Row {
        backend,
        leaves: latest.size.0,
        secs,
        disk: store.disk_bytes().await?,
        gen: percentiles(gen),
        verify: percentiles(ver),
    })
}

/// Leaves per second appended to an in-memory tree (leaf hash plus the node hashes it
/// completes), over `n` pre-encoded leaves.
fn memory_rate(n: u64) -> anyhow::Result<f64> {
    let leaves: Vec<Vec<u8>> = (0..n)
        .map(|k| synthetic_leaf(k, BorrowerId(1), (k / 3) as i64, ContactId(7), Hash([9; 32])).encode())
        .collect::<Result<_, _>>()?;
    let mut tree = MemoryTree::with_capacity(n as usize);
    let t = Instant::now();
    for l in &leaves {
        tree.append(leaf_hash(l));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(tree.root());
    Ok(rate)
}

/// Raw SHA-256: MB/s over 1 MiB buffers, and hashes/s of 65-byte inputs (one interior node).
fn sha_rates() -> (f64, f64) {
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut acc = [0u8; 32];
    for _ in 0..256 {
        acc = sha2::Sha256::digest(&buf).into();
    }
    let mbs = 256.0 / t.elapsed().as_secs_f64() * 1.048_576;
    let node = [0x5au8; 65];
    let t = Instant::now();
    let n = 2_000_000;
    for _ in 0..n {
        acc = sha2::Sha256::digest(node).into();
    }
    std::hint::black_box(acc);
    (mbs, n as f64 / t.elapsed().as_secs_f64())
}

pub async fn run(a: LedgerBenchArgs) -> anyhow::Result<()> {
    let keys = Keyring::random("bench");
    let mut rows = Vec::new();
    if !a.no_sqlite {
        std::fs::create_dir_all(&a.dir)?;
        let path = a.dir.join("ledger-bench.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        eprintln!("appending {} leaves to SQLite…", a.leaves);
        let store: Arc<dyn LedgerStore> =
            Arc::new(reachline_store::sqlite::SqliteLedger::open(&path, keys.clone()).await?);
        rows.push(run_one("SQLite (WAL, synchronous=FULL)", store, &a).await?);
        if !a.keep {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
    if !a.pg.no_postgres {
        let db = format!("reachline_ledger_bench_{}", std::process::id());
        reachline_store::postgres::create_database(&a.pg.postgres, &db).await?;
        eprintln!("appending {} leaves to PostgreSQL…", a.leaves);
        let url = reachline_store::postgres::url_with_database(&a.pg.postgres, &db);
        let res = async {
            let store: Arc<dyn LedgerStore> =
                Arc::new(reachline_store::postgres::PgLedger::connect(&url, keys.clone()).await?);
            run_one("PostgreSQL", store, &a).await
        }
        .await;
        if !a.keep {
            reachline_store::postgres::drop_database(&a.pg.postgres, &db).await?;
        }
        rows.push(res?);
    }
    eprintln!("measuring the in-memory tree and SHA-256…");
    let mem = memory_rate(a.leaves.min(2_000_000))?;
    let (sha_mbs, sha_nodes) = sha_rates();

    if a.json {
        let backends: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "backend": r.backend,
                    "leaves": r.leaves,
                    "seconds": r.secs,
                    "appends_per_second": r.leaves as f64 / r.secs,
                    "disk_bytes": r.disk,
                    "proof_gen_p50_us": r.gen.0,
                    "proof_gen_p99_us": r.gen.1,
                    "verify_p50_us": r.verify.0,
                    "verify_p99_us": r.verify.1,
                })
            })
            .collect();
        let out = serde_json::json!({
            "batch_max_entries": a.batch_max_entries,
            "batch_max_ms": a.batch_max_ms,
            "callers": a.callers,
            "chunk": a.chunk,
            "proofs": a.proofs,
            "backends": backends,
            "memory_tree_leaves_per_second": mem,
            "sha256_mb_per_second": sha_mbs,
            "sha256_nodes_per_second": sha_nodes,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "batches of up to {} leaves or {} ms; {} callers appending {} leaves at a time; {} proofs timed",
        a.batch_max_entries, a.batch_max_ms, a.callers, a.chunk, a.proofs
    );
    println!();
    println!("| back end | leaves | durable appends/s | disk MB | bytes/leaf | proof gen p50 µs | p99 µs | verify p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
            r.backend,
            r.leaves,
            r.leaves as f64 / r.secs,
            r.disk as f64 / 1e6,
            r.disk as f64 / r.leaves.max(1) as f64,
            r.gen.0,
            r.gen.1,
            r.verify.0,
            r.verify.1
        );
    }
    println!();
    println!("| in memory | rate |");
    println!("|---|---:|");
    println!("| MemoryTree append (leaf hash + completed nodes) | {mem:.0} leaves/s |");
    println!("| raw SHA-256, 1 MiB buffers | {sha_mbs:.0} MB/s |");
    println!("| raw SHA-256, 65-byte inputs (one node hash) | {sha_nodes:.0} hashes/s |");
    println!(
        "| append cost in node-hash times (≈ 2 hashes per leaf is the floor) | {:.2} |",
        sha_nodes / mem
    );
    Ok(())
}
