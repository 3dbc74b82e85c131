//! Reachline's decision core: what the evidence says about each contact point, and what to do.
//!
//! Architecture Invariant: this crate does no IO, reads no clock and draws no global
//! randomness. Evidence and `now` are passed in; the same inputs always give the same outputs,
//! so the live engine and the simulator run the same code.

pub mod cadence;
pub mod change;
pub mod codes;
pub mod decide;
pub mod evidence;
pub mod gates;
pub mod health;
pub mod intel;
pub mod reply;
pub mod templates;
pub mod timeline;
pub mod timing;

pub use cadence::{Cadence, NoticeKind, Step};
pub use decide::{
    channels_of, decide, Action, Decision, DecisionReason, DueInstallment, LadderConfig, NoticeKey, Outcome,
    SendRecord, Snapshot, ThirdPartyRecord,
};
pub use evidence::{CallOutcome, Evidence, EvidenceId, EvidenceKind, OperatorAction, SelfReport, Source, Strength};
pub use gates::{
    allowed_at, check, check_history, check_moment, check_new_number, Attempt, AttemptKind, Gate, GateProfile, History,
    NumberPermit, Permit, Reason, ThirdParty, Window,
};
pub use health::{
    assess_borrower, Assessment, BorrowerHealth, ContactFacts, HealthConfig, HealthEvent, HealthEventKind,
    HealthReplay, HealthState, Need, Review, Rule, Transition,
};
pub use intel::{recycled_since, NumberStatus, RecycleAnswer};
pub use reply::{Classification, ReplyClass, ReplyClassifier};
pub use templates::{Audience, Rendered, TemplateSource, Templates};
pub use timing::{
    ChannelChoice, ChannelModel, ChannelPrior, HourChoice, HourOfWeek, SegmentPrior, SendTimeModel, Timing,
    TimingConfig,
};
