//! `reachline bench webhooks`: receipt webhooks against `reachline serve`'s application on
//! loopback — each one signed, checked, refused if replayed, matched to its send, and answered
//! only once durably recorded (the receipt row, the attempt's new outcome, the evidence, the
//! ledger leaf) — beside a bare axum "hello" on the same machine as the ceiling. Prints one
//! table. The sends the receipts answer are written to the outbox first, as the dispatcher
//! would have recorded them.
//! The load generator runs in the same process, so both sides share the machine's cores the
//! same way for both targets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use reachline_channels::webhook::sign;
use reachline_engine::{Engine, EngineConfig, LedgerSink};
use reachline_policy::Templates;
use reachline_server::{ServerConfig, WebhookConfig, WebhookKind};
use reachline_store::ledger::{LedgerStore, Sequencer, SequencerConfig};
use reachline_store::Keyring;

#[derive(Debug, clap::Args)]
pub struct WebhookBenchArgs {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent connections, each sending its next request when the last is answered.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Sends written before the load; receipts answer them in turn (a second round of
    /// receipts for the same sends changes no outcome, and is still recorded).
    #[arg(long, default_value_t = 100_000)]
    pub sends: usize,
    /// Working directory for the SQLite file (recreated).
    #[arg(long, default_value = "./reachline-bench")]
    pub dir: PathBuf,
    /// Run on a fresh database on this PostgreSQL server (created, and dropped afterwards)
    /// instead of SQLite; the URL's database is only used to connect.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

const SECRET: &str = "bench-secret";

struct Load {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// Closed-loop load: `connections` clients, each with one kept-alive connection.
async fn load(url: String, connections: usize, seconds: u64, sends: &[i64]) -> anyhow::Result<Load> {
    let sends: Arc<[i64]> = sends.into();
    let signed = !sends.is_empty();
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, counter, sends) = (url.clone(), counter.clone(), sends.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let id = sends.get(n % sends.len().max(1)).copied().unwrap_or(n as i64);
                let body = format!(r#"{{"out_id":"{id}","message_id":"bench-{id}","status":"DELIVRD"}}"#);
                let mut req = client.post(&url).body(body.clone());
                if signed {
                    let ts = Utc::now().timestamp();
                    req = req
                        .header("x-timestamp", ts.to_string())
                        .header("x-signature", sign(SECRET.as_bytes(), ts, body.as_bytes()));
                }
                let t = Instant::now();
                let r = req.send().await;
                let took = t.elapsed();
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(took.as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => errors += 1,
                }
            }
            anyhow::Ok((ok, errors, lat))
        }));
    }
    let mut out = Load {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await??;
        out.ok += ok;
        out.errors += errors;
        out.latencies_us.extend(lat);
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    Ok(out)
}

pub async fn run(args: WebhookBenchArgs) -> anyhow::Result<()> {
    let Some(admin) = args.postgres.clone() else {
        let _ = std::fs::remove_dir_all(&args.dir);
        std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
        let url = format!("sqlite://{}", args.dir.join("webhooks.db").display());
        return run_on(&url, "SQLite", &args).await;
    };
    let db = format!("reachline_bench_webhooks_{}", std::process::id());
    reachline_store::postgres::create_database(&admin, &db).await?;
    let url = reachline_store::postgres::url_with_database(&admin, &db);
    let res = run_on(&url, "PostgreSQL", &args).await;
    reachline_store::postgres::drop_database(&admin, &db).await?;
    res
}

async fn run_on(url: &str, backend: &str, args: &WebhookBenchArgs) -> anyhow::Result<()> {
    let url = url.to_string();
    let keys = Keyring::random("bench");
    let stores = reachline_store::open_all(&url, keys.clone()).await?;
    let ledger: Arc<dyn LedgerStore> = reachline_store::open_ledger(&url, keys).await?.into();
    let origin = "reachline.bench/ledger";
    let sequencer = Sequencer::start(
        ledger.clone(),
        reachline_ledger::note::SignerKey::from_seed(origin, &rand::random::<[u8; 32]>())?,
        SequencerConfig {
            origin: origin.into(),
            batch_max_entries: 256,
            batch_max_ms: 0,
        },
    )
    .await?;
    let engine = Arc::new(
        Engine::new(
            stores.engine.clone(),
            vec![],
            Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?,
            EngineConfig::default(),
        )
        .with_ledger(LedgerSink {
            sequencer: Arc::new(sequencer),
            store: ledger.clone(),
        }),
    );
    let config = ServerConfig {
        ip_rate_per_second: 1_000_000,
        webhooks: vec![WebhookConfig {
            name: "agg".into(),
            kind: WebhookKind::SmsReceipt,
            secret: SECRET.into(),
            window_seconds: 300,
            safe_mode: None,
        }],
        ..ServerConfig::default()
    };
    let server = reachline_server::Server::new(
        stores,
        engine.clone(),
        Some(ledger),
        config,
        Arc::new(Utc::now),
        reachline_book::parse::BookDefaults {
            locale: reachline_domain::Locale::parse_tag("zh-CN")?,
            time_zone: chrono_tz::Asia::Shanghai,
            jurisdiction: reachline_domain::Jurisdiction::Cn,
        },
        reachline_domain::PhoneParser::default(),
    );
    let sends = write_sends(engine.store().as_ref(), args.sends).await?;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app.local_addr()?;
    tokio::spawn(reachline_server::serve(app, reachline_server::router(server)));
    let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hello_addr = hello.local_addr()?;
    let hello_app = axum::Router::new().route("/", axum::routing::post(|_body: axum::body::Bytes| async { "hello" }));
    tokio::spawn(async move { axum::serve(hello, hello_app).await });

    eprintln!(
        "{} s per target, {} connections; first the bare axum hello, then the webhooks",
        args.seconds, args.connections
    );
    let ceiling = load(format!("http://{hello_addr}/"), args.connections, args.seconds, &[]).await?;
    let hooks = load(
        format!("http://{app_addr}/v1/webhooks/agg"),
        args.connections,
        args.seconds,
        &sends,
    )
    .await?;
    let unmatched = engine.counters.receipts_unmatched.load(Ordering::Relaxed);
    anyhow::ensure!(unmatched == 0, "{unmatched} receipts matched no send");
    let recorded = engine.counters.receipts.load(Ordering::Relaxed);
    anyhow::ensure!(
        recorded >= hooks.ok,
        "{} webhooks were answered 200 but only {recorded} receipts recorded",
        hooks.ok
    );
    if args.json {
        let figures = |l: &Load| {
            serde_json::json!({
                "requests": l.ok, "errors": l.errors, "seconds": l.elapsed.as_secs_f64(),
                "requests_per_second": l.rate(), "p50_ms": l.pct(0.5), "p99_ms": l.pct(0.99),
            })
        };
        let out = serde_json::json!({
            "backend": backend,
            "connections": args.connections,
            "ceiling": figures(&ceiling),
            "webhooks": figures(&hooks),
            "receipts_recorded": recorded,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{backend}:");
    println!("| target | requests | errors | requests/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, l) in [
        ("bare axum hello (ceiling)", &ceiling),
        (
            "POST /v1/webhooks (signed, replay-checked, matched, durably recorded)",
            &hooks,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {:.0} | {:.2} | {:.2} |",
            l.ok,
            l.errors,
            l.rate(),
            l.pct(0.5),
            l.pct(0.99)
        );
    }
    println!(
        "\nwebhooks at {:.0}% of the ceiling; {recorded} receipts recorded and matched to their \
         sends (each kept raw, with its outcome, evidence and ledger leaf, before its 200)",
        100.0 * hooks.rate() / ceiling.rate()
    );
    Ok(())
}

/// Writes `n` sends as the dispatcher records them (`sent`, provider `agg`, provider id
/// `bench-<id>`) and returns their ids.
async fn write_sends(store: &dyn reachline_store::engine::EngineStore, n: usize) -> anyhow::Result<Vec<i64>> {
    use reachline_store::engine::{NewSend, PlanWrite, SentRecord};
    let now = Utc::now();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let sends = chunk
            .iter()
            .map(|&i| NewSend {
                idem_key: format!("bench/{i}"),
                borrower: reachline_domain::BorrowerId(1 + (i % 1000) as i64),
                installment: reachline_domain::InstallmentId(1 + i as i64),
                step: 0,
                kind: "pre_due".into(),
                rung: 0,
                contact: reachline_domain::ContactId(1 + (i % 1000) as i64),
                channel: reachline_domain::Channel::Sms,
                third_party: false,
                not_before: now,
            })
            .collect();
        store
            .write_plan(PlanWrite {
                at: Some(now),
                sends,
                ..PlanWrite::default()
            })
            .await?;
        let rows = store
            .lease("bench", now, chrono::Duration::minutes(10), chunk.len())
            .await?;
        let moved = store
            .mark_sending_many("bench", rows.iter().map(|r| r.id).collect(), now)
            .await?;
        store
            .record_sent_many(
                moved
                    .iter()
                    .map(|&id| SentRecord {
                        id,
                        at: now,
                        provider: "agg".into(),
                        provider_ids: vec![format!("bench-{id}")],
                        template_id: "bench".into(),
                        template_version: 1,
                        text_sha256: [0; 32],
                    })
                    .collect(),
                &reachline_engine::plan::delivery_evidence,
            )
            .await?;
        ids.extend(moved);
    }
    Ok(ids)
}
