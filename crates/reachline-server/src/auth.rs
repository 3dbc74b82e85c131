//! Who may do what: the four roles, the permission matrix every route is checked against, and
//! API tokens (`rl_<id>_<secret>`; only an argon2 hash of the secret is stored, and the token is
//! shown once, when created).
//!
//! Verifying an argon2 hash takes tens of milliseconds on purpose, so a token that verified is
//! remembered for a short while by the SHA-256 of the whole token (never the token itself); a
//! revoked token stops working within that time on other nodes, at once on the node that
//! revoked it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use rand::RngCore;
use reachline_store::server::{ServerStore, TokenRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A role, as tokens and operators carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including tokens and unmasked reads.
    Admin,
    /// The lender's operators: borrowers' contact points and consents, the review queue,
    /// unmasked reads with a reason.
    Operator,
    /// Reads everything masked, the evidence and the access log; changes nothing.
    Auditor,
    /// Core banking and other systems: the book (borrowers, loans, payments), contact points,
    /// evidence; never an unmasked read.
    Integration,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Integration];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Integration => "integration",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a route does, in the terms of the permission matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Borrowers, contact points, loans and installments, masked.
    ReadBorrower,
    /// The same with personal data in clear (a reason is required; every read is logged).
    ReadUnmasked,
    /// Create or update borrowers, loans and installments.
    WriteBook,
    /// Add, verify or retire a contact point.
    WriteContact,
    /// Record a payment.
    WritePayment,
    /// Notices: attempts, receipts, decisions.
    ReadNotice,
    /// Evidence bundles and the ledger's checkpoint.
    ReadEvidence,
    /// Add evidence about a contact point (a call outcome, a branch visit).
    WriteEvidence,
    ReadConsent,
    WriteConsent,
    /// Counts and reports.
    ReadReport,
    /// The access log of unmasked reads.
    ReadAccessLog,
    /// Create, list and revoke tokens.
    ManageTokens,
    /// Approve or reject a number change held for review; decide repayment-plan requests.
    ReviewChange,
    /// Erase a borrower's personal data (crypto-shredding).
    Erase,
}

impl Permission {
    pub const ALL: [Permission; 15] = [
        Permission::ReadBorrower,
        Permission::ReadUnmasked,
        Permission::WriteBook,
        Permission::WriteContact,
        Permission::WritePayment,
        Permission::ReadNotice,
        Permission::ReadEvidence,
        Permission::WriteEvidence,
        Permission::ReadConsent,
        Permission::WriteConsent,
        Permission::ReadReport,
        Permission::ReadAccessLog,
        Permission::ManageTokens,
        Permission::ReviewChange,
        Permission::Erase,
    ];

    /// In words, for refusals and the README's matrix.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::ReadBorrower => "read borrowers, contact points and loans (masked)",
            Permission::ReadUnmasked => "read personal data in clear; export a borrower's data",
            Permission::WriteBook => "create or update borrowers, loans and installments",
            Permission::WriteContact => "add, verify or retire contact points; start a contact check",
            Permission::WritePayment => "record payments",
            Permission::ReadNotice => "read notices, attempts, receipts and decisions",
            Permission::ReadEvidence => "download evidence bundles and checkpoints",
            Permission::WriteEvidence => "add evidence about a contact point",
            Permission::ReadConsent => "read consents",
            Permission::WriteConsent => "record consents and withdrawals",
            Permission::ReadReport => "read reports",
            Permission::ReadAccessLog => "read the access log",
            Permission::ManageTokens => "create, list or revoke API tokens",
            Permission::ReviewChange => "approve or reject held number changes; decide plan requests",
            Permission::Erase => "erase a borrower's personal data",
        }
    }
}

/// The permission matrix (README's table is printed from it by a test, so the two agree).
pub const fn allows(role: Role, p: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Operator => matches!(
            p,
            ReadBorrower
                | ReadUnmasked
                | WriteContact
                | ReadNotice
                | ReadEvidence
                | WriteEvidence
                | ReadConsent
                | WriteConsent
                | ReadReport
                | ReviewChange
        ),
        Role::Auditor => matches!(
            p,
            ReadBorrower | ReadNotice | ReadEvidence | ReadConsent | ReadReport | ReadAccessLog
        ),
        Role::Integration => matches!(
            p,
            ReadBorrower
                | WriteBook
                | WriteContact
                | WritePayment
                | ReadNotice
                | WriteEvidence
                | ReadConsent
                | WriteConsent
        ),
    }
}

/// The matrix as a Markdown table (README shows it; a test keeps the two the same).
pub fn matrix_markdown() -> String {
    let mut out = String::from("| permission | admin | operator | auditor | integration |\n|---|---|---|---|---|\n");
    for p in Permission::ALL {
        out.push_str(&format!("| {} |", p.describe()));
        for r in Role::ALL {
            out.push_str(if allows(r, p) { " yes |" } else { " — |" });
        }
        out.push('\n');
    }
    out
}

/// Who is calling: a token's id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub actor: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer rl_…`")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error(transparent)]
    Store(#[from] reachline_store::StoreError),
}

/// A token just made: the text to hand over once, and the record to store.
pub struct NewToken {
    pub token: String,
    pub record: TokenRecord,
}

fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// Hashes a secret (a token's or an operator's password) for storage, as a PHC string.
pub fn hash_secret(secret: &str, rng: &mut (impl RngCore + rand::CryptoRng)) -> String {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

/// Checks a secret against a stored PHC string (constant time inside argon2).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(secret.as_bytes(), &h).is_ok())
}

/// A new token for `role`, named for whoever holds it.
pub fn new_token(name: &str, role: Role, at: DateTime<Utc>, rng: &mut (impl RngCore + rand::CryptoRng)) -> NewToken {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    NewToken {
        token: format!("rl_{id}_{secret}"),
        record: TokenRecord {
            id,
            name: name.to_string(),
            role: role.as_str().to_string(),
            hash: hash_secret(&secret, rng),
            created_at: at,
            revoked_at: None,
        },
    }
}

/// Splits `rl_<id>_<secret>`.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("rl_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty() && id.len() <= 32 && secret.len() <= 128).then_some((id, secret))
}

/// Checks bearer tokens against the store, remembering those that verified for `ttl`.
pub struct TokenVerifier {
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    ttl: Duration,
}

impl TokenVerifier {
    pub fn new(ttl: Duration) -> Self {
        TokenVerifier {
            cache: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    pub async fn verify(&self, store: &dyn ServerStore, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((p, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            if at.elapsed() < self.ttl {
                return Ok(p.clone());
            }
        }
        let (id, secret) = split_token(token).ok_or(AuthError::Invalid)?;
        let record = store.token(id).await?.ok_or(AuthError::Invalid)?;
        if record.revoked_at.is_some() {
            return Err(AuthError::Invalid);
        }
        let role = Role::parse(&record.role).ok_or(AuthError::Invalid)?;
        let (secret, hash) = (secret.to_string(), record.hash.clone());
        // Argon2 is slow by design: off the async threads.
        let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(AuthError::Invalid);
        }
        let p = Principal {
            actor: format!("token:{}", record.id),
            role,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        cache.insert(digest, (p.clone(), Instant::now()));
        Ok(p)
    }

    /// Forgets every remembered token of `id` (after a revocation on this node).
    pub fn forget(&self, id: &str) {
        let actor = format!("token:{id}");
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (p, _)| p.actor != actor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_token_verifies_against_its_hash_and_nothing_else_does() {
        let mut rng = rand_chacha_like();
        let t = new_token("core banking", Role::Integration, Utc::now(), &mut rng);
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.record.id);
        assert!(t.record.hash.starts_with("$argon2id$"));
        assert!(!t.record.hash.contains(secret));
        assert!(verify_secret(secret, &t.record.hash));
        assert!(!verify_secret(&format!("{secret}0"), &t.record.hash));
        assert!(!verify_secret(secret, "not a hash"));
        assert_eq!(split_token("rl__x"), None);
        assert_eq!(split_token("bearer"), None);
    }

    #[test]
    fn admin_may_do_everything_and_only_admin_manages_tokens() {
        for p in Permission::ALL {
            assert!(allows(Role::Admin, p));
        }
        for r in [Role::Operator, Role::Auditor, Role::Integration] {
            assert!(!allows(r, Permission::ManageTokens), "{r:?}");
        }
        // Reading personal data in clear: admin and operator only.
        assert!(!allows(Role::Auditor, Permission::ReadUnmasked));
        assert!(!allows(Role::Integration, Permission::ReadUnmasked));
        // The auditor changes nothing.
        for p in [
            Permission::WriteBook,
            Permission::WriteContact,
            Permission::WritePayment,
            Permission::WriteEvidence,
            Permission::WriteConsent,
        ] {
            assert!(!allows(Role::Auditor, p), "{p:?}");
        }
    }

    fn rand_chacha_like() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }
}
