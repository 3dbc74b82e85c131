//! One run of a drill: the generated book imported into a fresh SQLite database, the real
//! engine (planner, outbox, dispatchers, receipt intake, ledger) over the sandbox gateways on a
//! simulated clock, the scenario's faults switched on and off at their times (or none, for the
//! control), and at the end everything the engine recorded, read back for the report.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use reachline_engine::Engine;
use reachline_policy::Templates;
use reachline_store::engine::{DecisionRow, EngineStore, EngineView, OutboxRow};

use super::gateways::{Clock, Gateways, Recycled, TapEvent, World};
use super::scenario::{FaultKind, Scenario};
use crate::config::{Config, DatabaseUrl};
use crate::import::{import, ImportOptions};
use crate::keys::KeyFile;

/// What one run left: the engine's records and what the gateways and the loop saw.
pub struct RunRecord {
    pub views: Vec<EngineView>,
    /// Every decision history, by borrower.
    pub decisions: HashMap<reachline_domain::BorrowerId, Vec<(DateTime<Utc>, DecisionRow)>>,
    pub taps: Vec<TapEvent>,
    /// (when, provider, state) each time a provider's state as the engine shows it changed.
    pub provider_changes: Vec<(DateTime<Utc>, String, &'static str)>,
    /// Real milliseconds each pass took, by simulated time.
    pub passes: Vec<(DateTime<Utc>, f64)>,
    /// When the node came back after a database restart, and the attempts recovery found in
    /// doubt.
    pub restarts: Vec<(DateTime<Utc>, u64)>,
    /// Passes that failed (the database gone under a running node), with the error's first
    /// line: what the node logged; and the first pass to succeed after failures.
    pub pass_failures: Vec<(DateTime<Utc>, String)>,
    pub resumed: Vec<DateTime<Utc>>,
    /// Lookups that failed, by simulated time; lookups asked.
    pub lookup_failures: Vec<DateTime<Utc>>,
    /// Lookups the engine itself gave up on (an error, or past its deadline), by the pass
    /// that counted them: what Reachline noticed, as its metrics show it.
    pub engine_lookup_failures: Vec<(DateTime<Utc>, u64)>,
    pub lookups: u64,
    pub recycled: HashMap<String, Recycled>,
    /// The contact points whose numbers the mass recycling took.
    pub recycled_contacts: std::collections::HashSet<reachline_domain::ContactId>,
    pub engine: reachline_engine::EngineConfig,
    pub end: DateTime<Utc>,
    /// The back end the run used (`SQLite` or `PostgreSQL`).
    pub database: String,
}

impl RunRecord {
    pub fn rows(&self) -> impl Iterator<Item = (&EngineView, &OutboxRow)> {
        self.views.iter().flat_map(|v| v.sends.iter().map(move |r| (v, r)))
    }
}

/// Writes the scenario's book (the generated one, plus push tokens when push is present).
pub fn write_book(s: &Scenario, dir: &Path) -> anyhow::Result<()> {
    use crate::book::gen::{generate, GenOptions};
    generate(
        dir,
        &GenOptions {
            borrowers: s.borrowers,
            seed: s.seed,
            as_of: s.start.date_naive(),
            revision: 0,
            format: crate::book::Format::Csv,
        },
        &|_| {},
    )?;
    if s.channels.push {
        // The lender's app registered a push token for some borrowers (ending in 0: the FCM
        // sandbox takes it).
        let path = dir.join("contacts.csv");
        let text = std::fs::read_to_string(&path)?;
        let mut out = text.clone();
        let mut seen = std::collections::HashSet::new();
        let since = s.start.date_naive() - Duration::days(60);
        for line in text.lines().skip(1) {
            let Some(b) = line.split(',').next() else { continue };
            if !seen.insert(b.to_string()) {
                continue;
            }
            let draw = (crate::world::stable(b, s.seed ^ 0x5055_5348) % 10_000) as f64 / 10_000.0;
            if draw < s.channels.push_share {
                let token = format!("fcm{:016x}0", crate::world::stable(b, s.seed));
                out.push_str(&format!("{b},app,push_token,primary,,{token},,{since},\n"));
            }
        }
        std::fs::write(&path, out)?;
    }
    Ok(())
}

/// The numbers a mass recycling takes: `share` of the borrowers' primary mobiles, dead from
/// the fault's start, strangers' from its end.
pub fn recycled_numbers(s: &Scenario, book: &Path) -> anyhow::Result<HashMap<String, Recycled>> {
    let mut out = HashMap::new();
    let Some(f) = s.faults.iter().find(|f| f.kind == FaultKind::MassRecycle) else {
        return Ok(out);
    };
    let share = f.share.unwrap_or(0.0);
    let phones = Config::default().phone_parser()?;
    let path = book.join("contacts.csv");
    let mut r = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    for row in r.records() {
        let row = row?;
        let (b, slot, kind, value) = (&row[0], &row[1], &row[2], &row[5]);
        if kind != "mobile" || slot != "mobile" {
            continue;
        }
        let draw = (crate::world::stable(b, s.seed ^ 0x5245_4359) % 10_000) as f64 / 10_000.0;
        if draw < share {
            if let Ok(n) = phones.parse(value) {
                out.insert(
                    super::gateways::digits(&n),
                    Recycled {
                        dies: s.start + f.start.0,
                        stranger: s.start + f.end.0,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The engine's deadline on a carrier lookup in a drill (3 s in production).
pub const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// Where a drill's two runs keep their databases.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in each run's directory.
    Sqlite,
    /// A fresh database per run on this PostgreSQL server (the URL's database is only used to
    /// connect), dropped afterwards. A `db_restart` fault cuts the run's database off under
    /// the running node: its connections terminated and new ones refused until the fault ends.
    Postgres { admin: String },
}

impl Backend {
    /// The run's database URL, made fresh.
    async fn create(&self, dir: &Path, name: &str) -> anyhow::Result<String> {
        Ok(match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("reachline.db").display()),
            Backend::Postgres { admin } => {
                let db = pg_name(name);
                let _ = reachline_store::postgres::drop_database(admin, &db).await;
                reachline_store::postgres::create_database(admin, &db)
                    .await
                    .with_context(|| format!("creating the drill's database {db}"))?;
                reachline_store::postgres::url_with_database(admin, &db)
            }
        })
    }

    /// Drops what `create` made (PostgreSQL; a SQLite file goes with its directory).
    pub async fn drop_run(&self, name: &str) -> anyhow::Result<()> {
        if let Backend::Postgres { admin } = self {
            let db = pg_name(name);
            reachline_store::postgres::set_database_reachable(admin, &db, true).await?;
            reachline_store::postgres::drop_database(admin, &db).await?;
        }
        Ok(())
    }
}

fn pg_name(run: &str) -> String {
    format!("reachline_drill_{}_{run}", std::process::id())
}

/// A node: the store, the engine over it and its receipt intake.
struct Node {
    store: Arc<dyn EngineStore>,
    engine: Arc<Engine>,
    intake: Vec<tokio::task::JoinHandle<()>>,
    /// Receipts the gateways owed when this node started (a new node's counters start at 0).
    receipts_base: u64,
    /// The engine's failed-lookup count at the end of the last pass.
    lookups_failed_seen: u64,
}

async fn start_node(s: &Scenario, cfg: &Config, gw: &Gateways) -> anyhow::Result<Node> {
    let store = crate::run::open_engine_store(cfg).await?;
    let mut ecfg = crate::run::engine_config(cfg, &cfg.keyring()?)?;
    if !s.channels.order.is_empty() {
        ecfg.ladder.channels = s.channels.order.clone();
    }
    if let Some(on) = s.timing {
        ecfg.timing.enabled = on;
    }
    // Deadlines scaled to the drill's compressed time, like the SMPP client's.
    ecfg.lookup_timeout = LOOKUP_TIMEOUT;
    let mut engine = Engine::new(
        store.clone(),
        gw.channels().await?,
        Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?,
        ecfg,
    )
    .with_ledger(crate::run::ledger_sink(cfg).await?);
    if let Some(c) = &gw.carrier {
        engine = engine.with_intel(Arc::new(super::gateways::CarrierIntel(c.clone())));
    }
    let engine = Arc::new(engine);
    let clock = gw.clock.clone();
    let intake = engine.spawn_intake(Arc::new(move || clock.now()));
    Ok(Node {
        store,
        engine,
        intake,
        receipts_base: gw.receipts_due(),
        lookups_failed_seen: 0,
    })
}

impl Node {
    /// Waits until every receipt the gateways owe this node is recorded (at most 2 s).
    async fn settle(&self, gw: &Gateways) {
        let due = gw.receipts_due().saturating_sub(self.receipts_base);
        self.engine.wait_receipts(due, std::time::Duration::from_secs(2)).await;
    }

    fn stop(self) {
        for t in &self.intake {
            t.abort();
        }
    }
}

/// Runs the scenario once, with its faults (`faulty`) or without (the control), in `dir`
/// (which must exist and be empty) over the book in `book`, on a fresh database of `backend`
/// named after the run (`name`).
pub async fn run(
    s: &Scenario,
    faulty: bool,
    dir: &Path,
    book: &Path,
    backend: &Backend,
    name: &str,
) -> anyhow::Result<RunRecord> {
    let keys = dir.join("reachline.keys");
    KeyFile::generate("drill").write_new(&keys)?;
    let mut cfg = Config::default();
    cfg.database.url = DatabaseUrl(backend.create(dir, name).await?);
    cfg.keys.file = keys;
    // Close ledger batches soon: the simulated clock waits for nothing else.
    cfg.ledger.batch_max_ms = 5;
    cfg.validate()?;
    {
        let store = reachline_store::open(cfg.database.url.as_str(), cfg.keyring()?).await?;
        import(
            store.as_ref(),
            book,
            &cfg.phone_parser()?,
            &cfg.book_defaults()?,
            &ImportOptions {
                batch_size: cfg.book.batch_size,
                progress: false,
            },
        )
        .await
        .context("importing the drill's book")?;
    }
    let clock = Clock::new(s.start);
    let recycled = if faulty {
        recycled_numbers(s, book)?
    } else {
        HashMap::new()
    };
    let world = World::new(clock.clone(), recycled.clone());
    let gw = Gateways::start(s, clock.clone(), world).await?;
    let mut node = Some(start_node(s, &cfg, &gw).await?);
    let faults: Vec<_> = if faulty { s.faults.clone() } else { Vec::new() };
    let mut active = vec![false; faults.len()];
    let mut record = RunRecord {
        views: Vec::new(),
        decisions: HashMap::new(),
        taps: Vec::new(),
        provider_changes: Vec::new(),
        passes: Vec::new(),
        restarts: Vec::new(),
        pass_failures: Vec::new(),
        resumed: Vec::new(),
        lookup_failures: Vec::new(),
        engine_lookup_failures: Vec::new(),
        lookups: 0,
        recycled,
        recycled_contacts: Default::default(),
        engine: node.as_ref().map(|n| n.engine.config().clone()).unwrap_or_default(),
        end: s.end(),
        database: match backend {
            Backend::Sqlite => "SQLite".into(),
            Backend::Postgres { .. } => "PostgreSQL".into(),
        },
    };
    let mut states: HashMap<String, &'static str> = HashMap::new();
    let mut now = s.start;
    while now < s.end() {
        clock.set(now);
        for (i, f) in faults.iter().enumerate() {
            let on = now >= s.start + f.start.0 && now < s.start + f.end.0;
            if on == active[i] {
                continue;
            }
            active[i] = on;
            tracing::info!(fault = f.kind.as_str(), on, %now, "drill fault");
            gw.apply(f, on);
            if let (FaultKind::DbRestart, Backend::Postgres { admin }) = (f.kind, backend) {
                // The database goes away under the running node, and comes back.
                reachline_store::postgres::set_database_reachable(admin, &pg_name(name), !on).await?;
            } else if f.kind == FaultKind::DbRestart {
                if on {
                    // The database goes away and the node with it.
                    if let Some(n) = node.take() {
                        n.settle(&gw).await;
                        n.stop();
                    }
                } else {
                    let n = start_node(s, &cfg, &gw).await?;
                    let recovered = n.engine.recover(now).await?;
                    record.restarts.push((now, recovered));
                    node = Some(n);
                }
            }
        }
        if let Some(n) = node.as_mut() {
            let began = std::time::Instant::now();
            // A pass that fails is logged and the next one tried, as `reachline run` does; the
            // first to succeed after failures is the node working again.
            match n.engine.step(now).await {
                Ok(_) => {
                    if record
                        .pass_failures
                        .last()
                        .is_some_and(|(at, _)| record.resumed.last().is_none_or(|back| back < at))
                    {
                        record.resumed.push(now);
                    }
                }
                Err(e) => {
                    let line = e.to_string().lines().next().unwrap_or_default().to_string();
                    tracing::warn!(error = %line, %now, "drill pass failed");
                    record.pass_failures.push((now, line));
                }
            }
            record.passes.push((now, began.elapsed().as_secs_f64() * 1000.0));
            n.settle(&gw).await;
            // The engine's own count (its metric), read, not reset: what this pass added.
            let failed = n
                .engine
                .counters
                .lookups_failed
                .load(std::sync::atomic::Ordering::Relaxed);
            if failed > n.lookups_failed_seen {
                record
                    .engine_lookup_failures
                    .push((now, failed - n.lookups_failed_seen));
            }
            n.lookups_failed_seen = failed;
            for (_, st) in n.engine.provider_status() {
                let state = st.state.as_str();
                if states.get(&st.provider).copied() != Some(state) {
                    // The first sighting of a provider that is up is not a change.
                    if states.contains_key(&st.provider) || state != "up" {
                        record.provider_changes.push((now, st.provider.clone(), state));
                    }
                    states.insert(st.provider.clone(), state);
                }
            }
        }
        now += s.tick.0;
    }
    clock.set(s.end());
    let node = match node {
        Some(n) => n,
        // A restart that outlasts the drill: the node comes back to be read.
        None => start_node(s, &cfg, &gw).await?,
    };
    node.settle(&gw).await;
    let store = node.store.clone();
    record.engine = node.engine.config().clone();
    node.stop();
    let far = s.end() + Duration::days(3650);
    let (from, to) = (
        s.start.date_naive() - Duration::days(400),
        s.end().date_naive() + Duration::days(400),
    );
    for ids in store.due_borrowers(from, to, far).await?.chunks(2_000) {
        for v in store.views(ids, from, to).await? {
            record.decisions.insert(v.id, store.decisions_of(v.id).await?);
            if !record.recycled.is_empty() {
                for c in &v.contacts {
                    if let Ok(t) = store.send_target(v.id, c.id).await {
                        if let reachline_domain::ContactAddress::Phone(p) = &t.address {
                            if record.recycled.contains_key(&super::gateways::digits(p)) {
                                record.recycled_contacts.insert(c.id);
                            }
                        }
                    }
                }
            }
            record.views.push(v);
        }
    }
    record.taps = std::mem::take(&mut *gw.taps.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(c) = &gw.carrier {
        record.lookup_failures = c.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        record.lookups = c.asked.load(std::sync::atomic::Ordering::Relaxed);
    }
    Ok(record)
}
