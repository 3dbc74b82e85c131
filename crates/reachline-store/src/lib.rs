//! Reachline's storage: the `Store` and `ImportTx` traits, the records they return, and two back
//! ends — SQLite (the embedded default, WAL) and PostgreSQL (several nodes) — each owning its
//! migrations and both passing one shared test suite (`tests/it`).
//!
//! Architecture Invariant: personal data (names, national ids, contact addresses) is sealed
//! before it reaches SQL and opened only after it leaves it; the database holds ciphertext and
//! blind indexes only. Both back ends share the sealing code in [`codec`] so they cannot differ.
//!
//! Architecture Invariant: contact points are never updated in place except to retire or verify
//! them; each such change is also an event row, so the history of who held which number when
//! can be read back. No constraint makes a number unique across borrowers: a recycled number
//! belongs to two people at different times.

pub mod codec;
pub mod crypto;
pub mod engine;
pub mod ledger;
pub mod postgres;
pub mod privacy;
pub mod selfservice;
pub mod server;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{
    Borrower, BorrowerId, Consent, ContactId, ContactPoint, ExternalId, Installment, InstallmentId, Loan, LoanId,
    PhoneNumber,
};

pub use crypto::{CryptoError, DataKey, Keyring, Secret32};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migration(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("another node sequences the ledger (it holds advisory lock {0})")]
    SequencerHeld(i64),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("database URL must start with sqlite:// or postgres:// (got scheme {0:?})")]
    BadUrl(String),
    /// The keys given do not match the ones the data was written under (nothing was written).
    #[error("{0}")]
    Keys(String),
}

/// Which back end a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A borrower as stored, personal fields opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowerRecord {
    pub id: BorrowerId,
    pub borrower: Borrower,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why and when a contact point stopped being current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A contact point as stored: the lender's facts plus the store's id and lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    pub id: ContactId,
    pub borrower_id: BorrowerId,
    pub point: ContactPoint,
    pub added_at: DateTime<Utc>,
    pub retired: Option<Retirement>,
}

impl ContactRecord {
    pub fn is_current(&self) -> bool {
        self.retired.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactEventKind {
    Added,
    Verified,
    Retired,
}

reachline_domain::named_enum!(ContactEventKind, "contact event", {
    Added => "added",
    Verified => "verified",
    Retired => "retired",
});

/// One step in a contact point's life. `actor` says who did it (`book`, `operator:<id>`,
/// `borrower`, `api:<token id>`); `detail` holds the retirement reason or the verification method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEvent {
    pub contact_id: ContactId,
    pub borrower_id: BorrowerId,
    pub kind: ContactEventKind,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoanRecord {
    pub id: LoanId,
    pub borrower_id: BorrowerId,
    pub loan: Loan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallmentRecord {
    pub id: InstallmentId,
    pub loan_id: LoanId,
    pub installment: Installment,
}

/// Row counts, for summaries and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub borrowers: u64,
    pub contacts_current: u64,
    pub contacts_retired: u64,
    pub loans: u64,
    pub installments: u64,
    pub consents: u64,
}

/// What an import changed, counted by the transaction that made the changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub borrowers_created: u64,
    pub borrowers_updated: u64,
    pub borrowers_unchanged: u64,
    pub contacts_added: u64,
    pub contacts_replaced: u64,
    pub contacts_verified: u64,
    pub contacts_unchanged: u64,
    pub loans_written: u64,
    pub installments_written: u64,
    pub consents_added: u64,
}

/// The reason recorded when a re-imported book gives a slot a different address.
pub const REPLACED_BY_BOOK: &str = "replaced by book";

/// Everything Reachline keeps, behind one interface both back ends implement.
#[async_trait]
pub trait Store: Send + Sync {
    fn backend(&self) -> Backend;

    /// Starts an all-or-nothing import. Nothing it writes is visible to others until
    /// [`ImportTx::commit`]; dropping it without committing rolls everything back.
    async fn begin_import(&self, at: DateTime<Utc>) -> Result<Box<dyn ImportTx>>;

    async fn borrower_by_external_id(&self, id: &ExternalId) -> Result<Option<BorrowerRecord>>;

    /// The borrower's contact points, current ones first, then retired ones, each oldest first.
    async fn contacts(&self, borrower: BorrowerId) -> Result<Vec<ContactRecord>>;

    /// Every event in the borrower's contact history, in the order they were recorded (an event
    /// may be dated earlier than it was recorded: a verification the book reports, say).
    async fn contact_history(&self, borrower: BorrowerId) -> Result<Vec<ContactEvent>>;

    /// Adds a contact point. If the slot already holds a current contact point, that one is
    /// retired with `replaces_reason` in the same transaction.
    async fn add_contact(
        &self,
        borrower: BorrowerId,
        point: &ContactPoint,
        at: DateTime<Utc>,
        actor: &str,
        replaces_reason: &str,
    ) -> Result<ContactId>;

    async fn verify_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, method: &str) -> Result<()>;

    async fn retire_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, reason: &str) -> Result<()>;

    /// Every contact point, of any borrower, current or retired, that ever held `number`: the
    /// lookup that shows a recycled number's holders one after another.
    async fn contacts_by_phone(&self, number: &PhoneNumber) -> Result<Vec<ContactRecord>>;

    /// Every contact point, of any borrower, current or retired, that ever held `address` (an
    /// IM account a provider names, an email): by its blind index, as `contacts_by_phone`.
    async fn contacts_by_address(&self, address: &reachline_domain::ContactAddress) -> Result<Vec<ContactRecord>>;

    async fn loans(&self, borrower: BorrowerId) -> Result<Vec<LoanRecord>>;

    async fn installments(&self, loan: LoanId) -> Result<Vec<InstallmentRecord>>;

    /// Consent events for the borrower, oldest first.
    async fn consents(&self, borrower: BorrowerId) -> Result<Vec<Consent>>;

    async fn record_consent(&self, borrower: BorrowerId, consent: &Consent) -> Result<()>;

    async fn counts(&self) -> Result<Counts>;

    /// Loads disconnection records (a number and the day it was permanently disconnected) from
    /// a registry file, all in one transaction; returns how many were new. Numbers are stored
    /// as their blind index only.
    async fn load_disconnects(
        &self,
        rows: Vec<(PhoneNumber, NaiveDate)>,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<u64>;

    /// The latest disconnection on record for a number, if any.
    async fn last_disconnect(&self, number: &PhoneNumber) -> Result<Option<NaiveDate>>;
}

/// One import transaction. Rows arrive in batches; borrowers first, then what refers to them.
#[async_trait]
pub trait ImportTx: Send {
    /// Creates or updates borrowers by external id; returns their ids in input order.
    async fn upsert_borrowers(&mut self, rows: Vec<Borrower>) -> Result<Vec<BorrowerId>>;

    /// For each slot: adds the contact point if the slot is empty, leaves it if the address is
    /// the same (recording a verification if the book's is newer), or retires the current one
    /// with [`REPLACED_BY_BOOK`] and adds the new one.
    async fn upsert_contacts(&mut self, rows: Vec<(BorrowerId, ContactPoint)>) -> Result<()>;

    /// Creates or updates loans by external id; returns their ids in input order. A loan may
    /// not move to another borrower.
    async fn upsert_loans(&mut self, rows: Vec<(BorrowerId, Loan)>) -> Result<Vec<LoanId>>;

    /// Creates or updates installments by (loan, sequence number).
    async fn upsert_installments(&mut self, rows: Vec<(LoanId, Installment)>) -> Result<()>;

    /// Adds consent events that are not already recorded.
    async fn add_consents(&mut self, rows: Vec<(BorrowerId, Consent)>) -> Result<()>;

    async fn commit(self: Box<Self>) -> Result<ImportReport>;
}

/// Opens the ledger tables of the database a URL names (migrating it if needed), as
/// [`open`] opens the rest.
pub async fn open_ledger(url: &str, keys: Keyring) -> Result<Box<dyn ledger::LedgerStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(sqlite::SqliteLedger::open(path, keys).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PgLedger::connect(url, keys).await?))
    } else {
        Err(bad_url(url))
    }
}

/// A URL of no back end, named by its scheme only (the rest may hold a password).
fn bad_url(url: &str) -> StoreError {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or(url);
    StoreError::BadUrl(scheme.chars().take(20).collect())
}

/// One back end, opened once: the same store seen through each of its traits, so a process
/// that needs several of them shares one set of connections (on SQLite, one writer).
#[derive(Clone)]
pub struct Stores {
    pub store: std::sync::Arc<dyn Store>,
    pub engine: std::sync::Arc<dyn engine::EngineStore>,
    pub server: std::sync::Arc<dyn server::ServerStore>,
    pub selfservice: std::sync::Arc<dyn selfservice::SelfServiceStore>,
    pub privacy: std::sync::Arc<dyn privacy::PrivacyStore>,
}

impl Stores {
    fn of<S>(s: S) -> Self
    where
        S: Store + engine::EngineStore + server::ServerStore + selfservice::SelfServiceStore,
        S: privacy::PrivacyStore + 'static,
    {
        let s = std::sync::Arc::new(s);
        Stores {
            store: s.clone(),
            engine: s.clone(),
            server: s.clone(),
            selfservice: s.clone(),
            privacy: s,
        }
    }
}

/// Opens the database a URL names, creating and migrating it if needed: `sqlite://PATH` (a
/// file, created if missing) or `postgres://…`.
///
/// The keys are checked against the database's key check values before anything else is
/// written (see [`privacy::PrivacyStore::check_keys`]).
pub async fn open_all(url: &str, keys: Keyring) -> Result<Stores> {
    let stores = open_unchecked(url, keys).await?;
    stores.privacy.check_keys().await?;
    Ok(stores)
}

/// Opens the database as [`open_all`] does, checking only the master keys: for a blind-index
/// key rotation, during which the indexes are between two keys (every other opening refuses).
pub async fn open_all_for_key_rotation(url: &str, keys: Keyring) -> Result<Stores> {
    let stores = open_unchecked(url, keys).await?;
    stores.privacy.check_master_keys().await?;
    Ok(stores)
}

async fn open_unchecked(url: &str, keys: Keyring) -> Result<Stores> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Stores::of(sqlite::SqliteStore::open(path, keys).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Stores::of(postgres::PgStore::connect(url, keys).await?))
    } else {
        Err(bad_url(url))
    }
}

/// Opens the engine's tables in the database a URL names (as [`open_all`]).
pub async fn open_engine(url: &str, keys: Keyring) -> Result<std::sync::Arc<dyn engine::EngineStore>> {
    Ok(open_all(url, keys).await?.engine)
}

/// Opens the store a URL names (as [`open_all`]).
pub async fn open(url: &str, keys: Keyring) -> Result<Box<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let s = sqlite::SqliteStore::open(path, keys).await?;
        privacy::PrivacyStore::check_keys(&s).await?;
        Ok(Box::new(s))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let s = postgres::PgStore::connect(url, keys).await?;
        privacy::PrivacyStore::check_keys(&s).await?;
        Ok(Box::new(s))
    } else {
        Err(bad_url(url))
    }
}
