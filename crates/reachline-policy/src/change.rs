//! The number-change flow, as pure rules: whether a change may start at all, what makes it
//! risky enough for an operator to look at first, and when it is proven and authorised.
//!
//! A number change adds an authenticator, so it needs two proofs (the contact rules):
//! 1. possession of the NEW number — a one-time code sent to it (or a signed link sent to it,
//!    when the change began with a reply naming the number);
//! 2. authorisation by an EXISTING factor — a signed link opened from, or a code sent to, one
//!    of the borrower's still-working channels other than the number being replaced, or an
//!    identity check (name + national ID + phone, or a face match) through a provider.
//!
//! Refused outright (nothing changes, the attempt is recorded): a VoIP number, the number
//! already current, a change inside the cooling period after the last one, too many attempts.
//! Held for an operator (proven and authorised, but not applied): a SIM swap or a port of the
//! new number in the last days, a number that is another borrower's current number.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use reachline_domain::LineType;
use serde::{Deserialize, Serialize};

use crate::codes::CodeRecord;

/// `[self_service.change]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeRules {
    /// Days after an applied change during which another is refused.
    pub cooling_days: i64,
    /// A SIM swap of the new number this recent sends the change to review.
    pub sim_swap_days: i64,
    /// A port of the new number this recent sends the change to review.
    pub port_days: i64,
    /// Changes a borrower may start in 24 hours.
    pub max_starts_per_day: u32,
    /// Refuse numbers the numbering plan names VoIP.
    pub refuse_voip: bool,
    /// How long a change may wait for its proofs before it lapses.
    pub valid_minutes: i64,
}

impl Default for ChangeRules {
    fn default() -> Self {
        ChangeRules {
            cooling_days: 7,
            sim_swap_days: 7,
            port_days: 7,
            max_starts_per_day: 3,
            refuse_voip: true,
            valid_minutes: 30,
        }
    }
}

/// Why a change is not even started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum Refusal {
    #[error("internet (VoIP) numbers cannot receive notices; give a mobile number")]
    Voip,
    #[error("this is already the current number")]
    SameNumber,
    #[error("the number was changed recently; another change is possible from {until}")]
    CoolingPeriod { until: DateTime<Utc> },
    #[error("too many number changes were started today; try again tomorrow or contact the lender")]
    TooManyStarts,
    #[error("too many failed attempts; contact the lender to change the number")]
    Locked,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Voip => "voip_number",
            Refusal::SameNumber => "same_number",
            Refusal::CoolingPeriod { .. } => "cooling_period",
            Refusal::TooManyStarts => "too_many_starts",
            Refusal::Locked => "locked",
        }
    }
}

/// What makes an operator look at a change before it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// The new number's SIM was swapped recently (a common takeover step).
    SimSwap,
    /// The new number was ported to another carrier recently.
    Ported,
    /// The new number is another borrower's current number.
    HeldByAnotherBorrower,
    /// The carrier could not say whether the SIM was swapped (the check is required).
    SimSwapUnknown,
}

impl Risk {
    pub fn code(self) -> &'static str {
        match self {
            Risk::SimSwap => "sim_swap",
            Risk::Ported => "ported",
            Risk::HeldByAnotherBorrower => "held_by_another_borrower",
            Risk::SimSwapUnknown => "sim_swap_unknown",
        }
    }
}

/// What is known when a change is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartFacts {
    pub line_type: Option<LineType>,
    pub same_as_current: bool,
    /// When the borrower's last change was applied.
    pub last_applied: Option<DateTime<Utc>>,
    /// Changes this borrower started in the last 24 hours.
    pub starts_last_day: u32,
    /// The borrower's consecutive failed codes (the code rules' lock).
    pub consecutive_failures: u32,
    pub max_consecutive_failures: u32,
    /// The carrier's answer on a SIM swap: `None` when it could not answer.
    pub sim_swapped_on: Option<Option<NaiveDate>>,
    pub ported_on: Option<NaiveDate>,
    pub held_by_another_borrower: bool,
}

/// Whether a change may start, and the risks it carries if so.
pub fn assess_start(rules: &ChangeRules, f: &StartFacts, now: DateTime<Utc>) -> Result<Vec<Risk>, Refusal> {
    if f.consecutive_failures >= f.max_consecutive_failures {
        return Err(Refusal::Locked);
    }
    if f.same_as_current {
        return Err(Refusal::SameNumber);
    }
    if rules.refuse_voip && f.line_type == Some(LineType::Voip) {
        return Err(Refusal::Voip);
    }
    if let Some(last) = f.last_applied {
        let until = last + Duration::days(rules.cooling_days);
        if now < until {
            return Err(Refusal::CoolingPeriod { until });
        }
    }
    if f.starts_last_day >= rules.max_starts_per_day {
        return Err(Refusal::TooManyStarts);
    }
    let today = now.date_naive();
    let recent = |d: NaiveDate, days: i64| today - d <= Duration::days(days);
    let mut risks = Vec::new();
    match f.sim_swapped_on {
        Some(Some(d)) if recent(d, rules.sim_swap_days) => risks.push(Risk::SimSwap),
        None => risks.push(Risk::SimSwapUnknown),
        _ => {}
    }
    if f.ported_on.is_some_and(|d| recent(d, rules.port_days)) {
        risks.push(Risk::Ported);
    }
    if f.held_by_another_borrower {
        risks.push(Risk::HeldByAnotherBorrower);
    }
    Ok(risks)
}

/// An existing factor that authorised a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "factor")]
pub enum Factor {
    /// A signed link sent to one of the borrower's other contact points was opened.
    Link { contact: i64 },
    /// A code sent to one of the borrower's other contact points was entered.
    Code { contact: i64 },
    /// An identity check through a provider (`method`: `three_factor`, `face`).
    Identity { provider: String, method: String },
}

impl Factor {
    pub fn code(&self) -> &'static str {
        match self {
            Factor::Link { .. } => "link",
            Factor::Code { .. } => "code",
            Factor::Identity { .. } => "identity_check",
        }
    }
}

/// Where a change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    /// Waiting for the new number's code and/or an existing factor.
    Pending,
    /// Proven and authorised, but risky: an operator decides.
    Review,
    Applied,
    Rejected,
    /// Not proven in time, or abandoned after too many wrong codes.
    Lapsed,
}

reachline_domain::named_enum!(ChangeState, "change state", {
    Pending => "pending",
    Review => "review",
    Applied => "applied",
    Rejected => "rejected",
    Lapsed => "lapsed",
});

/// What a change does once applied. Adding a contact point is adding an authenticator as much
/// as replacing one is, so both go through the same proofs and guards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTarget {
    /// The new mobile number replaces the current one (retired as `replaced`).
    #[default]
    Replace,
    /// The new mobile number is added as a backup.
    AddBackup,
    /// The new email address is added.
    AddEmail,
}

impl ChangeTarget {
    pub fn code(self) -> &'static str {
        match self {
            ChangeTarget::Replace => "replace",
            ChangeTarget::AddBackup => "add_backup",
            ChangeTarget::AddEmail => "add_email",
        }
    }

    /// The channel the new address is proven on.
    pub fn channel(self) -> reachline_domain::Channel {
        match self {
            ChangeTarget::Replace | ChangeTarget::AddBackup => reachline_domain::Channel::Sms,
            ChangeTarget::AddEmail => reachline_domain::Channel::Email,
        }
    }
}

/// The flow's own record, kept with the change (no personal data: codes are hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Absent in changes recorded before additions existed: those replaced the number.
    #[serde(default)]
    pub target: ChangeTarget,
    pub risks: Vec<Risk>,
    /// The code sent to the new number (absent when possession is proven by a link).
    pub new_code: Option<CodeRecord>,
    pub new_number_proven: bool,
    /// A code sent to an existing contact point, and which.
    pub factor_code: Option<(i64, CodeRecord)>,
    pub authorised_by: Option<Factor>,
    pub expires_at: DateTime<Utc>,
}

impl Flow {
    pub fn new(rules: &ChangeRules, target: ChangeTarget, risks: Vec<Risk>, now: DateTime<Utc>) -> Self {
        Flow {
            target,
            risks,
            new_code: None,
            new_number_proven: false,
            factor_code: None,
            authorised_by: None,
            expires_at: now + Duration::minutes(rules.valid_minutes),
        }
    }

    /// Where a pending change goes next: still pending, lapsed, or (both proofs in) applied
    /// when it carries no risk, else to review.
    pub fn next(&self, now: DateTime<Utc>) -> ChangeState {
        if self.new_number_proven && self.authorised_by.is_some() {
            if self.risks.is_empty() {
                ChangeState::Applied
            } else {
                ChangeState::Review
            }
        } else if now >= self.expires_at {
            ChangeState::Lapsed
        } else {
            ChangeState::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ok_facts() -> StartFacts {
        StartFacts {
            line_type: Some(LineType::Mobile),
            max_consecutive_failures: 100,
            sim_swapped_on: Some(None),
            ..StartFacts::default()
        }
    }

    #[test]
    fn refusals() {
        let r = ChangeRules::default();
        let now = t("2026-03-10T10:00:00Z");
        assert_eq!(assess_start(&r, &ok_facts(), now), Ok(vec![]));
        let voip = StartFacts {
            line_type: Some(LineType::Voip),
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &voip, now), Err(Refusal::Voip));
        let same = StartFacts {
            same_as_current: true,
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &same, now), Err(Refusal::SameNumber));
        let recent = StartFacts {
            last_applied: Some(now - Duration::hours(1)),
            ..ok_facts()
        };
        assert_eq!(
            assess_start(&r, &recent, now),
            Err(Refusal::CoolingPeriod {
                until: now + Duration::days(7) - Duration::hours(1)
            })
        );
        let old = StartFacts {
            last_applied: Some(now - Duration::days(8)),
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &old, now), Ok(vec![]));
        let many = StartFacts {
            starts_last_day: 3,
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &many, now), Err(Refusal::TooManyStarts));
        let locked = StartFacts {
            consecutive_failures: 100,
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &locked, now), Err(Refusal::Locked));
    }

    #[test]
    fn risks_send_to_review() {
        let r = ChangeRules::default();
        let now = t("2026-03-10T10:00:00Z");
        let swapped = StartFacts {
            sim_swapped_on: Some(Some(NaiveDate::from_ymd_opt(2026, 3, 8).unwrap())),
            ported_on: Some(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()),
            held_by_another_borrower: true,
            ..ok_facts()
        };
        assert_eq!(
            assess_start(&r, &swapped, now),
            Ok(vec![Risk::SimSwap, Risk::HeldByAnotherBorrower])
        );
        let unknown = StartFacts {
            sim_swapped_on: None,
            ..ok_facts()
        };
        assert_eq!(assess_start(&r, &unknown, now), Ok(vec![Risk::SimSwapUnknown]));

        let mut flow = Flow::new(&r, ChangeTarget::Replace, vec![Risk::SimSwap], now);
        assert_eq!(flow.next(now), ChangeState::Pending);
        flow.new_number_proven = true;
        assert_eq!(flow.next(now), ChangeState::Pending, "one proof is not enough");
        flow.authorised_by = Some(Factor::Link { contact: 3 });
        assert_eq!(flow.next(now), ChangeState::Review);
        flow.risks.clear();
        assert_eq!(flow.next(now), ChangeState::Applied);
        let lapsed = Flow::new(&r, ChangeTarget::AddEmail, vec![], now);
        assert_eq!(lapsed.next(now + Duration::minutes(31)), ChangeState::Lapsed);
        // A flow recorded before additions existed replaced the number.
        let mut old = serde_json::to_value(&lapsed).unwrap();
        old.as_object_mut().unwrap().remove("target");
        let old: Flow = serde_json::from_value(old).unwrap();
        assert_eq!(old.target, ChangeTarget::Replace);
        assert_eq!(ChangeTarget::AddEmail.channel(), reachline_domain::Channel::Email);
    }
}
