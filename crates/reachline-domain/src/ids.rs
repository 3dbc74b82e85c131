//! Identifiers. Internal ids are database keys wrapped in distinct types so a loan id can never
//! be passed where a borrower id is expected; external ids are the lender's own keys from the
//! loan book, validated once.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! internal_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

internal_id!(BorrowerId, "A borrower's key in Reachline's store.");
internal_id!(
    ContactId,
    "A contact point's key; one per (borrower, address, binding period)."
);
internal_id!(LoanId, "A loan's key in Reachline's store.");
internal_id!(InstallmentId, "An installment's key in Reachline's store.");

/// A lender's own identifier for a borrower, loan or contact slot: 1–64 printable ASCII
/// characters without spaces, so it is safe in file names, URLs and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalIdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} characters long; at most 64 are allowed")]
    TooLong(usize),
    #[error("id may hold only ASCII letters, digits and - _ . : / (found a character at position {0} that is not)")]
    BadCharacter(usize),
}

impl ExternalId {
    pub fn parse(s: &str) -> Result<Self, ExternalIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ExternalIdError::Empty);
        }
        if s.len() > 64 {
            return Err(ExternalIdError::TooLong(s.chars().count()));
        }
        if let Some(pos) = s
            .chars()
            .position(|c| !(c.is_ascii_alphanumeric() || "-_.:/".contains(c)))
        {
            return Err(ExternalIdError::BadCharacter(pos));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExternalId {
    type Error = ExternalIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ExternalId> for String {
    fn from(id: ExternalId) -> String {
        id.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids() {
        assert_eq!(ExternalId::parse(" B-0001 ").unwrap().as_str(), "B-0001");
        assert_eq!(ExternalId::parse(""), Err(ExternalIdError::Empty));
        assert_eq!(ExternalId::parse("a b"), Err(ExternalIdError::BadCharacter(1)));
        assert_eq!(ExternalId::parse(&"x".repeat(65)), Err(ExternalIdError::TooLong(65)));
    }
}
