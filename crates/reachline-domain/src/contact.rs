//! `ContactPoint`: one way of reaching a person (a mobile or fixed number, an email address, a
//! push token, an IM account), its role for the borrower, and since when the lender knew it was
//! theirs. Contact points are effective-dated: a change of number is a new contact point and
//! the retirement of the old one, never an overwrite.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{Email, ExternalId, LineType, PersonName, PhoneNumber, PhoneParser};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    Mobile,
    Landline,
    Email,
    PushToken,
    ImAccount,
}

crate::named_enum!(ContactKind, "contact kind", {
    Mobile => "mobile",
    Landline => "landline",
    Email => "email",
    PushToken => "push_token",
    ImAccount => "im_account",
});

/// How an emergency contact is related to the borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Spouse,
    Parent,
    Child,
    Sibling,
    Relative,
    Friend,
    Colleague,
    Other,
}

crate::named_enum!(Relation, "relation", {
    Spouse => "spouse",
    Parent => "parent",
    Child => "child",
    Sibling => "sibling",
    Relative => "relative",
    Friend => "friend",
    Colleague => "colleague",
    Other => "other",
});

/// The role a contact point plays. An emergency contact is a third party: someone else's
/// number, reachable only under the third-party rules, with their relation to the borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "relation")]
pub enum ContactRole {
    Primary,
    Backup,
    Emergency(Relation),
}

impl ContactRole {
    pub fn name(self) -> &'static str {
        match self {
            ContactRole::Primary => "primary",
            ContactRole::Backup => "backup",
            ContactRole::Emergency(_) => "emergency",
        }
    }

    pub fn relation(self) -> Option<Relation> {
        match self {
            ContactRole::Emergency(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_third_party(self) -> bool {
        matches!(self, ContactRole::Emergency(_))
    }

    /// Builds a role from its stored or typed parts. `relation` is required for an emergency
    /// contact and refused for the borrower's own contact points.
    pub fn from_parts(role: &str, relation: Option<&str>) -> Result<Self, ContactError> {
        let relation = relation.map(str::trim).filter(|r| !r.is_empty());
        match (role.trim(), relation) {
            ("primary", None) => Ok(ContactRole::Primary),
            ("backup", None) => Ok(ContactRole::Backup),
            ("primary" | "backup", Some(_)) => Err(ContactError::RelationNotAllowed),
            ("emergency", Some(r)) => Ok(ContactRole::Emergency(r.parse().map_err(ContactError::Word)?)),
            ("emergency", None) => Err(ContactError::RelationMissing),
            (other, _) => Err(ContactError::Word(crate::UnknownVariant::new(
                "contact role",
                other,
                &["primary", "backup", "emergency"],
            ))),
        }
    }
}

/// Where the lender learnt of a contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactSource {
    /// The loan book (import or core-banking sync).
    Book,
    /// The borrower, on the self-service page or by reply.
    Borrower,
    /// An operator of the lender.
    Operator,
    /// An integration through the API.
    Api,
}

crate::named_enum!(ContactSource, "contact source", {
    Book => "book",
    Borrower => "borrower",
    Operator => "operator",
    Api => "api",
});

/// The address itself, typed by kind. Personal data throughout; `Debug` is masked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ContactAddress {
    Phone(PhoneNumber),
    Email(Email),
    /// An app push token, opaque to Reachline.
    PushToken(String),
    /// An IM account as `provider:account` (e.g. `wechat:wxid_abc`).
    Im {
        provider: String,
        account: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error(transparent)]
    Phone(#[from] crate::phone::PhoneError),
    #[error(transparent)]
    Email(#[from] crate::email::EmailError),
    #[error("number is a {0} line, not a mobile")]
    NotMobile(LineType),
    #[error("push token must be 1-4096 printable ASCII characters")]
    BadPushToken,
    #[error("IM account must be written provider:account, e.g. wechat:wxid_abc")]
    BadImAccount,
    #[error("an emergency contact needs a relation")]
    RelationMissing,
    #[error("only an emergency contact has a relation")]
    RelationNotAllowed,
    #[error("an emergency contact must be a phone number or an email address")]
    EmergencyKind,
    #[error(transparent)]
    Word(crate::UnknownVariant),
}

impl ContactAddress {
    /// Parses `text` as an address of `kind`. A mobile contact must be a mobile number (or one
    /// the numbering plan cannot tell from a fixed line, as in North America).
    pub fn parse(kind: ContactKind, text: &str, phones: &PhoneParser) -> Result<Self, ContactError> {
        match kind {
            ContactKind::Mobile => {
                let n = phones.parse(text)?;
                match n.line_type() {
                    LineType::Mobile | LineType::FixedLineOrMobile => Ok(ContactAddress::Phone(n)),
                    other => Err(ContactError::NotMobile(other)),
                }
            }
            ContactKind::Landline => Ok(ContactAddress::Phone(phones.parse(text)?)),
            ContactKind::Email => Ok(ContactAddress::Email(Email::parse(text)?)),
            ContactKind::PushToken => {
                let t = text.trim();
                if t.is_empty() || t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ContactError::BadPushToken);
                }
                Ok(ContactAddress::PushToken(t.into()))
            }
            ContactKind::ImAccount => {
                let (p, a) = text.trim().split_once(':').ok_or(ContactError::BadImAccount)?;
                let ok = |s: &str| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control);
                if !ok(p) || !ok(a) || !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                    return Err(ContactError::BadImAccount);
                }
                Ok(ContactAddress::Im {
                    provider: p.into(),
                    account: a.into(),
                })
            }
        }
    }

    /// The canonical text form: what is encrypted at rest and what the blind index is keyed on.
    /// Personal data: do not log it.
    pub fn canonical(&self) -> String {
        match self {
            ContactAddress::Phone(n) => n.e164().to_string(),
            ContactAddress::Email(e) => e.as_str().to_string(),
            ContactAddress::PushToken(t) => t.clone(),
            ContactAddress::Im { provider, account } => format!("{provider}:{account}"),
        }
    }

    /// Rebuilds an address from its canonical form as stored, without re-checking ranges.
    pub fn from_canonical(kind: ContactKind, text: &str, line: Option<LineType>) -> Result<Self, ContactError> {
        match kind {
            ContactKind::Mobile | ContactKind::Landline => Ok(ContactAddress::Phone(PhoneNumber::from_trusted_e164(
                text,
                line.unwrap_or(LineType::Other),
            )?)),
            other => Self::parse(other, text, &PhoneParser::default()),
        }
    }

    pub fn masked(&self) -> String {
        match self {
            ContactAddress::Phone(n) => n.masked(),
            ContactAddress::Email(e) => e.masked(),
            ContactAddress::PushToken(t) => format!("token …{}", &t[t.len().saturating_sub(4)..]),
            ContactAddress::Im { provider, account } => {
                format!("{provider}:{}", crate::mask::mask_name(account))
            }
        }
    }

    pub fn line_type(&self) -> Option<LineType> {
        match self {
            ContactAddress::Phone(n) => Some(n.line_type()),
            _ => None,
        }
    }
}

impl fmt::Debug for ContactAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContactAddress({})", self.masked())
    }
}

/// A contact point as the lender states it. What the store adds (its id, when it was added,
/// whether and why it was retired) lives in the store's record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPoint {
    /// The lender's name for this slot (e.g. `mobile`, `backup1`, `emergency1`): a later value
    /// in the same slot replaces this one.
    pub slot: ExternalId,
    pub kind: ContactKind,
    pub address: ContactAddress,
    pub role: ContactRole,
    /// The third party's name, for an emergency contact.
    pub holder_name: Option<PersonName>,
    /// The date from which the lender knew this address belonged to its holder: the input to
    /// every recycled-number check.
    pub bound_since: NaiveDate,
    pub source: ContactSource,
    pub verified_at: Option<DateTime<Utc>>,
}

impl ContactPoint {
    /// Checks the rules that tie the fields together.
    pub fn validate(&self) -> Result<(), ContactError> {
        if self.role.is_third_party()
            && !matches!(
                self.kind,
                ContactKind::Mobile | ContactKind::Landline | ContactKind::Email
            )
        {
            return Err(ContactError::EmergencyKind);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_their_kind() {
        let p = PhoneParser::default();
        assert!(matches!(
            ContactAddress::parse(ContactKind::Mobile, "13812345678", &p),
            Ok(ContactAddress::Phone(_))
        ));
        assert_eq!(
            ContactAddress::parse(ContactKind::Mobile, "010 1234 5678", &p),
            Err(ContactError::NotMobile(LineType::FixedLine))
        );
        assert!(ContactAddress::parse(ContactKind::Landline, "010 1234 5678", &p).is_ok());
        assert_eq!(
            ContactAddress::parse(ContactKind::ImAccount, "wechat:wxid_1", &p)
                .unwrap()
                .canonical(),
            "wechat:wxid_1"
        );
        assert_eq!(
            ContactAddress::parse(ContactKind::ImAccount, "nocolon", &p),
            Err(ContactError::BadImAccount)
        );
        assert_eq!(
            ContactAddress::parse(ContactKind::PushToken, "a b", &p),
            Err(ContactError::BadPushToken)
        );
    }

    #[test]
    fn roles() {
        assert_eq!(ContactRole::from_parts("primary", None).unwrap(), ContactRole::Primary);
        assert_eq!(
            ContactRole::from_parts("primary", Some("")).unwrap(),
            ContactRole::Primary
        );
        assert_eq!(
            ContactRole::from_parts("emergency", Some("spouse")).unwrap(),
            ContactRole::Emergency(Relation::Spouse)
        );
        assert_eq!(
            ContactRole::from_parts("emergency", None),
            Err(ContactError::RelationMissing)
        );
        assert_eq!(
            ContactRole::from_parts("backup", Some("friend")),
            Err(ContactError::RelationNotAllowed)
        );
        assert!(ContactRole::from_parts("boss", None).is_err());
    }
}
