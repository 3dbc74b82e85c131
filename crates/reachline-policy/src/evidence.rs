//! The evidence model: every observation that says something about whether a contact point
//! still reaches the borrower, with its source, time, strength and subject.
//!
//! Evidence is immutable and append-only. The shell records it (from receipts, replies, clicks,
//! calls, lookups, the borrower, operators and payments) and hands it to [`crate::health`],
//! which replays it; nothing here reads a clock.

use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{Channel, ContactId, DeliveryClass};
use serde::{Deserialize, Serialize};

use crate::intel::{NumberStatus, RecycleAnswer};
use crate::reply::ReplyClass;

/// An opaque id the shell gives each piece of evidence (its row id), so a transition can name
/// exactly what caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EvidenceId(pub u64);

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub id: EvidenceId,
    /// The contact point it is about. Evidence about the borrower as a whole (a payment made
    /// outside any channel) names no contact.
    pub contact: Option<ContactId>,
    pub at: DateTime<Utc>,
    pub source: Source,
    pub kind: EvidenceKind,
}

/// Who or what produced the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source", content = "name")]
pub enum Source {
    /// A channel provider's receipt or synchronous answer (the provider's name).
    Provider(String),
    /// The holder of the contact point, by reply, click or keypress.
    Holder,
    /// A carrier or registry lookup (the vendor's name).
    Lookup(String),
    /// The borrower, through a verified session (self-service page, code confirmation).
    Borrower,
    /// An operator of the lender (their user name or id, never a personal datum).
    Operator(String),
    /// The lender's core banking system (payments).
    CoreBanking,
}

/// What a voice call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Answered, and the person confirmed who they are (keypress or said so).
    ConfirmedBorrower,
    /// Answered by someone who says it is not the borrower's number.
    WrongParty,
    /// Answered, identity not established.
    Answered,
    NoAnswer,
    Busy,
    Voicemail,
    /// The network says the number does not exist (SIP 404/604/410/484, Q.850 1, 22, 28).
    NotInService,
    /// Barred by the network.
    Barred,
}

reachline_domain::named_enum!(CallOutcome, "call outcome", {
    ConfirmedBorrower => "confirmed_borrower",
    WrongParty => "wrong_party",
    Answered => "answered",
    NoAnswer => "no_answer",
    Busy => "busy",
    Voicemail => "voicemail",
    NotInService => "not_in_service",
    Barred => "barred",
});

impl CallOutcome {
    /// The delivery class a call outcome counts as.
    pub fn class(self) -> DeliveryClass {
        match self {
            CallOutcome::ConfirmedBorrower => DeliveryClass::Engaged,
            CallOutcome::WrongParty => DeliveryClass::WrongParty,
            CallOutcome::Answered | CallOutcome::Voicemail => DeliveryClass::Delivered,
            CallOutcome::NoAnswer | CallOutcome::Busy => DeliveryClass::Transient,
            CallOutcome::NotInService => DeliveryClass::Dead,
            CallOutcome::Barred => DeliveryClass::Suspended,
        }
    }
}

/// What the borrower told the lender about a contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfReport {
    /// "This is still my number" (in a verified session).
    StillMine,
    /// "I have a new number": makes this one suspect, not dead.
    ChangedNumber,
    /// "This number is not mine any more" (in a verified session).
    NotMine,
}

reachline_domain::named_enum!(SelfReport, "self report", {
    StillMine => "still_mine",
    ChangedNumber => "changed_number",
    NotMine => "not_mine",
});

/// What an operator did to a contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// Confirmed with the borrower (a call with identity check, a visit).
    Verify,
    MarkDead,
    MarkReassigned,
    Retire,
    /// Back to unverified after a mistaken mark.
    Reinstate,
}

reachline_domain::named_enum!(OperatorAction, "operator action", {
    Verify => "verify",
    MarkDead => "mark_dead",
    MarkReassigned => "mark_reassigned",
    Retire => "retire",
    Reinstate => "reinstate",
});

/// The kinds of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EvidenceKind {
    /// A classified delivery outcome (receipt or synchronous error) of a message on a channel.
    Delivery { channel: Channel, class: DeliveryClass },
    /// A classified reply from the contact point.
    Reply { channel: Channel, class: ReplyClass },
    /// A click on a link that was sent only to this contact point.
    LinkClick { channel: Channel },
    /// The outcome of a voice call.
    Call { outcome: CallOutcome },
    /// A carrier's number-status answer.
    CarrierStatus { status: NumberStatus },
    /// A recycled-number answer for the date the lender last knew the number was the borrower's.
    Recycled { since: NaiveDate, answer: RecycleAnswer },
    /// A SIM-swap answer since a date.
    SimSwap { since: NaiveDate, swapped: bool },
    /// A port (change of carrier) answer since a date. A port alone is not abandonment.
    Ported { since: NaiveDate, ported: bool },
    /// A one-time code sent to the contact point was entered correctly.
    CodeConfirmed,
    /// The borrower's own statement.
    SelfReport { report: SelfReport },
    /// An operator's action.
    Operator { action: OperatorAction },
    /// A payment. `via_contact` is true when it was made through a flow reached from this
    /// contact point (a link sent only to it); a payment made any other way names no contact and
    /// says the borrower is active elsewhere.
    Payment { via_contact: bool },
}

/// How much a piece of evidence weighs, coarse on purpose so it can be explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// Tells little alone (a delivery, a transient failure, an unknown outcome).
    Weak,
    /// Worth acting on when repeated or confirmed (one hard failure, a suspension, a SIM swap).
    Moderate,
    /// Acted on at once (engagement, a carrier's empty number, a recycled "yes").
    Strong,
    /// Settles the question (a code entered, a wrong-number reply, an operator's decision).
    Conclusive,
}

impl Evidence {
    /// The delivery class this evidence counts as, where it is about delivery at all.
    pub fn class(&self) -> Option<DeliveryClass> {
        Some(match &self.kind {
            EvidenceKind::Delivery { class, .. } => *class,
            EvidenceKind::Reply { class, .. } => match class {
                ReplyClass::WrongNumber => DeliveryClass::WrongParty,
                // Acting on the notice as one's own debt is engagement.
                ReplyClass::Acknowledged | ReplyClass::Paid | ReplyClass::WillPay => DeliveryClass::Engaged,
                // Someone read it, but not necessarily the borrower: a stranger on a recycled
                // number also asks "who is this?" or says STOP. Judged further in `health`.
                ReplyClass::Dispute | ReplyClass::OptOut | ReplyClass::NewNumber | ReplyClass::Other => {
                    DeliveryClass::Delivered
                }
            },
            EvidenceKind::LinkClick { .. } | EvidenceKind::CodeConfirmed => DeliveryClass::Engaged,
            EvidenceKind::Payment { via_contact: true } => DeliveryClass::Engaged,
            EvidenceKind::Call { outcome } => outcome.class(),
            _ => return None,
        })
    }

    pub fn strength(&self) -> Strength {
        use EvidenceKind as K;
        match &self.kind {
            K::CodeConfirmed | K::Operator { .. } => Strength::Conclusive,
            K::Reply {
                class: ReplyClass::WrongNumber,
                ..
            }
            | K::Call {
                outcome: CallOutcome::WrongParty,
            } => Strength::Conclusive,
            K::SelfReport { report } => match report {
                SelfReport::ChangedNumber => Strength::Moderate,
                SelfReport::StillMine | SelfReport::NotMine => Strength::Conclusive,
            },
            K::Recycled {
                answer: RecycleAnswer::Yes,
                ..
            } => Strength::Strong,
            K::Recycled { .. } => Strength::Moderate,
            K::CarrierStatus { status } => match status {
                NumberStatus::Empty | NumberStatus::Cancelled | NumberStatus::Suspended => Strength::Strong,
                NumberStatus::Normal => Strength::Moderate,
                NumberStatus::PoweredOff | NumberStatus::Unknown => Strength::Weak,
            },
            K::SimSwap { swapped: true, .. } => Strength::Moderate,
            K::SimSwap { .. } | K::Ported { .. } => Strength::Weak,
            K::Payment { via_contact: true } => Strength::Strong,
            K::Payment { via_contact: false } => Strength::Weak,
            K::Delivery { .. } | K::Reply { .. } | K::LinkClick { .. } | K::Call { .. } => match self.class() {
                Some(DeliveryClass::Engaged) => Strength::Strong,
                Some(DeliveryClass::WrongParty) => Strength::Conclusive,
                Some(DeliveryClass::Dead | DeliveryClass::Suspended) => Strength::Moderate,
                _ => Strength::Weak,
            },
        }
    }
}
