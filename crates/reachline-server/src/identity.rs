//! Identity checks through a provider: does this name and national ID belong to the person
//! who holds this phone number (China's 三要素 check, offered by carriers and identity
//! vendors)? A number change may be authorised by one instead of a code to an old channel.
//!
//! [`SandboxIdentity`] is the built-in sandbox: it answers "match" for every number except
//! those it was told belong to someone else; the server first compares the name and ID with
//! the lender's own record, so the sandbox stands in only for the carrier's side.

use std::collections::HashSet;

use async_trait::async_trait;
use reachline_domain::{NationalId, PersonName, PhoneNumber};

/// A provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    /// The provider could not say (down, no data): the change is not authorised by it.
    Unknown,
}

#[async_trait]
pub trait IdentityCheck: Send + Sync {
    fn name(&self) -> &str;
    /// Whether `number` is registered to the person with `name` and `id`.
    async fn three_factor(&self, name: &PersonName, id: &NationalId, number: &PhoneNumber) -> Verdict;
}

/// The sandbox provider (see the module docs).
#[derive(Debug, Default)]
pub struct SandboxIdentity {
    /// Numbers (E.164) registered to someone else.
    pub others: HashSet<String>,
}

#[async_trait]
impl IdentityCheck for SandboxIdentity {
    fn name(&self) -> &str {
        "identity-sandbox"
    }

    async fn three_factor(&self, _: &PersonName, _: &NationalId, number: &PhoneNumber) -> Verdict {
        if self.others.contains(number.e164()) {
            Verdict::Mismatch
        } else {
            Verdict::Match
        }
    }
}
