//! `Borrower`: the person a lender must reach, with the locale their notices are written in and
//! the IANA time zone their quiet hours are judged in.

use std::fmt;

use chrono_tz::Tz;

use crate::{ExternalId, Locale, NationalId};

/// Which contact-law profile applies to a borrower (see the rules document). Closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jurisdiction {
    Cn,
    Us,
}

crate::named_enum!(Jurisdiction, "jurisdiction", {
    Cn => "cn",
    Us => "us",
});

/// A person's name as the lender holds it: 1–100 characters, no control characters. Masked in
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} characters long; at most 100 are allowed")]
    TooLong(usize),
    #[error("name contains a control character")]
    ControlCharacter,
}

impl PersonName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(NameError::Empty);
        }
        let n = t.chars().count();
        if n > 100 {
            return Err(NameError::TooLong(n));
        }
        if t.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(t.to_string()))
    }

    /// The full name. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        crate::mask::mask_name(&self.0)
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonName({})", self.masked())
    }
}

/// Parses an IANA zone name such as `Asia/Shanghai`.
pub fn parse_time_zone(s: &str) -> Result<Tz, crate::UnknownVariant> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| crate::UnknownVariant::new("time zone", s, &["an IANA zone name such as Asia/Shanghai"]))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Borrower {
    pub external_id: ExternalId,
    pub name: PersonName,
    pub national_id: Option<NationalId>,
    pub locale: Locale,
    pub time_zone: Tz,
    pub jurisdiction: Jurisdiction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_zones() {
        assert_eq!(PersonName::parse(" 张伟 ").unwrap().as_str(), "张伟");
        assert_eq!(PersonName::parse("  "), Err(NameError::Empty));
        assert_eq!(PersonName::parse("a\u{7}b"), Err(NameError::ControlCharacter));
        assert_eq!(format!("{:?}", PersonName::parse("张伟").unwrap()), "PersonName(张*)");
        assert_eq!(parse_time_zone("Asia/Shanghai").unwrap(), chrono_tz::Asia::Shanghai);
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }
}
