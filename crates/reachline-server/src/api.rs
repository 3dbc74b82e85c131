//! The `/v1` API. Each route's permission is in [`PERMISSIONS`]; one layer checks it before any
//! extractor runs, so a caller without the right learns nothing from the route's validation.
//! Personal data is masked (`138****8000`) unless the caller asks `?unmask=true` with a
//! `reason`, holds the permission to, and the read is written to the access log.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_book::parse::{self, FieldError};
use reachline_book::rows::{BorrowerRow, ConsentRow, ContactRow, InstallmentRow, LoanRow};
use reachline_domain::{BorrowerId, Channel, ContactAddress, ContactId, ContactSource, ExternalId, InstallmentId};
use reachline_store::{BorrowerRecord, ContactRecord};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{new_token, Permission, Principal, Role};
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::{AppState, RequestId};

/// Every `/v1` route (OpenAPI path syntax) and the permission it needs. A route that is not
/// here is refused to everyone (the route-by-role test fails first).
pub const PERMISSIONS: &[(&str, &str, Permission)] = &[
    ("GET", "/v1/borrowers/{external_id}", Permission::ReadBorrower),
    ("GET", "/v1/borrowers/{external_id}/contacts", Permission::ReadBorrower),
    ("POST", "/v1/borrowers/{external_id}/contacts", Permission::WriteContact),
    (
        "GET",
        "/v1/borrowers/{external_id}/contact-history",
        Permission::ReadBorrower,
    ),
    ("POST", "/v1/contacts/{contact_id}/verify", Permission::WriteContact),
    ("POST", "/v1/contacts/{contact_id}/retire", Permission::WriteContact),
    ("GET", "/v1/borrowers/{external_id}/loans", Permission::ReadBorrower),
    ("POST", "/v1/book", Permission::WriteBook),
    ("POST", "/v1/payments", Permission::WritePayment),
    ("GET", "/v1/borrowers/{external_id}/notices", Permission::ReadNotice),
    ("GET", "/v1/notices", Permission::ReadNotice),
    ("GET", "/v1/notices/{notice_id}/evidence", Permission::ReadEvidence),
    (
        "POST",
        "/v1/borrowers/{external_id}/evidence",
        Permission::WriteEvidence,
    ),
    ("GET", "/v1/borrowers/{external_id}/consents", Permission::ReadConsent),
    ("POST", "/v1/borrowers/{external_id}/consents", Permission::WriteConsent),
    ("GET", "/v1/reports/summary", Permission::ReadReport),
    ("GET", "/v1/access-log", Permission::ReadAccessLog),
    ("GET", "/v1/ledger/checkpoint", Permission::ReadEvidence),
    ("GET", "/v1/tokens", Permission::ManageTokens),
    ("POST", "/v1/tokens", Permission::ManageTokens),
    ("POST", "/v1/tokens/{token_id}/revoke", Permission::ManageTokens),
    ("POST", "/v1/integrations/fineract", Permission::WriteBook),
    ("GET", "/v1/contact-changes", Permission::ReadBorrower),
    ("GET", "/v1/contact-changes/{change_id}", Permission::ReadBorrower),
    (
        "POST",
        "/v1/contact-changes/{change_id}/approve",
        Permission::ReviewChange,
    ),
    (
        "POST",
        "/v1/contact-changes/{change_id}/reject",
        Permission::ReviewChange,
    ),
    ("GET", "/v1/contact-checks", Permission::ReadBorrower),
    ("GET", "/v1/borrowers/{external_id}/export", Permission::ReadUnmasked),
    ("POST", "/v1/borrowers/{external_id}/erasure", Permission::Erase),
    (
        "POST",
        "/v1/borrowers/{external_id}/contact-checks",
        Permission::WriteContact,
    ),
    ("GET", "/v1/plan-requests", Permission::ReadBorrower),
    (
        "POST",
        "/v1/plan-requests/{request_id}/decide",
        Permission::ReviewChange,
    ),
];

/// The permission of a route, by method and template.
pub fn permission_for(method: &Method, template: &str) -> Option<Permission> {
    PERMISSIONS
        .iter()
        .find(|(m, t, _)| *m == method.as_str() && *t == template)
        .map(|(_, _, p)| *p)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reachline API",
        description = "Borrowers, contact points, loans, notices and their evidence. Send `Authorization: Bearer <token>` (`reachline token create --role …`). Errors are JSON with a stable `code`, the `field` at fault and the `request_id`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API's routes with their OpenAPI description, the permission check layered on.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(get_borrower))
        .routes(routes!(list_contacts, add_contact))
        .routes(routes!(contact_history))
        .routes(routes!(verify_contact))
        .routes(routes!(retire_contact))
        .routes(routes!(list_loans))
        .routes(routes!(post_book))
        .routes(routes!(post_payment))
        .routes(routes!(list_notices))
        .routes(routes!(list_attempts))
        .routes(routes!(notice_evidence))
        .routes(routes!(add_evidence))
        .routes(routes!(list_consents, add_consent))
        .routes(routes!(report_summary))
        .routes(routes!(access_log))
        .routes(routes!(ledger_checkpoint))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(crate::fineract::fineract_event))
        .routes(routes!(crate::review::list_changes))
        .routes(routes!(crate::review::get_change))
        .routes(routes!(crate::review::approve_change))
        .routes(routes!(crate::review::reject_change))
        .routes(routes!(crate::review::list_checks))
        .routes(routes!(crate::review::start_check))
        .routes(routes!(export_borrower))
        .routes(routes!(erase_borrower))
        .routes(routes!(crate::review::list_plan_requests))
        .routes(routes!(crate::review::decide_plan_request))
}

/// Checks the route's permission (deny by default) before any extractor runs, and hands the
/// handler the [`Principal`].
pub async fn check_permission(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let Some(permission) = template.and_then(|t| permission_for(req.method(), &t)) else {
        return ApiError::forbidden("this route is not open to any role").into_response();
    };
    match s.authorize(req.headers(), permission).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Views

/// Whether to show personal data in clear, and why.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct Unmask {
    /// Show personal data in clear (needs the `read personal data in clear` permission and a
    /// `reason`; the read is logged).
    #[serde(default)]
    pub unmask: bool,
    /// Why the caller needs it (kept in the access log).
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BorrowerView {
    pub id: i64,
    pub external_id: String,
    /// Masked unless unmasked.
    pub name: String,
    pub national_id: Option<String>,
    pub locale: String,
    pub time_zone: String,
    pub jurisdiction: String,
    pub masked: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    pub id: i64,
    pub slot: String,
    pub kind: String,
    pub role: String,
    pub relation: Option<String>,
    /// Masked (`138****8000`) unless unmasked.
    pub address: String,
    pub bound_since: NaiveDate,
    pub source: String,
    pub verified_at: Option<DateTime<Utc>>,
    pub added_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub retired_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactEventView {
    pub contact_id: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallmentView {
    pub id: i64,
    pub seq: u32,
    pub due_date: NaiveDate,
    pub amount_due_minor: i64,
    pub amount_paid_minor: i64,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoanView {
    pub id: i64,
    pub external_id: String,
    pub product: String,
    pub currency: String,
    pub principal_minor: i64,
    pub disbursed_on: NaiveDate,
    pub installments: Vec<InstallmentView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// The notice attempt's id (the outbox row); evidence bundles are by this id.
    pub id: i64,
    pub installment_id: i64,
    pub kind: String,
    pub step: usize,
    pub rung: usize,
    pub contact_id: i64,
    pub channel: String,
    pub third_party: bool,
    pub not_before: DateTime<Utc>,
    /// queued, leased, sending, sent, failed, in_doubt, cancelled.
    pub state: String,
    pub tries: u32,
    pub sent_at: Option<DateTime<Utc>>,
    /// pending, delivered, engaged, failed.
    pub outcome: String,
    /// The delivery class of a failed outcome.
    pub outcome_class: Option<String>,
    /// Every receipt about this attempt, in the order they came.
    pub receipts: Vec<ReceiptView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiptView {
    pub at: DateTime<Utc>,
    pub provider: String,
    pub provider_id: String,
    /// The delivery class it was read as.
    pub class: String,
    /// The code it was read from (`stat:DELIVRD`, `err:001`, `5.1.1`…).
    pub code: String,
    pub is_final: bool,
    pub flag: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptPage {
    pub attempts: Vec<AttemptView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AttemptQuery {
    /// One borrower's attempts (the lender's id).
    pub borrower: Option<String>,
    /// queued, leased, sending, sent, failed, in_doubt, cancelled.
    pub state: Option<String>,
    /// sms, voice, email, push, im.
    pub channel: Option<String>,
    /// The notice kind (`pre_due`, `due_today`, `overdue`…).
    pub kind: Option<String>,
    /// Attempts after this id (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Attempts with their receipts.
pub(crate) async fn attempt_views(
    stores: &reachline_store::Stores,
    rows: Vec<reachline_store::engine::OutboxRow>,
) -> Result<Vec<AttemptView>, ApiError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut receipts: HashMap<i64, Vec<ReceiptView>> = HashMap::new();
    for r in stores.engine.receipts_of(&ids).await? {
        receipts.entry(r.outbox_id).or_default().push(ReceiptView {
            at: r.at,
            provider: r.provider,
            provider_id: r.provider_id,
            class: r.class,
            code: r.code,
            is_final: r.is_final,
            flag: r.flag,
        });
    }
    Ok(rows
        .into_iter()
        .map(|r| AttemptView {
            receipts: receipts.remove(&r.id).unwrap_or_default(),
            id: r.id,
            installment_id: r.installment.0,
            kind: r.kind,
            step: r.step,
            rung: r.rung,
            contact_id: r.contact.0,
            channel: r.channel.as_str().to_string(),
            third_party: r.third_party,
            not_before: r.not_before,
            state: r.state.as_str().to_string(),
            tries: r.tries,
            sent_at: r.sent_at,
            outcome: r.outcome.name().to_string(),
            outcome_class: r.outcome.class_column().map(str::to_string),
        })
        .collect())
}

/// Attempts across borrowers, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/notices", tag = "notices", params(AttemptQuery),
    responses((status = 200, body = AttemptPage), (status = 422, body = ErrorBody)))]
async fn list_attempts(
    State(s): State<AppState>,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    let borrower = match &q.borrower {
        Some(id) => Some(borrower(&s, id).await?.id),
        None => None,
    };
    let word = |field: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        v.as_deref().map(|x| code(field, x)).transpose()
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = s
        .stores
        .engine
        .attempts(&reachline_store::engine::AttemptFilter {
            borrower,
            state: word("state", &q.state)?,
            channel: word("channel", &q.channel)?,
            kind: word("kind", &q.kind)?,
            after: q.after,
            limit,
        })
        .await?;
    let next_after = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(AttemptPage {
        attempts: attempt_views(&s.stores, rows).await?,
        next_after,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub at: DateTime<Utc>,
    pub notice: String,
    pub action: String,
    pub reason: String,
    pub gate: Option<String>,
    pub until: Option<DateTime<Utc>>,
    /// The decision's detail as recorded (JSON text: rungs passed over, the contact, the need).
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NoticesView {
    pub attempts: Vec<AttemptView>,
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentView {
    pub purpose: String,
    /// Absent: every channel.
    pub channel: Option<String>,
    pub state: String,
    pub at: DateTime<Utc>,
    pub source: String,
    pub text_version: String,
}

fn role_parts(r: reachline_domain::ContactRole) -> (String, Option<String>) {
    (r.name().to_string(), r.relation().map(|x| x.as_str().to_string()))
}

fn address_text(a: &ContactAddress, clear: bool) -> String {
    if clear {
        a.canonical()
    } else {
        a.masked()
    }
}

pub(crate) fn contact_view(c: &ContactRecord, clear: bool) -> ContactView {
    let (role, relation) = role_parts(c.point.role);
    ContactView {
        id: c.id.0,
        slot: c.point.slot.as_str().to_string(),
        kind: c.point.kind.as_str().to_string(),
        role,
        relation,
        address: address_text(&c.point.address, clear),
        bound_since: c.point.bound_since,
        source: c.point.source.as_str().to_string(),
        verified_at: c.point.verified_at,
        added_at: c.added_at,
        retired_at: c.retired.as_ref().map(|r| r.at),
        retired_reason: c.retired.as_ref().map(|r| r.reason.clone()),
    }
}

pub(crate) fn borrower_view(b: &BorrowerRecord, clear: bool) -> BorrowerView {
    let x = &b.borrower;
    BorrowerView {
        id: b.id.0,
        external_id: x.external_id.as_str().to_string(),
        name: if clear {
            x.name.as_str().to_string()
        } else {
            x.name.masked()
        },
        national_id: x
            .national_id
            .as_ref()
            .map(|n| if clear { n.as_str().to_string() } else { n.masked() }),
        locale: x.locale.to_string(),
        time_zone: x.time_zone.name().to_string(),
        jurisdiction: x.jurisdiction.to_string(),
        masked: !clear,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn external_id(field: &str, s: &str) -> Result<ExternalId, ApiError> {
    ExternalId::parse(s).map_err(|e| ApiError::invalid(field, e.to_string()))
}

pub(crate) async fn borrower(s: &crate::Server, id: &str) -> Result<BorrowerRecord, ApiError> {
    let ext = external_id("external_id", id)?;
    s.stores
        .store
        .borrower_by_external_id(&ext)
        .await?
        .ok_or_else(|| ApiError::not_found("borrower"))
}

/// The reason given for reading personal data in clear, checked: 4 to 200 characters, and —
/// since auditors read the access log — no address and no six digits in a row.
pub fn access_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.chars().count() < 4 || reason.chars().count() > 200 {
        return Err(ApiError::invalid(
            "reason",
            "an unmasked read needs a reason of 4 to 200 characters",
        ));
    }
    if reason.contains('@') || has_digit_run(reason, 6) {
        return Err(ApiError::invalid(
            "reason",
            "a reason may not hold an address or six digits in a row (cite a case number by its letters and up to five digits)",
        ));
    }
    Ok(reason)
}

/// Whether this read is unmasked; if so, checks the permission and writes the access log.
pub(crate) async fn unmasking(
    s: &crate::Server,
    who: &Principal,
    q: &Unmask,
    action: &str,
    borrower: BorrowerId,
    rid: &RequestId,
) -> Result<bool, ApiError> {
    if !q.unmask {
        return Ok(false);
    }
    if !crate::auth::allows(who.role, Permission::ReadUnmasked) {
        return Err(ApiError::not_allowed(who.role, Permission::ReadUnmasked));
    }
    let reason = access_reason(q.reason.as_deref().unwrap_or_default())?;
    s.stores
        .server
        .log_access(&reachline_store::server::AccessEntry {
            at: s.now(),
            actor: who.actor.clone(),
            action: action.to_string(),
            borrower: Some(borrower),
            reason: reason.to_string(),
            request_id: rid.0.clone(),
        })
        .await?;
    Ok(true)
}

fn field_errors(prefix: &str, errors: Vec<FieldError>) -> ApiError {
    let n = errors.len();
    let first = &errors[0];
    let more = if n > 1 {
        format!(" (and {} more field errors)", n - 1)
    } else {
        String::new()
    };
    ApiError::invalid(format!("{prefix}.{}", first.field), format!("{}{more}", first.reason))
}

// ---------------------------------------------------------------------------------------------
// Borrowers and contact points

/// A borrower, masked unless asked and allowed.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}", tag = "borrowers",
    params(("external_id" = String, Path, description = "The lender's borrower id"), Unmask),
    responses((status = 200, body = BorrowerView), (status = 404, body = ErrorBody)))]
async fn get_borrower(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Query(q): Query<Unmask>,
) -> Result<Json<BorrowerView>, ApiError> {
    let b = borrower(&s, &id).await?;
    let clear = unmasking(&s, &who, &q, "borrower.read", b.id, &rid).await?;
    Ok(Json(borrower_view(&b, clear)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// Why (kept in the access log): the borrower's request, its case reference.
    pub reason: String,
}

/// Everything held about a borrower, in clear, in one JSON document (the borrower's right of
/// access): needs `read personal data in clear` and a reason; the export is logged.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/export", tag = "borrowers",
    params(("external_id" = String, Path), ExportQuery),
    responses((status = 200, body = crate::export::BorrowerExport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn export_borrower(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Json<crate::export::BorrowerExport>, ApiError> {
    let b = borrower(&s, &id).await?;
    let ask = Unmask {
        unmask: true,
        reason: Some(q.reason),
    };
    unmasking(&s, &who, &ask, "borrower.export", b.id, &rid).await?;
    Ok(Json(crate::export::document(&s.stores, &b, s.now()).await?))
}

/// An erasure request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    /// Why (kept in the access log and the erasure's record): the borrower's request and its
    /// case reference. No address or number.
    pub reason: String,
    /// If the collection-record floor has not run since the last contact: keep the request
    /// and erase on the first day allowed (202) instead of refusing (409).
    #[serde(default)]
    pub when_allowed: bool,
}

/// Erases the borrower's personal data (PIPL art. 47): their data key and ledger commitment
/// key are destroyed, every ciphertext and lookup index of theirs blanked, the erasure recorded
/// (and written to the ledger). Refused (409) while an installment is unpaid, or before the
/// retention floor allows it (with the date it will); `already_erased` for a borrower erased
/// before.
#[utoipa::path(post, path = "/v1/borrowers/{external_id}/erasure", tag = "borrowers",
    params(("external_id" = String, Path)), request_body = EraseBody,
    responses((status = 200, body = crate::privacy::ErasureOutcome), (status = 202, body = crate::privacy::ErasureOutcome),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn erase_borrower(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Json(body): Json<EraseBody>,
) -> Result<(StatusCode, Json<crate::privacy::ErasureOutcome>), ApiError> {
    let ext = external_id("external_id", &id)?;
    let reason = access_reason(&body.reason)?.to_string();
    let b = s
        .stores
        .privacy
        .borrower_id(&ext)
        .await?
        .ok_or_else(|| ApiError::not_found("borrower"))?;
    let now = s.now();
    s.stores
        .server
        .log_access(&reachline_store::server::AccessEntry {
            at: now,
            actor: who.actor.clone(),
            action: "borrower.erase".into(),
            borrower: Some(b),
            reason: reason.clone(),
            request_id: rid.0.clone(),
        })
        .await?;
    let settings = s.privacy.get().cloned().unwrap_or_default();
    let seq = s.engine.sequencer();
    let ask = crate::privacy::EraseAsk {
        borrower: b,
        actor: &who.actor,
        basis: "borrower_request",
        reason: &reason,
        when_allowed: body.when_allowed,
    };
    let out = crate::privacy::erase(&s.stores, seq.as_deref(), &settings, &ask, now).await?;
    let status = if out.state == "scheduled" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)))
}

/// The borrower's contact points, current first, then retired ones.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/contacts", tag = "contacts",
    params(("external_id" = String, Path), Unmask),
    responses((status = 200, body = Vec<ContactView>), (status = 404, body = ErrorBody)))]
async fn list_contacts(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Query(q): Query<Unmask>,
) -> Result<Json<Vec<ContactView>>, ApiError> {
    let b = borrower(&s, &id).await?;
    let clear = unmasking(&s, &who, &q, "contacts.read", b.id, &rid).await?;
    let cs = s.stores.store.contacts(b.id).await?;
    Ok(Json(cs.iter().map(|c| contact_view(c, clear)).collect()))
}

/// A new contact point. A point already in the slot is retired (`replaced`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    /// The slot (`mobile`, `backup1`, `emergency1`…).
    pub slot: String,
    /// mobile, landline, email, push_token, im_account.
    pub kind: String,
    /// primary, backup, emergency.
    pub role: String,
    /// For an emergency contact: spouse, parent, child, sibling, relative, friend, colleague, other.
    #[serde(default)]
    pub relation: Option<String>,
    pub value: String,
    /// For an emergency contact: their name.
    #[serde(default)]
    pub holder_name: Option<String>,
    /// Since when the lender knew the address was its holder's (default: today).
    #[serde(default)]
    pub bound_since: Option<NaiveDate>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: i64,
}

#[utoipa::path(post, path = "/v1/borrowers/{external_id}/contacts", tag = "contacts",
    params(("external_id" = String, Path)), request_body = NewContact,
    responses((status = 201, body = Created), (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn add_contact(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(n): Json<NewContact>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let b = borrower(&s, &id).await?;
    let now = s.now();
    let bound = n.bound_since.unwrap_or_else(|| now.date_naive()).to_string();
    let row = ContactRow {
        borrower_id: id.as_str().into(),
        slot: n.slot.as_str().into(),
        kind: n.kind.as_str().into(),
        role: n.role.as_str().into(),
        relation: n.relation.as_deref().unwrap_or_default().into(),
        value: n.value.as_str().into(),
        holder_name: n.holder_name.as_deref().unwrap_or_default().into(),
        bound_since: bound.as_str().into(),
        verified_at: "".into(),
    };
    let (_, mut point) = parse::contact(&row, &s.phones).map_err(|e| field_errors("contact", e))?;
    point.source = if who.role == Role::Operator {
        ContactSource::Operator
    } else {
        ContactSource::Api
    };
    let cid = s
        .stores
        .store
        .add_contact(b.id, &point, now, &who.actor, "replaced")
        .await?;
    // New evidence of a kind: the borrower's next decision should see the new point.
    s.stores.engine.wake_now(b.id, now).await?;
    Ok((StatusCode::CREATED, Json(Created { id: cid.0 })))
}

/// Every event in the borrower's contact history, oldest first.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/contact-history", tag = "contacts",
    params(("external_id" = String, Path)),
    responses((status = 200, body = Vec<ContactEventView>), (status = 404, body = ErrorBody)))]
async fn contact_history(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ContactEventView>>, ApiError> {
    let b = borrower(&s, &id).await?;
    Ok(Json(contact_event_views(&s.stores, b.id).await?))
}

pub(crate) async fn contact_event_views(
    stores: &reachline_store::Stores,
    b: BorrowerId,
) -> Result<Vec<ContactEventView>, ApiError> {
    Ok(stores
        .store
        .contact_history(b)
        .await?
        .into_iter()
        .map(|e| ContactEventView {
            contact_id: e.contact_id.0,
            kind: e.kind.as_str().to_string(),
            at: e.at,
            actor: e.actor,
            detail: e.detail,
        })
        .collect())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyContact {
    /// How it was verified (`call`, `branch_visit`, `code`…): a short code, not free text.
    pub method: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireContact {
    /// Why (`borrower_request`, `wrong_number`, `dead`…): a short code, not free text.
    pub reason: String,
}

fn has_digit_run(s: &str, n: usize) -> bool {
    let mut run = 0;
    s.chars().any(|c| {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        run >= n
    })
}

/// A short code (`a-z`, `0-9`, `_`, `-`, `.`, at most 40) for methods and reasons, so that no
/// personal datum lands in the history through them.
pub(crate) fn code(field: &str, s: &str) -> Result<String, ApiError> {
    let ok = (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        && !has_digit_run(s, 6);
    ok.then(|| s.to_string()).ok_or_else(|| {
        ApiError::invalid(
            field,
            "must be a short code: a-z, 0-9, _ - . (at most 40, fewer than six digits)",
        )
    })
}

async fn contact_owner(s: &crate::Server, contact: i64) -> Result<BorrowerId, ApiError> {
    s.stores
        .engine
        .contact_owner(ContactId(contact))
        .await?
        .ok_or_else(|| ApiError::not_found("contact point"))
}

/// Marks a contact point verified (by an operator's call, a branch visit…).
#[utoipa::path(post, path = "/v1/contacts/{contact_id}/verify", tag = "contacts",
    params(("contact_id" = i64, Path)), request_body = VerifyContact,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn verify_contact(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(contact): Path<i64>,
    Json(v): Json<VerifyContact>,
) -> Result<StatusCode, ApiError> {
    contact_step(&s, &who, contact, Step::Verify, &v.method).await
}

/// Retires a contact point: no notice goes to it again.
#[utoipa::path(post, path = "/v1/contacts/{contact_id}/retire", tag = "contacts",
    params(("contact_id" = i64, Path)), request_body = RetireContact,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn retire_contact(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(contact): Path<i64>,
    Json(r): Json<RetireContact>,
) -> Result<StatusCode, ApiError> {
    contact_step(&s, &who, contact, Step::Retire, &r.reason).await
}

enum Step {
    Verify,
    Retire,
}

/// Verifies or retires a contact point (with a method or reason that is a short code) and
/// wakes its borrower.
async fn contact_step(
    s: &crate::Server,
    who: &Principal,
    contact: i64,
    step: Step,
    text: &str,
) -> Result<StatusCode, ApiError> {
    let text = code(
        match step {
            Step::Verify => "method",
            Step::Retire => "reason",
        },
        text,
    )?;
    let owner = contact_owner(s, contact).await?;
    let (id, now, store) = (ContactId(contact), s.now(), &s.stores.store);
    match step {
        Step::Verify => store.verify_contact(id, now, &who.actor, &text).await?,
        Step::Retire => store.retire_contact(id, now, &who.actor, &text).await?,
    }
    s.stores.engine.wake_now(owner, now).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Loans, the book, payments

/// The borrower's loans with their schedules.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/loans", tag = "loans",
    params(("external_id" = String, Path)),
    responses((status = 200, body = Vec<LoanView>), (status = 404, body = ErrorBody)))]
async fn list_loans(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<LoanView>>, ApiError> {
    let b = borrower(&s, &id).await?;
    Ok(Json(loan_views(&s.stores, b.id).await?))
}

pub(crate) async fn loan_views(stores: &reachline_store::Stores, b: BorrowerId) -> Result<Vec<LoanView>, ApiError> {
    let mut out = Vec::new();
    for l in stores.store.loans(b).await? {
        let installments = stores
            .store
            .installments(l.id)
            .await?
            .into_iter()
            .map(|i| InstallmentView {
                id: i.id.0,
                seq: i.installment.seq,
                due_date: i.installment.due_date,
                amount_due_minor: i.installment.amount_due.minor(),
                amount_paid_minor: i.installment.amount_paid.minor(),
                paid_at: i.installment.paid_at,
            })
            .collect();
        out.push(LoanView {
            id: l.id.0,
            external_id: l.loan.external_id.as_str().to_string(),
            product: l.loan.product.clone(),
            currency: l.loan.currency().to_string(),
            principal_minor: l.loan.principal.minor(),
            disbursed_on: l.loan.disbursed_on,
            installments,
        });
    }
    Ok(out)
}

/// Rows of the loan book, as in its JSON Lines files (`docs/book-format.md`); every field is
/// text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookBatch {
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub borrowers: Vec<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub contacts: Vec<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub loans: Vec<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub installments: Vec<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub consents: Vec<serde_json::Value>,
}

/// What a book upsert changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BookReport {
    pub borrowers_created: u64,
    pub borrowers_updated: u64,
    pub borrowers_unchanged: u64,
    pub contacts_added: u64,
    pub contacts_replaced: u64,
    pub contacts_unchanged: u64,
    pub loans_written: u64,
    pub installments_written: u64,
    pub consents_added: u64,
}

/// serde's message without its position: it names the field and never the value.
fn serde_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    msg.split(" at line").next().unwrap_or(&msg).to_string()
}

fn rows<'a, T: Deserialize<'a>>(name: &str, values: &'a [serde_json::Value]) -> Result<Vec<T>, ApiError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| T::deserialize(v).map_err(|e| ApiError::invalid(format!("{name}[{i}]"), serde_reason(&e))))
        .collect()
}

/// Creates or updates borrowers, contact points, loans with their installments, and consents,
/// all or nothing: one bad field refuses the whole batch (the error names it) and nothing is
/// written. A loan's installments come with the loan.
#[utoipa::path(post, path = "/v1/book", tag = "loans", request_body = BookBatch,
    responses((status = 200, body = BookReport), (status = 422, body = ErrorBody)))]
async fn post_book(
    State(s): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<BookReport>, ApiError> {
    let body = body?;
    let batch: BookBatch = serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", serde_reason(&e)))?;
    let b_rows: Vec<BorrowerRow> = rows("borrowers", &batch.borrowers)?;
    let c_rows: Vec<ContactRow> = rows("contacts", &batch.contacts)?;
    let l_rows: Vec<LoanRow> = rows("loans", &batch.loans)?;
    let i_rows: Vec<InstallmentRow> = rows("installments", &batch.installments)?;
    let k_rows: Vec<ConsentRow> = rows("consents", &batch.consents)?;
    let mut borrowers = Vec::new();
    for (i, r) in b_rows.iter().enumerate() {
        borrowers.push(parse::borrower(r, &s.book_defaults).map_err(|e| field_errors(&format!("borrowers[{i}]"), e))?);
    }
    let mut contacts = Vec::new();
    for (i, r) in c_rows.iter().enumerate() {
        let (owner, mut p) = parse::contact(r, &s.phones).map_err(|e| field_errors(&format!("contacts[{i}]"), e))?;
        p.source = ContactSource::Api;
        contacts.push((i, owner, p));
    }
    let mut loans = Vec::new();
    for (i, r) in l_rows.iter().enumerate() {
        loans.push(parse::loan(r).map_err(|e| field_errors(&format!("loans[{i}]"), e))?);
    }
    let currency: HashMap<ExternalId, reachline_domain::Currency> =
        loans.iter().map(|l| (l.external_id.clone(), l.currency())).collect();
    let mut installments = Vec::new();
    for (i, r) in i_rows.iter().enumerate() {
        let loan = external_id(&format!("installments[{i}].loan_id"), &r.loan_id)?;
        let Some(cur) = currency.get(&loan) else {
            return Err(ApiError::invalid(
                format!("installments[{i}].loan_id"),
                "names no loan of this batch (send a loan's installments with it)",
            ));
        };
        installments.push(parse::installment(r, *cur).map_err(|e| field_errors(&format!("installments[{i}]"), e))?);
    }
    let mut consents = Vec::new();
    for (i, r) in k_rows.iter().enumerate() {
        consents.push((
            i,
            parse::consent(r).map_err(|e| field_errors(&format!("consents[{i}]"), e))?,
        ));
    }
    // Every borrower named must be in the batch or already stored.
    let mut ids: HashMap<ExternalId, Option<BorrowerId>> =
        borrowers.iter().map(|b| (b.external_id.clone(), None)).collect();
    let named = contacts
        .iter()
        .map(|(i, o, _)| (format!("contacts[{i}].borrower_id"), o.clone()))
        .chain(
            loans
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("loans[{i}].borrower_id"), l.borrower.clone())),
        )
        .chain(
            consents
                .iter()
                .map(|(i, (o, _))| (format!("consents[{i}].borrower_id"), o.clone())),
        );
    for (field, ext) in named.collect::<Vec<_>>() {
        if ids.contains_key(&ext) {
            continue;
        }
        match s.stores.store.borrower_by_external_id(&ext).await? {
            Some(b) => {
                ids.insert(ext, Some(b.id));
            }
            None => {
                return Err(ApiError::invalid(
                    field,
                    "names no borrower of this batch or of the store",
                ))
            }
        }
    }
    let now = s.now();
    let mut tx = s.stores.store.begin_import(now).await?;
    let created = tx.upsert_borrowers(borrowers.clone()).await?;
    for (b, id) in borrowers.iter().zip(created) {
        ids.insert(b.external_id.clone(), Some(id));
    }
    let id_of = |e: &ExternalId| ids.get(e).copied().flatten().ok_or_else(ApiError::internal);
    let cs = contacts
        .into_iter()
        .map(|(_, o, p)| Ok((id_of(&o)?, p)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    tx.upsert_contacts(cs).await?;
    let ls = loans
        .iter()
        .map(|l| Ok((id_of(&l.borrower)?, l.clone())))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let loan_ids = tx.upsert_loans(ls).await?;
    let loan_id: HashMap<ExternalId, reachline_domain::LoanId> =
        loans.iter().map(|l| l.external_id.clone()).zip(loan_ids).collect();
    let is = installments
        .into_iter()
        .map(|i| Ok((*loan_id.get(&i.loan).ok_or_else(ApiError::internal)?, i)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    tx.upsert_installments(is).await?;
    let ks = consents
        .into_iter()
        .map(|(_, (o, c))| Ok((id_of(&o)?, c)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    tx.add_consents(ks).await?;
    let r = tx.commit().await?;
    let touched: Vec<BorrowerId> = ids.values().flatten().copied().collect();
    for b in touched {
        s.stores.engine.wake_now(b, now).await?;
    }
    Ok(Json(BookReport {
        borrowers_created: r.borrowers_created,
        borrowers_updated: r.borrowers_updated,
        borrowers_unchanged: r.borrowers_unchanged,
        contacts_added: r.contacts_added,
        contacts_replaced: r.contacts_replaced,
        contacts_unchanged: r.contacts_unchanged,
        loans_written: r.loans_written,
        installments_written: r.installments_written,
        consents_added: r.consents_added,
    }))
}

/// A payment from core banking.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    /// The lender's loan id.
    pub loan_id: String,
    /// The installment's position in the schedule (1-based).
    pub seq: u32,
    /// In minor units of the loan's currency.
    pub amount_minor: i64,
    pub paid_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/payments", tag = "loans", request_body = Payment,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_payment(State(s): State<AppState>, Json(p): Json<Payment>) -> Result<StatusCode, ApiError> {
    if p.amount_minor <= 0 {
        return Err(ApiError::invalid("amount_minor", "must be more than 0"));
    }
    let loan = external_id("loan_id", &p.loan_id)?;
    let installment = s
        .stores
        .engine
        .installment_by_seq(&loan, p.seq)
        .await?
        .ok_or_else(|| ApiError::not_found("installment"))?;
    let at = p.paid_at.unwrap_or_else(|| s.now());
    s.stores
        .engine
        .record_payment(InstallmentId(installment.0), p.amount_minor, at)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Notices, evidence, consents

/// Every attempt at a notice for the borrower and every decision that explains them.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/notices", tag = "notices",
    params(("external_id" = String, Path)),
    responses((status = 200, body = NoticesView), (status = 404, body = ErrorBody)))]
async fn list_notices(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<NoticesView>, ApiError> {
    let b = borrower(&s, &id).await?;
    Ok(Json(notices_view(&s.stores, b.id).await?))
}

pub(crate) async fn notices_view(stores: &reachline_store::Stores, b: BorrowerId) -> Result<NoticesView, ApiError> {
    let attempts = attempt_views(stores, stores.engine.sends_of(b).await?).await?;
    let decisions = stores
        .engine
        .decisions_of(b)
        .await?
        .into_iter()
        .map(|(at, d)| DecisionView {
            at,
            notice: d.notice,
            action: d.action,
            reason: d.reason,
            gate: d.gate,
            until: d.until,
            detail: d.detail,
        })
        .collect();
    Ok(NoticesView { attempts, decisions })
}

/// The evidence bundle of a notice attempt: every ledger leaf about it with an inclusion proof
/// against the latest signed checkpoint (C2SP `tlog-proof@v1` blocks), checkable offline with
/// `reachline ledger verify` and the log's public key.
#[utoipa::path(get, path = "/v1/notices/{notice_id}/evidence", tag = "notices",
    params(("notice_id" = i64, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
async fn notice_evidence(State(s): State<AppState>, Path(notice): Path<i64>) -> Result<Response, ApiError> {
    let ledger = s.ledger.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node serves no ledger",
        )
    })?;
    let file = reachline_store::ledger::bundle(ledger.as_ref(), notice).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"notice-{notice}.proof\""),
            ),
        ],
        file.to_text(),
    )
        .into_response())
}

/// Evidence about a contact point from outside Reachline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvidence {
    pub contact_id: i64,
    /// The evidence, as the policy reads it: e.g. `{"kind": "call", "outcome": "wrong_party"}`,
    /// `{"kind": "operator", "action": "mark_dead"}`, `{"kind": "self_report", "report": "changed_number"}`.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/borrowers/{external_id}/evidence", tag = "notices",
    params(("external_id" = String, Path)), request_body = NewEvidence,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_evidence(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(e): Json<NewEvidence>,
) -> Result<StatusCode, ApiError> {
    let b = borrower(&s, &id).await?;
    let kind: reachline_policy::EvidenceKind =
        serde_json::from_value(e.evidence).map_err(|err| ApiError::invalid("evidence", err.to_string()))?;
    let contacts = s.stores.store.contacts(b.id).await?;
    if !contacts.iter().any(|c| c.id.0 == e.contact_id) {
        return Err(ApiError::invalid(
            "contact_id",
            "is not a contact point of this borrower",
        ));
    }
    let source = match who.role {
        Role::Integration => reachline_policy::evidence::Source::Provider(who.actor.clone()),
        _ => reachline_policy::evidence::Source::Operator(who.actor.clone()),
    };
    let at = e.at.unwrap_or_else(|| s.now());
    s.stores
        .engine
        .add_evidence(
            b.id,
            Some(ContactId(e.contact_id)),
            at,
            &serde_json::to_string(&source).map_err(|_| ApiError::internal())?,
            &serde_json::to_string(&kind).map_err(|_| ApiError::internal())?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Consent events, oldest first; the latest event for a purpose and channel decides.
#[utoipa::path(get, path = "/v1/borrowers/{external_id}/consents", tag = "consents",
    params(("external_id" = String, Path)),
    responses((status = 200, body = Vec<ConsentView>), (status = 404, body = ErrorBody)))]
async fn list_consents(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<ConsentView>>, ApiError> {
    let b = borrower(&s, &id).await?;
    Ok(Json(consent_views(&s.stores, b.id).await?))
}

pub(crate) async fn consent_views(
    stores: &reachline_store::Stores,
    b: BorrowerId,
) -> Result<Vec<ConsentView>, ApiError> {
    Ok(stores
        .store
        .consents(b)
        .await?
        .into_iter()
        .map(|c| ConsentView {
            purpose: c.purpose.as_str().to_string(),
            channel: c.channel.map(|ch: Channel| ch.as_str().to_string()),
            state: c.state.as_str().to_string(),
            at: c.at,
            source: c.source.as_str().to_string(),
            text_version: c.text_version,
        })
        .collect())
}

/// A consent given or withdrawn; a withdrawal takes effect before the next send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// service, collection, verification, third_party.
    pub purpose: String,
    /// Absent: every channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// granted, withdrawn.
    pub state: String,
    /// contract, page, reply, operator, api.
    pub source: String,
    pub text_version: String,
    pub at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/borrowers/{external_id}/consents", tag = "consents",
    params(("external_id" = String, Path)), request_body = NewConsent,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_consent(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(c): Json<NewConsent>,
) -> Result<StatusCode, ApiError> {
    let b = borrower(&s, &id).await?;
    let at = c.at.unwrap_or_else(|| s.now()).to_rfc3339();
    let row = ConsentRow {
        borrower_id: id.as_str().into(),
        purpose: c.purpose.as_str().into(),
        channel: c.channel.as_deref().unwrap_or_default().into(),
        state: c.state.as_str().into(),
        at: at.as_str().into(),
        source: c.source.as_str().into(),
        text_version: c.text_version.as_str().into(),
    };
    let (_, consent) = parse::consent(&row).map_err(|e| field_errors("consent", e))?;
    s.stores.store.record_consent(b.id, &consent).await?;
    s.stores.engine.wake_now(b.id, s.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Reports, access log, ledger, tokens

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CountView {
    pub keys: Vec<String>,
    pub count: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SummaryView {
    pub borrowers: u64,
    pub contacts_current: u64,
    pub contacts_retired: u64,
    pub loans: u64,
    pub installments: u64,
    /// Attempts by kind, channel, state, outcome, outcome class.
    pub outbox: Vec<CountView>,
    /// Decisions by action, reason, gate.
    pub decisions: Vec<CountView>,
}

#[utoipa::path(get, path = "/v1/reports/summary", tag = "reports",
    responses((status = 200, body = SummaryView)))]
async fn report_summary(State(s): State<AppState>) -> Result<Json<SummaryView>, ApiError> {
    let c = s.stores.store.counts().await?;
    let view = |rows: Vec<reachline_store::engine::CountRow>| {
        rows.into_iter()
            .map(|r| CountView {
                keys: r.keys,
                count: r.count,
            })
            .collect()
    };
    Ok(Json(SummaryView {
        borrowers: c.borrowers,
        contacts_current: c.contacts_current,
        contacts_retired: c.contacts_retired,
        loans: c.loans,
        installments: c.installments,
        outbox: view(s.stores.engine.outbox_counts().await?),
        decisions: view(s.stores.engine.decision_counts().await?),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AccessQuery {
    /// One borrower's entries (the lender's id).
    pub borrower: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub borrower_id: Option<i64>,
    pub reason: String,
    pub request_id: String,
}

/// Every read of personal data in clear: who, what, about whom, when, why.
#[utoipa::path(get, path = "/v1/access-log", tag = "reports", params(AccessQuery),
    responses((status = 200, body = Vec<AccessView>)))]
async fn access_log(
    State(s): State<AppState>,
    Query(q): Query<AccessQuery>,
) -> Result<Json<Vec<AccessView>>, ApiError> {
    let b = match &q.borrower {
        Some(id) => Some(borrower(&s, id).await?.id),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        s.stores
            .server
            .access_log(b, limit)
            .await?
            .into_iter()
            .map(AccessView::from)
            .collect(),
    ))
}

impl From<reachline_store::server::AccessEntry> for AccessView {
    fn from(e: reachline_store::server::AccessEntry) -> Self {
        AccessView {
            at: e.at,
            actor: e.actor,
            action: e.action,
            borrower_id: e.borrower.map(|b| b.0),
            reason: e.reason,
            request_id: e.request_id,
        }
    }
}

/// The ledger's latest signed checkpoint (C2SP signed note).
#[utoipa::path(get, path = "/v1/ledger/checkpoint", tag = "notices",
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
async fn ledger_checkpoint(State(s): State<AppState>) -> Result<Response, ApiError> {
    let ledger = s.ledger.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node serves no ledger",
        )
    })?;
    let c = ledger
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::not_found("checkpoint"))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        c.note,
    )
        .into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// Who holds it (a system or a person's role, not a person's name).
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    /// Shown once: only its hash is kept.
    pub token: String,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenView>)))]
async fn list_tokens(State(s): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(
        s.stores
            .server
            .tokens()
            .await?
            .into_iter()
            .filter_map(|t| {
                Some(TokenView {
                    role: Role::parse(&t.role)?,
                    id: t.id,
                    name: t.name,
                    created_at: t.created_at,
                    revoked_at: t.revoked_at,
                })
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(s): State<AppState>,
    Json(n): Json<NewTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = n.name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(ApiError::invalid("name", "must be 1 to 80 characters"));
    }
    let t = tokio::task::spawn_blocking({
        let (name, role, at) = (name.to_string(), n.role, s.now());
        move || new_token(&name, role, at, &mut rand::rngs::OsRng)
    })
    .await
    .map_err(|_| ApiError::internal())?;
    s.stores.server.create_token(&t.record).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: t.record.id,
            token: t.token,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/tokens/{token_id}/revoke", tag = "tokens",
    params(("token_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if !s.stores.server.revoke_token(&id, s.now()).await? {
        return Err(ApiError::not_found("live token"));
    }
    s.verifier.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}
