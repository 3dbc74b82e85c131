//! The server's own records: API tokens (an argon2 hash per token, never the token), the access
//! log of unmasked reads of personal data, and the webhook signatures seen inside the replay
//! window. Both back ends implement [`ServerStore`]; nothing here holds personal data.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::BorrowerId;

use crate::Result;

/// An API token as stored: who it is for, its role, the argon2 hash (PHC string) of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public part of the token, which the secret follows (`rl_<id>_<secret>`).
    pub id: String,
    pub name: String,
    pub role: String,
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A webhook signature's digest, kept until `expires` so a replay inside the window is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub provider: String,
    pub digest: [u8; 32],
    pub expires: DateTime<Utc>,
}

/// One read of unmasked personal data: who, what, about whom, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub at: DateTime<Utc>,
    /// `token:<id>` or `operator:<login>`.
    pub actor: String,
    /// What was read, e.g. `borrower.unmasked`.
    pub action: String,
    pub borrower: Option<BorrowerId>,
    /// The reason the reader gave (required to unmask).
    pub reason: String,
    pub request_id: String,
}

/// An operator who logs in to the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    pub login: String,
    pub role: String,
    /// Argon2 PHC string of the password.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A live dashboard session, found by the SHA-256 of its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub login: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait ServerStore: Send + Sync {
    /// Creates an operator, or sets the role and password of an existing one (and enables it).
    async fn put_operator(&self, op: &OperatorRecord) -> Result<()>;
    async fn operator(&self, login: &str) -> Result<Option<OperatorRecord>>;
    async fn create_session(
        &self,
        digest: [u8; 32],
        login: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()>;
    /// The live session with this digest (of an enabled operator), if any; forgets expired ones.
    async fn session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<SessionRecord>>;
    async fn end_session(&self, digest: [u8; 32]) -> Result<()>;

    /// Stores a new token; an id already taken is a `Conflict`.
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revokes a token; false when there is no such live token.
    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;
    async fn log_access(&self, entry: &AccessEntry) -> Result<()>;
    /// The access log, newest first, about one borrower or everyone.
    async fn access_log(&self, borrower: Option<BorrowerId>, limit: u32) -> Result<Vec<AccessEntry>>;
    /// Records webhook signature digests, each until its `expires`, in one transaction; for
    /// each, false when the same provider sent the same digest before, earlier in the batch
    /// included (a replay). Forgets digests that have expired by `now`.
    async fn first_sightings(&self, items: &[Sighting], now: DateTime<Utc>) -> Result<Vec<bool>>;
    /// Forgets a digest (its webhook could not be recorded, so the provider's retry must pass).
    async fn forget_sighting(&self, provider: &str, digest: [u8; 32]) -> Result<()>;
}
