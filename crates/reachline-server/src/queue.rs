//! The dashboard's work queue: number changes held for review (approve or reject with a reason
//! code), contact checks that became an operator's task, and open repayment-plan requests
//! (accept or decline). The same decisions as the API's (`review`), taken by a logged-in
//! operator; every form carries the session's CSRF token. New numbers are masked, and a plan
//! request's own words stay behind the API's logged unmasking.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use reachline_store::selfservice::Filter;
use serde::Deserialize;

use crate::auth::{allows, Permission};
use crate::charts::esc;
use crate::dashboard::{csrf_matches, nav, operator, page, table, Operator};
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/queue", get(queue_page))
        .route("/queue/changes/{id}", post(decide_change))
        .route("/queue/plans/{id}", post(decide_plan))
}

fn state(name: &str) -> Filter {
    Filter {
        state: Some(name.into()),
        borrower: None,
        limit: 200,
    }
}

/// A decision form: a reason code and the buttons for the two outcomes.
fn decision_form(op: &Operator, action: &str, id: i64, outcomes: [(&str, &str); 2]) -> String {
    let mut out = format!(
        r#"<form method="post" action="{action}"><input type="hidden" name="csrf" value="{csrf}"><label for="reason-{action_id}">Reason code</label><input id="reason-{action_id}" name="reason" required pattern="[a-z0-9_]{{2,40}}" placeholder="called_borrower">"#,
        csrf = esc(&op.csrf),
        action_id = format!("{}-{id}", action.trim_start_matches('/').replace('/', "-")),
    );
    for (value, label) in outcomes {
        let _ = write!(out, r#" <button name="decision" value="{value}">{label}</button>"#);
    }
    out.push_str("</form>");
    out
}

async fn queue_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let op = match operator(&s, &headers).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let may_decide = allows(op.role, Permission::ReviewChange);
    let ss = &s.stores.selfservice;
    let (Ok(changes), Ok(tasks), Ok(plans)) = (
        ss.changes(&state("review")).await,
        ss.checks(&state("operator_task")).await,
        ss.plan_requests(&state("open")).await,
    ) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    // The lender's ids of the borrowers listed, in one read.
    let mut ids: Vec<reachline_domain::BorrowerId> = changes
        .iter()
        .map(|c| c.borrower)
        .chain(tasks.iter().map(|c| c.borrower))
        .chain(plans.iter().map(|p| p.borrower))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let day = s.now().date_naive();
    let external: std::collections::HashMap<i64, String> = match s.stores.engine.views(&ids, day, day).await {
        Ok(views) => views.into_iter().map(|v| (v.id.0, v.external_id)).collect(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let who = |b: i64| external.get(&b).cloned().unwrap_or_else(|| b.to_string());
    let mut body = String::from("<main>");

    let mut rows = Vec::new();
    let mut forms = String::new();
    for c in changes {
        let v = crate::review::change_view(c, Vec::new());
        rows.push(vec![
            v.id.to_string(),
            who(v.borrower_id),
            v.target.clone(),
            v.new_address.clone(),
            v.risks.join(", "),
            v.authorised_by.clone().unwrap_or_default(),
            v.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]);
        if may_decide {
            let _ = write!(
                forms,
                r#"<h3>Change {id} <a href="/v1/contact-changes/{id}">(history, API)</a></h3>{}"#,
                decision_form(
                    &op,
                    &format!("/queue/changes/{}", v.id),
                    v.id,
                    [("approve", "Approve"), ("reject", "Reject")]
                ),
                id = v.id
            );
        }
    }
    let _ = write!(
        body,
        r#"<section id="changes"><h2>Changes held for review</h2><p>Both proofs are in; a risk held them (a SIM swap or port of the new number, no answer from the carrier, a number another borrower holds). Approving applies the change and tells the old channels.</p>{}{forms}</section>"#,
        table(
            &[
                "change",
                "borrower",
                "what",
                "new address",
                "risks",
                "authorised by",
                "started"
            ],
            &rows,
            9
        )
    );

    let rows: Vec<Vec<String>> = tasks
        .into_iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                who(c.borrower.0),
                c.contact.map(|x| x.0.to_string()).unwrap_or_else(|| "all".into()),
                c.reason,
                c.opened_at.format("%Y-%m-%d %H:%M").to_string(),
            ]
        })
        .collect();
    let _ = write!(
        body,
        r#"<section id="tasks"><h2>Borrowers nothing reached</h2><p>Contact checks no channel could carry, or that went unanswered for 72 hours: call the borrower or their branch.</p>{}</section>"#,
        table(&["check", "borrower", "contact in doubt", "reason", "opened"], &rows, 9)
    );

    let mut rows = Vec::new();
    let mut forms = String::new();
    for p in plans {
        rows.push(vec![
            p.id.to_string(),
            who(p.borrower.0),
            p.loan.0.to_string(),
            p.kind.clone(),
            p.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]);
        if may_decide {
            let _ = write!(
                forms,
                r#"<h3>Request {id}</h3>{}"#,
                decision_form(
                    &op,
                    &format!("/queue/plans/{}", p.id),
                    p.id,
                    [("accepted", "Accept"), ("declined", "Decline")]
                ),
                id = p.id
            );
        }
    }
    let _ = write!(
        body,
        r#"<section id="plans"><h2>Repayment-plan requests</h2><p>The borrower's own words: <code>GET /v1/plan-requests?unmask=true&amp;reason=…</code> (logged).</p>{}{forms}</section>"#,
        table(&["request", "borrower", "loan", "kind", "asked"], &rows, 9)
    );
    body.push_str("</main>");
    page("Work queue", &nav(&op), &body).into_response()
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    csrf: String,
    decision: String,
    reason: String,
}

/// The operator's form, checked: the session may decide, the token matches, the reason is a
/// short code. The actor is `operator:<login>`.
async fn checked(s: &crate::Server, headers: &HeaderMap, f: &DecisionForm) -> Result<(String, String), Response> {
    let op = operator(s, headers).await?;
    if !allows(op.role, Permission::ReviewChange) {
        return Err((StatusCode::FORBIDDEN, "this role does not decide reviews").into_response());
    }
    if !csrf_matches(&op, &f.csrf) {
        return Err((
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match the session",
        )
            .into_response());
    }
    let reason = crate::api::code("reason", &f.reason).map_err(IntoResponse::into_response)?;
    Ok((format!("operator:{}", op.login), reason))
}

async fn decide_change(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let (actor, reason) = match checked(&s, &headers, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let approve = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return StatusCode::UNPROCESSABLE_ENTITY.into_response(),
    };
    match crate::change::review(&s, id, approve, &actor, &reason, s.now()).await {
        Ok(_) => Redirect::to("/queue#changes").into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

async fn decide_plan(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let (actor, reason) = match checked(&s, &headers, &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !["accepted", "declined"].contains(&f.decision.as_str()) {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    match s
        .stores
        .selfservice
        .decide_plan_request(id, &f.decision, &actor, &reason, s.now())
        .await
    {
        Ok(true) => Redirect::to("/queue#plans").into_response(),
        Ok(false) => (StatusCode::CONFLICT, "no open plan request with this id").into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
