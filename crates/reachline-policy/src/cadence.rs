//! Cadence: which notices an installment gets and when, per loan product.
//!
//! A cadence is a list of steps, each a notice kind at an offset in days from the installment's
//! due date, with the purpose that decides its consent, hours and caps. The default follows the
//! notice engine's design: pre-due at T−7, T−3 and T−1, due today, and the overdue ladder at
//! T+1, T+3, T+7, T+15 and T+30. Disbursement and payment-received notices follow their events,
//! not the due date, and are planned by the engine when the event arrives.

use chrono::NaiveDate;
use reachline_domain::Purpose;
use serde::{Deserialize, Serialize};

/// The kinds of notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Disbursement,
    PreDue,
    DueToday,
    Overdue,
    PaymentReceived,
    /// "Is this still your number?" — the start of a contact check.
    ContactCheck,
    /// To an emergency contact: please ask the borrower to contact us. Nothing of the debt.
    ThirdPartyRequest,
}

reachline_domain::named_enum!(NoticeKind, "notice kind", {
    Disbursement => "disbursement",
    PreDue => "pre_due",
    DueToday => "due_today",
    Overdue => "overdue",
    PaymentReceived => "payment_received",
    ContactCheck => "contact_check",
    ThirdPartyRequest => "third_party_request",
});

impl NoticeKind {
    /// The purpose a notice of this kind serves.
    pub fn purpose(self) -> Purpose {
        match self {
            NoticeKind::Disbursement | NoticeKind::PreDue | NoticeKind::DueToday | NoticeKind::PaymentReceived => {
                Purpose::Service
            }
            NoticeKind::Overdue => Purpose::Collection,
            NoticeKind::ContactCheck => Purpose::Verification,
            NoticeKind::ThirdPartyRequest => Purpose::ThirdParty,
        }
    }
}

/// One step of a cadence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub kind: NoticeKind,
    /// Days from the due date: −3 is three days before, 7 is a week overdue.
    pub offset_days: i32,
}

/// The cadence of one loan product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// The product code as the loan book writes it, or `*` for every product not listed.
    pub product: String,
    pub steps: Vec<Step>,
}

/// A step a cadence cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cadence {product}, step {index} ({kind} at {offset}): {problem}")]
pub struct CadenceError {
    pub product: String,
    pub index: usize,
    pub kind: NoticeKind,
    pub offset: i32,
    pub problem: &'static str,
}

impl Cadence {
    /// The default for every product.
    pub fn standard(product: &str) -> Self {
        let step = |kind, offset_days| Step { kind, offset_days };
        Self {
            product: product.to_string(),
            steps: vec![
                step(NoticeKind::PreDue, -7),
                step(NoticeKind::PreDue, -3),
                step(NoticeKind::PreDue, -1),
                step(NoticeKind::DueToday, 0),
                step(NoticeKind::Overdue, 1),
                step(NoticeKind::Overdue, 3),
                step(NoticeKind::Overdue, 7),
                step(NoticeKind::Overdue, 15),
                step(NoticeKind::Overdue, 30),
            ],
        }
    }

    /// Checks the steps: each kind on its side of the due date, offsets strictly increasing.
    pub fn validate(&self) -> Result<(), CadenceError> {
        let mut last = i32::MIN;
        for (i, s) in self.steps.iter().enumerate() {
            let err = |problem| CadenceError {
                product: self.product.clone(),
                index: i + 1,
                kind: s.kind,
                offset: s.offset_days,
                problem,
            };
            let ok_side = match s.kind {
                NoticeKind::PreDue => s.offset_days < 0,
                NoticeKind::DueToday => s.offset_days == 0,
                NoticeKind::Overdue => s.offset_days > 0,
                _ => return Err(err("this kind follows an event, not the due date")),
            };
            if !ok_side {
                return Err(err(
                    "pre-due steps come before the due date, due-today on it, overdue after it",
                ));
            }
            if s.offset_days <= last {
                return Err(err("offsets must increase from step to step"));
            }
            last = s.offset_days;
        }
        Ok(())
    }

    /// The step due for an unpaid installment on `today`: the latest step whose day has come.
    /// Steps whose day passed while a later one is also due are skipped (a late start does not
    /// send a burst of stale reminders); `already` lists the steps (by index) sent or settled.
    pub fn due_step(&self, due_date: NaiveDate, today: NaiveDate, already: &[usize]) -> Option<(usize, &Step)> {
        let day = (today - due_date).num_days();
        let (i, step) = self
            .steps
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| i64::from(s.offset_days) <= day)?;
        (!already.contains(&i)).then_some((i, step))
    }

    /// The first day after `today` on which an unpaid installment's due step changes (its next
    /// step's day), if it has one left: a caller that wakes a borrower only when something can
    /// happen need not look before then for the cadence's sake.
    pub fn next_step_day(&self, due_date: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
        self.next_step_offset((today - due_date).num_days())
            .map(|o| due_date + chrono::Duration::days(o))
    }

    /// [`next_step_day`](Self::next_step_day) in days from the due date: the first step's
    /// offset after `day` days from it (negative before the due date).
    pub fn next_step_offset(&self, day: i64) -> Option<i64> {
        self.steps
            .iter()
            .map(|s| i64::from(s.offset_days))
            .filter(|o| *o > day)
            .min()
    }
}

/// Picks the cadence for a product: its own, else the `*` one, else the standard.
pub fn for_product<'a>(cadences: &'a [Cadence], product: &str) -> std::borrow::Cow<'a, Cadence> {
    cadences
        .iter()
        .find(|c| c.product == product)
        .or_else(|| cadences.iter().find(|c| c.product == "*"))
        .map_or_else(
            || std::borrow::Cow::Owned(Cadence::standard(product)),
            std::borrow::Cow::Borrowed,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_standard_cadence_is_valid_and_steps_fall_on_their_days() {
        let c = Cadence::standard("consumer-12m");
        c.validate().unwrap();
        let due = d("2024-05-20");
        assert_eq!(c.due_step(due, d("2024-05-12"), &[]), None);
        assert_eq!(c.next_step_day(due, d("2024-05-01")), Some(d("2024-05-13")));
        assert_eq!(c.next_step_day(due, d("2024-05-13")), Some(d("2024-05-17")));
        assert_eq!(c.next_step_day(due, d("2024-05-20")), Some(d("2024-05-21")));
        assert_eq!(c.next_step_day(due, d("2024-06-19")), None, "T+30 is the last step");
        assert_eq!(c.due_step(due, d("2024-05-13"), &[]).map(|(i, _)| i), Some(0));
        assert_eq!(
            c.due_step(due, d("2024-05-20"), &[]).unwrap().1.kind,
            NoticeKind::DueToday
        );
        let (i, s) = c.due_step(due, d("2024-05-27"), &[]).unwrap();
        assert_eq!((i, s.kind, s.offset_days), (6, NoticeKind::Overdue, 7));
        assert_eq!(s.kind.purpose(), Purpose::Collection);
    }

    #[test]
    fn a_late_start_sends_only_the_latest_step_once() {
        let c = Cadence::standard("p");
        let due = d("2024-05-20");
        // Started at T−2: T−7 and T−3 are past, and only T−3 (the latest due) goes.
        assert_eq!(c.due_step(due, d("2024-05-18"), &[]).map(|(i, _)| i), Some(1));
        assert_eq!(c.due_step(due, d("2024-05-18"), &[1]), None);
        // The next day T−1 comes in its turn.
        assert_eq!(c.due_step(due, d("2024-05-19"), &[1]).map(|(i, _)| i), Some(2));
    }

    #[test]
    fn bad_cadences_are_refused_with_the_step() {
        let mut c = Cadence::standard("p");
        c.steps[2].offset_days = -5;
        let e = c.validate().unwrap_err();
        assert_eq!(e.index, 3);
        assert!(e.to_string().contains("offsets must increase"), "{e}");
        let mut c = Cadence::standard("p");
        c.steps[0] = Step {
            kind: NoticeKind::Overdue,
            offset_days: -9,
        };
        assert!(c.validate().unwrap_err().to_string().contains("before the due date"));
        let mut c = Cadence::standard("p");
        c.steps.push(Step {
            kind: NoticeKind::PaymentReceived,
            offset_days: 40,
        });
        assert!(c.validate().unwrap_err().to_string().contains("follows an event"));
    }

    #[test]
    fn products_fall_back_to_star_then_standard() {
        let mut star = Cadence::standard("*");
        star.steps.truncate(1);
        let own = Cadence::standard("gold");
        let list = vec![star.clone(), own.clone()];
        assert_eq!(for_product(&list, "gold").steps.len(), 9);
        assert_eq!(for_product(&list, "other").steps.len(), 1);
        assert_eq!(for_product(&[], "other").steps.len(), 9);
    }
}
