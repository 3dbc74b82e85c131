//! Reachline's value types, parsed once at the edge so that a value that exists is valid.
//!
//! Architecture Invariant: this crate does no IO, reads no clock and draws no randomness. Every
//! constructor that takes outside input returns a `Result` whose error says what is wrong without
//! echoing the personal data it was given, so errors can be logged safely.

pub mod borrower;
pub mod carrier;
pub mod consent;
pub mod contact;
pub mod date;
pub mod delivery;
pub mod email;
pub mod ids;
pub mod loan;
pub mod locale;
pub mod mask;
pub mod money;
pub mod national_id;
pub mod phone;
pub mod preferences;

pub use borrower::{Borrower, Jurisdiction, PersonName};
pub use carrier::{original_carrier, OriginalCarrier};
pub use consent::{Consent, ConsentSource, ConsentState, Purpose};
pub use contact::{ContactAddress, ContactKind, ContactPoint, ContactRole, ContactSource, Relation};
pub use delivery::DeliveryClass;
pub use email::Email;
pub use ids::{BorrowerId, ContactId, ExternalId, InstallmentId, LoanId};
pub use loan::{Installment, Loan};
pub use locale::Locale;
pub use money::{Currency, Money};
pub use national_id::NationalId;
pub use phone::{LineType, PhoneNumber, PhoneParser, RangeOverride};
pub use preferences::{Preferences, QuietHours};

/// A channel a notice can travel on. Closed set: adding one is a change to every match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Voice,
    Email,
    Push,
    Im,
}

crate::named_enum!(Channel, "channel", {
    Sms => "sms",
    Voice => "voice",
    Email => "email",
    Push => "push",
    Im => "im",
});

/// The error for a word that is not one of a closed set's names; it lists the accepted names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {}; expected one of: {expected}", quoted(given))]
pub struct UnknownVariant {
    pub what: &'static str,
    pub given: String,
    pub expected: String,
}

impl UnknownVariant {
    pub fn new(what: &'static str, given: &str, expected: &[&str]) -> Self {
        // The given word is normally a code such as "mobile". Anything else (a number or an
        // address in the wrong column) may be personal data and is described, not repeated.
        let word = given.trim();
        let plain = word.len() <= 24 && word.chars().all(|c| c.is_ascii_alphabetic() || "_- /".contains(c));
        let given = if plain {
            word.to_string()
        } else {
            format!("<{} characters>", word.chars().count())
        };
        Self {
            what,
            given,
            expected: expected.join(", "),
        }
    }
}

fn quoted(given: &str) -> String {
    if given.starts_with('<') {
        given.to_string()
    } else {
        format!("{given:?}")
    }
}

/// Implements `as_str`, `FromStr` and `Display` for a unit-only enum from one table of names,
/// so the names used in files, the database and messages cannot drift apart.
#[macro_export]
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = $crate::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim() {
                    $($name => Ok($ty::$variant),)+
                    other => Err($crate::UnknownVariant::new($what, other, &[$($name),+])),
                }
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // `pad`, so width and alignment (`{:<9}`) work in tables.
                f.pad(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_words_are_repeated_only_when_they_cannot_be_personal_data() {
        let e = UnknownVariant::new("contact kind", "fax", &["mobile"]);
        assert_eq!(e.to_string(), "unknown contact kind \"fax\"; expected one of: mobile");
        let e = UnknownVariant::new("contact kind", "13812345678", &["mobile"]);
        assert!(!e.to_string().contains("138"), "{e}");
        assert!(e.to_string().contains("<11 characters>"), "{e}");
        assert!(!UnknownVariant::new("x", "wei@example.com", &[])
            .to_string()
            .contains("wei"));
    }
}
