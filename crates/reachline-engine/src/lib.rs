//! The notice engine: the IO shell around the policy core. A planner asks `decide` for every
//! borrower with a notice in its window and queues sends in a durable outbox (one row per
//! attempt, with an idempotency key); dispatchers lease due rows, ask the policy again at that
//! moment, resolve the address, render, send and record; receipt intake turns receipts into
//! evidence and wakes the borrower for a new decision.
//!
//! Each worker is one `async fn` taking `now`, so tests and the demo drive the engine with
//! their own clock and `reachline run` with the real one.
//!
//! # Crash safety
//!
//! A row is marked `sending` (committed, under the dispatcher's lease) before it is handed to
//! the channel and `sent` after. A process that dies in between leaves it `sending`; once its
//! lease has run out, [`Engine::recover`] (run by every [`Engine::step`], on any node) turns it
//! `in_doubt`, which is never resubmitted (it may have reached the SMSC) and counts for the
//! ladder as a send with no outcome yet, so the notice climbs on silence as for any other send.
//! Every other state is safe to resume: queued and leased rows are leased again, and the
//! planner's idempotency keys mean a re-run of a planning pass queues nothing twice.

pub mod dispatch;
pub mod ledger;
pub mod plan;
pub mod verify;

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use reachline_domain::{BorrowerId, Channel, Jurisdiction};
use reachline_policy::{Cadence, GateProfile, HealthConfig, LadderConfig, Templates};
use reachline_store::engine::{EngineStore, Matched, ReceiptIn, Sighted};
use reachline_store::server::Sighting;

pub use dispatch::DispatchReport;

/// A planning pass's side of [`plan_progress`]: told each time a batch of sends is written;
/// dropped when the pass is over.
#[derive(Debug)]
pub struct PlanProgress(tokio::sync::watch::Sender<()>);

impl PlanProgress {
    fn written(&self) {
        self.0.send_replace(());
    }
}

/// A dispatch's side of [`plan_progress`]; [`PlanWatch::none`] for a dispatch with no pass
/// beside it.
#[derive(Debug)]
pub struct PlanWatch(Option<tokio::sync::watch::Receiver<()>>);

impl PlanWatch {
    pub fn none() -> Self {
        PlanWatch(None)
    }

    /// Whether the pass still runs; what it wrote so far counts as seen (a write after this
    /// ends the next [`PlanWatch::wait`]).
    fn running(&mut self) -> bool {
        self.0.as_mut().is_some_and(|w| {
            w.borrow_and_update();
            w.has_changed().is_ok()
        })
    }

    /// Until the pass writes again or is over.
    async fn wait(&mut self) {
        if let Some(w) = &mut self.0 {
            if w.changed().await.is_err() {
                self.0 = None;
            }
        }
    }
}

/// Links a planning pass to a dispatch running beside it ([`Engine::plan_pass_with`],
/// [`Engine::dispatch_beside`]).
pub fn plan_progress() -> (PlanProgress, PlanWatch) {
    let (tx, rx) = tokio::sync::watch::channel(());
    (PlanProgress(tx), PlanWatch(Some(rx)))
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] reachline_store::StoreError),
    #[error("stored engine data is not readable: {0}")]
    Corrupt(String),
    #[error("template: {0}")]
    Template(String),
    #[error("ledger: {0}")]
    Ledger(String),
}

/// Where the engine writes its ledger leaves: the sequencer (an append returns once its batch
/// is committed under a signed checkpoint) and the store that keeps each borrower's commitment
/// key.
#[derive(Clone)]
pub struct LedgerSink {
    pub sequencer: Arc<reachline_store::ledger::Sequencer>,
    pub store: Arc<dyn reachline_store::ledger::LedgerStore>,
}

/// What the engine needs besides its store and channels.
#[derive(Clone)]
pub struct EngineConfig {
    pub cn: GateProfile,
    pub us: GateProfile,
    pub cadences: Vec<Cadence>,
    pub ladder: LadderConfig,
    pub health: HealthConfig,
    pub lender_name: String,
    pub service_phone: String,
    /// Where the borrower's links point; a signed token is appended.
    pub link_base: String,
    /// The key links are signed with.
    pub link_key: Vec<u8>,
    /// Where the self-service pages are served (ends with `/`): check links go to `…c/<token>`.
    pub self_service_base: String,
    /// Borrowers per planning batch (one read, one decide, one write).
    pub plan_batch: usize,
    /// Planning batches read and decided at once while an earlier one is written.
    pub plan_reads: usize,
    /// Rows per lease.
    pub lease_batch: usize,
    /// Sends in flight at once per dispatcher.
    pub concurrency: usize,
    pub lease: Duration,
    /// Tries when the provider is unavailable, before the attempt is failed as transient.
    pub max_tries: u32,
    /// This process's name on its leases.
    pub owner: String,
    /// Several nodes on one database: how long a node's claim on a slice of the planning pass
    /// keeps the others off it (a slice is planned once per pass, by one node). Zero: every
    /// pass plans every slice.
    pub plan_hold: Duration,
    /// How long a carrier or recycled-number lookup may take before the engine gives up on it
    /// (a vendor that hangs must not hold up the pass; the lookup is asked again the next day).
    pub lookup_timeout: std::time::Duration,
    /// The send-time model: a notice's first send waits for the hour the borrower engages
    /// most likely (learned from their attempts' outcomes).
    pub timing: reachline_policy::TimingConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cn: GateProfile::cn(),
            us: GateProfile::us(),
            cadences: vec![Cadence::standard("*")],
            ladder: LadderConfig::default(),
            health: HealthConfig::default(),
            lender_name: "示例金融".into(),
            service_phone: "95500".into(),
            link_base: "https://r.example/n/".into(),
            link_key: b"reachline link key (configure one)".to_vec(),
            self_service_base: "https://r.example/".into(),
            plan_batch: 2_000,
            plan_reads: 2,
            lease_batch: 512,
            concurrency: 64,
            lease: Duration::minutes(5),
            max_tries: 5,
            owner: "engine".into(),
            plan_hold: Duration::zero(),
            lookup_timeout: std::time::Duration::from_secs(3),
            timing: reachline_policy::TimingConfig::default(),
        }
    }
}

impl EngineConfig {
    pub fn profile(&self, j: Jurisdiction) -> &GateProfile {
        match j {
            Jurisdiction::Us => &self.us,
            _ => &self.cn,
        }
    }

    /// The days around today inside which an installment can have a notice due.
    fn window(&self) -> (i64, i64) {
        let offsets = self
            .cadences
            .iter()
            .flat_map(|c| c.steps.iter().map(|s| i64::from(s.offset_days)));
        let (lo, hi) = offsets.fold((0, 0), |(lo, hi), o| (lo.min(o), hi.max(o)));
        // An installment due `hi` days ago still has its last step; one due in `-lo` days its first.
        (hi, -lo)
    }
}

/// The longest wait between two tries at recording receipts while the database is away.
const INTAKE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Lookups asked at once after a planning batch (vendors limit concurrent queries; eight is
/// well inside what number-intelligence APIs allow).
const LOOKUPS_AT_ONCE: usize = 8;
/// Contact checks run at once.
const CHECKS_AT_ONCE: usize = 32;

/// A batch's plan being written, with the lookups to ask and the contact checks to hand back
/// once it is.
type PlanWriting = (
    tokio::task::JoinHandle<reachline_store::Result<usize>>,
    Vec<plan::Lookup>,
    Vec<plan::Check>,
);

/// What a planning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanReport {
    pub borrowers: u64,
    pub decisions: u64,
    pub queued: u64,
    /// Lookups answered (each became evidence).
    pub lookups: u64,
    /// Contact checks the pass's decisions asked for (one per borrower at most).
    pub checks: u64,
    /// How long the pass took (beside a dispatch, its own end, not the dispatch's).
    pub elapsed: std::time::Duration,
}

/// A planning pass's borrowers cut into batches of `batch`, as the stream `plan_batches` reads.
fn in_batches(
    ids: &[BorrowerId],
    batch: usize,
) -> futures::stream::Iter<std::vec::IntoIter<Result<Vec<BorrowerId>, EngineError>>> {
    let batches: Vec<_> = ids.chunks(batch).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(batches)
}

/// Counters the demo and the benchmark read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Told of every hand-over to a provider (the server's metrics).
    pub observer: std::sync::OnceLock<Arc<dyn SendObserver>>,
    /// Sends the providers accepted, recorded `sent`.
    pub sent: AtomicU64,
    pub receipts: AtomicU64,
    pub receipts_unmatched: AtomicU64,
    /// Carrier and recycled-number lookups asked, and those that gave no answer (an error, or
    /// no answer within `lookup_timeout`).
    pub lookups: AtomicU64,
    pub lookups_failed: AtomicU64,
    /// Notified after each receipt is recorded.
    pub recorded: tokio::sync::Notify,
}

/// Told of every hand-over to a provider: which channel and provider, how long the provider
/// took to answer, and the class of its refusal, if it refused.
pub trait SendObserver: Send + Sync + std::fmt::Debug {
    fn handed_over(
        &self,
        channel: Channel,
        provider: &str,
        took: std::time::Duration,
        refused: Option<reachline_domain::DeliveryClass>,
    );
}

/// The engine over one store and a set of channels.
pub struct Engine {
    pub(crate) store: Arc<dyn EngineStore>,
    pub(crate) ledger: Option<LedgerSink>,
    pub(crate) intel: Option<Arc<dyn reachline_intel::NumberIntel>>,
    /// When each (contact, need) was last asked, so a source that cannot answer is not asked
    /// again on every pass.
    asked: std::sync::Mutex<HashMap<(reachline_domain::ContactId, reachline_policy::Need), DateTime<Utc>>>,
    pub(crate) channels: HashMap<Channel, Arc<dyn reachline_channels::Channel>>,
    /// Channels a contact check wanted but this process has no gateway for: said once at
    /// `warn` per channel (a 1M book would otherwise log one line per contact).
    pub(crate) unconfigured: std::sync::Mutex<std::collections::HashSet<Channel>>,
    pub(crate) templates: Templates,
    pub(crate) cfg: Arc<EngineConfig>,
    pub counters: Arc<Counters>,
    /// The live clock, when the engine runs on one (`reachline run`, `serve`): a long dispatch
    /// pass takes each lease, and asks the policy again, at the time it is then, not the time
    /// the pass began — a lease must not start out already run out (another node would take
    /// the row for in doubt), nor a send pass the contact hours on a stale time.
    clock: std::sync::OnceLock<Clock>,
}

/// A clock the engine can read (the real one, or a simulated one that moves).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Engine {
    /// The ladder climbs only over the channels configured here.
    pub fn new(
        store: Arc<dyn EngineStore>,
        channels: Vec<Arc<dyn reachline_channels::Channel>>,
        templates: Templates,
        mut cfg: EngineConfig,
    ) -> Self {
        let channels: HashMap<Channel, Arc<dyn reachline_channels::Channel>> =
            channels.into_iter().map(|c| (c.kind(), c)).collect();
        cfg.ladder.channels.retain(|c| channels.contains_key(c));
        Engine {
            store,
            ledger: None,
            intel: None,
            asked: Default::default(),
            unconfigured: Default::default(),
            channels,
            templates,
            cfg: Arc::new(cfg),
            counters: Arc::new(Counters::default()),
            clock: std::sync::OnceLock::new(),
        }
    }

    /// Runs on `clock` from now on (once; a later call is ignored).
    pub fn use_clock(&self, clock: Clock) {
        let _ = self.clock.set(clock);
    }

    /// The time now: the live clock's, never before `pass` (the time a pass was given).
    pub(crate) fn now_after(&self, pass: DateTime<Utc>) -> DateTime<Utc> {
        self.clock.get().map_or(pass, |c| c().max(pass))
    }

    /// Every send and every receipt becomes a ledger leaf.
    pub fn with_ledger(mut self, sink: LedgerSink) -> Self {
        self.ledger = Some(sink);
        self
    }

    /// The ledger's sequencer, when the engine keeps a ledger.
    pub fn sequencer(&self) -> Option<Arc<reachline_store::ledger::Sequencer>> {
        self.ledger.as_ref().map(|l| l.sequencer.clone())
    }

    /// Carrier and recycled-number lookups that health asks for go to `intel`.
    pub fn with_intel(mut self, intel: Arc<dyn reachline_intel::NumberIntel>) -> Self {
        self.intel = Some(intel);
        self
    }

    /// The number-intelligence source, if one is configured.
    pub fn intel(&self) -> Option<&Arc<dyn reachline_intel::NumberIntel>> {
        self.intel.as_ref()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Attempts a dead dispatcher left half-sent (their lease has run out) become in doubt.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<u64, EngineError> {
        let n = self.store.recover_in_doubt(now).await?;
        if n > 0 {
            tracing::warn!(rows = n, "attempts left in doubt by a stopped process; not resubmitted");
        }
        Ok(n)
    }

    /// One planning pass over every borrower due for a decision at `now`, then the contact
    /// checks it asked for (`plan_pass`, then `contact_checks`).
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<PlanReport, EngineError> {
        let (report, checks) = self.plan_pass(now).await?;
        self.contact_checks(checks, now).await?;
        Ok(report)
    }

    /// One planning pass over every borrower due for a decision at `now`: decisions, queued
    /// sends and wake times written, lookups asked. The contact checks its decisions asked for
    /// are returned, not run: a check is a workflow of its own (reads, steps, ledger leaves,
    /// links sent), and `step` runs them after its dispatch pass rather than holding the
    /// planning of the rest of the book behind them. The pass's borrowers go in batches of
    /// `plan_batch`: `plan_reads` batches are read (each on its own read connection) and decided
    /// at once, each in its own task, while the batch before them is written; writes stay in
    /// order, one at a time.
    pub async fn plan_pass(&self, now: DateTime<Utc>) -> Result<(PlanReport, Vec<plan::Check>), EngineError> {
        self.plan_pass_with(now, None).await
    }

    /// [`Engine::plan_pass`], telling `progress` each time a batch of its sends is written (a
    /// dispatch beside it, [`Engine::dispatch_beside`], leases them then). The pass is over for
    /// the dispatch when `progress` is dropped.
    pub async fn plan_pass_with(
        &self,
        now: DateTime<Utc>,
        progress: Option<&PlanProgress>,
    ) -> Result<(PlanReport, Vec<plan::Check>), EngineError> {
        let started = std::time::Instant::now();
        let (back, ahead) = self.cfg.window();
        // Zones differ by at most a day from UTC.
        let today = now.date_naive();
        let from = today - Duration::days(back + 1);
        let to = today + Duration::days(ahead + 1);
        let mut report = PlanReport::default();
        let mut checks = Vec::new();
        let batch = self.cfg.plan_batch.max(1);
        let batches = if self.store.plan_slices() <= 1 {
            let due = self.store.due_borrowers(from, to, now).await?;
            in_batches(&due, batch).boxed()
        } else {
            // Several nodes may share the database: plan the slices no other node holds. The
            // pass's borrowers are found once, when the first slice is claimed, and each slice
            // takes its own (borrower id modulo the slice count): one read of the due-date index
            // per node and pass instead of one per slice (16 on a 1M-borrower book: 8.7 s of a
            // 41 s pass). A borrower woken after that read is planned by the next pass, as on a
            // single node.
            //
            // A slice is claimed when the pass's batches reach it, so the read-ahead and the
            // write of the batch before run on across slices. Claimed, planned and written one
            // after the other, each slice began with an empty pipeline and ended by waiting for
            // its last write: on a single node (every slice its own) a 200,000-borrower pass on
            // PostgreSQL ran its reads, decisions and writes strictly in turn.
            let slices = i64::from(self.store.plan_slices());
            let hold = self.cfg.plan_hold;
            // The state is owned (no borrow held across the claims' awaits), so the pass's
            // future stays `Send` for the tasks that run it.
            let start = (
                self.store.clone(),
                self.cfg.owner.clone(),
                None::<Arc<Vec<BorrowerId>>>,
                Vec::new(),
            );
            let claimed = futures::stream::try_unfold(start, move |(store, owner, due, mut done)| async move {
                let Some(slice) = store.claim_plan_slice(&owner, now, hold, &done).await? else {
                    return Ok(None);
                };
                done.push(slice);
                let all = match due {
                    Some(all) => all,
                    None => Arc::new(store.due_borrowers(from, to, now).await?),
                };
                let mine: Vec<BorrowerId> = all
                    .iter()
                    .copied()
                    .filter(|b| b.0.rem_euclid(slices) == i64::from(slice))
                    .collect();
                Ok::<_, EngineError>(Some((in_batches(&mine, batch), (store, owner, Some(all), done))))
            });
            claimed.try_flatten().boxed()
        };
        self.plan_batches(batches, (from, to), now, progress, &mut report, &mut checks)
            .await?;
        report.checks = checks.len() as u64;
        report.elapsed = started.elapsed();
        Ok((report, checks))
    }

    /// Runs contact checks a planning pass asked for, side by side (their ledger leaves share
    /// the sequencer's batches). Each reads before it writes, so a check already under way or
    /// answered lately costs one read.
    pub async fn contact_checks(&self, checks: Vec<plan::Check>, now: DateTime<Utc>) -> Result<(), EngineError> {
        let mut running = futures::stream::iter(checks)
            .map(|(borrower, contact)| self.contact_check(borrower, contact, now))
            .buffer_unordered(CHECKS_AT_ONCE);
        while let Some(done) = running.next().await {
            done?;
        }
        Ok(())
    }

    /// Plans `batches` of borrowers, reading ahead while the batch before is written.
    async fn plan_batches(
        &self,
        // Boxed: the slices' stream of claims is built from closures, and through a generic
        // parameter the compiler could no longer show the pass's future `Send`.
        batches: futures::stream::BoxStream<'static, Result<Vec<BorrowerId>, EngineError>>,
        (from, to): (NaiveDate, NaiveDate),
        now: DateTime<Utc>,
        progress: Option<&PlanProgress>,
        report: &mut PlanReport,
        checks: &mut Vec<plan::Check>,
    ) -> Result<(), EngineError> {
        let mut batches = batches
            .map(|ids| {
                let (store, cfg) = (self.store.clone(), self.cfg.clone());
                tokio::spawn(async move {
                    let ids = ids?;
                    let views = store.views(&ids, from, to).await?;
                    plan::plan_views(&views, &cfg, now)
                })
            })
            .buffered(self.cfg.plan_reads.max(1));
        let mut writing: Option<PlanWriting> = None;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| EngineError::Corrupt(format!("a planning batch stopped: {e}")))??;
            report.borrowers += batch.borrowers;
            report.decisions += batch.decisions;
            if let Some(w) = writing.take() {
                checks.extend(self.finish_plan_write(w, now, progress, report).await?);
            }
            let store = self.store.clone();
            let write = batch.write;
            writing = Some((
                tokio::spawn(async move { store.write_plan(write).await }),
                batch.lookups,
                batch.checks,
            ));
        }
        if let Some(w) = writing.take() {
            checks.extend(self.finish_plan_write(w, now, progress, report).await?);
        }
        Ok(())
    }

    /// Waits for a batch's write, then asks the lookups its decisions named; returns the
    /// contact checks they asked for.
    async fn finish_plan_write(
        &self,
        (write, lookups, checks): PlanWriting,
        now: DateTime<Utc>,
        progress: Option<&PlanProgress>,
        report: &mut PlanReport,
    ) -> Result<Vec<plan::Check>, EngineError> {
        let queued = write
            .await
            .map_err(|e| EngineError::Corrupt(format!("a planning write stopped: {e}")))??;
        report.queued += queued as u64;
        if let Some(p) = progress.filter(|_| queued > 0) {
            p.written();
        }
        // A few at a time: a slow vendor costs the batch about one deadline, not one per lookup.
        let mut asked = futures::stream::iter(lookups)
            .map(|(borrower, contact, need)| self.lookup(borrower, contact, need, now))
            .buffer_unordered(LOOKUPS_AT_ONCE);
        while let Some(answered) = asked.next().await {
            report.lookups += u64::from(answered?);
        }
        Ok(checks)
    }

    /// Asks the number-intelligence source what health needs, at most once a day per contact
    /// and need; an answer becomes evidence (and wakes the borrower). True if it answered.
    async fn lookup(
        &self,
        borrower: BorrowerId,
        contact: reachline_domain::ContactId,
        need: reachline_policy::Need,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        use reachline_policy::{EvidenceKind, Need};
        let Some(intel) = &self.intel else { return Ok(false) };
        {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            if asked
                .get(&(contact, need))
                .is_some_and(|t| now - *t < Duration::days(1))
            {
                return Ok(false);
            }
            asked.insert((contact, need), now);
        }
        let target = self.store.send_target(borrower, contact).await?;
        let reachline_domain::ContactAddress::Phone(number) = &target.address else {
            return Ok(false);
        };
        let asked: futures::future::BoxFuture<'_, reachline_intel::Result<EvidenceKind>> = match need {
            Need::CarrierCheck => Box::pin(async move {
                intel
                    .status(number)
                    .await
                    .map(|status| EvidenceKind::CarrierStatus { status })
            }),
            Need::RecycledCheck { since } => Box::pin(async move {
                intel
                    .recycled_since(number, since)
                    .await
                    .map(|answer| EvidenceKind::Recycled { since, answer })
            }),
            Need::Reverify => return Ok(false),
        };
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let Ok(kind) = tokio::time::timeout(self.cfg.lookup_timeout, asked).await else {
            self.counters.lookups_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                contact = contact.0,
                source = intel.name(),
                timeout = ?self.cfg.lookup_timeout,
                "a lookup gave no answer in time; asked again tomorrow"
            );
            return Ok(false);
        };
        match kind {
            Ok(kind) => {
                let source = serde_json::to_string(&reachline_policy::Source::Lookup(intel.name().to_string()))
                    .unwrap_or_default();
                let kind = serde_json::to_string(&kind).unwrap_or_default();
                self.store
                    .add_evidence(borrower, Some(contact), now, &source, &kind)
                    .await?;
                Ok(true)
            }
            Err(e) => {
                self.counters.lookups_failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(contact = contact.0, error = %e, "a lookup gave no answer");
                Ok(false)
            }
        }
    }

    /// Every provider behind the engine's channels and how it stands now (breakers, sessions).
    pub fn provider_status(&self) -> Vec<(Channel, reachline_channels::ProviderStatus)> {
        let mut out: Vec<_> = self
            .channels
            .iter()
            .flat_map(|(kind, ch)| ch.status().into_iter().map(move |st| (*kind, st)))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1.provider).cmp(&(b.0, &b.1.provider)));
        out
    }

    /// Records receipts from a channel, of whatever classes, in one transaction, then appends
    /// the ledger leaves of those that changed what is known of a send.
    pub async fn intake_many(
        &self,
        rs: Vec<reachline_channels::Receipt>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let seen: Vec<_> = rs.iter().map(|r| (r.class, r.provider_id.clone())).collect();
        let receipts = rs.into_iter().map(|r| receipt_in(r, now)).collect();
        let matched = self.store.record_receipts(receipts, &plan::delivery_evidence).await?;
        let intake = self.intake_of(matched.into_iter().zip(seen), now)?;
        self.seal(&intake).await
    }

    /// Webhooks' receipts behind their replay guards (a signature's sighting each), in one
    /// transaction with the guards ([`EngineStore::record_sighted`]): returns, per item, whether
    /// its sighting was new (its receipt recorded), and the ledger leaves still to append —
    /// hand them to [`Engine::seal`] before answering the webhooks. The next batch may be
    /// recorded while this one's leaves are appended.
    pub async fn record_sighted(
        &self,
        items: &[(Sighting, Option<reachline_channels::Receipt>)],
        now: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Intake), EngineError> {
        let seen: Vec<_> = items
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| (r.class, r.provider_id.clone())))
            .collect();
        // Borrowed, so that a caller retrying a batch copies it once per try, not twice.
        let items = items
            .iter()
            .map(|(s, r)| (s.clone(), r.clone().map(|r| receipt_in(r, now))))
            .collect();
        let sighted = self.store.record_sighted(items, now, &plan::delivery_evidence).await?;
        let fresh = sighted.iter().map(|s| *s != Sighted::Replayed).collect();
        let matched = sighted.into_iter().zip(seen).filter_map(|(s, seen)| match s {
            Sighted::Taken(Some(m)) => Some((m, seen?)),
            _ => None,
        });
        Ok((fresh, self.intake_of(matched, now)?))
    }

    /// The leaves of recorded receipts that changed what is known of a send, and the counts.
    fn intake_of(
        &self,
        matched: impl Iterator<Item = (Matched, (reachline_domain::DeliveryClass, String))>,
        now: DateTime<Utc>,
    ) -> Result<Intake, EngineError> {
        let mut intake = Intake::default();
        for (m, (class, id)) in matched {
            intake.receipts += 1;
            match m {
                Matched::Unmatched => intake.unmatched += 1,
                Matched::Send(m) if m.changed && self.ledger.is_some() => {
                    intake.leaves.push(ledger::receipt_leaf(&m, class, &id, now)?)
                }
                _ => {}
            }
        }
        Ok(intake)
    }

    /// Appends recorded receipts' leaves to the ledger, then counts the receipts (whoever waits
    /// on the count sees them recorded and in the ledger). A failed append appended nothing
    /// (the sequencer commits a batch whole), so it may be tried again.
    pub async fn seal(&self, intake: &Intake) -> Result<(), EngineError> {
        if let Some(l) = &self.ledger {
            if !intake.leaves.is_empty() {
                l.sequencer
                    .append_all(&intake.leaves)
                    .await
                    .map_err(|e| EngineError::Ledger(e.to_string()))?;
            }
        }
        if intake.unmatched > 0 {
            self.counters
                .receipts_unmatched
                .fetch_add(intake.unmatched, Ordering::Relaxed);
            // Most are receipts that beat their send's record (a fast SMSC): the record matches
            // them when it is written. Those that stay unmatched are flagged in `receipts`.
            tracing::debug!(
                unmatched = intake.unmatched,
                "receipts matched no send yet; kept, matched when their send is recorded"
            );
        }
        // Counted last, so whoever waits on the count sees the unmatched ones already counted.
        self.counters.receipts.fetch_add(intake.receipts, Ordering::Relaxed);
        self.counters.recorded.notify_waiters();
        Ok(())
    }

    /// The borrower opened the link of a notice (the page that serves the link calls this with
    /// the id its token names): engagement with that notice, through that contact point.
    pub async fn click(&self, notice: i64, now: DateTime<Utc>) -> Result<bool, EngineError> {
        let receipt = ReceiptIn {
            at: now,
            provider: "link".into(),
            provider_id: format!("notice-{notice}"),
            outbox_id: Some(notice),
            class: reachline_domain::DeliveryClass::Engaged,
            code: "click".into(),
            is_final: true,
            raw: format!("link opened for notice {notice}").into_bytes(),
        };
        let matched = self
            .store
            .record_receipt(receipt, &|channel| {
                serde_json::to_string(&reachline_policy::EvidenceKind::LinkClick { channel }).unwrap_or_default()
            })
            .await?;
        Ok(matched.is_some())
    }

    /// Waits until at least `n` receipts have been recorded, or `within` has passed.
    pub async fn wait_receipts(&self, n: u64, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.counters.recorded.notified();
            if self.counters.receipts.load(Ordering::Relaxed) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.counters.receipts.load(Ordering::Relaxed) >= n;
            }
        }
    }

    /// Takes every channel's receipt stream and records each receipt as it comes, stamped by
    /// `clock`. Runs until the streams end.
    pub fn spawn_intake(
        self: &Arc<Self>,
        clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for ch in self.channels.values() {
            let Some(stream) = ch.take_receipts() else { continue };
            let engine = self.clone();
            let clock = clock.clone();
            tasks.push(tokio::spawn(async move {
                // Whatever has arrived is recorded together, in one transaction.
                let mut chunks = stream.ready_chunks(1024);
                while let Some(batch) = chunks.next().await {
                    engine.intake_until_recorded(batch, clock.as_ref()).await;
                }
            }));
        }
        tasks
    }

    /// Records a batch of receipts, however long the database is away: the provider has been
    /// answered already and will not send them again, so while the store is unreachable or busy
    /// (a restart, a network cut, a lock) the batch is tried again, backing off to one try every
    /// five seconds. An error that is not the database's (a receipt the store refuses) is tried
    /// five times, then the batch is recorded one receipt at a time, so one bad receipt cannot
    /// hold back the others; one that still fails is logged by provider and id.
    async fn intake_until_recorded(
        &self,
        batch: Vec<reachline_channels::Receipt>,
        clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) {
        let mut tries: u32 = 0;
        loop {
            let Err(e) = self.intake_many(batch.clone(), clock()).await else {
                return;
            };
            tries += 1;
            let unavailable = matches!(
                e,
                EngineError::Ledger(_)
                    | EngineError::Store(
                        reachline_store::StoreError::Postgres(_) | reachline_store::StoreError::Sqlite(_)
                    )
            );
            tracing::error!(error = %e, tries, receipts = batch.len(), "recording receipts failed; trying again");
            if !unavailable && tries >= 5 {
                break;
            }
            let wait = std::time::Duration::from_millis(200 * u64::from(tries)).min(INTAKE_BACKOFF_MAX);
            tokio::time::sleep(wait).await;
        }
        for r in batch {
            let (provider, id) = (r.provider.clone(), r.provider_id.clone());
            if let Err(e) = self.intake_many(vec![r], clock()).await {
                tracing::error!(error = %e, provider, provider_id = id, "a receipt could not be recorded");
            }
        }
    }

    /// One turn of every worker: settle what a dead dispatcher left, plan, dispatch what is
    /// due, then run the contact checks the pass asked for.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<(PlanReport, DispatchReport), EngineError> {
        self.recover(now).await?;
        let (planned, checks, dispatched) = self.plan_and_dispatch(now).await?;
        // The notices first: run beside them, the checks' commits slowed PostgreSQL's dispatch
        // by half (200,000 borrowers: 18.4 s alone, 32.4 s beside 3,678 checks).
        self.contact_checks(checks, now).await?;
        Ok((planned, dispatched))
    }

    /// A planning pass and a dispatch beside it: each batch of sends the pass writes is leased
    /// as soon as it is written, and the dispatch ends once the pass is over and nothing more
    /// is due. Returns the contact checks the pass asked for, not run. The two overlap because
    /// each leaves the other's resources idle: on PostgreSQL the planning pass kept ~45% of
    /// two cores idle (it waits on its reads and writes), and the sends wait on the provider.
    ///
    /// They may overlap safely because nothing in the pass assumes a quiet book: several nodes
    /// already plan and send at once. A send is leased only once its row is committed; its
    /// check reads the borrower afresh; a planning write sets a borrower's wake time only if
    /// no evidence (a send's outcome among it) woke the borrower since its view was read.
    pub async fn plan_and_dispatch(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(PlanReport, Vec<plan::Check>, DispatchReport), EngineError> {
        let (progress, watch) = plan_progress();
        let planning = async move {
            let planned = self.plan_pass_with(now, Some(&progress)).await;
            drop(progress);
            planned
        };
        let ((planned, checks), dispatched) = futures::try_join!(planning, self.dispatch_beside(now, watch))?;
        Ok((planned, checks, dispatched))
    }

    pub fn store(&self) -> &Arc<dyn EngineStore> {
        &self.store
    }
}

/// Receipts recorded whose ledger leaves are still to be appended ([`Engine::seal`]).
#[derive(Debug, Default)]
#[must_use = "the receipts' leaves are appended by Engine::seal"]
pub struct Intake {
    leaves: Vec<reachline_ledger::leaf::Leaf>,
    receipts: u64,
    unmatched: u64,
}

/// A channel's receipt as the store keeps it, stamped `now`.
fn receipt_in(r: reachline_channels::Receipt, now: DateTime<Utc>) -> ReceiptIn {
    ReceiptIn {
        at: now,
        provider: r.provider,
        provider_id: r.provider_id,
        outbox_id: r.reference.as_ref().and_then(|m| m.0.parse().ok()),
        class: r.class,
        code: r.code,
        is_final: r.is_final,
        raw: r.raw,
    }
}
