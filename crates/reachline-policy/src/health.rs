//! Contact health: whether each contact point still reaches the borrower, decided from evidence.
//!
//! [`assess_borrower`] replays a borrower's evidence, one borrower-local day at a time, through
//! a state machine per contact point, and returns each point's state, score, transitions (each
//! naming the rule and the evidence that caused it), what the shell should look up next, and
//! the events the engine acts on. It is a pure function of (contacts, evidence, `now`, config):
//! the live engine and the simulator call the same code.
//!
//! # Days, not arrival order
//!
//! Receipts arrive out of order (a receipt can beat its own submit response), so evidence is
//! grouped by the borrower's local day and each day is applied as a set, in a fixed order:
//! proof of ownership first, then engagement and deliveries, then failures, then operator
//! actions. Evidence order within a day therefore never changes the outcome (a property test
//! checks it), and within a day a negative signal beats a positive one.
//!
//! # States
//!
//! | state | meaning | may carry debt content |
//! |---|---|---|
//! | `unverified` | known, never proven to be the borrower's (a delivery does not prove it) | yes |
//! | `verified` | proven the borrower's (code, engagement, operator), no engagement lately | yes |
//! | `healthy` | engaged or proven within `healthy_window_days` | yes |
//! | `degraded` | soft failures (transient on `degrade_after_transient_days` days, nothing delivered since) | yes |
//! | `suspect` | something says it may no longer be the borrower's; a check is asked for | only if the suspicion is not about ownership |
//! | `suspended` | barred by the carrier (停机); may come back | no (it would not arrive) |
//! | `dead` | gone: hard failures on two days, or one confirmed by the carrier | no |
//! | `reassigned` | someone else holds it (wrong-number reply, recycled "yes") | never, until re-verified |
//! | `retired` | taken out of use by the lender or the book | never |
//!
//! # Transitions
//!
//! | rule | from | to | on |
//! |---|---|---|---|
//! | `initial` | — | `unverified`, or `healthy`/`verified` when the book says it was verified | the contact's facts |
//! | `engaged` | unverified, verified, degraded, suspended, suspect (delivery suspicions, silence) | healthy | an acknowledging or paying reply, a click, a confirmed call, a payment through it |
//! | `code_confirmed` / `borrower_confirmed` / `operator_verified` | any but retired | healthy | a code entered, "still mine" in a verified session, an operator's check; clears every suspicion |
//! | `engagement_aged` | healthy | verified | no engagement for `healthy_window_days` |
//! | `transient_streak` | unverified, verified, healthy (not long) | degraded | transient failures on `degrade_after_transient_days` days with nothing delivered since |
//! | `transient_week` | degraded, healthy, verified, unverified | suspect (+ carrier check) | transient failures on `suspect_after_transient_days` days |
//! | `delivery_resumed` | degraded, suspended, suspect (transient or suspended-receipt suspicions) | settled state | a delivery after transient failures or a suspension |
//! | `first_hard_failure` | any working state | suspect (+ carrier check) | one hard failure — never dead on one message |
//! | `anomaly_after_healthy` | healthy for `long_healthy_days` | suspect (+ carrier check) | a hard failure on a long-healthy number |
//! | `transient_anomaly` | healthy for `long_healthy_days` | suspect (+ carrier check) | a transient streak on a long-healthy number |
//! | `hard_failure_two_days` | any working state | dead | hard failures on two different days with nothing delivered in between |
//! | `hard_failure_carrier_confirmed` | any working state | dead | a hard failure and a carrier "empty"/"cancelled" within `carrier_confirm_days` of each other |
//! | `carrier_empty_unconfirmed` | any working state | suspect | the carrier says empty/cancelled, no hard failure yet |
//! | `suspended_receipt` | any working state | suspect (+ carrier check) | one "suspended" outcome |
//! | `suspended_two_days` / `carrier_suspended` | any working state | suspended | "suspended" outcomes on two days, or the carrier says so |
//! | `carrier_normal` | suspect (delivery suspicions), suspended | settled state | the carrier says the number is in service |
//! | `wrong_party` | any but retired | reassigned | a "wrong number" reply or call; stops debt content at once |
//! | `borrower_not_mine` | any but retired | reassigned | the borrower says it is no longer theirs |
//! | `recycled_yes` | any but retired | reassigned | a recycled-number check answers "yes" |
//! | `recycled_no` | suspect (silence, dormancy, revived dead number, carrier "empty", hard failure) | settled state | the check answers "no": not disconnected since it was last the borrower's |
//! | `recycled_no_data` | suspect (silence, dormancy) | unverified | the check cannot tell |
//! | `silent_long` | unverified, verified, healthy, degraded, suspect (delivery suspicions) | suspect (+ recycled-number check) | a phone number: `silent_min_deliveries` deliveries and no engagement for `silent_days` (`silent_days_paying_elsewhere` when the borrower pays by other means); debt content waits for the check |
//! | `dormant` | unverified, verified, healthy, degraded, suspect (delivery suspicions) | suspect (+ recycled-number check) | a phone number proven the borrower's by evidence, then nothing delivered to it and no engagement for `silent_days` (a backup number left unused): it may have been given to someone else; debt content waits for the check |
//! | `delivers_after_dead` | dead | suspect (+ recycled-number check) | a dead number delivers again: it has probably been given to someone else |
//! | `engaged_after_dead` | dead | suspect (+ recycled-number check) | the same, with engagement |
//! | `sim_swap` | any working state | suspect (+ re-verification) | a SIM swap since the number was last proven |
//! | `self_reported_new_number` | any working state | suspect | the borrower says they have a new number — never dead on that alone |
//! | `dispute_reply` | any working state | suspect (+ re-verification) | "not my loan": the holder may not be the borrower; debt content stops |
//! | `operator_marked_dead` / `operator_marked_reassigned` / `operator_retired` / `operator_reinstated` | any but retired | dead / reassigned / retired / unverified | an operator's action |
//!
//! Carrier and recycled-number checks are asked only about phone numbers; on an email, a push
//! token or an IM account a doubt about who holds it asks for re-verification instead, and a
//! doubt about delivery waits for the next deliveries.
//!
//! "Settled state" is what the positive evidence alone supports: `healthy` if engaged within
//! `healthy_window_days`, else `verified` if ownership was ever proven and not since put in
//! doubt, else `unverified`.
//!
//! # Score
//!
//! Each piece of evidence has a weight (positive for deliveries, engagement and proof, negative
//! for failures), halved every `score_half_life_days`. The score orders a borrower's contact
//! points and shows trends; the state is decided by the rules above, never by a threshold on
//! the score, so every state change can be explained by named evidence.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use reachline_domain::{ContactId, ContactKind, ContactRole, DeliveryClass, Purpose};
use serde::{Deserialize, Serialize};

use crate::evidence::{Evidence, EvidenceId, EvidenceKind, OperatorAction, SelfReport};
use crate::intel::{NumberStatus, RecycleAnswer};
use crate::reply::ReplyClass;

/// The health states of a contact point, from healthiest to out of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Unverified,
    Verified,
    Healthy,
    Degraded,
    Suspect,
    Suspended,
    Dead,
    Reassigned,
    Retired,
}

reachline_domain::named_enum!(HealthState, "health state", {
    Unverified => "unverified",
    Verified => "verified",
    Healthy => "healthy",
    Degraded => "degraded",
    Suspect => "suspect",
    Suspended => "suspended",
    Dead => "dead",
    Reassigned => "reassigned",
    Retired => "retired",
});

impl HealthState {
    /// A total order from healthiest (8) to out of use (0), used to compare outcomes.
    pub fn rank(self) -> u8 {
        match self {
            HealthState::Healthy => 8,
            HealthState::Verified => 7,
            HealthState::Unverified => 6,
            HealthState::Degraded => 5,
            HealthState::Suspect => 4,
            HealthState::Suspended => 3,
            HealthState::Dead => 2,
            HealthState::Reassigned => 1,
            HealthState::Retired => 0,
        }
    }

    /// Can a notice still reach the borrower through it, at least possibly?
    pub fn is_working(self) -> bool {
        self.rank() >= HealthState::Suspect.rank()
    }
}

/// The rule behind a transition or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Initial,
    Engaged,
    CodeConfirmed,
    BorrowerConfirmed,
    OperatorVerified,
    EngagementAged,
    TransientStreak,
    TransientAnomaly,
    TransientWeek,
    DeliveryResumed,
    FirstHardFailure,
    AnomalyAfterHealthy,
    HardFailureTwoDays,
    HardFailureCarrierConfirmed,
    CarrierEmptyUnconfirmed,
    SuspendedReceipt,
    SuspendedTwoDays,
    CarrierSuspended,
    CarrierNormal,
    WrongParty,
    BorrowerNotMine,
    RecycledYes,
    RecycledNo,
    RecycledNoData,
    SilentLong,
    Dormant,
    DeliversAfterDead,
    EngagedAfterDead,
    SimSwap,
    SelfReportedNewNumber,
    DisputeReply,
    OperatorMarkedDead,
    OperatorMarkedReassigned,
    OperatorRetired,
    OperatorReinstated,
    /// Borrower level: the last working contact point stopped working.
    NoWorkingChannel,
    /// Borrower level: a contact point works again.
    ChannelWorksAgain,
}

reachline_domain::named_enum!(Rule, "health rule", {
    Initial => "initial",
    Engaged => "engaged",
    CodeConfirmed => "code_confirmed",
    BorrowerConfirmed => "borrower_confirmed",
    OperatorVerified => "operator_verified",
    EngagementAged => "engagement_aged",
    TransientStreak => "transient_streak",
    TransientAnomaly => "transient_anomaly",
    TransientWeek => "transient_week",
    DeliveryResumed => "delivery_resumed",
    FirstHardFailure => "first_hard_failure",
    AnomalyAfterHealthy => "anomaly_after_healthy",
    HardFailureTwoDays => "hard_failure_two_days",
    HardFailureCarrierConfirmed => "hard_failure_carrier_confirmed",
    CarrierEmptyUnconfirmed => "carrier_empty_unconfirmed",
    SuspendedReceipt => "suspended_receipt",
    SuspendedTwoDays => "suspended_two_days",
    CarrierSuspended => "carrier_suspended",
    CarrierNormal => "carrier_normal",
    WrongParty => "wrong_party",
    BorrowerNotMine => "borrower_not_mine",
    RecycledYes => "recycled_yes",
    RecycledNo => "recycled_no",
    RecycledNoData => "recycled_no_data",
    SilentLong => "silent_long",
    Dormant => "dormant",
    DeliversAfterDead => "delivers_after_dead",
    EngagedAfterDead => "engaged_after_dead",
    SimSwap => "sim_swap",
    SelfReportedNewNumber => "self_reported_new_number",
    DisputeReply => "dispute_reply",
    OperatorMarkedDead => "operator_marked_dead",
    OperatorMarkedReassigned => "operator_marked_reassigned",
    OperatorRetired => "operator_retired",
    OperatorReinstated => "operator_reinstated",
    NoWorkingChannel => "no_working_channel",
    ChannelWorksAgain => "channel_works_again",
});

impl Rule {
    /// Suspicions about delivery (the number may be off, barred or gone), as opposed to
    /// ownership (it may be someone else's). Engagement or a carrier's "normal" answers the
    /// first kind; only a recycled-number "no" or proof of ownership answers the second.
    const DELIVERY_SUSPICIONS: [Rule; 6] = [
        Rule::FirstHardFailure,
        Rule::AnomalyAfterHealthy,
        Rule::TransientAnomaly,
        Rule::TransientWeek,
        Rule::SuspendedReceipt,
        Rule::CarrierEmptyUnconfirmed,
    ];

    fn is_delivery_suspicion(self) -> bool {
        Self::DELIVERY_SUSPICIONS.contains(&self)
    }

    /// How grave a suspicion is: the gravest open one names a suspect contact's state.
    fn gravity(self) -> u8 {
        match self {
            Rule::DeliversAfterDead | Rule::EngagedAfterDead => 10,
            Rule::SimSwap => 9,
            Rule::DisputeReply => 8,
            Rule::SelfReportedNewNumber => 7,
            Rule::SilentLong | Rule::Dormant => 6,
            Rule::CarrierEmptyUnconfirmed => 5,
            Rule::AnomalyAfterHealthy | Rule::FirstHardFailure => 4,
            Rule::SuspendedReceipt => 3,
            Rule::TransientWeek => 2,
            Rule::TransientAnomaly => 1,
            _ => 0,
        }
    }

    /// Suspicions under which no debt content may go to the number until they are answered.
    fn blocks_debt_content(self) -> bool {
        self.gravity() >= Rule::SilentLong.gravity()
    }
}

/// Thresholds, all in days. Defaults follow the contact-health design; every one is
/// configurable per lender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub healthy_window_days: u32,
    pub long_healthy_days: u32,
    pub degrade_after_transient_days: u32,
    pub suspect_after_transient_days: u32,
    pub carrier_confirm_days: u32,
    pub silent_days: u32,
    pub silent_days_paying_elsewhere: u32,
    pub silent_min_deliveries: u32,
    pub score_half_life_days: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            healthy_window_days: 90,
            long_healthy_days: 30,
            degrade_after_transient_days: 3,
            suspect_after_transient_days: 7,
            carrier_confirm_days: 7,
            silent_days: 90,
            silent_days_paying_elsewhere: 45,
            silent_min_deliveries: 3,
            score_half_life_days: 60,
        }
    }
}

/// What the policy knows of a contact point before any evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactFacts {
    pub id: ContactId,
    pub kind: ContactKind,
    pub role: ContactRole,
    /// Since when the lender knew it was the borrower's (the "since" of a recycled-number check).
    pub bound_since: NaiveDate,
    pub verified_at: Option<DateTime<Utc>>,
    /// Retired already (by the book or an operator).
    pub retired: bool,
}

/// A lookup or action the shell should carry out for a contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "need")]
pub enum Need {
    /// Ask the carrier for the number's status.
    CarrierCheck,
    /// Ask the recycled-number registry whether the number was disconnected on or after `since`.
    RecycledCheck { since: NaiveDate },
    /// Have the borrower prove they hold it (a code, or the contact-check flow).
    Reverify,
}

/// One change of state, with the rule and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub day: NaiveDate,
    pub from: HealthState,
    pub to: HealthState,
    pub rule: Rule,
    pub evidence: Vec<EvidenceId>,
}

/// Events for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthEventKind {
    ContactSuspect,
    ContactSuspended,
    ContactDead,
    ContactReassigned,
    ContactRecovered,
    /// No contact point of the borrower's own works any more.
    BorrowerUnreachable,
    /// After being unreachable, one works again.
    BorrowerReachable,
}

reachline_domain::named_enum!(HealthEventKind, "health event", {
    ContactSuspect => "contact_suspect",
    ContactSuspended => "contact_suspended",
    ContactDead => "contact_dead",
    ContactReassigned => "contact_reassigned",
    ContactRecovered => "contact_recovered",
    BorrowerUnreachable => "borrower_unreachable",
    BorrowerReachable => "borrower_reachable",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    pub kind: HealthEventKind,
    /// The contact point, or `None` for a borrower-level event.
    pub contact: Option<ContactId>,
    pub day: NaiveDate,
    pub rule: Rule,
    pub evidence: Vec<EvidenceId>,
}

/// A contact point's health at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub contact: ContactId,
    pub role: ContactRole,
    pub state: HealthState,
    pub since: NaiveDate,
    /// The rule of the last transition (`initial` if none); for a suspect contact, its gravest
    /// open suspicion.
    pub rule: Rule,
    /// Every open suspicion, gravest first. Each is answered by its own kind of evidence.
    pub suspicions: Vec<Rule>,
    pub score: f64,
    pub last_engaged: Option<NaiveDate>,
    /// Days with a hard failure since the last delivery or engagement.
    pub hard_failure_days: Vec<NaiveDate>,
    pub needs: Vec<Need>,
    pub transitions: Vec<Transition>,
}

/// Why health refuses a notice to a contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthBlock {
    pub state: HealthState,
    pub rule: Rule,
}

impl Assessment {
    /// Whether a notice of this purpose may go to the contact point as far as its health goes
    /// (consent, hours and caps are other gates). Verification codes may go to a suspect number
    /// (that is how it is re-verified); nothing goes to a suspended, dead, reassigned or retired
    /// one; debt content (service and collection notices) waits while the suspicion is about
    /// who holds the number.
    pub fn may_carry(&self, purpose: Purpose) -> Result<(), HealthBlock> {
        let block = HealthBlock {
            state: self.state,
            rule: self.rule,
        };
        match self.state {
            HealthState::Suspended | HealthState::Dead | HealthState::Reassigned | HealthState::Retired => Err(block),
            HealthState::Suspect
                if purpose != Purpose::Verification && self.suspicions.iter().any(|r| r.blocks_debt_content()) =>
            {
                Err(block)
            }
            _ => Ok(()),
        }
    }
}

/// A borrower's contact health at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BorrowerHealth {
    pub contacts: Vec<Assessment>,
    pub events: Vec<HealthEvent>,
    /// At least one of the borrower's own contact points still works: any state but suspended,
    /// dead, reassigned and retired, and not a dead number that started delivering again.
    pub reachable: bool,
    /// Since when no own contact point has worked, if none does.
    pub unreachable_since: Option<NaiveDate>,
}

/// Assesses every contact point of one borrower. `tz` is the borrower's zone (days are the
/// borrower's days); evidence after `now` is ignored; evidence about a contact not in
/// `contacts` is ignored.
pub fn assess_borrower(
    contacts: &[ContactFacts],
    evidence: &[Evidence],
    tz: Tz,
    now: DateTime<Utc>,
    cfg: &HealthConfig,
) -> BorrowerHealth {
    let mut replay = HealthReplay::new(contacts, tz, cfg);
    replay.take(evidence, now);
    let today = replay.today_items(evidence, now);
    replay.state.finish(today, now, cfg).0
}

/// The same assessment kept up to date between calls, for a caller that assesses one borrower
/// again and again as evidence arrives and time moves (the simulator): the days before `now`'s
/// day are folded once and kept, so each call replays only today. [`HealthReplay::assess`]
/// returns exactly what [`assess_borrower`] returns for the same arguments (a property test
/// checks it).
///
/// The evidence passed must be the same list each time, grown at its end. A list that is not
/// (shorter, another last item), evidence of a day already folded, changed contacts or
/// configuration, or a `now` on an earlier day than the last call's: the replay starts again
/// from the first item, so the answer stays exact and only the saving is lost.
#[derive(Clone)]
pub struct HealthReplay {
    contacts: Vec<ContactFacts>,
    tz: Tz,
    cfg: HealthConfig,
    state: ReplayState,
    /// Items of the list taken so far, and the id of the last one.
    taken: usize,
    last_id: Option<EvidenceId>,
    /// The first day not folded into `state`.
    frontier: Option<NaiveDate>,
    /// Taken items of days not folded yet: (their local day, their index).
    pending: Vec<(NaiveDate, usize)>,
    review: Review,
    /// Keep no history (see [`HealthReplay::without_history`]).
    lean: bool,
    /// Where each assessment finishes a copy of `state` (today's items, the time rules to the
    /// end of today): copied over with `clone_from`, which keeps its lists' allocations from
    /// one assessment to the next instead of allocating and freeing them every time.
    scratch: ReplayState,
}

/// When the last assessment could change with no new evidence: the day a time rule fires
/// (a healthy number's engagement ageing, the silence rule), and the day from which a payment
/// by other means would fire the silence rule at once. A caller that wakes a borrower only
/// when something can happen wakes on these too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Review {
    pub day: Option<NaiveDate>,
    pub payment_from: Option<NaiveDate>,
}

impl HealthReplay {
    pub fn new(contacts: &[ContactFacts], tz: Tz, cfg: &HealthConfig) -> Self {
        Self {
            contacts: contacts.to_vec(),
            tz,
            cfg: cfg.clone(),
            state: ReplayState::new(contacts, tz),
            taken: 0,
            last_id: None,
            frontier: None,
            pending: Vec::new(),
            review: Review::default(),
            lean: false,
            scratch: ReplayState::new(&[], tz),
        }
    }

    /// A replay for a caller that reads the states and not the story (the simulator, whose
    /// lender reads what `decide` reads): the days folded keep no transitions but each contact
    /// point's last, and no borrower events. Each assessment is then the same as
    /// [`assess_borrower`]'s except that `transitions` and `events` are only their ends (from
    /// the last transition before today on, and today's events); copying and dropping a
    /// borrower's whole history at every assessment was a tenth of a simulation's time.
    pub fn without_history(mut self) -> Self {
        self.lean = true;
        self
    }

    /// When the last assessment could change without new evidence.
    pub fn review(&self) -> Review {
        self.review
    }

    /// The health at `now`: see [`assess_borrower`].
    pub fn assess(
        &mut self,
        contacts: &[ContactFacts],
        evidence: &[Evidence],
        now: DateTime<Utc>,
        cfg: &HealthConfig,
    ) -> BorrowerHealth {
        let extends = evidence.len() >= self.taken
            && self.taken.checked_sub(1).map(|i| evidence[i].id) == self.last_id
            && contacts == self.contacts.as_slice()
            && *cfg == self.cfg;
        if !extends || !self.take(evidence, now) {
            *self = Self {
                lean: self.lean,
                ..Self::new(contacts, self.tz, cfg)
            };
            self.take(evidence, now);
        }
        let today = self.today_items(evidence, now);
        self.scratch.clone_from(&self.state);
        let (health, review) = self.scratch.finish(today, now, &self.cfg);
        self.review = review;
        health
    }

    /// Takes the new items and folds every day before `now`'s. False when that cannot be done
    /// on top of what is folded (an item or `now` on a folded day): the caller starts again.
    fn take(&mut self, evidence: &[Evidence], now: DateTime<Utc>) -> bool {
        let today = now.with_timezone(&self.tz).date_naive();
        if self.frontier.is_some_and(|f| today < f) {
            return false;
        }
        for (i, e) in evidence.iter().enumerate().skip(self.taken) {
            let day = e.at.with_timezone(&self.tz).date_naive();
            if self.frontier.is_some_and(|f| day < f) {
                return false;
            }
            self.pending.push((day, i));
        }
        self.taken = evidence.len();
        self.last_id = evidence.last().map(|e| e.id);
        // Fold the days before today, in order; each day's items as a set.
        self.pending.sort_unstable();
        let done = self.pending.partition_point(|(d, _)| *d < today);
        let mut k = 0;
        while k < done {
            let day = self.pending[k].0;
            let end = k + self.pending[k..done].partition_point(|(d, _)| *d == day);
            let items: Vec<&Evidence> = self.pending[k..end].iter().map(|(_, i)| &evidence[*i]).collect();
            self.state.fold_day(day, &items, &self.cfg);
            k = end;
        }
        self.pending.drain(..done);
        self.frontier = Some(today);
        if self.lean {
            // Folding reads a tracker's last transition and nothing older, and no event.
            self.state.events.clear();
            for t in &mut self.state.trackers {
                let old = t.transitions.len().saturating_sub(1);
                t.transitions.drain(..old);
            }
        }
        true
    }

    /// Today's items up to `now` (the rest wait for a later call).
    fn today_items<'e>(&self, evidence: &'e [Evidence], now: DateTime<Utc>) -> Vec<&'e Evidence> {
        let today = now.with_timezone(&self.tz).date_naive();
        self.pending
            .iter()
            .filter(|(d, i)| *d == today && evidence[*i].at <= now)
            .map(|(_, i)| &evidence[*i])
            .collect()
    }
}

/// The replay's state after some days.
struct ReplayState {
    trackers: Vec<Tracker>,
    events: Vec<HealthEvent>,
    paid_elsewhere: Vec<(NaiveDate, EvidenceId)>,
    reachable: bool,
    unreachable_since: Option<NaiveDate>,
    tz: Tz,
    /// Each tracker's score so far, kept as it folds: see [`Scores`].
    scores: Scores,
}

/// The decayed sums of the evidence folded so far, one per tracker, as weights grown from a
/// reference moment: an item at `t` adds `weight × 2^((t − reference) / half-life)`, and the
/// score at `now` is the sum times `2^((reference − now) / half-life)` — the same as halving
/// each item's weight every half-life of its age, but one power per item folded instead of one
/// per item at every assessment. The items are added in the fold's order (day by day, each
/// day's items in the list's order), so a kept replay and a replay from the start add the same
/// numbers in the same order and agree to the bit.
#[derive(Clone, Default)]
struct Scores {
    sums: Vec<f64>,
    reference: Option<DateTime<Utc>>,
}

impl Scores {
    /// No items yet, for `n` trackers.
    fn new(n: usize) -> Self {
        Self {
            sums: vec![0.0; n],
            reference: None,
        }
    }

    /// Half-lives from `reference` to `t` (negative before it).
    fn half_lives(reference: DateTime<Utc>, t: DateTime<Utc>, cfg: &HealthConfig) -> f64 {
        let half_life = f64::from(cfg.score_half_life_days.max(1));
        (t - reference).num_seconds() as f64 / 86_400.0 / half_life
    }

    fn add(&mut self, k: usize, e: &Evidence, cfg: &HealthConfig) {
        let reference = *self.reference.get_or_insert(e.at);
        let mut x = Self::half_lives(reference, e.at, cfg);
        // Far from the reference the powers would overflow: move the reference to this item
        // and scale the sums down to it (the same step in either replay).
        if x > 512.0 {
            for v in self.sums.iter_mut() {
                *v *= (-x).exp2();
            }
            self.reference = Some(e.at);
            x = 0.0;
        }
        self.sums[k] += weight(e) * x.exp2();
    }

    /// What the sums are multiplied by for the scores at `now` (with no items yet the sums
    /// are all zero).
    fn scale(&self, now: DateTime<Utc>, cfg: &HealthConfig) -> f64 {
        self.reference
            .map_or(1.0, |reference| (-Self::half_lives(reference, now, cfg)).exp2())
    }
}

impl Clone for ReplayState {
    fn clone(&self) -> Self {
        let mut copy = Self::new(&[], self.tz);
        copy.clone_from(self);
        copy
    }

    /// Field by field, each list into the allocation it has (named in full, so a new field
    /// cannot be left out).
    fn clone_from(&mut self, source: &Self) {
        let ReplayState {
            trackers,
            events,
            paid_elsewhere,
            reachable,
            unreachable_since,
            tz,
            scores,
        } = source;
        self.trackers.clone_from(trackers);
        self.events.clone_from(events);
        self.paid_elsewhere.clone_from(paid_elsewhere);
        self.reachable = *reachable;
        self.unreachable_since = *unreachable_since;
        self.tz = *tz;
        self.scores.sums.clone_from(&scores.sums);
        self.scores.reference = scores.reference;
    }
}

impl ReplayState {
    fn new(contacts: &[ContactFacts], tz: Tz) -> Self {
        let trackers: Vec<Tracker> = contacts.iter().map(|c| Tracker::new(c, tz)).collect();
        let own = |t: &&Tracker| !t.role.is_third_party();
        let reachable = trackers.iter().filter(own).any(|t| t.works());
        let unreachable_since = if !reachable && trackers.iter().any(|t| own(&t)) {
            trackers.iter().map(|t| t.since).max()
        } else {
            None
        };
        Self {
            scores: Scores::new(trackers.len()),
            trackers,
            events: Vec::new(),
            paid_elsewhere: Vec::new(),
            reachable,
            unreachable_since,
            tz,
        }
    }

    /// One day of evidence (with evidence; a day without any changes nothing here).
    fn fold_day(&mut self, day: NaiveDate, items: &[&Evidence], cfg: &HealthConfig) {
        if let Some(id) = items
            .iter()
            .filter(|e| e.contact.is_none() && matches!(e.kind, EvidenceKind::Payment { .. }))
            .map(|e| e.id)
            .min()
        {
            self.paid_elsewhere.push((day, id));
        }
        let events = &mut self.events;
        for (k, t) in self.trackers.iter_mut().enumerate() {
            t.advance_to(day, &self.paid_elsewhere, cfg, events);
            let mine: Vec<&Evidence> = items.iter().copied().filter(|e| e.contact == Some(t.id)).collect();
            for e in &mine {
                self.scores.add(k, e, cfg);
            }
            if !mine.is_empty() {
                t.step(day, &DaySummary::of(&mine), cfg, events);
            }
            t.check_silence(day, &self.paid_elsewhere, cfg, events);
        }
        let own = |t: &&Tracker| !t.role.is_third_party();
        let now_reachable = self.trackers.iter().filter(own).any(|t| t.works());
        if now_reachable != self.reachable && self.trackers.iter().any(|t| own(&t)) {
            let cause = self
                .trackers
                .iter()
                .filter(own)
                .filter_map(|t| t.transitions.last())
                .filter(|tr| tr.day == day)
                .max_by_key(|tr| (tr.to.is_working() == now_reachable, tr.to.rank()));
            self.events.push(HealthEvent {
                kind: if now_reachable {
                    HealthEventKind::BorrowerReachable
                } else {
                    HealthEventKind::BorrowerUnreachable
                },
                contact: None,
                day,
                rule: if now_reachable {
                    Rule::ChannelWorksAgain
                } else {
                    Rule::NoWorkingChannel
                },
                evidence: cause.map(|c| c.evidence.clone()).unwrap_or_default(),
            });
            self.reachable = now_reachable;
            self.unreachable_since = (!self.reachable).then_some(day);
        }
    }

    /// Today's items so far, the time rules up to the end of today, and the assessment. Leaves
    /// the state spent (its events and transitions taken): a copy, or one about to be dropped.
    fn finish(
        &mut self,
        today_items: Vec<&Evidence>,
        now: DateTime<Utc>,
        cfg: &HealthConfig,
    ) -> (BorrowerHealth, Review) {
        let today = now.with_timezone(&self.tz).date_naive();
        if !today_items.is_empty() {
            self.fold_day(today, &today_items, cfg);
        }
        let end = today.succ_opt().unwrap_or(today);
        for t in self.trackers.iter_mut() {
            t.advance_to(end, &self.paid_elsewhere, cfg, &mut self.events);
        }
        let mut review = Review::default();
        for t in &self.trackers {
            let (day, payment_from) = t.time_rules(today, &self.paid_elsewhere, cfg);
            review.day = review.day.into_iter().chain(day).min();
            review.payment_from = review.payment_from.into_iter().chain(payment_from).min();
        }
        let scale = self.scores.scale(now, cfg);
        let contacts = self
            .trackers
            .iter_mut()
            .zip(&self.scores.sums)
            .map(|(t, sum)| t.finish(sum * scale))
            .collect();
        let health = BorrowerHealth {
            contacts,
            events: std::mem::take(&mut self.events),
            reachable: self.reachable,
            unreachable_since: self.unreachable_since,
        };
        (health, review)
    }
}

fn weight(e: &Evidence) -> f64 {
    use EvidenceKind as K;
    match &e.kind {
        K::CodeConfirmed => 6.0,
        K::SelfReport { report } => match report {
            SelfReport::StillMine => 6.0,
            SelfReport::ChangedNumber => -3.0,
            SelfReport::NotMine => -20.0,
        },
        K::Operator { action } => match action {
            OperatorAction::Verify => 6.0,
            OperatorAction::Reinstate => 0.0,
            OperatorAction::MarkDead | OperatorAction::MarkReassigned | OperatorAction::Retire => -20.0,
        },
        K::CarrierStatus { status } => match status {
            NumberStatus::Normal => 2.0,
            NumberStatus::Empty | NumberStatus::Cancelled => -5.0,
            NumberStatus::Suspended => -3.0,
            NumberStatus::PoweredOff => -0.5,
            NumberStatus::Unknown => 0.0,
        },
        K::Recycled { answer, .. } => match answer {
            RecycleAnswer::Yes => -20.0,
            RecycleAnswer::No => 2.0,
            RecycleAnswer::NoData => 0.0,
        },
        K::SimSwap { swapped, .. } => {
            if *swapped {
                -3.0
            } else {
                0.5
            }
        }
        K::Ported { .. } => 0.0,
        K::Payment { via_contact: false } => 0.0,
        K::Reply {
            class: ReplyClass::Dispute,
            ..
        } => -2.0,
        _ => match e.class() {
            Some(DeliveryClass::Engaged) => 4.0,
            Some(DeliveryClass::Delivered) => 1.0,
            Some(DeliveryClass::Transient) => -0.5,
            Some(DeliveryClass::Suspended) => -3.0,
            Some(DeliveryClass::Dead) => -5.0,
            Some(DeliveryClass::WrongParty) => -20.0,
            Some(DeliveryClass::OurFault | DeliveryClass::Unknown) | None => 0.0,
        },
    }
}

/// One day of evidence about one contact point, as sets and counts, so the order it arrived in
/// cannot matter.
#[derive(Default)]
struct DaySummary {
    proof: Vec<(Rule, EvidenceId)>,
    engaged: Vec<EvidenceId>,
    delivered: Vec<EvidenceId>,
    transient: Vec<EvidenceId>,
    hard: Vec<EvidenceId>,
    suspended: Vec<EvidenceId>,
    wrong_party: Vec<(Rule, EvidenceId)>,
    dispute: Vec<EvidenceId>,
    new_number: Vec<EvidenceId>,
    carrier: BTreeMap<NumberStatus, Vec<EvidenceId>>,
    recycled: Vec<(RecycleAnswer, EvidenceId)>,
    sim_swap: Vec<EvidenceId>,
    operator: Vec<(OperatorAction, EvidenceId)>,
}

impl DaySummary {
    fn of(items: &[&Evidence]) -> Self {
        use EvidenceKind as K;
        let mut s = DaySummary::default();
        for e in items {
            let id = e.id;
            match &e.kind {
                K::CodeConfirmed => s.proof.push((Rule::CodeConfirmed, id)),
                K::SelfReport { report } => match report {
                    SelfReport::StillMine => s.proof.push((Rule::BorrowerConfirmed, id)),
                    SelfReport::NotMine => s.wrong_party.push((Rule::BorrowerNotMine, id)),
                    SelfReport::ChangedNumber => s.new_number.push(id),
                },
                K::Operator { action } => s.operator.push((*action, id)),
                K::CarrierStatus { status } => s.carrier.entry(*status).or_default().push(id),
                K::Recycled { answer, .. } => s.recycled.push((*answer, id)),
                K::SimSwap { swapped: true, .. } => s.sim_swap.push(id),
                K::SimSwap { swapped: false, .. } | K::Ported { .. } => {}
                K::Payment { via_contact: false } => {}
                K::Reply {
                    class: ReplyClass::Dispute,
                    ..
                } => s.dispute.push(id),
                K::Reply {
                    class: ReplyClass::NewNumber,
                    ..
                } => {
                    // Someone read it and says the borrower moved: a delivery, and a suspicion.
                    s.delivered.push(id);
                    s.new_number.push(id);
                }
                _ => match e.class() {
                    Some(DeliveryClass::Engaged) => s.engaged.push(id),
                    Some(DeliveryClass::Delivered) => s.delivered.push(id),
                    Some(DeliveryClass::Transient) => s.transient.push(id),
                    Some(DeliveryClass::Dead) => s.hard.push(id),
                    Some(DeliveryClass::Suspended) => s.suspended.push(id),
                    Some(DeliveryClass::WrongParty) => s.wrong_party.push((Rule::WrongParty, id)),
                    Some(DeliveryClass::OurFault | DeliveryClass::Unknown) | None => {}
                },
            }
        }
        for v in [
            &mut s.engaged,
            &mut s.delivered,
            &mut s.transient,
            &mut s.hard,
            &mut s.suspended,
            &mut s.dispute,
            &mut s.new_number,
            &mut s.sim_swap,
        ] {
            v.sort();
        }
        s.proof.sort_by_key(|(r, id)| (r.as_str(), *id));
        s.wrong_party.sort_by_key(|(r, id)| (r.as_str(), *id));
        s.recycled.sort_by_key(|(a, id)| (a.as_str(), *id));
        s.operator.sort_by_key(|(_, id)| *id);
        for v in s.carrier.values_mut() {
            v.sort();
        }
        s
    }

    fn carrier_has(&self, statuses: &[NumberStatus]) -> Vec<EvidenceId> {
        statuses
            .iter()
            .filter_map(|st| self.carrier.get(st))
            .flatten()
            .copied()
            .collect()
    }
}

/// When the silence or dormancy rule fires for a contact (see `Tracker::silence_due`).
#[derive(Clone, Copy)]
struct SilenceDue {
    rule: Rule,
    day: NaiveDate,
    /// The payment made elsewhere that shortened the silence clock.
    paid_by: Option<EvidenceId>,
    /// With no such payment yet: from this day, one would fire the rule at once.
    payment_from: Option<NaiveDate>,
}

/// The replay state of one contact point.
struct Tracker {
    id: ContactId,
    role: ContactRole,
    /// A phone number: the carrier and the recycled-number registry can be asked about it, and
    /// the silence rule (a number quietly given to someone else) applies.
    phone: bool,
    bound_since: NaiveDate,
    state: HealthState,
    since: NaiveDate,
    rule: Rule,
    /// Ownership was proven (engagement, code, operator) and not put in doubt since.
    proven: bool,
    last_engaged: Option<NaiveDate>,
    healthy_since: Option<NaiveDate>,
    /// The day the silence clock counts from: the later of the last engagement, the last proof
    /// and the last recycled-number answer.
    silence_anchor: NaiveDate,
    deliveries_since_anchor: u32,
    third_delivery_day: Option<NaiveDate>,
    /// The deliveries the silence clock has counted, named by a `silent_long` transition.
    silent_ids: Vec<EvidenceId>,
    /// The evidence of the last engagement or proof, named by `engagement_aged`.
    last_engaged_id: Option<EvidenceId>,
    hard_days: Vec<(NaiveDate, EvidenceId)>,
    suspended_days: Vec<(NaiveDate, EvidenceId)>,
    transient_days: Vec<(NaiveDate, EvidenceId)>,
    carrier_gone: Vec<(NaiveDate, EvidenceId)>,
    /// Open suspicions, each with the day it was raised. Each is closed by its own kind of
    /// evidence; the contact is suspect while any is open (and it is otherwise working), and
    /// the gravest names the state.
    open: Vec<(Rule, NaiveDate)>,
    /// Days of lookups done, to tell which needs are met.
    carrier_checked: Option<NaiveDate>,
    recycled_checked: Option<NaiveDate>,
    transitions: Vec<Transition>,
}

impl Clone for Tracker {
    fn clone(&self) -> Self {
        let mut copy = Self {
            silent_ids: Vec::new(),
            hard_days: Vec::new(),
            suspended_days: Vec::new(),
            transient_days: Vec::new(),
            carrier_gone: Vec::new(),
            open: Vec::new(),
            transitions: Vec::new(),
            ..*self
        };
        copy.clone_from(self);
        copy
    }

    /// Field by field, each list into the allocation it has (named in full, so a new field
    /// cannot be left out): see [`HealthReplay`]'s scratch state.
    fn clone_from(&mut self, source: &Self) {
        let Tracker {
            id,
            role,
            phone,
            bound_since,
            state,
            since,
            rule,
            proven,
            last_engaged,
            healthy_since,
            silence_anchor,
            deliveries_since_anchor,
            third_delivery_day,
            silent_ids,
            last_engaged_id,
            hard_days,
            suspended_days,
            transient_days,
            carrier_gone,
            open,
            carrier_checked,
            recycled_checked,
            transitions,
        } = source;
        self.id = *id;
        self.role = *role;
        self.phone = *phone;
        self.bound_since = *bound_since;
        self.state = *state;
        self.since = *since;
        self.rule = *rule;
        self.proven = *proven;
        self.last_engaged = *last_engaged;
        self.healthy_since = *healthy_since;
        self.silence_anchor = *silence_anchor;
        self.deliveries_since_anchor = *deliveries_since_anchor;
        self.third_delivery_day = *third_delivery_day;
        self.silent_ids.clone_from(silent_ids);
        self.last_engaged_id = *last_engaged_id;
        self.hard_days.clone_from(hard_days);
        self.suspended_days.clone_from(suspended_days);
        self.transient_days.clone_from(transient_days);
        self.carrier_gone.clone_from(carrier_gone);
        self.open.clone_from(open);
        self.carrier_checked = *carrier_checked;
        self.recycled_checked = *recycled_checked;
        self.transitions.clone_from(transitions);
    }
}

impl Tracker {
    fn new(c: &ContactFacts, tz: Tz) -> Self {
        let verified = c.verified_at.map(|v| v.with_timezone(&tz).date_naive());
        let start = c.bound_since;
        let mut t = Tracker {
            id: c.id,
            role: c.role,
            phone: matches!(c.kind, ContactKind::Mobile | ContactKind::Landline),
            bound_since: c.bound_since,
            state: HealthState::Unverified,
            since: start,
            rule: Rule::Initial,
            proven: verified.is_some(),
            last_engaged: verified,
            healthy_since: None,
            silence_anchor: verified.unwrap_or(start).max(start),
            deliveries_since_anchor: 0,
            third_delivery_day: None,
            silent_ids: Vec::new(),
            last_engaged_id: None,
            hard_days: Vec::new(),
            suspended_days: Vec::new(),
            transient_days: Vec::new(),
            carrier_gone: Vec::new(),
            open: Vec::new(),
            carrier_checked: None,
            recycled_checked: None,
            transitions: Vec::new(),
        };
        if c.retired {
            t.state = HealthState::Retired;
        } else if let Some(v) = verified {
            t.state = HealthState::Healthy;
            t.since = v;
            t.healthy_since = Some(v);
        }
        t
    }

    /// Can a notice still reach the borrower through it? Any state but suspended, dead,
    /// reassigned and retired — and not a dead number that started delivering again.
    fn works(&self) -> bool {
        match self.state {
            HealthState::Unverified | HealthState::Verified | HealthState::Healthy | HealthState::Degraded => true,
            HealthState::Suspect => !self.has_open(&[Rule::DeliversAfterDead, Rule::EngagedAfterDead]),
            _ => false,
        }
    }

    /// What positive evidence alone supports on `day`.
    fn settled(&self, day: NaiveDate, cfg: &HealthConfig) -> HealthState {
        match self.last_engaged {
            Some(e) if self.proven && days_between(e, day) < i64::from(cfg.healthy_window_days) => HealthState::Healthy,
            _ if self.proven => HealthState::Verified,
            _ => HealthState::Unverified,
        }
    }

    /// The gravest open suspicion.
    fn gravest(&self) -> Option<Rule> {
        self.open.iter().map(|(r, _)| *r).max_by_key(|r| r.gravity())
    }

    fn has_open(&self, rules: &[Rule]) -> bool {
        self.open.iter().any(|(r, _)| rules.contains(r))
    }

    /// Back to what the evidence supports: suspect while a suspicion is open, else the
    /// settled state.
    fn settle(
        &mut self,
        day: NaiveDate,
        rule: Rule,
        ids: Vec<EvidenceId>,
        cfg: &HealthConfig,
        events: &mut Vec<HealthEvent>,
    ) {
        match self.gravest() {
            Some(g) => {
                if self.state != HealthState::Suspect {
                    self.go(day, HealthState::Suspect, g, ids, events);
                } else {
                    self.rule = g;
                }
            }
            None => {
                let to = self.settled(day, cfg);
                self.go(day, to, rule, ids, events);
            }
        }
    }

    fn go(
        &mut self,
        day: NaiveDate,
        to: HealthState,
        rule: Rule,
        evidence: Vec<EvidenceId>,
        events: &mut Vec<HealthEvent>,
    ) {
        if self.state == HealthState::Retired {
            return;
        }
        let from = self.state;
        if from == to && (self.rule == rule || to != HealthState::Suspect) {
            // Same state for another reason: keep the original rule and date (a healthy number
            // that engages again stays healthy since the first day).
            return;
        }
        let event = match to {
            HealthState::Suspect if from != HealthState::Suspect => Some(HealthEventKind::ContactSuspect),
            HealthState::Suspended if from != to => Some(HealthEventKind::ContactSuspended),
            HealthState::Dead if from != to => Some(HealthEventKind::ContactDead),
            HealthState::Reassigned if from != to => Some(HealthEventKind::ContactReassigned),
            HealthState::Healthy | HealthState::Verified | HealthState::Unverified
                if matches!(
                    from,
                    HealthState::Suspect | HealthState::Suspended | HealthState::Dead | HealthState::Reassigned
                ) =>
            {
                Some(HealthEventKind::ContactRecovered)
            }
            _ => None,
        };
        if let Some(kind) = event {
            events.push(HealthEvent {
                kind,
                contact: Some(self.id),
                day,
                rule,
                evidence: evidence.clone(),
            });
        }
        if to == HealthState::Healthy && from != HealthState::Healthy {
            self.healthy_since = Some(day);
        } else if to != HealthState::Healthy {
            self.healthy_since = None;
        }
        if matches!(to, HealthState::Reassigned | HealthState::Retired) {
            self.open.clear();
        }
        if to == HealthState::Dead {
            // Settled: the number is gone. Doubts about who holds it stay for if it comes back.
            self.open.retain(|(r, _)| !r.is_delivery_suspicion());
        }
        self.transitions.push(Transition {
            day,
            from,
            to,
            rule,
            evidence,
        });
        self.state = to;
        self.since = day;
        self.rule = rule;
    }

    /// Opens a suspicion. A working contact becomes suspect (or, already suspect, takes the
    /// graver reason); a suspended or dead one keeps it for when it comes back.
    fn suspect(&mut self, day: NaiveDate, rule: Rule, evidence: Vec<EvidenceId>, events: &mut Vec<HealthEvent>) {
        if matches!(self.state, HealthState::Reassigned | HealthState::Retired) {
            return;
        }
        if !self.open.iter().any(|(r, _)| *r == rule) {
            self.open.push((rule, day));
        }
        let revives =
            self.state == HealthState::Dead && matches!(rule, Rule::DeliversAfterDead | Rule::EngagedAfterDead);
        let working = self.state.rank() >= HealthState::Suspect.rank();
        if !(working || revives) {
            return;
        }
        if self.state != HealthState::Suspect || rule.gravity() > self.rule.gravity() {
            self.go(day, HealthState::Suspect, rule, evidence, events);
        }
    }

    /// Closes the given suspicions; a suspect contact with none left settles.
    fn lift(
        &mut self,
        day: NaiveDate,
        rules: &[Rule],
        rule: Rule,
        ids: Vec<EvidenceId>,
        cfg: &HealthConfig,
        events: &mut Vec<HealthEvent>,
    ) {
        let before = self.open.len();
        self.open.retain(|(r, _)| !rules.contains(r));
        if self.state == HealthState::Suspect && self.open.len() != before {
            self.settle(day, rule, ids, cfg, events);
        }
    }

    /// The last day the number was known to be the borrower's: the recycled-number check's date.
    fn last_known_good(&self) -> NaiveDate {
        self.last_engaged.unwrap_or(self.bound_since).max(self.bound_since)
    }

    /// Restarts the silence clock: the number was last known good on `day`.
    fn reset_silence(&mut self, day: NaiveDate) {
        self.silence_anchor = day;
        self.deliveries_since_anchor = 0;
        self.third_delivery_day = None;
        self.silent_ids.clear();
    }

    fn clear_failures(&mut self) {
        self.hard_days.clear();
        self.suspended_days.clear();
        self.transient_days.clear();
        self.carrier_gone.clear();
    }

    /// Proof that the borrower holds it: clears every suspicion and failure.
    fn proven_on(&mut self, day: NaiveDate, rule: Rule, ids: Vec<EvidenceId>, events: &mut Vec<HealthEvent>) {
        self.proven = true;
        self.last_engaged = Some(day);
        self.last_engaged_id = ids.first().copied();
        self.reset_silence(day);
        self.clear_failures();
        self.open.clear();
        if self.state == HealthState::Healthy {
            return;
        }
        self.go(day, HealthState::Healthy, rule, ids, events);
    }

    /// Applies time-based rules due before `day`.
    fn advance_to(
        &mut self,
        day: NaiveDate,
        paid: &[(NaiveDate, EvidenceId)],
        cfg: &HealthConfig,
        events: &mut Vec<HealthEvent>,
    ) {
        if self.state == HealthState::Healthy {
            if let Some(e) = self.last_engaged {
                let due = e + Duration::days(i64::from(cfg.healthy_window_days));
                if due < day {
                    let ids = self.last_engaged_id.into_iter().collect();
                    self.go(due, HealthState::Verified, Rule::EngagementAged, ids, events);
                }
            }
        }
        if let Some(prev) = day.pred_opt() {
            self.check_silence(prev, paid, cfg, events);
        }
    }

    /// When the silence or the dormancy rule fires for this contact, judged with the payments
    /// made elsewhere up to `as_of`; `None` when neither watches it. The one place both rules'
    /// days are worked out: `check_silence` applies them, `time_rules` announces them.
    fn silence_due(
        &self,
        as_of: NaiveDate,
        paid: &[(NaiveDate, EvidenceId)],
        cfg: &HealthConfig,
    ) -> Option<SilenceDue> {
        if !self.phone || self.role.is_third_party() || self.has_open(&[Rule::SilentLong, Rule::Dormant]) {
            return None;
        }
        let days = |n: u32| Duration::days(i64::from(n));
        let Some(third) = self.third_delivery_day else {
            // Nothing delivered to it for `silent_days` since the evidence that last proved it
            // the borrower's: a number left unused that long may have been given to someone
            // else. (Counted from evidence only: a book's numbers with no history are not all
            // dormant on the day they are imported.) Judged on a suspended or dead number too,
            // which keeps the doubt for when it comes back.
            return (self.deliveries_since_anchor == 0 && self.last_engaged_id.is_some()).then(|| SilenceDue {
                rule: Rule::Dormant,
                day: self.silence_anchor + days(cfg.silent_days),
                paid_by: None,
                payment_from: None,
            });
        };
        if !self.works() {
            return None;
        }
        let anchor = self.silence_anchor;
        let short = anchor + days(cfg.silent_days_paying_elsewhere);
        Some(match paid.iter().find(|(p, _)| *p >= anchor && *p <= as_of) {
            Some((p, id)) => SilenceDue {
                rule: Rule::SilentLong,
                day: short.max(*p).max(third),
                paid_by: Some(*id),
                payment_from: None,
            },
            None => SilenceDue {
                rule: Rule::SilentLong,
                day: (anchor + days(cfg.silent_days)).max(third),
                paid_by: None,
                payment_from: Some(short.max(third)),
            },
        })
    }

    /// The silence and dormancy rules, as of the end of `as_of` (payments up to that day count).
    fn check_silence(
        &mut self,
        as_of: NaiveDate,
        paid: &[(NaiveDate, EvidenceId)],
        cfg: &HealthConfig,
        events: &mut Vec<HealthEvent>,
    ) {
        let Some(due) = self.silence_due(as_of, paid, cfg).filter(|d| d.day <= as_of) else {
            return;
        };
        let ids = match due.rule {
            Rule::Dormant => self.last_engaged_id.into_iter().collect(),
            _ => self.silent_ids.iter().copied().chain(due.paid_by).collect(),
        };
        self.suspect(due.day, due.rule, ids, events);
    }

    /// The first day after `today` a time rule would change this contact with no new evidence
    /// (mirroring `advance_to` and `check_silence`), and the day from which a payment by other
    /// means would fire the silence rule.
    fn time_rules(
        &self,
        today: NaiveDate,
        paid: &[(NaiveDate, EvidenceId)],
        cfg: &HealthConfig,
    ) -> (Option<NaiveDate>, Option<NaiveDate>) {
        // An assessment ages a healthy number on the window's last day (`advance_to` the day
        // after).
        let aging = (self.state == HealthState::Healthy)
            .then(|| {
                self.last_engaged
                    .map(|e| e + Duration::days(i64::from(cfg.healthy_window_days)))
            })
            .flatten();
        let silence = self.silence_due(today, paid, cfg);
        let day = aging.into_iter().chain(silence.map(|s| s.day)).min();
        (day.filter(|d| *d > today), silence.and_then(|s| s.payment_from))
    }

    fn step(&mut self, day: NaiveDate, s: &DaySummary, cfg: &HealthConfig, events: &mut Vec<HealthEvent>) {
        if self.state == HealthState::Retired {
            return;
        }

        // 1. Proof of ownership clears everything.
        if let Some((rule, _)) = s.proof.first() {
            let ids = s.proof.iter().map(|(_, id)| *id).collect();
            self.proven_on(day, *rule, ids, events);
        }

        // 2. Engagement and deliveries.
        if !s.engaged.is_empty() {
            match self.state {
                HealthState::Dead => {
                    self.clear_failures();
                    self.suspect(day, Rule::EngagedAfterDead, s.engaged.clone(), events)
                }
                HealthState::Reassigned => {}
                _ => {
                    // The phone works and someone acts on the notices: that answers every
                    // delivery suspicion and a silence, not a doubt about who holds it.
                    self.clear_failures();
                    self.open
                        .retain(|(r, _)| !r.is_delivery_suspicion() && !matches!(r, Rule::SilentLong | Rule::Dormant));
                    if self.open.is_empty() {
                        self.proven_on(day, Rule::Engaged, s.engaged.clone(), events);
                    } else {
                        self.settle(day, Rule::Engaged, s.engaged.clone(), cfg, events);
                    }
                }
            }
        }
        if !s.delivered.is_empty() && self.state != HealthState::Reassigned {
            let before = self.deliveries_since_anchor;
            self.deliveries_since_anchor += s.delivered.len() as u32;
            self.silent_ids.extend(&s.delivered);
            if before < cfg.silent_min_deliveries && self.deliveries_since_anchor >= cfg.silent_min_deliveries {
                self.third_delivery_day = Some(day);
            }
            if self.state == HealthState::Dead {
                // The failures that made it dead are history; what matters now is who holds it.
                self.clear_failures();
                self.suspect(day, Rule::DeliversAfterDead, s.delivered.clone(), events);
            } else {
                self.hard_days.clear();
                self.suspended_days.clear();
                self.transient_days.clear();
                // It arrived: the phone is on and not barred.
                let on = [Rule::TransientAnomaly, Rule::TransientWeek, Rule::SuspendedReceipt];
                match self.state {
                    HealthState::Degraded | HealthState::Suspended => {
                        self.open.retain(|(r, _)| !on.contains(r));
                        self.settle(day, Rule::DeliveryResumed, s.delivered.clone(), cfg, events);
                    }
                    _ => self.lift(day, &on, Rule::DeliveryResumed, s.delivered.clone(), cfg, events),
                }
            }
        }

        // 3. Carrier answers that condemn.
        let gone = s.carrier_has(&[NumberStatus::Empty, NumberStatus::Cancelled]);
        if !gone.is_empty() {
            self.carrier_checked = Some(day);
            self.carrier_gone.extend(gone.iter().map(|id| (day, *id)));
        }
        let carrier_suspended = s.carrier_has(&[NumberStatus::Suspended]);
        if !carrier_suspended.is_empty() {
            self.carrier_checked = Some(day);
        }

        // 4. Failures.
        let working = self.state.rank() >= HealthState::Suspect.rank();
        if !s.hard.is_empty() && self.state != HealthState::Reassigned {
            self.hard_days.push((day, s.hard[0]));
        }
        let window = i64::from(cfg.carrier_confirm_days);
        let confirmed: Vec<EvidenceId> = {
            let mut ids = Vec::new();
            for (hd, hid) in &self.hard_days {
                for (cd, cid) in &self.carrier_gone {
                    if days_between(*hd, *cd).abs() <= window {
                        ids.push(*hid);
                        ids.push(*cid);
                    }
                }
            }
            ids.sort();
            ids.dedup();
            ids
        };
        let hard_day_count = {
            let mut d: Vec<NaiveDate> = self.hard_days.iter().map(|(d, _)| *d).collect();
            d.dedup();
            d.len()
        };
        if working || self.state == HealthState::Suspended {
            if hard_day_count >= 2 {
                let ids = self.hard_days.iter().map(|(_, id)| *id).collect();
                self.proven = false;
                self.go(day, HealthState::Dead, Rule::HardFailureTwoDays, ids, events);
            } else if !confirmed.is_empty() {
                self.proven = false;
                self.go(
                    day,
                    HealthState::Dead,
                    Rule::HardFailureCarrierConfirmed,
                    confirmed,
                    events,
                );
            } else if !s.hard.is_empty() {
                let long_healthy = self
                    .healthy_since
                    .is_some_and(|h| days_between(h, day) >= i64::from(cfg.long_healthy_days));
                let rule = if long_healthy {
                    Rule::AnomalyAfterHealthy
                } else {
                    Rule::FirstHardFailure
                };
                self.suspect(day, rule, s.hard.clone(), events);
            } else if !gone.is_empty() {
                self.suspect(day, Rule::CarrierEmptyUnconfirmed, gone.clone(), events);
            }
        }
        if !s.suspended.is_empty() {
            self.suspended_days.push((day, s.suspended[0]));
        }
        if self.state.rank() >= HealthState::Suspect.rank() {
            if !carrier_suspended.is_empty() {
                self.go(
                    day,
                    HealthState::Suspended,
                    Rule::CarrierSuspended,
                    carrier_suspended,
                    events,
                );
            } else if self.suspended_days.len() >= 2 {
                let ids = self.suspended_days.iter().map(|(_, id)| *id).collect();
                self.go(day, HealthState::Suspended, Rule::SuspendedTwoDays, ids, events);
            } else if !s.suspended.is_empty() {
                self.suspect(day, Rule::SuspendedReceipt, s.suspended.clone(), events);
            }
        }
        let powered_off = s.carrier_has(&[NumberStatus::PoweredOff]);
        if (!s.transient.is_empty() || !powered_off.is_empty()) && s.delivered.is_empty() && s.engaged.is_empty() {
            let first = s.transient.first().or(powered_off.first()).copied();
            if let Some(id) = first {
                self.transient_days.push((day, id));
            }
            let n = self.transient_days.len() as u32;
            let ids: Vec<EvidenceId> = self.transient_days.iter().map(|(_, id)| *id).collect();
            let long_healthy = self
                .healthy_since
                .is_some_and(|h| days_between(h, day) >= i64::from(cfg.long_healthy_days));
            if n >= cfg.suspect_after_transient_days {
                self.suspect(day, Rule::TransientWeek, ids, events);
            } else if n >= cfg.degrade_after_transient_days {
                if long_healthy && self.state == HealthState::Healthy {
                    self.suspect(day, Rule::TransientAnomaly, ids, events);
                } else if matches!(
                    self.state,
                    HealthState::Healthy | HealthState::Verified | HealthState::Unverified
                ) {
                    self.go(day, HealthState::Degraded, Rule::TransientStreak, ids, events);
                }
            }
        }
        if !s.sim_swap.is_empty() {
            self.proven = false;
            self.suspect(day, Rule::SimSwap, s.sim_swap.clone(), events);
        }
        if !s.new_number.is_empty() {
            self.suspect(day, Rule::SelfReportedNewNumber, s.new_number.clone(), events);
        }
        if !s.dispute.is_empty() {
            self.suspect(day, Rule::DisputeReply, s.dispute.clone(), events);
        }
        if let Some((rule, _)) = s.wrong_party.first() {
            self.proven = false;
            let ids = s.wrong_party.iter().map(|(_, id)| *id).collect();
            self.go(day, HealthState::Reassigned, *rule, ids, events);
        }

        // 5. Answers that lift a suspicion, after the day's failures, so that a check asked for
        //    by a failure and answered the same day settles it.
        let normal = s.carrier_has(&[NumberStatus::Normal]);
        if !normal.is_empty() {
            self.carrier_checked = Some(day);
            let in_service: Vec<Rule> = Rule::DELIVERY_SUSPICIONS.to_vec();
            // In service: earlier hard failures and suspensions are answered, whatever the state
            // (an absent phone is not: the carrier's "normal" says nothing about being on).
            self.hard_days.clear();
            self.suspended_days.clear();
            self.carrier_gone.clear();
            if self.state == HealthState::Suspended {
                self.open.retain(|(r, _)| !in_service.contains(r));
                self.settle(day, Rule::CarrierNormal, normal, cfg, events);
            } else {
                self.lift(day, &in_service, Rule::CarrierNormal, normal, cfg, events);
            }
        }
        if !s
            .carrier_has(&[NumberStatus::PoweredOff, NumberStatus::Unknown])
            .is_empty()
        {
            self.carrier_checked = Some(day);
        }
        for (answer, id) in &s.recycled {
            self.recycled_checked = Some(day);
            match answer {
                RecycleAnswer::Yes => {
                    self.proven = false;
                    self.go(day, HealthState::Reassigned, Rule::RecycledYes, vec![*id], events);
                }
                RecycleAnswer::No => {
                    self.reset_silence(day);
                    // Not disconnected since it was last the borrower's: still theirs, and not gone.
                    let answered = [
                        Rule::SilentLong,
                        Rule::Dormant,
                        Rule::DeliversAfterDead,
                        Rule::EngagedAfterDead,
                        Rule::CarrierEmptyUnconfirmed,
                        Rule::FirstHardFailure,
                        Rule::AnomalyAfterHealthy,
                    ];
                    self.hard_days.clear();
                    self.carrier_gone.clear();
                    self.lift(day, &answered, Rule::RecycledNo, vec![*id], cfg, events);
                }
                RecycleAnswer::NoData => {
                    self.reset_silence(day);
                    if self.has_open(&[Rule::SilentLong, Rule::Dormant]) {
                        // "Cannot tell" leaves the number unverified.
                        self.proven = false;
                        let answered = [Rule::SilentLong, Rule::Dormant];
                        self.lift(day, &answered, Rule::RecycledNoData, vec![*id], cfg, events);
                    }
                }
            }
        }

        // 6. Operators decide last.
        for (action, id) in &s.operator {
            match action {
                OperatorAction::Verify => self.proven_on(day, Rule::OperatorVerified, vec![*id], events),
                OperatorAction::MarkDead => {
                    self.proven = false;
                    self.go(day, HealthState::Dead, Rule::OperatorMarkedDead, vec![*id], events);
                }
                OperatorAction::MarkReassigned => {
                    self.proven = false;
                    self.go(
                        day,
                        HealthState::Reassigned,
                        Rule::OperatorMarkedReassigned,
                        vec![*id],
                        events,
                    );
                }
                OperatorAction::Reinstate => {
                    self.proven = false;
                    self.reset_silence(day);
                    self.clear_failures();
                    self.open.clear();
                    self.go(
                        day,
                        HealthState::Unverified,
                        Rule::OperatorReinstated,
                        vec![*id],
                        events,
                    );
                }
                OperatorAction::Retire => {
                    self.go(day, HealthState::Retired, Rule::OperatorRetired, vec![*id], events);
                }
            }
        }
    }

    /// The assessment; takes the transitions (the tracker is a scratch copy, done with).
    fn finish(&mut self, score: f64) -> Assessment {
        let mut needs: Vec<Need> = Vec::new();
        if !matches!(
            self.state,
            HealthState::Dead | HealthState::Reassigned | HealthState::Retired
        ) {
            for (rule, raised) in &self.open {
                let (need, met) = match rule {
                    Rule::FirstHardFailure
                    | Rule::AnomalyAfterHealthy
                    | Rule::TransientAnomaly
                    | Rule::TransientWeek
                    | Rule::SuspendedReceipt => {
                        (Need::CarrierCheck, self.carrier_checked.is_some_and(|c| c >= *raised))
                    }
                    Rule::SilentLong
                    | Rule::Dormant
                    | Rule::DeliversAfterDead
                    | Rule::EngagedAfterDead
                    | Rule::CarrierEmptyUnconfirmed => (
                        Need::RecycledCheck {
                            since: self.last_known_good(),
                        },
                        self.recycled_checked.is_some_and(|c| c >= *raised),
                    ),
                    _ => (Need::Reverify, false),
                };
                // No carrier or registry knows an email, a push token or an IM account: a doubt
                // about who holds one is settled by the borrower proving it; a doubt about
                // delivery, by the next deliveries.
                let (need, met) = match need {
                    Need::RecycledCheck { .. } if !self.phone => (Need::Reverify, false),
                    Need::CarrierCheck if !self.phone => continue,
                    other => (other, met),
                };
                if !met && !needs.contains(&need) {
                    needs.push(need);
                }
            }
        }
        let mut hard: Vec<NaiveDate> = self.hard_days.iter().map(|(d, _)| *d).collect();
        hard.dedup();
        let mut suspicions: Vec<Rule> = self.open.iter().map(|(r, _)| *r).collect();
        suspicions.sort_by_key(|r| std::cmp::Reverse(r.gravity()));
        Assessment {
            contact: self.id,
            role: self.role,
            state: self.state,
            since: self.since,
            rule: self.rule,
            suspicions,
            score,
            last_engaged: self.last_engaged,
            hard_failure_days: hard,
            needs,
            transitions: std::mem::take(&mut self.transitions),
        }
    }
}

fn days_between(a: NaiveDate, b: NaiveDate) -> i64 {
    (b - a).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Source;

    fn item(id: u64, at: DateTime<Utc>, kind: EvidenceKind) -> Evidence {
        Evidence {
            id: EvidenceId(id),
            contact: Some(ContactId(1)),
            at,
            source: Source::Borrower,
            kind,
        }
    }

    /// The kept sums give each item's weight halved every half-life of its age, as summing the
    /// items one by one at `now` would; also after the reference has moved, far apart.
    #[test]
    fn kept_scores_halve_each_weight_by_its_age() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        for (half_life, days) in [(60u32, [0i64, 3, 45, 200]), (1, [0, 300, 600, 700])] {
            let cfg = HealthConfig {
                score_half_life_days: half_life,
                ..HealthConfig::default()
            };
            let items: Vec<Evidence> = days
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let kind = if i % 2 == 0 {
                        EvidenceKind::CodeConfirmed
                    } else {
                        EvidenceKind::SelfReport {
                            report: SelfReport::ChangedNumber,
                        }
                    };
                    item(
                        i as u64 + 1,
                        t0 + Duration::days(*d) + Duration::minutes(7 * i as i64),
                        kind,
                    )
                })
                .collect();
            let mut scores = Scores::new(1);
            for e in &items {
                scores.add(0, e, &cfg);
            }
            let now = t0 + Duration::days(days[3] + 10);
            let direct: f64 = items
                .iter()
                .map(|e| {
                    let age = (now - e.at).num_seconds() as f64 / 86_400.0;
                    weight(e) * 0.5f64.powf(age / f64::from(half_life))
                })
                .sum();
            let kept = scores.sums[0] * scores.scale(now, &cfg);
            assert!(
                (kept - direct).abs() <= 1e-12 * direct.abs().max(1e-300),
                "half-life {half_life}: kept {kept} against {direct}"
            );
            assert!(kept != 0.0, "half-life {half_life}: the newest item must still count");
        }
    }
}
