//! The number-change flow over the store and the engine — a new mobile number replacing the
//! current one, or a backup number or an email address added: start (refusals and risks from
//! `reachline_policy::change`, the carrier's SIM-swap and port answers), the code to the new
//! address, its guesses, the existing factor, apply or hold for review, and the operators'
//! decisions. Every step is a row and a ledger leaf (through the engine); the new number is
//! kept sealed, and nothing here logs it.

use chrono::{DateTime, Duration, Utc};
use reachline_domain::{
    BorrowerId, ContactAddress, ContactId, ContactKind, ContactPoint, ContactRole, ContactSource, Email, ExternalId,
    PhoneNumber,
};
use reachline_engine::verify::{VerifyError, VerifySend, VerifyTarget};
use reachline_policy::change::{assess_start, ChangeState, ChangeTarget, Factor, Flow, Refusal, StartFacts};
use reachline_policy::codes::{self, CodeError};
use reachline_store::selfservice::{ChangeRecord, Filter, NewChange, StepRecord};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::Server;

/// Why a step of a change did not go through. Every message is fit to show the borrower.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Code(CodeError),
    #[error("this change is no longer waiting for a code")]
    NotPending,
    #[error("no such change")]
    NotFound,
    #[error("the code could not be sent: {0}")]
    NotSent(String),
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl From<ApiError> for ChangeError {
    fn from(e: ApiError) -> Self {
        ChangeError::Api(e)
    }
}

impl From<reachline_store::StoreError> for ChangeError {
    fn from(e: reachline_store::StoreError) -> Self {
        ChangeError::Api(e.into())
    }
}

impl From<reachline_engine::EngineError> for ChangeError {
    fn from(e: reachline_engine::EngineError) -> Self {
        tracing::error!(error = %e, "number change: engine");
        ChangeError::Api(ApiError::internal())
    }
}

/// The server secret one-time codes are hashed with (derived from the link key, so a stolen
/// database alone does not give the codes away).
fn pepper(s: &Server) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"reachline one-time code pepper v1\0");
    h.update(&s.engine.config().link_key);
    h.finalize().into()
}

/// A step of a change (or of none: `change` is `None`), as recorded.
pub(crate) fn step(
    borrower: BorrowerId,
    change: Option<i64>,
    at: DateTime<Utc>,
    name: &str,
    actor: &str,
    detail: serde_json::Value,
) -> StepRecord {
    StepRecord {
        borrower,
        change,
        check: None,
        at,
        step: name.to_string(),
        actor: actor.to_string(),
        detail: Some(detail.to_string()),
    }
}

fn flow_of(rec: &ChangeRecord) -> Result<Flow, ChangeError> {
    serde_json::from_str(&rec.flow).map_err(|e| {
        tracing::error!(change = rec.id, error = %e, "a stored change flow is unreadable");
        ChangeError::Api(ApiError::internal())
    })
}

fn json(flow: &Flow) -> String {
    serde_json::to_string(flow).unwrap_or_default()
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The self-service page: a code goes to the new number.
    Page,
    /// An SMS reply naming the number: a link goes to the new number.
    Reply,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Page => "page",
            Source::Reply => "reply",
        }
    }
}

/// What the carrier says of the new number, from the configured intelligence source: `None`
/// for "could not say" (a provider that offers no such check is not asked).
async fn carrier_facts(
    s: &Server,
    number: &PhoneNumber,
    now: DateTime<Utc>,
) -> (Option<Option<chrono::NaiveDate>>, Option<chrono::NaiveDate>) {
    let Some(intel) = s.intel.get() else {
        return (Some(None), None);
    };
    let rules = &s.config.self_service.change;
    let today = now.date_naive();
    let swap = match intel
        .sim_swap_since(number, today - Duration::days(rules.sim_swap_days))
        .await
    {
        Ok(c) if c.changed => Some(Some(c.on.unwrap_or(today))),
        Ok(_) | Err(reachline_intel::IntelError::Unsupported { .. }) => Some(None),
        Err(e) => {
            tracing::info!(error = %e, "SIM-swap check gave no answer; the change goes to review");
            None
        }
    };
    let port = match intel
        .ported_since(number, today - Duration::days(rules.port_days))
        .await
    {
        Ok(c) if c.changed => Some(c.on.unwrap_or(today)),
        _ => None,
    };
    (swap, port)
}

/// Starts a change of `borrower`'s contacts — the mobile number replaced by `address`, or
/// `address` added as a backup number or an email — refused outright (recorded), or created
/// with its risks and the proof of the new address sent (a code from the page, a link after a
/// reply). `factor` is an existing factor the borrower has already shown in this session.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    s: &Server,
    borrower: BorrowerId,
    address: &ContactAddress,
    target: ChangeTarget,
    source: Source,
    factor: Option<Factor>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<i64, ChangeError> {
    let number = match (address, target) {
        (ContactAddress::Phone(p), ChangeTarget::Replace | ChangeTarget::AddBackup) => Some(p),
        (ContactAddress::Email(_), ChangeTarget::AddEmail) => None,
        _ => {
            return Err(ChangeError::Api(ApiError::invalid(
                "address",
                "a number replaces or backs up the mobile; an email address is added as email",
            )))
        }
    };
    let contacts = s.stores.store.contacts(borrower).await?;
    let current: Vec<_> = contacts.iter().filter(|c| c.is_current()).collect();
    let old = current
        .iter()
        .find(|c| c.point.kind == ContactKind::Mobile && c.point.role == ContactRole::Primary)
        .or_else(|| current.iter().find(|c| c.point.kind == ContactKind::Mobile))
        .filter(|_| target == ChangeTarget::Replace);
    let mine = s
        .stores
        .selfservice
        .changes(&Filter {
            state: None,
            borrower: Some(borrower),
            limit: 200,
        })
        .await?;
    // An email address has no carrier: no SIM swap, no port, no line type.
    let (swap, port) = match number {
        Some(n) => carrier_facts(s, n, now).await,
        None => (Some(None), None),
    };
    let held_by_another_borrower = match number {
        Some(n) => s
            .stores
            .store
            .contacts_by_phone(n)
            .await?
            .iter()
            .any(|c| c.is_current() && c.borrower_id != borrower),
        None => false,
    };
    let facts = StartFacts {
        line_type: number.map(PhoneNumber::line_type),
        same_as_current: current.iter().any(|c| c.point.address == *address),
        last_applied: mine
            .iter()
            .filter(|c| c.state == ChangeState::Applied.as_str())
            .map(|c| c.updated_at)
            .max(),
        starts_last_day: mine.iter().filter(|c| now - c.created_at < Duration::days(1)).count() as u32,
        consecutive_failures: s.stores.selfservice.code_failures(borrower).await?,
        max_consecutive_failures: s.config.self_service.codes.max_consecutive_failures,
        sim_swapped_on: swap,
        ported_on: port,
        held_by_another_borrower,
    };
    let rules = &s.config.self_service.change;
    let risks = match assess_start(rules, &facts, now) {
        Ok(r) => r,
        Err(refusal) => {
            let detail = serde_json::json!({
                "refusal": refusal.code(),
                "source": source.as_str(),
                "target": target.code(),
            });
            s.engine
                .record_step(&step(borrower, None, now, "change_refused", actor, detail))
                .await?;
            return Err(ChangeError::Refused(refusal));
        }
    };
    let mut flow = Flow::new(rules, target, risks.clone(), now);
    flow.authorised_by = factor.clone();
    let id = s
        .stores
        .selfservice
        .create_change(
            &NewChange {
                borrower,
                old_contact: old.map(|c| c.id),
                new_address: address,
                source: source.as_str(),
                state: ChangeState::Pending.as_str(),
                flow: &json(&flow),
            },
            now,
        )
        .await?;
    let risks: Vec<&str> = risks.iter().map(|r| r.code()).collect();
    let detail = serde_json::json!({
        "source": source.as_str(),
        "target": target.code(),
        "risks": risks,
        "old_contact": old.map(|c| c.id.0),
        "factor": factor.as_ref().map(Factor::code),
    });
    s.engine
        .record_step(&step(borrower, Some(id), now, "change_started", actor, detail))
        .await?;
    let mut rec = s.stores.selfservice.change(id).await?.ok_or(ChangeError::NotFound)?;
    match source {
        Source::Page => {
            let (code, record) = codes::issue(&s.config.self_service.codes, &pepper(s), &mut rand::rngs::OsRng, now);
            flow.new_code = Some(record);
            if !s
                .stores
                .selfservice
                .update_change(id, rec.version, ChangeState::Pending.as_str(), &json(&flow), None, now)
                .await?
            {
                return Err(ChangeError::NotPending);
            }
            rec.version += 1;
            send_code(s, &rec, address, &code, actor, now).await?;
        }
        Source::Reply => {
            let link = s.engine.check_link(
                borrower,
                None,
                format!("change:{id}"),
                now + Duration::minutes(rules.valid_minutes),
            );
            let v = VerifySend {
                borrower,
                target: VerifyTarget::Address(address.clone()),
                template: "confirm_new_number",
                code: None,
                link: Some(link),
                change: Some(id),
                check: None,
                step: "link_sent",
                actor: actor.to_string(),
                asked_by_borrower: true,
            };
            s.engine.send_verification(&v, now).await.map_err(|e| not_sent(e, id))?;
        }
    }
    Ok(id)
}

fn not_sent(e: VerifyError, change: i64) -> ChangeError {
    tracing::warn!(change, error = %e, "a verification message did not go");
    match e {
        VerifyError::Engine(e) => e.into(),
        other => ChangeError::NotSent(other.to_string()),
    }
}

async fn send_code(
    s: &Server,
    rec: &ChangeRecord,
    address: &ContactAddress,
    code: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), ChangeError> {
    let v = VerifySend {
        borrower: rec.borrower,
        target: VerifyTarget::Address(address.clone()),
        template: "verification_code",
        code: Some(code.to_string()),
        link: None,
        change: Some(rec.id),
        check: None,
        step: "code_sent",
        actor: actor.to_string(),
        asked_by_borrower: true,
    };
    s.engine
        .send_verification(&v, now)
        .await
        .map(|_| ())
        .map_err(|e| not_sent(e, rec.id))
}

/// The borrower's own change (any other borrower's is "not found", and the attempt recorded).
pub async fn own_change(
    s: &Server,
    borrower: BorrowerId,
    id: i64,
    now: DateTime<Utc>,
) -> Result<ChangeRecord, ChangeError> {
    match s.stores.selfservice.change(id).await? {
        Some(rec) if rec.borrower == borrower => Ok(rec),
        Some(_) => {
            let detail = serde_json::json!({"change": id});
            s.engine
                .record_step(&step(borrower, None, now, "foreign_change_refused", "borrower", detail))
                .await?;
            Err(ChangeError::NotFound)
        }
        None => Err(ChangeError::NotFound),
    }
}

/// Sends the same code again (a new code, when the old one can no longer be sent: expired or
/// sent five times), within the change's own time.
pub async fn resend(s: &Server, rec: ChangeRecord, now: DateTime<Utc>) -> Result<(), ChangeError> {
    if rec.state != ChangeState::Pending.as_str() {
        return Err(ChangeError::NotPending);
    }
    let mut flow = flow_of(&rec)?;
    if flow.next(now) == ChangeState::Lapsed {
        return Err(ChangeError::NotPending);
    }
    let rules = &s.config.self_service.codes;
    // A resend is a new code: the old one is never sent again in clear (it is not kept).
    let sends = flow.new_code.as_ref().map_or(0, |c| c.sends);
    if sends >= rules.max_sends {
        return Err(ChangeError::Code(CodeError::TooManySends));
    }
    let (code, mut record) = codes::issue(rules, &pepper(s), &mut rand::rngs::OsRng, now);
    record.sends = sends + 1;
    flow.new_code = Some(record);
    if !s
        .stores
        .selfservice
        .update_change(rec.id, rec.version, &rec.state, &json(&flow), None, now)
        .await?
    {
        return Err(ChangeError::NotPending);
    }
    let address = address_of(s, &rec, flow.target)?;
    send_code(s, &rec, &address, &code, "borrower", now).await
}

/// Which of a change's codes a guess is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The code sent to the new number (proves possession of it).
    NewNumber,
    /// The code sent to one of the borrower's other contact points (authorises the change).
    Factor,
}

/// A guess at one of a change's codes. Right: the new number is proven (or the change
/// authorised), and the change settles (applied, held for review, or still waiting for the
/// other proof). Wrong, expired, used, too many: recorded, nothing changes.
///
/// The spent guess is written with the change's version compared: when another request
/// updated the change first, the guess is judged again on the fresh record, so parallel
/// guesses cannot share one count.
pub async fn enter_code(
    s: &Server,
    rec: ChangeRecord,
    which: Which,
    guess: &str,
    now: DateTime<Utc>,
) -> Result<ChangeState, ChangeError> {
    let mut rec = rec;
    for _ in 0..50 {
        if rec.state != ChangeState::Pending.as_str() {
            return Err(ChangeError::NotPending);
        }
        let mut flow = flow_of(&rec)?;
        let code = match which {
            Which::NewNumber => flow.new_code.as_mut(),
            Which::Factor => flow.factor_code.as_mut().map(|(_, c)| c),
        }
        .ok_or(ChangeError::NotPending)?;
        let failures = s.stores.selfservice.code_failures(rec.borrower).await?;
        let (res, failures) = codes::verify(&s.config.self_service.codes, &pepper(s), code, guess, failures, now);
        let proof = match (&res, which) {
            (Err(_), _) => None,
            (Ok(()), Which::NewNumber) => {
                flow.new_number_proven = true;
                Some(("new_number_proven", serde_json::json!({"by": "code"})))
            }
            (Ok(()), Which::Factor) => {
                let contact = flow.factor_code.as_ref().map_or(0, |(c, _)| *c);
                flow.authorised_by = Some(Factor::Code { contact });
                Some(("authorised", serde_json::json!({"factor": "code", "contact": contact})))
            }
        };
        if !s
            .stores
            .selfservice
            .update_change(rec.id, rec.version, &rec.state, &json(&flow), None, now)
            .await?
        {
            rec = s
                .stores
                .selfservice
                .change(rec.id)
                .await?
                .ok_or(ChangeError::NotFound)?;
            continue;
        }
        rec.version += 1;
        s.stores
            .selfservice
            .set_code_failures(rec.borrower, failures, now)
            .await?;
        let Some((name, detail)) = proof else {
            let e = res.err().unwrap_or(CodeError::Wrong);
            let detail = serde_json::json!({"error": serde_json::to_value(e).unwrap_or_default(), "code": match which {
                Which::NewNumber => "new_number",
                Which::Factor => "factor",
            }});
            s.engine
                .record_step(&step(
                    rec.borrower,
                    Some(rec.id),
                    now,
                    "code_refused",
                    "borrower",
                    detail,
                ))
                .await?;
            return Err(ChangeError::Code(e));
        };
        s.engine
            .record_step(&step(rec.borrower, Some(rec.id), now, name, "borrower", detail))
            .await?;
        return settle(s, rec, flow, "borrower", now).await;
    }
    Err(ChangeError::Api(ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many requests at once for this change; try again",
    )))
}

/// The borrower's other current contact points a factor code may go to: their own, not the
/// number being replaced, phones and emails.
pub async fn factor_contacts(
    s: &Server,
    rec: &ChangeRecord,
) -> Result<Vec<reachline_store::ContactRecord>, ChangeError> {
    Ok(s.stores
        .store
        .contacts(rec.borrower)
        .await?
        .into_iter()
        .filter(|c| {
            c.is_current()
                && !c.point.role.is_third_party()
                && Some(c.id) != rec.old_contact
                && matches!(c.point.kind, ContactKind::Mobile | ContactKind::Email)
        })
        .collect())
}

/// Sends a code to one of the borrower's other contact points; entering it authorises the
/// change (an existing factor). A second request for the same contact is a resend (at most 5).
pub async fn send_factor_code(
    s: &Server,
    rec: ChangeRecord,
    contact: ContactId,
    now: DateTime<Utc>,
) -> Result<(), ChangeError> {
    if rec.state != ChangeState::Pending.as_str() {
        return Err(ChangeError::NotPending);
    }
    if !factor_contacts(s, &rec).await?.iter().any(|c| c.id == contact) {
        return Err(ChangeError::NotFound);
    }
    let mut flow = flow_of(&rec)?;
    if flow.next(now) == ChangeState::Lapsed {
        return Err(ChangeError::NotPending);
    }
    let rules = &s.config.self_service.codes;
    let sends = match &flow.factor_code {
        Some((c, code)) if *c == contact.0 => code.sends,
        _ => 0,
    };
    if sends >= rules.max_sends {
        return Err(ChangeError::Code(CodeError::TooManySends));
    }
    let (code, mut record) = codes::issue(rules, &pepper(s), &mut rand::rngs::OsRng, now);
    record.sends = sends + 1;
    flow.factor_code = Some((contact.0, record));
    if !s
        .stores
        .selfservice
        .update_change(rec.id, rec.version, &rec.state, &json(&flow), None, now)
        .await?
    {
        return Err(ChangeError::NotPending);
    }
    let v = VerifySend {
        borrower: rec.borrower,
        target: VerifyTarget::Contact(contact),
        template: "verification_code",
        code: Some(code),
        link: None,
        change: Some(rec.id),
        check: None,
        step: "factor_code_sent",
        actor: "borrower".into(),
        asked_by_borrower: true,
    };
    s.engine
        .send_verification(&v, now)
        .await
        .map(|_| ())
        .map_err(|e| not_sent(e, rec.id))
}

/// The holder of the new number opened the link a reply's change sent to it.
pub async fn link_opened(s: &Server, rec: ChangeRecord, now: DateTime<Utc>) -> Result<ChangeState, ChangeError> {
    if rec.state != ChangeState::Pending.as_str() {
        return Err(ChangeError::NotPending);
    }
    let mut flow = flow_of(&rec)?;
    flow.new_number_proven = true;
    s.engine
        .record_step(&step(
            rec.borrower,
            Some(rec.id),
            now,
            "new_number_proven",
            "borrower",
            serde_json::json!({"by": "link"}),
        ))
        .await?;
    settle(s, rec, flow, "borrower", now).await
}

/// An existing factor shown for a pending change (an identity check on the page).
pub async fn authorise(
    s: &Server,
    rec: ChangeRecord,
    factor: Factor,
    now: DateTime<Utc>,
) -> Result<ChangeState, ChangeError> {
    if rec.state != ChangeState::Pending.as_str() {
        return Err(ChangeError::NotPending);
    }
    let mut flow = flow_of(&rec)?;
    let detail = serde_json::json!({"factor": factor.code()});
    flow.authorised_by = Some(factor);
    s.engine
        .record_step(&step(rec.borrower, Some(rec.id), now, "authorised", "borrower", detail))
        .await?;
    settle(s, rec, flow, "borrower", now).await
}

/// Writes where a change goes next: still pending, lapsed, held for review, or applied.
async fn settle(
    s: &Server,
    rec: ChangeRecord,
    flow: Flow,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<ChangeState, ChangeError> {
    let next = flow.next(now);
    match next {
        ChangeState::Applied => apply(s, rec, flow, actor, None, now).await?,
        ChangeState::Review => {
            if !s
                .stores
                .selfservice
                .update_change(rec.id, rec.version, next.as_str(), &json(&flow), None, now)
                .await?
            {
                return Err(ChangeError::NotPending);
            }
            let risks: Vec<&str> = flow.risks.iter().map(|r| r.code()).collect();
            s.engine
                .record_step(&step(
                    rec.borrower,
                    Some(rec.id),
                    now,
                    "held_for_review",
                    actor,
                    serde_json::json!({"risks": risks}),
                ))
                .await?;
        }
        ChangeState::Pending | ChangeState::Lapsed | ChangeState::Rejected => {
            if !s
                .stores
                .selfservice
                .update_change(rec.id, rec.version, next.as_str(), &json(&flow), None, now)
                .await?
            {
                return Err(ChangeError::NotPending);
            }
            if next == ChangeState::Lapsed {
                s.engine
                    .record_step(&step(
                        rec.borrower,
                        Some(rec.id),
                        now,
                        "lapsed",
                        actor,
                        serde_json::json!({}),
                    ))
                    .await?;
            }
        }
    }
    Ok(next)
}

/// The new address of a change, as the flow's target reads it.
pub fn address_of(s: &Server, rec: &ChangeRecord, target: ChangeTarget) -> Result<ContactAddress, ChangeError> {
    Ok(match target {
        ChangeTarget::Replace | ChangeTarget::AddBackup => {
            ContactAddress::Phone(s.phones.parse(&rec.new_address).map_err(|_| ApiError::internal())?)
        }
        ChangeTarget::AddEmail => {
            ContactAddress::Email(Email::parse(&rec.new_address).map_err(|_| ApiError::internal())?)
        }
    })
}

/// The contact point a change adds: in the replaced one's slot and role, or (an addition) in
/// a slot of its own — a backup number as a backup, an email as the primary email unless the
/// borrower has one already.
fn new_point(
    s: &Server,
    rec: &ChangeRecord,
    target: ChangeTarget,
    old: Option<&reachline_store::ContactRecord>,
    current: &[&reachline_store::ContactRecord],
    now: DateTime<Utc>,
) -> Result<ContactPoint, ChangeError> {
    let address = address_of(s, rec, target)?;
    let slot = |name: String| ExternalId::parse(&name).map_err(|_| ChangeError::Api(ApiError::internal()));
    let (slot, kind, role) = match target {
        ChangeTarget::Replace => (
            old.map_or_else(|| slot("mobile".into()), |c| Ok(c.point.slot.clone()))?,
            ContactKind::Mobile,
            old.map_or(ContactRole::Primary, |c| c.point.role),
        ),
        ChangeTarget::AddBackup => (
            slot(format!("backup-{}", rec.id))?,
            ContactKind::Mobile,
            ContactRole::Backup,
        ),
        ChangeTarget::AddEmail => {
            let has_email = current.iter().any(|c| c.point.kind == ContactKind::Email);
            let role = if has_email {
                ContactRole::Backup
            } else {
                ContactRole::Primary
            };
            (slot(format!("email-{}", rec.id))?, ContactKind::Email, role)
        }
    };
    Ok(ContactPoint {
        slot,
        kind,
        address,
        role,
        holder_name: None,
        bound_since: now.date_naive(),
        source: ContactSource::Borrower,
        verified_at: Some(now),
    })
}

/// Applies a change: the new number becomes the current (verified) one in the old one's slot
/// and the old one is retired, or the new address is added; the borrower's other channels are
/// told, an open check is closed, and the borrower's next decision is made now (so the next
/// reminder goes to the new number).
async fn apply(
    s: &Server,
    rec: ChangeRecord,
    flow: Flow,
    actor: &str,
    decided: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Result<(), ChangeError> {
    let contacts = s.stores.store.contacts(rec.borrower).await?;
    let current: Vec<_> = contacts.iter().filter(|c| c.is_current()).collect();
    let old = rec
        .old_contact
        .and_then(|id| current.iter().copied().find(|c| c.id == id))
        .filter(|_| flow.target == ChangeTarget::Replace);
    let point = new_point(s, &rec, flow.target, old, &current, now)?;
    let Some(new) = s
        .stores
        .selfservice
        .apply_change(rec.id, rec.version, &point, &json(&flow), actor, decided, now)
        .await?
    else {
        return Err(ChangeError::NotPending);
    };
    let detail = serde_json::json!({
        "target": flow.target.code(),
        "new_contact": new.0,
        "old_contact": old.map(|c| c.id.0),
        "factor": flow.authorised_by.as_ref().map(Factor::code),
    });
    s.engine
        .record_step(&step(rec.borrower, Some(rec.id), now, "applied", actor, detail))
        .await?;
    // The old channels are told: the replaced number (which may no longer be the borrower's,
    // so the text names no debt) and every other current one but the new.
    let mut tell: Vec<VerifyTarget> = Vec::new();
    if let Some(ContactAddress::Phone(p)) = old.map(|c| &c.point.address) {
        tell.push(VerifyTarget::Address(ContactAddress::Phone(p.clone())));
    }
    for c in current.iter().filter(|c| Some(c.id) != old.map(|o| o.id)) {
        if !c.point.role.is_third_party() && c.point.kind != ContactKind::Landline {
            tell.push(VerifyTarget::Contact(c.id));
        }
    }
    let template = match flow.target {
        ChangeTarget::Replace => "number_changed",
        ChangeTarget::AddBackup | ChangeTarget::AddEmail => "contact_added",
    };
    for target in tell {
        let v = VerifySend {
            borrower: rec.borrower,
            target,
            template,
            code: None,
            link: None,
            change: Some(rec.id),
            check: None,
            step: "old_channel_told",
            actor: actor.to_string(),
            asked_by_borrower: true,
        };
        if let Err(e) = s.engine.send_verification(&v, now).await {
            tracing::info!(change = rec.id, error = %e, "an old channel could not be told of the change");
        }
    }
    close_checks(s, rec.borrower, "confirmed", actor, now).await?;
    s.stores.engine.wake_now(rec.borrower, now).await?;
    Ok(())
}

/// Closes the borrower's open contact check, if any.
pub async fn close_checks(
    s: &Server,
    borrower: BorrowerId,
    state: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), ChangeError> {
    for c in s
        .stores
        .selfservice
        .checks(&Filter {
            state: None,
            borrower: Some(borrower),
            limit: 20,
        })
        .await?
        .into_iter()
        .filter(|c| c.state == "open" || c.state == "operator_task")
    {
        s.stores.selfservice.set_check_state(c.id, state, now).await?;
        s.engine
            .record_step(&StepRecord {
                borrower,
                change: None,
                check: Some(c.id),
                at: now,
                step: format!("check_{state}"),
                actor: actor.to_string(),
                detail: None,
            })
            .await?;
    }
    Ok(())
}

/// An operator's decision on a change held for review.
pub async fn review(
    s: &Server,
    id: i64,
    approve: bool,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<ChangeState, ChangeError> {
    let rec = s.stores.selfservice.change(id).await?.ok_or(ChangeError::NotFound)?;
    if rec.state != ChangeState::Review.as_str() {
        return Err(ChangeError::NotPending);
    }
    let flow = flow_of(&rec)?;
    if approve {
        apply(s, rec, flow, by, Some((by, reason)), now).await?;
        Ok(ChangeState::Applied)
    } else {
        let borrower = rec.borrower;
        if !s
            .stores
            .selfservice
            .update_change(
                id,
                rec.version,
                ChangeState::Rejected.as_str(),
                &json(&flow),
                Some((by, reason)),
                now,
            )
            .await?
        {
            return Err(ChangeError::NotPending);
        }
        s.engine
            .record_step(&step(
                borrower,
                Some(id),
                now,
                "rejected",
                by,
                serde_json::json!({"reason": reason}),
            ))
            .await?;
        Ok(ChangeState::Rejected)
    }
}

/// The contact a session's factor names, if it is still one of the borrower's current ones.
pub fn factor_contact(f: &Factor) -> Option<ContactId> {
    match f {
        Factor::Link { contact } | Factor::Code { contact } => Some(ContactId(*contact)),
        Factor::Identity { .. } => None,
    }
}
