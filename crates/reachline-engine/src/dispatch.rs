//! Dispatchers: lease due outbox rows, ask the policy again now (a send goes only with a
//! `Permit` from this moment's gates), resolve the address now (a number changed after the row
//! was queued is honoured: the row is cancelled and the planner queues the new rung), render,
//! hand to the channel and record what happened.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use reachline_channels::{MessageRef, Outbound, Scope, SendError};
use reachline_domain::{BorrowerId, DeliveryClass};
use reachline_policy::{Action, NoticeKind, Permit};
use reachline_store::engine::{EngineInstallment, EngineView, OutboxRow};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{self, Owned};
use crate::{Engine, EngineError};

/// What a dispatch pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchReport {
    pub leased: u64,
    pub sent: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Back in the queue: the provider was unavailable.
    pub released: u64,
}

enum Done {
    Sent,
    Failed,
    Cancelled,
    Released,
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
    /// Leases and sends every row due at `now`.
    pub async fn dispatch(&self, now: DateTime<Utc>) -> Result<DispatchReport, EngineError> {
        let mut report = DispatchReport::default();
        let (back, ahead) = self.cfg.window();
        let from = now.date_naive() - Duration::days(back + 1);
        let to = now.date_naive() + Duration::days(ahead + 1);
        loop {
            let rows = self
                .store
                .lease(&self.cfg.owner, now, self.cfg.lease, self.cfg.lease_batch)
                .await?;
            if rows.is_empty() {
                break;
            }
            report.leased += rows.len() as u64;
            let mut ids: Vec<BorrowerId> = rows.iter().map(|r| r.borrower).collect();
            ids.sort_unstable();
            ids.dedup();
            let views: HashMap<BorrowerId, EngineView> = self
                .store
                .views(&ids, from, to)
                .await?
                .into_iter()
                .map(|v| (v.id, v))
                .collect();
            let full = rows.len() == self.cfg.lease_batch;
            let results: Vec<Result<Done, EngineError>> = futures::stream::iter(rows)
                .map(|row| {
                    let view = views.get(&row.borrower);
                    async move { self.dispatch_one(row, view, now).await }
                })
                .buffer_unordered(self.cfg.concurrency.max(1))
                .collect()
                .await;
            for r in results {
                match r? {
                    Done::Sent => report.sent += 1,
                    Done::Failed => report.failed += 1,
                    Done::Cancelled => report.cancelled += 1,
                    Done::Released => report.released += 1,
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    async fn dispatch_one(
        &self,
        row: OutboxRow,
        view: Option<&EngineView>,
        now: DateTime<Utc>,
    ) -> Result<Done, EngineError> {
        let Some(view) = view else {
            self.store.cancel(row.id, now, "the borrower is gone").await?;
            return Ok(Done::Cancelled);
        };
        let owned = Owned::build(view, &self.cfg, now)?;
        let decisions = owned.decide(view, &self.cfg, now);
        let mine = decisions.iter().find(|d| {
            d.key
                .is_some_and(|k| k.installment == row.installment && k.step == row.step && k.kind.as_str() == row.kind)
        });
        let permit = match mine.map(|d| (&d.action, d)) {
            Some((Action::Send { permit, .. }, _))
                if permit.contact == row.contact && permit.channel == row.channel =>
            {
                permit.clone()
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
                let detail = format!("the decision at send time is: {what} ({}{gate})", d.reason.as_str());
                self.store.cancel(row.id, now, &detail).await?;
                return Ok(Done::Cancelled);
            }
            None => {
                self.store
                    .cancel(
                        row.id,
                        now,
                        "the notice is no longer due (paid, or its step has passed)",
                    )
                    .await?;
                return Ok(Done::Cancelled);
            }
        };
        self.send_permitted(&permit, &row, view, now).await
    }

    /// The only path to a channel: it takes a `Permit`, which only the gates build.
    async fn send_permitted(
        &self,
        permit: &Permit,
        row: &OutboxRow,
        view: &EngineView,
        now: DateTime<Utc>,
    ) -> Result<Done, EngineError> {
        let Some(channel) = self.channels.get(&permit.channel) else {
            self.store
                .record_failed(
                    row.id,
                    now,
                    DeliveryClass::OurFault,
                    "no_channel",
                    "no provider configured for the channel",
                )
                .await?;
            return Ok(Done::Failed);
        };
        let Some(inst) = view.installments.iter().find(|i| i.id == row.installment) else {
            self.store
                .cancel(row.id, now, "the installment is outside the notice window")
                .await?;
            return Ok(Done::Cancelled);
        };
        let target = self.store.send_target(view.id, permit.contact).await?;
        let kind: NoticeKind = row
            .kind
            .parse()
            .map_err(|e| EngineError::Corrupt(format!("outbox row {} kind: {e}", row.id)))?;
        let rendered = self.render(kind, row, view, inst, target.borrower_name.as_str(), now)?;
        let hash: [u8; 32] = Sha256::digest(rendered.text.as_bytes()).into();
        self.store.mark_sending(row.id, now).await?;
        let msg = Outbound {
            reference: MessageRef(row.id.to_string()),
            to: target.address,
            text: rendered.text,
        };
        match channel.send(&msg).await {
            Ok(accepted) => {
                self.store
                    .record_sent(
                        row.id,
                        now,
                        &accepted.provider,
                        &accepted.provider_ids,
                        (&rendered.template_id, rendered.version),
                        &hash,
                    )
                    .await?;
                Ok(Done::Sent)
            }
            Err(e) => self.send_failed(row, e, now).await,
        }
    }

    async fn send_failed(&self, row: &OutboxRow, e: SendError, now: DateTime<Utc>) -> Result<Done, EngineError> {
        let tries = row.tries + 1;
        if e.scope == Scope::Provider && e.is_transient() && tries < self.cfg.max_tries {
            let backoff = Duration::seconds(30 * (1 << tries.min(6)));
            tracing::warn!(row = row.id, provider = %e.provider, tries, "provider unavailable; queued again");
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
