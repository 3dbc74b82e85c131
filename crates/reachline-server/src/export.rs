//! Everything Reachline holds about one borrower, in one readable JSON document — the
//! borrower's right of access (PIPL art. 45): their record and contact points in clear, the
//! history of each contact point, consents, preferences, loans and schedules, every notice
//! attempt with its receipts and every decision with its reason, the evidence health read,
//! contact checks and changes with their steps, repayment-plan requests in their own words,
//! and who read their data in clear and why. `GET /v1/borrowers/{id}/export` and
//! `reachline borrower export` both build it here; both record the export in the access log.

use chrono::{DateTime, Utc};
use reachline_store::selfservice::Filter;
use reachline_store::{BorrowerRecord, Stores};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{
    borrower_view, consent_views, contact_event_views, contact_view, loan_views, notices_view, AccessView,
    BorrowerView, ConsentView, ContactEventView, ContactView, LoanView, NoticesView,
};
use crate::error::ApiError;
use crate::review::{change_view, check_view, plan_view, ChangeView, CheckView, PlanRequestView};

/// The document's format; a change that is not an addition bumps it.
pub const FORMAT: &str = "reachline-borrower-export/1";

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvidenceView {
    pub contact_id: Option<i64>,
    pub at: DateTime<Utc>,
    /// Who said it (JSON: a provider, the holder, a lookup, the borrower, an operator).
    pub source: String,
    /// What it says (JSON).
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PreferencesView {
    pub channels: Vec<String>,
    /// `HH:MM-HH:MM` local time, when set.
    pub quiet_hours: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BorrowerExport {
    pub format: String,
    pub exported_at: DateTime<Utc>,
    pub borrower: BorrowerView,
    pub contacts: Vec<ContactView>,
    pub contact_history: Vec<ContactEventView>,
    pub consents: Vec<ConsentView>,
    pub preferences: PreferencesView,
    pub loans: Vec<LoanView>,
    pub notices: NoticesView,
    pub evidence: Vec<EvidenceView>,
    pub contact_checks: Vec<CheckView>,
    /// Number changes and additions; the new address in clear.
    pub contact_changes: Vec<ChangeView>,
    pub plan_requests: Vec<PlanRequestView>,
    /// Every read of their data in clear, newest first (this export included).
    pub access_log: Vec<AccessView>,
}

/// Builds the document (the caller records the access first, so the document shows it).
pub async fn document(stores: &Stores, b: &BorrowerRecord, now: DateTime<Utc>) -> Result<BorrowerExport, ApiError> {
    let ss = &stores.selfservice;
    let mine = |limit| Filter {
        state: None,
        borrower: Some(b.id),
        limit,
    };
    let mut contact_changes = Vec::new();
    for c in ss.changes(&mine(10_000)).await? {
        let address = c.new_address.clone();
        let steps = ss.steps(b.id, Some(c.id), None).await?;
        let mut v = change_view(c, steps);
        v.new_address = address;
        contact_changes.push(v);
    }
    let mut contact_checks = Vec::new();
    for c in ss.checks(&mine(10_000)).await? {
        let steps = ss.steps(b.id, None, Some(c.id)).await?;
        contact_checks.push(check_view(c, steps));
    }
    let plan_requests = ss
        .plan_requests(&mine(10_000))
        .await?
        .into_iter()
        .map(|r| plan_view(r, true))
        .collect();
    let prefs = ss.preferences(b.id).await?;
    let day = now.date_naive();
    let evidence = stores
        .engine
        .views(&[b.id], day, day)
        .await?
        .into_iter()
        .flat_map(|v| v.evidence)
        .map(|e| EvidenceView {
            contact_id: e.contact.map(|c| c.0),
            at: e.at,
            source: e.source,
            kind: e.kind,
        })
        .collect();
    Ok(BorrowerExport {
        format: FORMAT.into(),
        exported_at: now,
        borrower: borrower_view(b, true),
        contacts: stores
            .store
            .contacts(b.id)
            .await?
            .iter()
            .map(|c| contact_view(c, true))
            .collect(),
        contact_history: contact_event_views(stores, b.id).await?,
        consents: consent_views(stores, b.id).await?,
        preferences: PreferencesView {
            channels: prefs.channels.iter().map(|c| c.as_str().to_string()).collect(),
            quiet_hours: prefs
                .quiet
                .map(|q| format!("{}-{}", q.start.format("%H:%M"), q.end.format("%H:%M"))),
        },
        loans: loan_views(stores, b.id).await?,
        notices: notices_view(stores, b.id).await?,
        evidence,
        contact_checks,
        contact_changes,
        plan_requests,
        access_log: stores
            .server
            .access_log(Some(b.id), 10_000)
            .await?
            .into_iter()
            .map(AccessView::from)
            .collect(),
    })
}
