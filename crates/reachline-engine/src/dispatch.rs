//! Dispatchers: lease due outbox rows, ask the policy again now (a send goes only with a
//! `Permit` from this moment's gates), resolve the address now (a number changed after the row
//! was queued is honoured: the row is cancelled and the planner queues the new rung), render,
//! hand to the channel and record what happened.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use reachline_channels::{MessageRef, Outbound, Scope, SendError};
use reachline_domain::{BorrowerId, DeliveryClass};
use reachline_policy::{Action, Decision, NoticeKind, Permit};
use reachline_store::engine::{EngineInstallment, EngineView, OutboxRow, SentRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{self, Owned};
use crate::{Engine, EngineError, PlanWatch};

/// What a dispatch pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchReport {
    pub leased: u64,
    pub sent: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Back in the queue: the provider was unavailable.
    pub released: u64,
    /// Leases that ran out before the send: not sent on (another dispatcher may have the
    /// borrower now); the rows go with the next lease.
    pub lost: u64,
    /// Handed over with no answer (the provider may have taken them): recorded in doubt, never
    /// sent again.
    pub in_doubt: u64,
    /// Leased while a send to the same borrower was on the wire, so checked only once it was
    /// recorded (counted in `leased` too).
    pub held: u64,
}

impl std::ops::AddAssign for DispatchReport {
    fn add_assign(&mut self, o: Self) {
        self.leased += o.leased;
        self.sent += o.sent;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.released += o.released;
        self.lost += o.lost;
        self.in_doubt += o.in_doubt;
        self.held += o.held;
    }
}

/// A leased batch, checked and rendered: what is handed over, and the moment it was leased at.
struct Prepared {
    now: DateTime<Utc>,
    ready: Vec<(
        OutboxRow,
        Permit,
        reachline_domain::ContactAddress,
        reachline_policy::Rendered,
    )>,
}

enum Done {
    Failed,
    Released,
    InDoubt,
}

/// The variables a borrower's template may use (see `templates::BORROWER_FIELDS`).
#[derive(Serialize)]
struct Context<'a> {
    lender_name: &'a str,
    service_phone: &'a str,
    link: String,
    borrower_name: &'a str,
    loan_ref: &'a str,
    installment_seq: u32,
    amount_due: String,
    currency: &'a str,
    due_date: String,
    days_to_due: i64,
    days_past_due: i64,
    amount_paid: String,
    code: &'a str,
}

fn major(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

fn template_id(kind: NoticeKind, third_party: bool) -> &'static str {
    if third_party {
        return "third_party";
    }
    match kind {
        NoticeKind::ThirdPartyRequest => "third_party",
        other => other.as_str(),
    }
}

impl Engine {
    /// Leases and sends every row due at `pass` (on a live clock, each lease at the time it
    /// is taken: see [`Engine::use_clock`]).
    ///
    /// Batches overlap: while one batch is handed over, the next is leased, checked and rendered
    /// beside it (on PostgreSQL a 2,000-row batch spent ~200 ms in its lease and its reads,
    /// while the provider and the database sat idle). Rows of a borrower the batch on the wire
    /// is sending to are held back and checked once that batch is recorded, so no check reads
    /// a borrower's sends from before a send still in flight (caps, the emergency contact asked
    /// once).
    pub async fn dispatch(&self, pass: DateTime<Utc>) -> Result<DispatchReport, EngineError> {
        self.dispatch_beside(pass, PlanWatch::none()).await
    }

    /// [`Engine::dispatch`], beside the planning pass `planning` watches: while the pass runs, a
    /// lease that finds less than a full batch does not end the dispatch; an empty one waits
    /// for the pass's next write. Once the pass is over it ends as `dispatch` does.
    pub async fn dispatch_beside(
        &self,
        pass: DateTime<Utc>,
        mut planning: PlanWatch,
    ) -> Result<DispatchReport, EngineError> {
        let mut report = DispatchReport::default();
        let (back, ahead) = self.cfg.window();
        let window = (
            pass.date_naive() - Duration::days(back + 1),
            pass.date_naive() + Duration::days(ahead + 1),
        );
        // The first turn sends nothing and leases the first batch.
        let mut current = Prepared {
            now: pass,
            ready: Vec::new(),
        };
        let mut more = true;
        loop {
            let busy: std::collections::HashSet<BorrowerId> = current.ready.iter().map(|r| r.0.borrower).collect();
            let mut side = DispatchReport::default();
            let next = async {
                if !more {
                    return Ok(None);
                }
                let (rows, now, full) = loop {
                    // Asked before the lease reads: a batch written after that ends the wait. Once
                    // the pass is over, one more lease takes its last batch.
                    let planning_on = planning.running();
                    match self.lease_rows(pass).await? {
                        Some((rows, now, full)) => break (rows, now, full || planning_on),
                        None if planning_on => planning.wait().await,
                        None => return Ok(None),
                    }
                };
                let (held, clear): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| busy.contains(&r.borrower));
                let prepared = self.prepare(clear, now, window, &mut side).await?;
                Ok::<_, EngineError>(Some((prepared, held, full)))
            };
            let (sent, next) = futures::join!(self.send_prepared(current, &mut report), next);
            sent?;
            report += side;
            let Some((mut prepared, held, full)) = next? else {
                break;
            };
            if !held.is_empty() {
                report.held += held.len() as u64;
                let late = self.prepare(held, prepared.now, window, &mut report).await?;
                prepared.ready.extend(late.ready);
            }
            current = prepared;
            more = full;
        }
        if report.released > 0 {
            tracing::warn!(
                rows = report.released,
                "a provider was unavailable; those sends wait and try again"
            );
        }
        Ok(report)
    }

    /// The next batch of due rows, the moment it was leased at, and whether it was full (more
    /// may be due); `None` when nothing is due.
    async fn lease_rows(
        &self,
        pass: DateTime<Utc>,
    ) -> Result<Option<(Vec<OutboxRow>, DateTime<Utc>, bool)>, EngineError> {
        let now = self.now_after(pass);
        let rows = self
            .store
            .lease(&self.cfg.owner, now, self.cfg.lease, self.cfg.lease_batch)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let full = rows.len() == self.cfg.lease_batch;
        Ok(Some((rows, now, full)))
    }

    /// Checks leased rows against the policy at `now` (cancelling those it no longer sends),
    /// resolves their addresses and renders their texts.
    async fn prepare(
        &self,
        rows: Vec<OutboxRow>,
        now: DateTime<Utc>,
        (from, to): (chrono::NaiveDate, chrono::NaiveDate),
        report: &mut DispatchReport,
    ) -> Result<Prepared, EngineError> {
        report.leased += rows.len() as u64;
        let mut ids: Vec<BorrowerId> = rows.iter().map(|r| r.borrower).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Prepared { now, ready: Vec::new() });
        }
        let views: HashMap<BorrowerId, EngineView> = self
            .store
            .views(&ids, from, to)
            .await?
            .into_iter()
            .map(|v| (v.id, v))
            .collect();
        // 1. Ask the policy again for each row; keep the ones it still sends.
        let mut go: Vec<(OutboxRow, Permit)> = Vec::with_capacity(rows.len());
        // An emergency contact is asked once: two rows for one in the same batch would both
        // pass the check (neither is an attempt yet).
        let mut third_parties = std::collections::HashSet::new();
        let mut decided: HashMap<BorrowerId, Option<Vec<Decision>>> = HashMap::new();
        for row in rows {
            if row.third_party && !third_parties.insert(row.contact) {
                self.store
                    .cancel(row.id, now, "the emergency contact is being asked by another notice")
                    .await?;
                report.cancelled += 1;
                continue;
            }
            // One health replay and one `decide` per borrower per batch, however many of
            // their rows it holds.
            let decisions = match decided.entry(row.borrower) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let d = match views.get(&row.borrower) {
                        Some(view) => Some(Owned::build(view, &self.cfg, now)?.decide(view, &self.cfg, now, false)),
                        None => None,
                    };
                    e.insert(d)
                }
            };
            match self.recheck(&row, decisions.as_deref(), now).await? {
                Some(permit) => go.push((row, permit)),
                None => report.cancelled += 1,
            }
        }
        // 2. Addresses decrypted now, texts rendered; one store call for the batch.
        let targets = self
            .store
            .send_targets(go.iter().map(|(r, p)| (r.borrower, p.contact)).collect())
            .await?;
        let mut ready = Vec::with_capacity(go.len());
        for ((row, permit), target) in go.into_iter().zip(targets) {
            let view = &views[&row.borrower];
            let Some(inst) = view.installments.iter().find(|i| i.id == row.installment) else {
                self.store
                    .cancel(row.id, now, "the installment is outside the notice window")
                    .await?;
                report.cancelled += 1;
                continue;
            };
            let target = target?;
            let kind: NoticeKind = row
                .kind
                .parse()
                .map_err(|e| EngineError::Corrupt(format!("outbox row {} kind: {e}", row.id)))?;
            let rendered = self.render(kind, &row, view, inst, target.borrower_name.as_str(), now)?;
            ready.push((row, permit, target.address, rendered));
        }
        Ok(Prepared { now, ready })
    }

    /// Hands a prepared batch over and records what happened.
    async fn send_prepared(&self, batch: Prepared, report: &mut DispatchReport) -> Result<(), EngineError> {
        let Prepared { now, ready } = batch;
        // 3–5, `concurrency` rows at a time (at most that many can be left in doubt by a
        // crash): `sending` committed before any of them is handed over; handed over at
        // once; the accepted ones recorded in one transaction, refusals one by one.
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let chunk: Vec<_> = ready.by_ref().take(self.cfg.concurrency.max(1)).collect();
            // Marked at the time now, not the lease's: a lease that has run out by now is not
            // this dispatcher's to send on (its borrower's hold may have passed to another).
            let moved: std::collections::HashSet<i64> = self
                .store
                .mark_sending_many(
                    &self.cfg.owner,
                    chunk.iter().map(|r| r.0.id).collect(),
                    self.now_after(now),
                )
                .await?
                .into_iter()
                .collect();
            // A row whose lease ran out waits for the next lease, here or on another node.
            report.lost += (chunk.len() - moved.len()) as u64;
            let chunk: Vec<_> = chunk.into_iter().filter(|r| moved.contains(&r.0.id)).collect();
            let results: Vec<_> =
                futures::future::join_all(chunk.into_iter().map(|(row, permit, address, rendered)| async move {
                    let res = self
                        .send_permitted(&permit, &row, address.clone(), &rendered.text)
                        .await;
                    (row, rendered, address, res)
                }))
                .await;
            // What the providers took goes into the ledger first: a crash after this leaves
            // the rows in doubt, but the ledger says, truly, that they were sent.
            if let Some(l) = &self.ledger {
                // The senders' commitment keys in one store call (one transaction).
                let senders: Vec<BorrowerId> = results
                    .iter()
                    .filter(|r| r.3.is_ok())
                    .map(|(row, ..)| row.borrower)
                    .collect();
                let mut keys = l
                    .store
                    .commitment_keys(&senders)
                    .await
                    .map_err(|e| EngineError::Ledger(e.to_string()))?
                    .into_iter();
                let mut leaves = Vec::new();
                for (row, rendered, address, res) in &results {
                    if let Ok(accepted) = res {
                        let key = keys
                            .next()
                            .ok_or_else(|| EngineError::Ledger("a commitment key is missing".into()))?;
                        leaves.push(crate::ledger::sent_leaf(
                            row,
                            &key,
                            address,
                            &accepted.provider_ids,
                            (&rendered.template_id, rendered.version),
                            &rendered.text,
                            now,
                        )?);
                    }
                }
                if !leaves.is_empty() {
                    l.sequencer
                        .append_all(&leaves)
                        .await
                        .map_err(|e| EngineError::Ledger(e.to_string()))?;
                }
            }
            let mut sent = Vec::new();
            for (row, rendered, _, res) in results {
                match res {
                    Ok(accepted) => sent.push(SentRecord {
                        id: row.id,
                        at: now,
                        provider: accepted.provider,
                        provider_ids: accepted.provider_ids,
                        template_id: rendered.template_id.clone(),
                        template_version: rendered.version,
                        text_sha256: Sha256::digest(rendered.text.as_bytes()).into(),
                    }),
                    Err(e) => match self.send_failed(&row, e, now).await? {
                        Done::Released => report.released += 1,
                        Done::Failed => report.failed += 1,
                        Done::InDoubt => report.in_doubt += 1,
                    },
                }
            }
            report.sent += sent.len() as u64;
            let n = sent.len() as u64;
            let late = self.store.record_sent_many(sent, &plan::delivery_evidence).await?;
            self.counters.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            // Receipts that beat their send's record changed its outcome just now: their
            // leaves follow the send's, as they would had they come after it.
            if let (Some(l), false) = (&self.ledger, late.is_empty()) {
                let leaves = late
                    .iter()
                    .map(|m| crate::ledger::receipt_leaf(&m.receipt, m.class, &m.provider_id, m.at))
                    .collect::<Result<Vec<_>, _>>()?;
                l.sequencer
                    .append_all(&leaves)
                    .await
                    .map_err(|e| EngineError::Ledger(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Checks a leased row against the borrower's decisions now: its `Permit` if the decision is still to send
    /// this notice on this contact and channel; otherwise the row is cancelled with the
    /// decision's reason.
    async fn recheck(
        &self,
        row: &OutboxRow,
        decisions: Option<&[Decision]>,
        now: DateTime<Utc>,
    ) -> Result<Option<Permit>, EngineError> {
        let Some(decisions) = decisions else {
            self.store.cancel(row.id, now, "the borrower is gone").await?;
            return Ok(None);
        };
        let mine = decisions.iter().find(|d| {
            d.key
                .is_some_and(|k| k.installment == row.installment && k.step == row.step && k.kind.as_str() == row.kind)
        });
        let detail = match mine.map(|d| (&d.action, d)) {
            Some((Action::Send { permit, .. }, _))
                if permit.contact == row.contact && permit.channel == row.channel =>
            {
                return Ok(Some(permit.clone()));
            }
            Some((action, d)) => {
                let what = match action {
                    Action::Send { rung, .. } => format!("send on rung {rung}"),
                    Action::Wait { until } => format!("wait until {until}"),
                    Action::Defer { until } => format!("defer until {until}"),
                    Action::Suppress => "suppress".into(),
                    Action::Lookup { .. } => "look the number up".into(),
                    Action::ContactCheck { .. } => "contact check".into(),
                };
                let gate = d.gate.map(|g| format!(", gate {}", g.as_str())).unwrap_or_default();
                format!("the decision at send time is: {what} ({}{gate})", d.reason.as_str())
            }
            None => "the notice is no longer due (paid, or its step has passed)".into(),
        };
        self.store.cancel(row.id, now, &detail).await?;
        Ok(None)
    }

    /// The only path to a channel: it takes a `Permit`, which only the gates build.
    async fn send_permitted(
        &self,
        permit: &Permit,
        row: &OutboxRow,
        to: reachline_domain::ContactAddress,
        text: &str,
    ) -> Result<reachline_channels::Accepted, SendError> {
        let Some(channel) = self.channels.get(&permit.channel) else {
            return Err(SendError::rejected(
                "engine",
                DeliveryClass::OurFault,
                "no_channel",
                "no provider configured for the channel",
            ));
        };
        let msg = Outbound {
            reference: MessageRef(row.id.to_string()),
            to,
            text: text.to_string(),
        };
        self.hand_over(permit.channel, channel.as_ref(), &msg).await
    }

    /// Hands one message to a provider, and tells the send observer (metrics) how it went and
    /// how long it took. Notices and verification messages both go through here.
    pub(crate) async fn hand_over(
        &self,
        kind: reachline_domain::Channel,
        provider: &dyn reachline_channels::Channel,
        msg: &Outbound,
    ) -> Result<reachline_channels::Accepted, SendError> {
        let started = std::time::Instant::now();
        let res = provider.send(msg).await;
        if let Some(o) = self.counters.observer.get() {
            let (name, refused) = match &res {
                Ok(a) => (a.provider.as_str(), None),
                Err(e) => (e.provider.as_str(), Some(e.class)),
            };
            o.handed_over(kind, name, started.elapsed(), refused);
        }
        res
    }

    async fn send_failed(&self, row: &OutboxRow, e: SendError, now: DateTime<Utc>) -> Result<Done, EngineError> {
        if e.is_in_doubt() {
            // The provider may have it: never again; the ladder climbs on the silence.
            tracing::warn!(row = row.id, provider = %e.provider, "send in doubt: the provider may have taken it");
            self.store.record_in_doubt(row.id, now, &e.to_string()).await?;
            return Ok(Done::InDoubt);
        }
        let tries = row.tries + 1;
        if e.scope == Scope::Provider && e.is_transient() && tries < self.cfg.max_tries {
            let backoff = Duration::seconds(30 * (1 << tries.min(6)));
            tracing::debug!(row = row.id, provider = %e.provider, tries, "provider unavailable; queued again");
            self.store.release(row.id, now + backoff, &e.to_string()).await?;
            return Ok(Done::Released);
        }
        self.store
            .record_failed(row.id, now, e.class, &e.code, &e.detail)
            .await?;
        // A refusal that says something about the address is evidence about it.
        if !matches!(e.class, DeliveryClass::OurFault) && e.scope == Scope::Message {
            let source = serde_json::json!({"source": "provider", "name": e.provider}).to_string();
            self.store
                .add_evidence(
                    row.borrower,
                    Some(row.contact),
                    now,
                    &source,
                    &plan::delivery_evidence(row.channel, e.class),
                )
                .await?;
        }
        Ok(Done::Failed)
    }

    fn render(
        &self,
        kind: NoticeKind,
        row: &OutboxRow,
        view: &EngineView,
        inst: &EngineInstallment,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<reachline_policy::Rendered, EngineError> {
        let today = now.with_timezone(&view.zone).date_naive();
        let token = reachline_policy::codes::notice_token(&self.cfg.link_key, row.id as u64);
        let loan_ref: &str = {
            let n = inst.loan_ref.len();
            inst.loan_ref.get(n.saturating_sub(4)..).unwrap_or(&inst.loan_ref)
        };
        let ctx = Context {
            lender_name: &self.cfg.lender_name,
            service_phone: &self.cfg.service_phone,
            link: format!("{}{token}", self.cfg.link_base),
            borrower_name: name,
            loan_ref,
            installment_seq: inst.seq,
            amount_due: major(inst.amount_due_minor - inst.amount_paid_minor),
            currency: inst.currency.as_str(),
            due_date: inst.due_date.to_string(),
            days_to_due: (inst.due_date - today).num_days().max(0),
            days_past_due: (today - inst.due_date).num_days().max(0),
            amount_paid: major(inst.amount_paid_minor),
            code: "",
        };
        self.templates
            .render(template_id(kind, row.third_party), view.locale, &ctx)
            .map_err(EngineError::Template)
    }
}
