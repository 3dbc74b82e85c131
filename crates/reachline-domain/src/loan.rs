//! `Loan` and `Installment`: what is owed and when. Amounts are `Money`; an installment knows
//! how much is outstanding and how many days past due it is on a given date.

use chrono::{DateTime, NaiveDate, Utc};

use crate::{Currency, ExternalId, Money};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loan {
    pub external_id: ExternalId,
    pub borrower: ExternalId,
    /// The lender's product code; cadence is configured per product.
    pub product: String,
    pub principal: Money,
    pub disbursed_on: NaiveDate,
}

impl Loan {
    pub fn currency(&self) -> Currency {
        self.principal.currency()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installment {
    pub loan: ExternalId,
    /// 1-based position in the schedule.
    pub seq: u32,
    pub due_date: NaiveDate,
    pub amount_due: Money,
    pub amount_paid: Money,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallmentError {
    #[error("sequence number must be 1 or more")]
    BadSeq,
    #[error("amount due and amount paid are in different currencies")]
    CurrencyMismatch,
    #[error("amount due must be more than zero")]
    NothingDue,
    #[error("amount paid is negative")]
    NegativePaid,
    #[error("an amount was paid but paid_at is empty")]
    PaidWithoutDate,
    #[error("paid_at is set but nothing was paid")]
    DateWithoutPayment,
}

impl Installment {
    pub fn validate(&self) -> Result<(), InstallmentError> {
        if self.seq == 0 {
            return Err(InstallmentError::BadSeq);
        }
        if self.amount_due.currency() != self.amount_paid.currency() {
            return Err(InstallmentError::CurrencyMismatch);
        }
        if self.amount_due.minor() <= 0 {
            return Err(InstallmentError::NothingDue);
        }
        if self.amount_paid.minor() < 0 {
            return Err(InstallmentError::NegativePaid);
        }
        match (self.amount_paid.minor() > 0, self.paid_at.is_some()) {
            (true, false) => Err(InstallmentError::PaidWithoutDate),
            (false, true) => Err(InstallmentError::DateWithoutPayment),
            _ => Ok(()),
        }
    }

    /// What is still owed; never negative (an overpayment leaves nothing outstanding).
    pub fn outstanding(&self) -> Money {
        let left = (self.amount_due.minor() - self.amount_paid.minor()).max(0);
        Money::from_minor(left, self.amount_due.currency())
    }

    pub fn is_settled(&self) -> bool {
        self.outstanding().minor() == 0
    }

    /// Days past due on `today` (the borrower's local date): 0 when settled or not yet due.
    pub fn days_past_due(&self, today: NaiveDate) -> i64 {
        if self.is_settled() || today <= self.due_date {
            0
        } else {
            (today - self.due_date).num_days()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(due: i64, paid: i64, paid_at: bool) -> Installment {
        Installment {
            loan: ExternalId::parse("L1").unwrap(),
            seq: 1,
            due_date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
            amount_due: Money::from_minor(due, Currency::CNY),
            amount_paid: Money::from_minor(paid, Currency::CNY),
            paid_at: paid_at.then(|| DateTime::from_timestamp(1_770_000_000, 0).unwrap()),
        }
    }

    #[test]
    fn outstanding_and_dpd() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        let open = inst(10000, 2500, true);
        assert_eq!(open.validate(), Ok(()));
        assert_eq!(open.outstanding().minor(), 7500);
        assert_eq!(open.days_past_due(d(3, 10)), 0);
        assert_eq!(open.days_past_due(d(3, 13)), 3);
        assert_eq!(inst(10000, 10000, true).days_past_due(d(4, 1)), 0);
        assert_eq!(
            inst(10000, 500, false).validate(),
            Err(InstallmentError::PaidWithoutDate)
        );
        assert_eq!(
            inst(10000, 0, true).validate(),
            Err(InstallmentError::DateWithoutPayment)
        );
        assert_eq!(inst(0, 0, false).validate(), Err(InstallmentError::NothingDue));
    }
}
