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
//! A row is marked `sending` (committed) before it is handed to the channel and `sent` after.
//! A process that dies in between leaves it `sending`; on restart [`Engine::recover`] turns it
//! `in_doubt`, which is never resubmitted (it may have reached the SMSC) and counts for the
//! ladder as a send with no outcome yet, so the notice climbs on silence as for any other send.
//! Every other state is safe to resume: queued and leased rows are leased again, and the
//! planner's idempotency keys mean a re-run of a planning pass queues nothing twice.

pub mod dispatch;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use reachline_domain::{BorrowerId, Channel, Jurisdiction};
use reachline_policy::{Cadence, GateProfile, HealthConfig, LadderConfig, Templates};
use reachline_store::engine::{EngineStore, PlanWrite, ReceiptIn};

pub use dispatch::DispatchReport;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] reachline_store::StoreError),
    #[error("stored engine data is not readable: {0}")]
    Corrupt(String),
    #[error("template: {0}")]
    Template(String),
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
    /// Borrowers per planning batch.
    pub plan_batch: usize,
    /// Rows per lease.
    pub lease_batch: usize,
    /// Sends in flight at once per dispatcher.
    pub concurrency: usize,
    pub lease: Duration,
    /// Tries when the provider is unavailable, before the attempt is failed as transient.
    pub max_tries: u32,
    /// This process's name on its leases.
    pub owner: String,
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
            plan_batch: 2_000,
            lease_batch: 512,
            concurrency: 64,
            lease: Duration::minutes(5),
            max_tries: 5,
            owner: "engine".into(),
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

/// What a planning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanReport {
    pub borrowers: u64,
    pub decisions: u64,
    pub queued: u64,
}

/// Counters the demo and the benchmark read.
#[derive(Debug, Default)]
pub struct Counters {
    pub receipts: AtomicU64,
    pub receipts_unmatched: AtomicU64,
}

/// The engine over one store and a set of channels.
pub struct Engine {
    pub(crate) store: Arc<dyn EngineStore>,
    pub(crate) channels: HashMap<Channel, Arc<dyn reachline_channels::Channel>>,
    pub(crate) templates: Templates,
    pub(crate) cfg: EngineConfig,
    pub counters: Arc<Counters>,
}

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
            channels,
            templates,
            cfg,
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// After a restart: attempts a dead process left half-sent become in doubt.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<u64, EngineError> {
        let n = self.store.recover_in_doubt(now).await?;
        if n > 0 {
            tracing::warn!(rows = n, "attempts left in doubt by a stopped process; not resubmitted");
        }
        Ok(n)
    }

    /// One planning pass over every borrower due for a decision at `now`.
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<PlanReport, EngineError> {
        let (back, ahead) = self.cfg.window();
        // Zones differ by at most a day from UTC.
        let today = now.date_naive();
        let from = today - Duration::days(back + 1);
        let to = today + Duration::days(ahead + 1);
        let mut report = PlanReport::default();
        let mut after: Option<BorrowerId> = None;
        loop {
            let ids = self
                .store
                .due_borrowers(after, from, to, now, self.cfg.plan_batch)
                .await?;
            let Some(last) = ids.last().copied() else { break };
            after = Some(last);
            let views = self.store.views(&ids, from, to).await?;
            let mut write = PlanWrite {
                at: Some(now),
                ..PlanWrite::default()
            };
            for view in &views {
                let owned = plan::Owned::build(view, &self.cfg, now)?;
                let decisions = owned.decide(view, &self.cfg, now);
                report.decisions += decisions.len() as u64;
                let p = plan::plan_borrower(view, &owned, &decisions, &self.cfg, now);
                write.sends.extend(p.sends);
                write.decisions.extend(p.decisions);
                if let Some(w) = p.wake {
                    write.wakes.push((view.id, w));
                }
            }
            report.borrowers += views.len() as u64;
            report.queued += self.store.write_plan(write).await? as u64;
            if ids.len() < self.cfg.plan_batch {
                break;
            }
        }
        Ok(report)
    }

    /// Records one receipt from a channel.
    pub async fn intake(&self, r: reachline_channels::Receipt, now: DateTime<Utc>) -> Result<(), EngineError> {
        let receipt = ReceiptIn {
            at: now,
            provider: r.provider,
            provider_id: r.provider_id,
            outbox_id: r.reference.as_ref().and_then(|m| m.0.parse().ok()),
            class: r.class,
            code: r.code,
            is_final: r.is_final,
            raw: r.raw,
        };
        let class = receipt.class;
        let matched = self
            .store
            .record_receipt(receipt, &|ch| plan::delivery_evidence(ch, class))
            .await?;
        self.counters.receipts.fetch_add(1, Ordering::Relaxed);
        if matched.is_none() {
            self.counters.receipts_unmatched.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("a receipt matched no send; kept and flagged");
        }
        Ok(())
    }

    /// Takes every channel's receipt stream and records each receipt as it comes, stamped by
    /// `clock`. Runs until the streams end.
    pub fn spawn_intake(
        self: &Arc<Self>,
        clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        use futures::StreamExt;
        let mut tasks = Vec::new();
        for ch in self.channels.values() {
            let Some(mut stream) = ch.take_receipts() else { continue };
            let engine = self.clone();
            let clock = clock.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(r) = stream.next().await {
                    if let Err(e) = engine.intake(r, clock()).await {
                        tracing::error!(error = %e, "recording a receipt failed");
                    }
                }
            }));
        }
        tasks
    }

    /// One turn of every worker: plan, then dispatch what is due.
    pub async fn step(&self, now: DateTime<Utc>) -> Result<(PlanReport, DispatchReport), EngineError> {
        let planned = self.plan(now).await?;
        let dispatched = self.dispatch(now).await?;
        Ok((planned, dispatched))
    }

    pub fn store(&self) -> &Arc<dyn EngineStore> {
        &self.store
    }
}
