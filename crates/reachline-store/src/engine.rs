//! What the notice engine keeps: the outbox (one row per send attempt, with an idempotency key),
//! the provider ids and receipts of each attempt, the evidence the policy reads, the latest
//! decision per notice and the history of its changes, and when each borrower is next due for
//! a decision.
//!
//! The store knows nothing of the policy's types: notice kinds, evidence and decision details
//! cross this boundary as their stable names and JSON, which the engine reads and writes.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use reachline_domain::{
    BorrowerId, Channel, Consent, ContactAddress, ContactId, ContactKind, ContactRole, Currency, DeliveryClass,
    ExternalId, InstallmentId, Jurisdiction, LoanId, Locale, PersonName,
};

use crate::server::Sighting;
use crate::Result;

/// Until when a lease taken at `now` for `lease` holds its borrowers: the lease and a grace of
/// a quarter of it, which covers clock drift between nodes (a send is marked only while its
/// lease runs, so once the hold lapses every send its holder made is recorded).
pub fn hold_until(now: DateTime<Utc>, lease: chrono::Duration) -> DateTime<Utc> {
    now + lease + lease / 4
}

/// A contact point as the planner sees it: facts, no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContact {
    pub id: ContactId,
    pub kind: ContactKind,
    pub role: ContactRole,
    pub bound_since: NaiveDate,
    pub verified_at: Option<DateTime<Utc>>,
    pub retired: bool,
}

/// An installment as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInstallment {
    pub id: InstallmentId,
    pub product: String,
    pub loan_ref: String,
    pub seq: u32,
    pub due_date: NaiveDate,
    pub amount_due_minor: i64,
    pub amount_paid_minor: i64,
    pub currency: Currency,
    pub paid: bool,
}

/// A stored observation; `kind` is the policy's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvidence {
    pub id: i64,
    pub contact: Option<ContactId>,
    pub at: DateTime<Utc>,
    pub source: String,
    pub kind: String,
}

/// The state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendState {
    /// Waiting for its time.
    Queued,
    /// A dispatcher holds it until the lease ends.
    Leased,
    /// Handed to the channel; not yet known to have been taken. A crash here leaves it so.
    Sending,
    /// The provider took it.
    Sent,
    /// The provider refused it, or it could not be sent.
    Failed,
    /// Found `sending` after a restart: it may or may not have reached the provider. Never
    /// resubmitted (that could send twice); treated as sent with no outcome.
    InDoubt,
    /// Not sent: the decision changed before its time (see `detail`).
    Cancelled,
}

reachline_domain::named_enum!(SendState, "send state", {
    Queued => "queued",
    Leased => "leased",
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
    InDoubt => "in_doubt",
    Cancelled => "cancelled",
});

impl SendState {
    /// A send that happened, or may have happened: it counts for caps and the ladder.
    pub fn attempted(self) -> bool {
        matches!(
            self,
            SendState::Sending | SendState::Sent | SendState::Failed | SendState::InDoubt
        )
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    Pending,
    Delivered,
    Engaged,
    Failed(DeliveryClass),
}

impl SendOutcome {
    pub fn name(self) -> &'static str {
        match self {
            SendOutcome::Pending => "pending",
            SendOutcome::Delivered => "delivered",
            SendOutcome::Engaged => "engaged",
            SendOutcome::Failed(_) => "failed",
        }
    }

    /// Reads an outcome from its stored columns.
    pub fn from_columns(outcome: &str, class: Option<&str>) -> Result<SendOutcome> {
        Ok(match outcome {
            "pending" => SendOutcome::Pending,
            "delivered" => SendOutcome::Delivered,
            "engaged" => SendOutcome::Engaged,
            "failed" => SendOutcome::Failed(
                class
                    .unwrap_or("unknown")
                    .parse::<DeliveryClass>()
                    .map_err(crate::codec::corrupt)?,
            ),
            other => return Err(crate::StoreError::Corrupt(format!("unknown send outcome {other:?}"))),
        })
    }

    /// The outcome a receipt or synchronous answer of `class` gives an attempt.
    pub fn of(class: DeliveryClass) -> SendOutcome {
        match class {
            DeliveryClass::Delivered => SendOutcome::Delivered,
            DeliveryClass::Engaged => SendOutcome::Engaged,
            other => SendOutcome::Failed(other),
        }
    }

    /// The `outcome_class` column.
    pub fn class_column(self) -> Option<&'static str> {
        match self {
            SendOutcome::Failed(c) => Some(c.as_str()),
            _ => None,
        }
    }

    /// Rank: a later receipt never downgrades what is known (an engagement stays one).
    pub fn rank(self) -> u8 {
        match self {
            SendOutcome::Pending => 0,
            SendOutcome::Failed(DeliveryClass::Transient | DeliveryClass::Unknown) => 1,
            SendOutcome::Delivered => 2,
            SendOutcome::Failed(_) => 3,
            SendOutcome::Engaged => 4,
        }
    }
}

/// The evidence source of a receipt from `provider` (the policy's JSON).
pub(crate) fn provider_source(provider: &str) -> String {
    serde_json::json!({"source": "provider", "name": provider}).to_string()
}

/// The evidence text of a receipt on each channel, resolved before the store's work starts (the
/// closure stays on the caller's thread).
/// The evidence kind of each delivery class (precomputed: the closure cannot go to the writer).
pub(crate) fn class_kinds(evidence_kind: &(dyn Fn(DeliveryClass) -> String + Sync)) -> HashMap<DeliveryClass, String> {
    DeliveryClass::ALL.iter().map(|c| (*c, evidence_kind(*c))).collect()
}

/// The evidence kind of every (channel, class) pair, computed where the closure lives.
pub(crate) fn delivery_kinds(
    evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
) -> HashMap<(Channel, DeliveryClass), String> {
    let mut out = HashMap::new();
    for ch in [Channel::Sms, Channel::Voice, Channel::Email, Channel::Push, Channel::Im] {
        for c in DeliveryClass::ALL {
            out.insert((ch, *c), evidence_kind(ch, *c));
        }
    }
    out
}

/// The evidence a payment from core banking adds (the policy's JSON).
pub(crate) const PAYMENT_SOURCE: &str = r#"{"source":"core_banking"}"#;
pub(crate) const PAYMENT_EVIDENCE: &str = r#"{"kind":"payment","via_contact":false}"#;

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub idem_key: String,
    pub borrower: BorrowerId,
    pub installment: InstallmentId,
    pub step: usize,
    pub kind: String,
    pub rung: usize,
    pub contact: ContactId,
    pub channel: Channel,
    pub third_party: bool,
    pub not_before: DateTime<Utc>,
    pub state: SendState,
    pub tries: u32,
    pub sent_at: Option<DateTime<Utc>>,
    pub outcome: SendOutcome,
}

/// A send to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSend {
    pub idem_key: String,
    pub borrower: BorrowerId,
    pub installment: InstallmentId,
    pub step: usize,
    pub kind: String,
    pub rung: usize,
    pub contact: ContactId,
    pub channel: Channel,
    pub third_party: bool,
    pub not_before: DateTime<Utc>,
}

/// A decision as recorded: `notice` is the notice's key text, or `-` for a borrower-level one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub borrower: BorrowerId,
    pub notice: String,
    pub action: String,
    pub reason: String,
    pub gate: Option<String>,
    pub until: Option<DateTime<Utc>>,
    /// JSON: rungs passed over, the contact, the need.
    pub detail: Option<String>,
}

/// Everything one planning pass writes for a set of borrowers, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct PlanWrite {
    pub at: Option<DateTime<Utc>>,
    pub sends: Vec<NewSend>,
    pub decisions: Vec<DecisionRow>,
    /// (borrower, next wake, the view's `wake_seq`): set only if no evidence woke the borrower
    /// since the view was read.
    pub wakes: Vec<(BorrowerId, DateTime<Utc>, i64)>,
}

/// Everything the planner needs about one borrower.
#[derive(Debug, Clone)]
pub struct EngineView {
    pub id: BorrowerId,
    /// The lender's id for the borrower.
    pub external_id: String,
    pub locale: Locale,
    pub zone: Tz,
    pub jurisdiction: Jurisdiction,
    pub contacts: Vec<EngineContact>,
    pub consents: Vec<Consent>,
    pub installments: Vec<EngineInstallment>,
    pub evidence: Vec<StoredEvidence>,
    /// Every outbox row of the borrower.
    pub sends: Vec<OutboxRow>,
    /// How many times evidence has woken the borrower (see [`PlanWrite::wakes`]).
    pub wake_seq: i64,
    /// The borrower's preferred channels and quiet hours (set on their page).
    pub preferences: reachline_domain::Preferences,
}

/// A receipt to record (the channel's, flattened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptIn {
    pub at: DateTime<Utc>,
    pub provider: String,
    pub provider_id: String,
    /// The outbox id the channel matched it to, if it did.
    pub outbox_id: Option<i64>,
    pub class: DeliveryClass,
    pub code: String,
    pub is_final: bool,
    pub raw: Vec<u8>,
}

/// One accepted send to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub provider: String,
    pub provider_ids: Vec<String>,
    pub template_id: String,
    pub template_version: u32,
    pub text_sha256: [u8; 32],
}

/// Which send a receipt answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptMatch {
    pub outbox_id: i64,
    pub borrower: BorrowerId,
    pub contact: ContactId,
    pub channel: Channel,
    /// The outcome changed (a repeated or weaker receipt changes nothing).
    pub changed: bool,
}

/// A receipt that came before its send was recorded and changed the send's outcome when the
/// record matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateMatch {
    pub receipt: ReceiptMatch,
    pub class: DeliveryClass,
    /// The provider's id the receipt named.
    pub provider_id: String,
    /// When it takes effect: when it arrived, or when the send was, if that is later.
    pub at: DateTime<Utc>,
}

/// What became of one item of [`EngineStore::record_sighted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighted {
    /// Its signature was seen before: nothing was recorded.
    Replayed,
    /// Its signature is taken now, and its receipt (if it had one) recorded, matched so.
    Taken(Option<Matched>),
}

/// What a receipt answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// An attempt of a notice.
    Send(ReceiptMatch),
    /// A verification message (a code, a contact check's link, news of a change). Its
    /// outcome is evidence about the contact point it went to, when it went to one.
    Verification {
        borrower: BorrowerId,
        contact: Option<ContactId>,
        /// The message's outcome changed (evidence was added).
        changed: bool,
    },
    /// Nothing Reachline sent: the receipt is kept, flagged `unmatched`.
    Unmatched,
}

impl Matched {
    pub fn send(self) -> Option<ReceiptMatch> {
        match self {
            Matched::Send(m) => Some(m),
            _ => None,
        }
    }
}

/// A verification message a provider took, to match its receipts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationSent {
    pub borrower: BorrowerId,
    pub contact: Option<ContactId>,
    pub channel: Channel,
    pub at: DateTime<Utc>,
    pub provider: String,
    pub provider_ids: Vec<String>,
}

/// What is needed to render and address one send.
#[derive(Debug, Clone)]
pub struct SendTarget {
    pub address: ContactAddress,
    pub borrower_name: PersonName,
}

/// Counts for the demo's report, grouped by the named columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub keys: Vec<String>,
    pub count: u64,
}

/// Which attempts to list, oldest first after `after` (keyset pagination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub borrower: Option<BorrowerId>,
    pub state: Option<String>,
    pub channel: Option<String>,
    pub kind: Option<String>,
    /// Only attempts with a larger id.
    pub after: Option<i64>,
    pub limit: u32,
}

/// A receipt as kept (its raw text stays in the database: it is evidence, not an API field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    pub outbox_id: i64,
    pub at: DateTime<Utc>,
    pub provider: String,
    pub provider_id: String,
    pub class: String,
    pub code: String,
    pub is_final: bool,
    /// Why a receipt was kept aside (`unmatched`…), if it was.
    pub flag: Option<String>,
}

/// Attempts handed to a provider on one day over one channel, and how many reached the
/// borrower's device (delivered or engaged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachDay {
    pub day: NaiveDate,
    pub channel: String,
    pub attempted: u64,
    pub reached: u64,
}

/// Borrowers nobody can reach now (the ladder is exhausted, or health asks them to prove a
/// number) and what they still owe, by product and days past due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposureRow {
    pub product: String,
    /// `current`, `1-30`, `31-60`, `61-90`, `90+` (days past due of the loan's oldest open
    /// installment).
    pub bucket: String,
    pub currency: String,
    pub borrowers: u64,
    /// Amounts due and not paid on the open installments, in minor units.
    pub outstanding_minor: i64,
}

/// The operator dashboard's figures, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    pub reach: Vec<ReachDay>,
    /// Attempts by outcome: `pending`, `delivered`, `engaged`, or the failure's class.
    pub outcomes: Vec<(String, u64)>,
    /// Contact points that evidence found not working, by week (its Monday) and what it said:
    /// `dead`, `suspended`, `recycled`, `wrong_party`.
    pub found: Vec<(NaiveDate, String, u64)>,
    /// Contact points retired, by week and reason.
    pub retired: Vec<(NaiveDate, String, u64)>,
    pub exposure: Vec<ExposureRow>,
    /// Outbox rows by state.
    pub queue: Vec<(String, u64)>,
    /// For each contact point found not working: seconds from its last delivery or engagement
    /// to the first evidence that it stopped working (how long a lost number went unnoticed,
    /// at most), sorted.
    pub detect_seconds: Vec<i64>,
}

/// How evidence text is read into the dashboard's `found` classes (one SQL `CASE`, shared by
/// both back ends: the evidence is compact JSON written by `serde_json`).
pub(crate) const FOUND_CASE: &str = "CASE \
    WHEN kind LIKE '%\"class\":\"dead\"%' OR kind LIKE '%\"status\":\"empty\"%' \
      OR kind LIKE '%\"status\":\"cancelled\"%' OR kind LIKE '%\"outcome\":\"not_in_service\"%' THEN 'dead' \
    WHEN kind LIKE '%\"class\":\"suspended\"%' OR kind LIKE '%\"status\":\"suspended\"%' THEN 'suspended' \
    WHEN kind LIKE '%\"kind\":\"recycled\"%' AND kind LIKE '%\"answer\":\"yes\"%' THEN 'recycled' \
    WHEN kind LIKE '%\"class\":\"wrong_party\"%' OR kind LIKE '%\"class\":\"wrong_number\"%' \
      OR kind LIKE '%\"outcome\":\"wrong_party\"%' THEN 'wrong_party' END";

/// The time-to-detect query: `{seconds}` turns a difference of two `at` values into seconds.
pub(crate) fn detect_sql(seconds: &str) -> String {
    let ok = "(e.kind LIKE '%\"class\":\"delivered\"%' OR e.kind LIKE '%\"class\":\"engaged\"%' \
              OR e.kind LIKE '%\"kind\":\"link_click\"%')";
    format!(
        "WITH bad AS (SELECT contact_id, MIN(at) AS found_at FROM \
           (SELECT contact_id, at, {FOUND_CASE} AS what FROM evidence WHERE contact_id IS NOT NULL) f \
           WHERE what IS NOT NULL GROUP BY contact_id), \
         good AS (SELECT e.contact_id, MAX(e.at) AS last_ok FROM evidence e JOIN bad b ON b.contact_id = e.contact_id \
           WHERE e.at < b.found_at AND {ok} GROUP BY e.contact_id) \
         SELECT {} FROM bad b JOIN good g ON g.contact_id = b.contact_id ORDER BY 1",
        seconds.replace("{found}", "b.found_at").replace("{ok}", "g.last_ok")
    )
}

/// Outbox rows by state (the queue's depth is `queued`).
pub(crate) const QUEUE_SQL: &str = "SELECT state, COUNT(*) FROM outbox GROUP BY 1 ORDER BY 1";

/// Decision reasons that leave a borrower unreachable for the dashboard's exposure.
pub(crate) const UNREACHABLE_REASONS: &str = "('ladder_exhausted', 'contact_check_needed')";

/// The borrowers unreachable now: a notice of an installment still open (notice keys begin
/// with the installment's id) whose latest decision is one of [`UNREACHABLE_REASONS`], or a
/// borrower-level need (`-`) for a contact check. `{inst}` is the back end's expression for the
/// installment id of `n.notice`.
pub(crate) fn unreachable_borrowers(inst: &str) -> String {
    format!(
        "SELECT DISTINCT n.borrower_id FROM notice_states n WHERE n.reason IN {UNREACHABLE_REASONS} AND \
         (n.notice = '-' OR EXISTS (SELECT 1 FROM installments i WHERE i.id = {inst} \
          AND i.amount_paid_minor < i.amount_due_minor))"
    )
}

/// The DPD bucket of a number of days past due (an SQL expression over `dpd`).
pub(crate) const BUCKET_CASE: &str = "CASE WHEN dpd <= 0 THEN 'current' WHEN dpd <= 30 THEN '1-30' \
    WHEN dpd <= 60 THEN '31-60' WHEN dpd <= 90 THEN '61-90' ELSE '90+' END";

/// The engine's storage, implemented by both back ends.
#[async_trait]
pub trait EngineStore: crate::selfservice::SelfServiceStore + Send + Sync {
    /// Every borrower with an unpaid installment due between `from` and `to` and no wake time
    /// later than `now`, in id order: one pass's work, found from the due-date index.
    async fn due_borrowers(&self, from: NaiveDate, to: NaiveDate, now: DateTime<Utc>) -> Result<Vec<BorrowerId>>;

    /// Into how many slices (borrower id modulo this) a planning pass is cut for several nodes
    /// to share it; 1 where one process owns the database (SQLite): no slices to claim. A node
    /// reads the pass's due borrowers once and keeps those of each slice it claims.
    fn plan_slices(&self) -> u32 {
        1
    }

    /// Claims for `owner` a slice of the pass at `now` that no node holds (a claim holds it
    /// until `now + hold`), leaving out the slices in `done`; `None` once none is free.
    async fn claim_plan_slice(
        &self,
        _owner: &str,
        _now: DateTime<Utc>,
        _hold: chrono::Duration,
        _done: &[u32],
    ) -> Result<Option<u32>> {
        Ok(None)
    }

    /// The planner's view of each borrower, with installments due between `from` and `to`.
    async fn views(&self, ids: &[BorrowerId], from: NaiveDate, to: NaiveDate) -> Result<Vec<EngineView>>;

    /// Queues the sends (a send whose key exists already is left alone), records the decisions
    /// that differ from the notice's latest, and sets wake times where no evidence has woken the
    /// borrower since their view was read; one transaction.
    async fn write_plan(&self, plan: PlanWrite) -> Result<usize>;

    /// Leases up to `limit` rows that are due (queued and `not_before <= now`, or leased with an
    /// expired lease) to `owner` until `now + lease`, and holds their borrowers for `owner`
    /// until [`hold_until`]`(now, lease)`: a row of a borrower another owner holds is not
    /// leased (it waits for the hold to lapse), so one borrower's sends are checked and made by
    /// one dispatcher at a time, and no two dispatchers pass a cap check each without the
    /// other's send. A pass may return fewer than `limit` rows while more are due behind held
    /// borrowers.
    async fn lease(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;

    /// Marks rows `owner` still holds, with a lease that has not run out at `at` (the time
    /// now), as being handed to the channel (durably, before the hand-over), in one
    /// transaction, keeping the lease. Returns the ids it moved: a row whose lease ran out is
    /// left for the next lease (sending it here could send it twice, or past the borrower's
    /// hold, beside another dispatcher's send to the same borrower).
    async fn mark_sending_many(&self, owner: &str, ids: Vec<i64>, at: DateTime<Utc>) -> Result<Vec<i64>>;

    /// The providers took these messages; one transaction. A row found `in_doubt` (its lease
    /// ran out while the provider answered) becomes `sent` too. Receipts that came before
    /// their send's record (kept unmatched) are matched now, exactly as they would have been
    /// on arrival: the outcome raised, and evidence (`evidence_kind(channel, class)`) added
    /// and the borrower woken where it changed; those that changed an outcome are returned,
    /// for the ledger.
    async fn record_sent_many(
        &self,
        sent: Vec<SentRecord>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<LateMatch>>;

    /// The send failed for good (or ran out of tries): the ladder reads the class. As with
    /// `record_sent_many`, a row found `in_doubt` (its lease ran out while the provider
    /// answered, and another node's recovery marked it) takes the answer: the doubt is over.
    async fn record_failed(
        &self,
        id: i64,
        at: DateTime<Utc>,
        class: DeliveryClass,
        code: &str,
        detail: &str,
    ) -> Result<()>;

    /// The message went out and no answer came (the provider may have taken it): `in_doubt`,
    /// never handed over again, as a row left `sending` by a crash is after recovery. The
    /// borrower is woken: the ladder reads the send as one with no outcome yet.
    async fn record_in_doubt(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()>;

    /// The send could not be made now (provider down): back to the queue until `retry_at`;
    /// from `in_doubt` too, since the provider did not take it.
    async fn release(&self, id: i64, retry_at: DateTime<Utc>, detail: &str) -> Result<()>;

    /// The decision no longer sends this (the reason in `detail`); the borrower is woken.
    async fn cancel(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()>;

    /// Rows left `sending` whose lease has run out (the dispatcher that held them died, or
    /// outlived its lease) become `in_doubt`; returns how many. Safe to call at any time and
    /// from any node: a live send is inside its lease.
    async fn recover_in_doubt(&self, at: DateTime<Utc>) -> Result<u64>;

    /// Keeps the receipt, matches it (by the channel's match, else by provider id), raises the
    /// attempt's outcome, adds the evidence and wakes the borrower.
    async fn record_receipt(
        &self,
        receipt: ReceiptIn,
        evidence_kind: &(dyn Fn(Channel) -> String + Sync),
    ) -> Result<Option<ReceiptMatch>> {
        let mut out = self.record_receipts(vec![receipt], &|ch, _| evidence_kind(ch)).await?;
        Ok(out.pop().and_then(Matched::send))
    }

    /// Records a verification message the provider took, so its receipts match it; a receipt
    /// that came first (kept `unmatched`) is matched now, with its evidence
    /// (`evidence_kind(class)`) when the message went to a contact point.
    async fn record_verification_sent(
        &self,
        sent: &VerificationSent,
        evidence_kind: &(dyn Fn(DeliveryClass) -> String + Sync),
    ) -> Result<()>;

    /// `record_receipt` for many receipts, of any classes, in one transaction; the evidence a
    /// receipt of class `c` adds about a contact point reached on channel `ch` is
    /// `evidence_kind(ch, c)`.
    async fn record_receipts(
        &self,
        receipts: Vec<ReceiptIn>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Matched>>;

    /// Webhooks behind their replay guards, in one transaction: sightings expired at `now` are
    /// cleared, each item's sighting is taken, and the receipt of an item whose sighting was new
    /// is recorded as `record_receipts` records it (a key twice in `items` is new only the
    /// first time). All of it is committed or none: a failure leaves no sighting behind to
    /// refuse the provider's retry.
    async fn record_sighted(
        &self,
        items: Vec<(Sighting, Option<ReceiptIn>)>,
        now: DateTime<Utc>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Sighted>>;

    /// Adds evidence about a borrower's contact point and wakes the borrower at `at`.
    async fn add_evidence(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        at: DateTime<Utc>,
        source: &str,
        kind: &str,
    ) -> Result<()>;

    /// Wakes the borrower at `at` (or earlier, if already due earlier): something the planner
    /// reads changed (a contact point, a consent, the book).
    async fn wake_now(&self, borrower: BorrowerId, at: DateTime<Utc>) -> Result<()>;

    /// The borrower a contact point belongs to.
    async fn contact_owner(&self, contact: ContactId) -> Result<Option<BorrowerId>>;

    /// A loan's id, borrower and currency by its external id.
    async fn loan_key(&self, loan: &ExternalId) -> Result<Option<(LoanId, BorrowerId, Currency)>>;

    /// An installment by its loan's external id and its position in the schedule.
    async fn installment_by_seq(&self, loan: &ExternalId, seq: u32) -> Result<Option<InstallmentId>>;

    /// Attempts matching `filter`, by id.
    async fn attempts(&self, filter: &AttemptFilter) -> Result<Vec<OutboxRow>>;

    /// The receipts of these attempts, in the order they came.
    async fn receipts_of(&self, outbox_ids: &[i64]) -> Result<Vec<ReceiptRow>>;

    /// Outbox rows by state: what `/metrics` reports on every scrape.
    async fn queue_depth(&self) -> Result<Vec<(String, u64)>>;

    /// The operator dashboard's figures as of `today`.
    async fn dashboard(&self, today: NaiveDate) -> Result<Dashboard>;

    /// The address and the borrower's name for one send, decrypted now.
    async fn send_target(&self, borrower: BorrowerId, contact: ContactId) -> Result<SendTarget> {
        let mut out = self.send_targets(vec![(borrower, contact)]).await?;
        out.pop().unwrap_or_else(|| {
            Err(crate::StoreError::NotFound {
                what: "contact point",
                id: contact.to_string(),
            })
        })
    }

    /// `send_target` for many (borrower, contact) pairs, in order.
    async fn send_targets(&self, pairs: Vec<(BorrowerId, ContactId)>) -> Result<Vec<Result<SendTarget>>>;

    /// Records a payment against an installment and wakes the borrower.
    async fn record_payment(
        &self,
        installment: InstallmentId,
        amount_minor: i64,
        at: DateTime<Utc>,
    ) -> Result<BorrowerId>;

    /// Outbox rows grouped by (kind, channel, state, outcome, outcome class).
    async fn outbox_counts(&self) -> Result<Vec<CountRow>>;

    /// Latest decisions grouped by (action, reason, gate).
    async fn decision_counts(&self) -> Result<Vec<CountRow>>;

    /// Every decision recorded for a borrower, oldest first.
    async fn decisions_of(&self, borrower: BorrowerId) -> Result<Vec<(DateTime<Utc>, DecisionRow)>>;

    /// Every outbox row of a borrower.
    async fn sends_of(&self, borrower: BorrowerId) -> Result<Vec<OutboxRow>>;
}
