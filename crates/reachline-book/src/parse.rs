//! Turns book rows (text) into domain values, collecting every field's error with the field's
//! name. Messages never repeat a personal value; they say what is wrong with it.

use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::national_id::IdScheme;
use reachline_domain::{
    Borrower, Consent, ContactAddress, ContactKind, ContactPoint, ContactRole, ContactSource, Currency, ExternalId,
    Installment, Loan, Locale, Money, NationalId, PersonName, PhoneParser,
};

use crate::rows::{BorrowerRow, ConsentRow, ContactRow, InstallmentRow, LoanRow};

/// What a borrower row that leaves a field empty gets (from the configuration's `[book]`).
#[derive(Debug, Clone, Copy)]
pub struct BookDefaults {
    pub locale: Locale,
    pub time_zone: chrono_tz::Tz,
    pub jurisdiction: reachline_domain::Jurisdiction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

/// Collects field errors for one row and yields the value only if there were none.
#[derive(Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    pub fn take<T, E: std::fmt::Display>(&mut self, field: &'static str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(FieldError {
                    field,
                    reason: e.to_string(),
                });
                None
            }
        }
    }

    pub fn fail(&mut self, field: &'static str, reason: impl Into<String>) {
        self.0.push(FieldError {
            field,
            reason: reason.into(),
        });
    }

    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(self.0),
        }
    }
}

pub fn date(s: &str) -> Result<NaiveDate, String> {
    reachline_domain::date::parse_ymd(s.trim()).ok_or_else(|| "must be a date written YYYY-MM-DD".to_string())
}

pub fn timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 time with zone, e.g. 2026-03-01T09:30:00+08:00".to_string())
}

fn optional<T>(s: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if s.trim().is_empty() {
        Ok(None)
    } else {
        f(s).map(Some)
    }
}

pub fn external_id(s: &str) -> Result<ExternalId, String> {
    ExternalId::parse(s).map_err(|e| e.to_string())
}

pub fn borrower(r: &BorrowerRow<'_>, d: &BookDefaults) -> Result<Borrower, Vec<FieldError>> {
    let mut f = Fields::default();
    let external_id = f.take("external_id", ExternalId::parse(&r.external_id));
    let name = f.take("name", PersonName::parse(&r.name));
    let national_id = match (r.national_id_scheme.trim(), r.national_id.trim()) {
        (_, "") => Some(None),
        (scheme, id) => {
            let scheme = if scheme.is_empty() {
                Ok(IdScheme::CnResident)
            } else {
                scheme.parse::<IdScheme>()
            };
            f.take("national_id_scheme", scheme)
                .and_then(|s| f.take("national_id", NationalId::parse(s, id)))
                .map(Some)
        }
    };
    let locale = match r.locale.trim() {
        "" => Some(d.locale),
        l => f.take("locale", Locale::parse_tag(l)),
    };
    let time_zone = match r.time_zone.trim() {
        "" => Some(d.time_zone),
        z => f.take("time_zone", reachline_domain::borrower::parse_time_zone(z)),
    };
    let jurisdiction = match r.jurisdiction.trim() {
        "" => Some(d.jurisdiction),
        j => f.take("jurisdiction", j.parse()),
    };
    let value = (|| {
        Some(Borrower {
            external_id: external_id?,
            name: name?,
            national_id: national_id?,
            locale: locale?,
            time_zone: time_zone?,
            jurisdiction: jurisdiction?,
        })
    })();
    f.finish(value)
}

pub fn contact(r: &ContactRow<'_>, phones: &PhoneParser) -> Result<(ExternalId, ContactPoint), Vec<FieldError>> {
    contact_with(r, |kind, value| ContactAddress::parse(kind, value, phones))
}

/// Like [`contact`], with the address parsed by `address` (the import's second pass passes one
/// that reuses what the first pass parsed).
pub fn contact_with(
    r: &ContactRow<'_>,
    address: impl FnOnce(ContactKind, &str) -> Result<ContactAddress, reachline_domain::contact::ContactError>,
) -> Result<(ExternalId, ContactPoint), Vec<FieldError>> {
    let mut f = Fields::default();
    let borrower = f.take("borrower_id", external_id(&r.borrower_id));
    let slot = f.take("slot", external_id(&r.slot));
    let kind = f.take("kind", r.kind.parse::<ContactKind>());
    let role = match r.role.trim() {
        "primary" | "backup" | "emergency" => f.take("relation", ContactRole::from_parts(&r.role, Some(&r.relation))),
        other => {
            let e = reachline_domain::UnknownVariant::new("contact role", other, &["primary", "backup", "emergency"]);
            f.fail("role", e.to_string());
            None
        }
    };
    let address = kind.and_then(|k| f.take("value", address(k, &r.value)));
    let holder_name = f.take(
        "holder_name",
        optional(&r.holder_name, |s| PersonName::parse(s).map_err(|e| e.to_string())),
    );
    let bound_since = f.take("bound_since", date(&r.bound_since));
    let verified_at = f.take("verified_at", optional(&r.verified_at, timestamp));
    let value = (|| {
        Some((
            borrower?,
            ContactPoint {
                slot: slot?,
                kind: kind?,
                address: address?,
                role: role?,
                holder_name: holder_name?,
                bound_since: bound_since?,
                source: ContactSource::Book,
                verified_at: verified_at?,
            },
        ))
    })();
    if let Some((_, p)) = &value {
        if let Err(e) = p.validate() {
            f.fail("kind", e.to_string());
        }
    }
    f.finish(value)
}

pub fn loan(r: &LoanRow) -> Result<Loan, Vec<FieldError>> {
    let mut f = Fields::default();
    let external_id = f.take("external_id", external_id(&r.external_id));
    let borrower = f.take("borrower_id", self::external_id(&r.borrower_id));
    let product = match r.product.trim() {
        p if !p.is_empty() && p.len() <= 64 && !p.chars().any(char::is_control) => Some(p.to_string()),
        _ => {
            f.fail("product", "product code must be 1-64 characters");
            None
        }
    };
    let currency = f.take("currency", r.currency.parse::<Currency>());
    let principal = currency.and_then(|c| f.take("principal", Money::parse(&r.principal, c)));
    if principal.is_some_and(|p| p.minor() <= 0) {
        f.fail("principal", "principal must be more than zero");
    }
    let disbursed_on = f.take("disbursed_on", date(&r.disbursed_on));
    let value = (|| {
        Some(Loan {
            external_id: external_id?,
            borrower: borrower?,
            product: product?,
            principal: principal?,
            disbursed_on: disbursed_on?,
        })
    })();
    f.finish(value)
}

/// `currency` is the loan's: installments are booked in their loan's currency.
pub fn installment(r: &InstallmentRow<'_>, currency: Currency) -> Result<Installment, Vec<FieldError>> {
    let mut f = Fields::default();
    let loan = f.take("loan_id", external_id(&r.loan_id));
    let seq = f.take(
        "seq",
        r.seq
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or("must be a whole number from 1"),
    );
    let due_date = f.take("due_date", date(&r.due_date));
    let amount_due = f.take("amount_due", Money::parse_non_negative(&r.amount_due, currency));
    let amount_paid = match r.amount_paid.trim() {
        "" => Some(Money::zero(currency)),
        p => f.take("amount_paid", Money::parse_non_negative(p, currency)),
    };
    let paid_at = f.take("paid_at", optional(&r.paid_at, timestamp));
    let value = (|| {
        Some(Installment {
            loan: loan?,
            seq: seq?,
            due_date: due_date?,
            amount_due: amount_due?,
            amount_paid: amount_paid?,
            paid_at: paid_at?,
        })
    })();
    if let Some(i) = &value {
        if let Err(e) = i.validate() {
            use reachline_domain::loan::InstallmentError::*;
            let field = match e {
                NothingDue => "amount_due",
                NegativePaid => "amount_paid",
                PaidWithoutDate | DateWithoutPayment => "paid_at",
                BadSeq => "seq",
                CurrencyMismatch => "amount_paid",
            };
            f.fail(field, e.to_string());
        }
    }
    f.finish(value)
}

pub fn consent(r: &ConsentRow) -> Result<(ExternalId, Consent), Vec<FieldError>> {
    let mut f = Fields::default();
    let borrower = f.take("borrower_id", external_id(&r.borrower_id));
    let purpose = f.take("purpose", r.purpose.parse());
    let channel = match r.channel.trim() {
        "" | "all" => Some(None),
        c => f.take("channel", c.parse()).map(Some),
    };
    let state = f.take("state", r.state.parse());
    let at = f.take("at", timestamp(&r.at));
    let source = f.take("source", r.source.parse());
    let text_version = match r.text_version.trim() {
        v if !v.is_empty() && v.len() <= 64 => Some(v.to_string()),
        _ => {
            f.fail("text_version", "text version must be 1-64 characters");
            None
        }
    };
    let value = (|| {
        Some((
            borrower?,
            Consent {
                purpose: purpose?,
                channel: channel?,
                state: state?,
                at: at?,
                source: source?,
                text_version: text_version?,
            },
        ))
    })();
    f.finish(value)
}
