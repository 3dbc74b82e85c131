//! Apache Fineract's external business events for loans, at `POST /v1/integrations/fineract`.
//!
//! Fineract publishes each event as a `MessageV1` envelope (`id`, `source`, `type`, `category`,
//! `createdAt`, `businessDate`, `tenantId`, `idempotencyKey`, `dataschema`, `data`) on Kafka or
//! ActiveMQ, with `data` in Avro binary. A bridge delivers it here as JSON with `data` decoded
//! to JSON (plain values, or Avro's JSON encoding with `{"string": …}` union wrappers — both are
//! read). `docs/integrations/fineract.md` shows how. Handled:
//!
//! - `LoanRepaymentDueBusinessEvent`, `LoanRepaymentOverdueBusinessEvent`
//!   (`LoanRepaymentDueDataV1` / `…OverdueDataV1`): the installment is created if Reachline does
//!   not know it (number, due date, amount due), and the borrower is woken;
//! - `LoanTransactionMakeRepaymentPostBusinessEvent` (`LoanTransactionDataV1`): the amount is
//!   recorded against the loan's open installments, oldest first;
//! - `LoanDisbursalBusinessEvent` (`LoanAccountDataV1`): the loan is created or updated for a
//!   borrower Reachline knows by the client's external id.
//!
//! Other types are acknowledged and ignored (Fineract sends many). Each envelope is taken once,
//! by its `idempotencyKey`. Amounts are read from the JSON text digit by digit, never through a
//! float. Loans are matched by Fineract's loan external id, else `fineract-<account number>`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use chrono::{Duration, NaiveDate};
use reachline_domain::{Currency, ExternalId, Installment, Loan, Money};
use reachline_store::server::Sighting;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{ApiError, Json};
use crate::AppState;

/// How long an envelope's idempotency key is remembered.
const KEEP_KEYS_DAYS: i64 = 30;

/// What Reachline did with an event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FineractAnswer {
    /// `installment_added`, `installment_known`, `payment_recorded`, `loan_written`,
    /// `duplicate`, `ignored`.
    pub outcome: String,
    pub loan_id: Option<String>,
}

type Obj<'a> = HashMap<&'a str, &'a RawValue>;

/// Avro's JSON encoding wraps a union's value in an object named by its branch; plain JSON
/// does not. Either reads the same.
fn unwrap(raw: &RawValue) -> &RawValue {
    let t = raw.get().trim_start();
    if t.starts_with('{') {
        if let Ok(o) = serde_json::from_str::<Obj>(raw.get()) {
            if o.len() == 1 {
                let (k, v) = o.into_iter().next().expect("one entry");
                let branch = matches!(
                    k,
                    "string" | "long" | "int" | "boolean" | "double" | "float" | "bytes" | "bigdecimal"
                ) || k.starts_with("org.apache.fineract.");
                if branch {
                    return v;
                }
            }
        }
    }
    raw
}

fn object<'a>(raw: &'a RawValue, field: &str) -> Result<Obj<'a>, ApiError> {
    serde_json::from_str(unwrap(raw).get()).map_err(|_| ApiError::invalid(field, "must be a JSON object"))
}

fn get<'a>(o: &Obj<'a>, key: &str) -> Option<&'a RawValue> {
    o.get(key).map(|r| unwrap(r)).filter(|r| r.get().trim() != "null")
}

/// A string or number field as text (a number's digits exactly as sent).
fn text(o: &Obj, key: &str) -> Option<String> {
    let r = get(o, key)?;
    let t = r.get().trim();
    if t.starts_with('"') {
        serde_json::from_str::<String>(t).ok()
    } else if t.starts_with('{') || t.starts_with('[') {
        None
    } else {
        Some(t.to_string())
    }
}

fn required(o: &Obj, key: &str, path: &str) -> Result<String, ApiError> {
    text(o, key).ok_or_else(|| ApiError::invalid(format!("{path}.{key}"), "is required"))
}

/// A Fineract amount (`1050.500000`) in a currency: trailing zeros of the fraction dropped,
/// then parsed as decimal text.
fn amount(s: &str, currency: Currency, field: &str) -> Result<Money, ApiError> {
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    Money::parse(t, currency).map_err(|e| ApiError::invalid(field, e.to_string()))
}

fn date(s: &str, field: &str) -> Result<NaiveDate, ApiError> {
    // Fineract writes ISO dates; some bridges write `[2026, 3, 15]`-style arrays as text — not here.
    NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, "must be a date, YYYY-MM-DD"))
}

/// Reachline's external id for a Fineract loan.
fn loan_external_id(o: &Obj, external_key: &str, path: &str) -> Result<ExternalId, ApiError> {
    let id = match text(o, external_key).filter(|s| !s.is_empty()) {
        Some(x) => x,
        None => match text(o, "loanAccountNo").or_else(|| text(o, "accountNo")) {
            Some(no) => format!("fineract-{no}"),
            None => {
                return Err(ApiError::invalid(
                    format!("{path}.{external_key}"),
                    "an event needs the loan's external id or account number",
                ))
            }
        },
    };
    ExternalId::parse(&id).map_err(|e| ApiError::invalid(format!("{path}.{external_key}"), e.to_string()))
}

fn currency_of(o: &Obj, path: &str) -> Result<Option<Currency>, ApiError> {
    let Some(c) = get(o, "currency") else { return Ok(None) };
    let c = object(c, &format!("{path}.currency"))?;
    let code = required(&c, "code", &format!("{path}.currency"))?;
    code.parse()
        .map(Some)
        .map_err(|_| ApiError::invalid(format!("{path}.currency.code"), "is not a currency Reachline keeps"))
}

/// One Fineract event.
#[utoipa::path(post, path = "/v1/integrations/fineract", tag = "integrations",
    request_body(content = Object, description = "Fineract's MessageV1 envelope, `data` as JSON"),
    responses((status = 200, body = FineractAnswer), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn fineract_event(
    State(s): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<FineractAnswer>, ApiError> {
    let body = body?;
    let text_body = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "must be UTF-8 JSON"))?;
    let env: Obj = serde_json::from_str(text_body).map_err(|_| ApiError::invalid("body", "must be a JSON object"))?;
    let kind = required(&env, "type", "envelope")?;
    let key = required(&env, "idempotencyKey", "envelope")?;
    let data_raw = get(&env, "data").ok_or_else(|| ApiError::invalid("envelope.data", "is required"))?;
    let data = object(data_raw, "envelope.data")?;
    let now = s.now();

    let Some(event) = Event::of(&kind) else {
        return Ok(Json(FineractAnswer {
            outcome: "ignored".into(),
            loan_id: None,
        }));
    };
    let sighting = Sighting {
        provider: "fineract".into(),
        digest: Sha256::digest(key.as_bytes()).into(),
        expires: now + Duration::days(KEEP_KEYS_DAYS),
    };
    // Checked first and forgotten again if the event cannot be applied, so Fineract's retry
    // of a refused event is not taken for a duplicate.
    if !s
        .stores
        .server
        .first_sightings(std::slice::from_ref(&sighting), now)
        .await?[0]
    {
        return Ok(Json(FineractAnswer {
            outcome: "duplicate".into(),
            loan_id: None,
        }));
    }
    let applied = apply(&s, event, &data, now).await;
    if applied.is_err() {
        s.stores.server.forget_sighting("fineract", sighting.digest).await.ok();
    }
    applied.map(Json)
}

/// The events Reachline acts on; any other type is acknowledged and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// `LoanRepaymentDueBusinessEvent` or `LoanRepaymentOverdueBusinessEvent`.
    RepaymentDue,
    /// `LoanTransactionMakeRepaymentPostBusinessEvent`.
    Repayment,
    /// `LoanDisbursalBusinessEvent`.
    Disbursal,
}

impl Event {
    fn of(kind: &str) -> Option<Event> {
        Some(match kind {
            "LoanRepaymentDueBusinessEvent" | "LoanRepaymentOverdueBusinessEvent" => Event::RepaymentDue,
            "LoanTransactionMakeRepaymentPostBusinessEvent" => Event::Repayment,
            "LoanDisbursalBusinessEvent" => Event::Disbursal,
            _ => return None,
        })
    }
}

async fn apply(
    s: &crate::Server,
    event: Event,
    data: &Obj<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<FineractAnswer, ApiError> {
    let p = "data";
    match event {
        Event::RepaymentDue => {
            let loan = loan_external_id(data, "loanExternalId", p)?;
            let (loan_id, borrower, currency) = known_loan(s, &loan, p).await?;
            let inst = object(
                get(data, "installment").ok_or_else(|| ApiError::invalid("data.installment", "is required"))?,
                "data.installment",
            )?;
            let seq: u32 = required(&inst, "installmentNumber", "data.installment")?
                .parse()
                .map_err(|_| ApiError::invalid("data.installment.installmentNumber", "must be a whole number"))?;
            let outcome = if s.stores.engine.installment_by_seq(&loan, seq).await?.is_some() {
                "installment_known"
            } else {
                let due = date(
                    &required(&inst, "installmentDueDate", "data.installment")?,
                    "data.installment.installmentDueDate",
                )?;
                let currency = currency_of(data, p)?.unwrap_or(currency);
                let amount_due = amount(
                    &required(&inst, "totalAmountDue", "data.installment")?,
                    currency,
                    "data.installment.totalAmountDue",
                )?;
                let mut tx = s.stores.store.begin_import(now).await?;
                tx.upsert_installments(vec![(
                    loan_id,
                    Installment {
                        loan: loan.clone(),
                        seq,
                        due_date: due,
                        amount_due,
                        amount_paid: Money::from_minor(0, currency),
                        paid_at: None,
                    },
                )])
                .await?;
                tx.commit().await?;
                "installment_added"
            };
            s.stores.engine.wake_now(borrower, now).await?;
            Ok(FineractAnswer {
                outcome: outcome.into(),
                loan_id: Some(loan.as_str().to_string()),
            })
        }
        Event::Repayment => {
            let loan = loan_external_id(data, "externalLoanId", p)?;
            let (loan_id, _, currency) = known_loan(s, &loan, p).await?;
            if text(data, "reversed").as_deref() == Some("true") {
                return Ok(FineractAnswer {
                    outcome: "ignored".into(),
                    loan_id: Some(loan.as_str().to_string()),
                });
            }
            let currency = currency_of(data, p)?.unwrap_or(currency);
            let mut left = amount(&required(data, "amount", p)?, currency, "data.amount")?.minor();
            if left <= 0 {
                return Err(ApiError::invalid("data.amount", "must be more than 0"));
            }
            let at = match text(data, "date") {
                Some(d) => date(&d, "data.date")?
                    .and_hms_opt(12, 0, 0)
                    .map(|t| t.and_utc())
                    .unwrap_or(now),
                None => now,
            };
            // Oldest open installment first, as Fineract's default allocation does.
            let mut open: Vec<_> = s
                .stores
                .store
                .installments(loan_id)
                .await?
                .into_iter()
                .filter(|i| i.installment.amount_paid.minor() < i.installment.amount_due.minor())
                .collect();
            open.sort_by_key(|i| (i.installment.due_date, i.installment.seq));
            for i in open {
                if left == 0 {
                    break;
                }
                let owed = i.installment.amount_due.minor() - i.installment.amount_paid.minor();
                let pay = owed.min(left);
                s.stores.engine.record_payment(i.id, pay, at).await?;
                left -= pay;
            }
            if left > 0 {
                tracing::info!(
                    overpaid_minor = left,
                    "a Fineract repayment exceeded what Reachline knows is owed"
                );
            }
            Ok(FineractAnswer {
                outcome: "payment_recorded".into(),
                loan_id: Some(loan.as_str().to_string()),
            })
        }
        Event::Disbursal => {
            // The loan account.
            let loan = loan_external_id(data, "externalId", p)?;
            let client = required(data, "clientExternalId", p)?;
            let client =
                ExternalId::parse(&client).map_err(|e| ApiError::invalid("data.clientExternalId", e.to_string()))?;
            let borrower = s.stores.store.borrower_by_external_id(&client).await?.ok_or_else(|| {
                ApiError::invalid(
                    "data.clientExternalId",
                    "names no borrower Reachline knows; send the borrower through /v1/book first",
                )
            })?;
            let currency = currency_of(data, p)?
                .ok_or_else(|| ApiError::invalid("data.currency", "is required for a disbursal"))?;
            let principal = amount(&required(data, "principal", p)?, currency, "data.principal")?;
            let disbursed = get(data, "timeline")
                .map(|t| object(t, "data.timeline"))
                .transpose()?
                .and_then(|t| text(&t, "actualDisbursementDate"))
                .map(|d| date(&d, "data.timeline.actualDisbursementDate"))
                .transpose()?
                .unwrap_or_else(|| now.date_naive());
            let product = text(data, "loanProductName").unwrap_or_else(|| "fineract".into());
            let mut tx = s.stores.store.begin_import(now).await?;
            tx.upsert_loans(vec![(
                borrower.id,
                Loan {
                    external_id: loan.clone(),
                    borrower: client,
                    product,
                    principal,
                    disbursed_on: disbursed,
                },
            )])
            .await?;
            tx.commit().await?;
            s.stores.engine.wake_now(borrower.id, now).await?;
            Ok(FineractAnswer {
                outcome: "loan_written".into(),
                loan_id: Some(loan.as_str().to_string()),
            })
        }
    }
}

async fn known_loan(
    s: &crate::Server,
    loan: &ExternalId,
    path: &str,
) -> Result<(reachline_domain::LoanId, reachline_domain::BorrowerId, Currency), ApiError> {
    s.stores.engine.loan_key(loan).await?.ok_or_else(|| {
        ApiError::invalid(
            format!("{path}.loan"),
            "names no loan Reachline knows; send it through /v1/book or a disbursal event first",
        )
    })
}
