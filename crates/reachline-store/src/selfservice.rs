//! Borrower self-service and the number-change flow: contact checks (reaching a borrower whose
//! number is in doubt through their other channels), number changes with their proofs, every
//! step of both, single-use link nonces, borrower sessions, the consecutive-failure count of
//! one-time codes, and repayment-plan requests. Both back ends implement [`SelfServiceStore`].
//!
//! Personal data here is sealed under the borrower's data key like every other: the new number
//! of a change and the borrower's own words in a plan request. Steps and states are short codes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ContactAddress, ContactId, ContactPoint, LoanId, Preferences};

use crate::Result;

/// A change as stored; `new_address` is opened for the caller (E.164 or an email address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub id: i64,
    pub borrower: BorrowerId,
    /// The contact point the new number replaces (the current mobile when asked).
    pub old_contact: Option<ContactId>,
    pub new_address: String,
    /// `page`, `reply`, `operator`.
    pub source: String,
    /// `pending`, `review`, `applied`, `rejected`, `lapsed`.
    pub state: String,
    /// The flow's own record (JSON, no personal data: codes are hashed).
    pub flow: String,
    /// Bumped by every update: updates compare it, so two requests cannot both spend a guess.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub new_contact: Option<ContactId>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
}

/// A change to record.
#[derive(Debug, Clone)]
pub struct NewChange<'a> {
    pub borrower: BorrowerId,
    pub old_contact: Option<ContactId>,
    /// The new number or email address (sealed under the borrower's key).
    pub new_address: &'a ContactAddress,
    pub source: &'a str,
    pub state: &'a str,
    pub flow: &'a str,
}

/// One step of a contact check or a number change (each is also a ledger leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub borrower: BorrowerId,
    pub change: Option<i64>,
    pub check: Option<i64>,
    pub at: DateTime<Utc>,
    /// A short code: `check_started`, `link_sent`, `code_sent`, `code_wrong`, `applied`…
    pub step: String,
    /// `engine`, `borrower`, `operator:<login>`, `token:<id>`.
    pub actor: String,
    /// Short, non-personal detail (JSON): a channel, a contact id, a refusal code.
    pub detail: Option<String>,
}

/// A contact check: the borrower is asked, on their other channels, to confirm their number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub id: i64,
    pub borrower: BorrowerId,
    /// The contact in doubt; `None` when the borrower as a whole is unreachable.
    pub contact: Option<ContactId>,
    /// `open` (links sent, waiting), `operator_task` (no channel could carry a link),
    /// `confirmed` (the borrower answered), `closed`.
    pub state: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A borrower's session on the self-service pages, found by the SHA-256 of its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowerSession {
    pub borrower: BorrowerId,
    /// The factors proven in this session (JSON list of `change::Factor`).
    pub factors: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A borrower's request for a different repayment plan, for the lender's operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    pub id: i64,
    pub borrower: BorrowerId,
    pub loan: LoanId,
    /// `extension`, `split`, `due_day`.
    pub kind: String,
    /// The borrower's own words (opened for the caller).
    pub reason: String,
    /// `open`, `accepted`, `declined`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
}

/// Which changes, checks or requests to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<String>,
    pub borrower: Option<BorrowerId>,
    pub limit: u32,
}

#[async_trait]
pub trait SelfServiceStore: Send + Sync {
    /// Records a change; the new number is sealed under the borrower's key.
    async fn create_change(&self, change: &NewChange<'_>, now: DateTime<Utc>) -> Result<i64>;
    async fn change(&self, id: i64) -> Result<Option<ChangeRecord>>;
    /// Newest first.
    async fn changes(&self, filter: &Filter) -> Result<Vec<ChangeRecord>>;
    /// Sets state and flow if the change is still at `version` (false: someone else updated it
    /// first; read it again). `decided` is who decided and why (review outcomes).
    async fn update_change(
        &self,
        id: i64,
        version: i64,
        state: &str,
        flow: &str,
        decided: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Applies a change in one transaction, if it is still at `version`: adds `point` (the new
    /// number, verified) in its slot, retiring the current one there with reason `replaced`,
    /// and marks the change `applied`. `None` when someone else updated the change first.
    #[allow(clippy::too_many_arguments)]
    async fn apply_change(
        &self,
        id: i64,
        version: i64,
        point: &ContactPoint,
        flow: &str,
        actor: &str,
        decided: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<Option<ContactId>>;

    async fn add_step(&self, step: &StepRecord) -> Result<()>;
    /// A borrower's steps (of one change or check, or all), oldest first.
    async fn steps(&self, borrower: BorrowerId, change: Option<i64>, check: Option<i64>) -> Result<Vec<StepRecord>>;

    /// The borrower's open check (state `open` or `operator_task`), or a new one; true when new.
    async fn open_check(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(CheckRecord, bool)>;
    async fn set_check_state(&self, id: i64, state: &str, now: DateTime<Utc>) -> Result<()>;
    /// Newest first.
    async fn checks(&self, filter: &Filter) -> Result<Vec<CheckRecord>>;

    /// Records a link's nonce as used; false when it was used before.
    async fn use_nonce(&self, nonce: i64, now: DateTime<Utc>) -> Result<bool>;

    async fn create_borrower_session(
        &self,
        digest: [u8; 32],
        session: &BorrowerSession,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The live session with this digest; forgets expired ones.
    async fn borrower_session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<BorrowerSession>>;
    async fn set_session_factors(&self, digest: [u8; 32], factors: &str) -> Result<()>;
    /// Ends a session (the borrower logged out).
    async fn end_borrower_session(&self, digest: [u8; 32]) -> Result<()>;

    /// The borrower's consecutive failed codes.
    async fn code_failures(&self, borrower: BorrowerId) -> Result<u32>;
    /// Sets the borrower's consecutive failed codes (0 after a success).
    async fn set_code_failures(&self, borrower: BorrowerId, n: u32, now: DateTime<Utc>) -> Result<()>;

    /// The borrower's preferred channels and quiet hours (the default when never set).
    async fn preferences(&self, borrower: BorrowerId) -> Result<Preferences>;
    async fn set_preferences(&self, borrower: BorrowerId, preferences: &Preferences, now: DateTime<Utc>) -> Result<()>;

    async fn add_plan_request(
        &self,
        borrower: BorrowerId,
        loan: LoanId,
        kind: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64>;
    /// Newest first.
    async fn plan_requests(&self, filter: &Filter) -> Result<Vec<PlanRequest>>;
    /// Decides an open request; false when it is not open (or does not exist).
    async fn decide_plan_request(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}
