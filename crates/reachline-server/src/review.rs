//! The operators' side of self-service: number changes (the review queue, approve or reject
//! with a reason, the history of each change), contact checks (started on a borrower's behalf,
//! and those that became operator tasks), and
//! repayment-plan requests. New numbers are masked; a plan request's own words are shown only
//! unmasked (with a reason, logged).

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use reachline_store::selfservice::{ChangeRecord, Filter, StepRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{borrower, code, unmasking, Unmask};
use crate::auth::Principal;
use crate::change::ChangeError;
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, RequestId};

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Api(e) => e,
            ChangeError::NotFound => ApiError::not_found("contact change"),
            ChangeError::NotPending => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "not_in_review",
                "the change is not waiting for a decision",
            ),
            other => ApiError::invalid("change", other.to_string()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this state (changes: `pending`, `review`, `applied`, `rejected`, `lapsed`; checks:
    /// `open`, `operator_task`, `confirmed`; plan requests: `open`, `accepted`, `declined`).
    pub state: Option<String>,
    /// One borrower's (the lender's id).
    pub borrower: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

async fn filter(s: &crate::Server, q: &ListQuery) -> Result<Filter, ApiError> {
    let borrower = match &q.borrower {
        Some(id) => Some(borrower(s, id).await?.id),
        None => None,
    };
    let state = q.state.as_deref().map(|x| code("state", x)).transpose()?;
    Ok(Filter {
        state,
        borrower,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub at: DateTime<Utc>,
    pub step: String,
    pub actor: String,
    /// Short, non-personal detail (JSON).
    pub detail: Option<String>,
}

impl From<StepRecord> for StepView {
    fn from(s: StepRecord) -> Self {
        StepView {
            at: s.at,
            step: s.step,
            actor: s.actor,
            detail: s.detail,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeView {
    pub id: i64,
    pub borrower_id: i64,
    pub old_contact_id: Option<i64>,
    /// What it does: `replace` (the mobile number), `add_backup`, `add_email`.
    pub target: String,
    /// The new number or email address, masked (`+86139****5678`, `j***@example.com`).
    pub new_address: String,
    /// `page`, `reply`.
    pub source: String,
    pub state: String,
    /// What sent it to review (`sim_swap`, `ported`, `held_by_another_borrower`, `sim_swap_unknown`).
    pub risks: Vec<String>,
    /// The existing factor that authorised it (`link`, `code`, `identity_check`).
    pub authorised_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub new_contact_id: Option<i64>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// Every step, oldest first (only in a single change's view).
    pub steps: Vec<StepView>,
}

pub(crate) fn change_view(r: ChangeRecord, steps: Vec<StepRecord>) -> ChangeView {
    let flow: Option<reachline_policy::change::Flow> = serde_json::from_str(&r.flow).ok();
    ChangeView {
        id: r.id,
        borrower_id: r.borrower.0,
        old_contact_id: r.old_contact.map(|c| c.0),
        target: flow.as_ref().map(|f| f.target).unwrap_or_default().code().to_string(),
        // A number is stored in E.164, so any region's parser reads it.
        new_address: if r.new_address.contains('@') {
            reachline_domain::mask::mask_email(&r.new_address)
        } else {
            reachline_domain::PhoneParser::default()
                .parse(&r.new_address)
                .map_or_else(|_| reachline_domain::mask::mask_digits(&r.new_address), |p| p.masked())
        },
        source: r.source,
        state: r.state,
        risks: flow
            .as_ref()
            .map(|f| f.risks.iter().map(|x| x.code().to_string()).collect())
            .unwrap_or_default(),
        authorised_by: flow
            .as_ref()
            .and_then(|f| f.authorised_by.as_ref().map(|a| a.code().to_string())),
        created_at: r.created_at,
        updated_at: r.updated_at,
        new_contact_id: r.new_contact.map(|c| c.0),
        decided_by: r.decided_by,
        decision_reason: r.decision_reason,
        steps: steps.into_iter().map(StepView::from).collect(),
    }
}

/// Number changes, newest first: `?state=review` is the review queue.
#[utoipa::path(get, path = "/v1/contact-changes", tag = "contacts", params(ListQuery),
    responses((status = 200, body = Vec<ChangeView>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_changes(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ChangeView>>, ApiError> {
    let f = filter(&s, &q).await?;
    let rows = s.stores.selfservice.changes(&f).await?;
    Ok(Json(rows.into_iter().map(|r| change_view(r, Vec::new())).collect()))
}

/// One number change with every step of its history.
#[utoipa::path(get, path = "/v1/contact-changes/{change_id}", tag = "contacts",
    params(("change_id" = i64, Path)),
    responses((status = 200, body = ChangeView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_change(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Json<ChangeView>, ApiError> {
    let r = s
        .stores
        .selfservice
        .change(id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact change"))?;
    let steps = s.stores.selfservice.steps(r.borrower, Some(id), None).await?;
    Ok(Json(change_view(r, steps)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (`called_borrower`, `branch_visit`, `suspected_fraud`…): a short code, not free text.
    pub reason: String,
}

async fn decide(
    s: &crate::Server,
    who: &Principal,
    id: i64,
    approve: bool,
    d: &Decision,
) -> Result<Json<ChangeView>, ApiError> {
    let reason = code("reason", &d.reason)?;
    let now = s.now();
    crate::change::review(s, id, approve, &who.actor, &reason, now).await?;
    let r = s
        .stores
        .selfservice
        .change(id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact change"))?;
    let steps = s.stores.selfservice.steps(r.borrower, Some(id), None).await?;
    Ok(Json(change_view(r, steps)))
}

/// Approves a change held for review: the new number becomes current, the old is retired and
/// told.
#[utoipa::path(post, path = "/v1/contact-changes/{change_id}/approve", tag = "contacts",
    params(("change_id" = i64, Path)), request_body = Decision,
    responses((status = 200, body = ChangeView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn approve_change(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<i64>,
    Json(d): Json<Decision>,
) -> Result<Json<ChangeView>, ApiError> {
    decide(&s, &who, id, true, &d).await
}

/// Rejects a change held for review: nothing changes.
#[utoipa::path(post, path = "/v1/contact-changes/{change_id}/reject", tag = "contacts",
    params(("change_id" = i64, Path)), request_body = Decision,
    responses((status = 200, body = ChangeView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn reject_change(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<i64>,
    Json(d): Json<Decision>,
) -> Result<Json<ChangeView>, ApiError> {
    decide(&s, &who, id, false, &d).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckView {
    pub id: i64,
    pub borrower_id: i64,
    /// The contact in doubt (none: the borrower as a whole is unreachable).
    pub contact_id: Option<i64>,
    /// `open`, `operator_task`, `confirmed`, `closed`.
    pub state: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub steps: Vec<StepView>,
}

pub(crate) fn check_view(c: reachline_store::selfservice::CheckRecord, steps: Vec<StepRecord>) -> CheckView {
    CheckView {
        id: c.id,
        borrower_id: c.borrower.0,
        contact_id: c.contact.map(|x| x.0),
        state: c.state,
        reason: c.reason,
        opened_at: c.opened_at,
        updated_at: c.updated_at,
        steps: steps.into_iter().map(StepView::from).collect(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheck {
    /// The contact point in doubt (its links go to the borrower's other ones); none when the
    /// borrower as a whole is to be reached.
    pub contact_id: Option<i64>,
}

/// Starts a contact check for a borrower (the borrower called to say their number changed; the
/// lender's system saw a bounce): the signed links go at once on the borrower's other channels,
/// even if a check was answered lately. An open check is returned as it is.
#[utoipa::path(post, path = "/v1/borrowers/{external_id}/contact-checks", tag = "contacts",
    params(("external_id" = String, Path)), request_body = NewCheck,
    responses((status = 201, body = CheckView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn start_check(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(n): Json<NewCheck>,
) -> Result<(axum::http::StatusCode, Json<CheckView>), ApiError> {
    let b = borrower(&s, &id).await?;
    let doubt = match n.contact_id {
        Some(c) => {
            let contacts = s.stores.store.contacts(b.id).await?;
            let found = contacts
                .iter()
                .find(|x| x.id.0 == c && x.is_current() && !x.point.role.is_third_party())
                .ok_or_else(|| ApiError::invalid("contact_id", "not a current contact point of this borrower"))?;
            Some(found.id)
        }
        None => None,
    };
    let check = s
        .engine
        .request_check(b.id, doubt, &who.actor, s.now())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a requested contact check failed");
            ApiError::internal()
        })?;
    let steps = s.stores.selfservice.steps(b.id, None, Some(check.id)).await?;
    Ok((axum::http::StatusCode::CREATED, Json(check_view(check, steps))))
}

/// Contact checks, newest first: `?state=operator_task` are the borrowers nothing reached.
#[utoipa::path(get, path = "/v1/contact-checks", tag = "contacts", params(ListQuery),
    responses((status = 200, body = Vec<CheckView>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_checks(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<CheckView>>, ApiError> {
    let f = filter(&s, &q).await?;
    let mut out = Vec::new();
    for c in s.stores.selfservice.checks(&f).await? {
        let steps = s.stores.selfservice.steps(c.borrower, None, Some(c.id)).await?;
        out.push(check_view(c, steps));
    }
    Ok(Json(out))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanRequestView {
    pub id: i64,
    pub borrower_id: i64,
    pub loan_id: i64,
    /// `extension`, `split`, `due_day`.
    pub kind: String,
    /// The borrower's own words: only unmasked (with a reason; the read is logged).
    pub reason: Option<String>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PlanQuery {
    /// Only this state: `open`, `accepted`, `declined`.
    pub state: Option<String>,
    /// One borrower's (the lender's id).
    pub borrower: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Show the borrowers' own words (needs `read personal data in clear` and a `reason`; logged).
    #[serde(default)]
    pub unmask: bool,
    /// Why they are needed (for `unmask`).
    pub reason: Option<String>,
}

/// Repayment-plan requests from the borrowers' pages, newest first.
#[utoipa::path(get, path = "/v1/plan-requests", tag = "borrowers", params(PlanQuery),
    responses((status = 200, body = Vec<PlanRequestView>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_plan_requests(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    Query(q): Query<PlanQuery>,
) -> Result<Json<Vec<PlanRequestView>>, ApiError> {
    let list = ListQuery {
        state: q.state.clone(),
        borrower: q.borrower.clone(),
        limit: q.limit,
    };
    let f = filter(&s, &list).await?;
    let unmask = Unmask {
        unmask: q.unmask,
        reason: q.reason.clone(),
    };
    let mut out = Vec::new();
    for r in s.stores.selfservice.plan_requests(&f).await? {
        let clear = unmasking(&s, &who, &unmask, "plan_request.read", r.borrower, &rid).await?;
        out.push(plan_view(r, clear));
    }
    Ok(Json(out))
}

pub(crate) fn plan_view(r: reachline_store::selfservice::PlanRequest, clear: bool) -> PlanRequestView {
    PlanRequestView {
        id: r.id,
        borrower_id: r.borrower.0,
        loan_id: r.loan.0,
        kind: r.kind,
        reason: clear.then_some(r.reason),
        state: r.state,
        created_at: r.created_at,
        decided_at: r.decided_at,
        decided_by: r.decided_by,
        decision_reason: r.decision_reason,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDecision {
    /// `accepted` or `declined`.
    pub state: String,
    /// Why: a short code.
    pub reason: String,
}

/// Decides an open repayment-plan request.
#[utoipa::path(post, path = "/v1/plan-requests/{request_id}/decide", tag = "borrowers",
    params(("request_id" = i64, Path)), request_body = PlanDecision,
    responses((status = 204), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn decide_plan_request(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<i64>,
    Json(d): Json<PlanDecision>,
) -> Result<axum::http::StatusCode, ApiError> {
    if !["accepted", "declined"].contains(&d.state.as_str()) {
        return Err(ApiError::invalid("state", "must be accepted or declined"));
    }
    let reason = code("reason", &d.reason)?;
    if !s
        .stores
        .selfservice
        .decide_plan_request(id, &d.state, &who.actor, &reason, s.now())
        .await?
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_open",
            "no open plan request with this id",
        ));
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}
