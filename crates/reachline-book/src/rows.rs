//! The rows of a loan book, every field as text: the book's files (CSV, JSON Lines) and the
//! API's upserts both read them, and [`crate::parse`] turns them into domain values field by
//! field so each error can name its field.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Text of one field, borrowed from the reader's buffer when it can be.
pub type Text<'a> = Cow<'a, str>;

/// A borrower row. Every field is text here; `parse` turns it into domain types field by field
/// so each error can name its field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowerRow<'a> {
    #[serde(borrow)]
    pub external_id: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub national_id_scheme: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub national_id: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub locale: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub time_zone: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub jurisdiction: Text<'a>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRow<'a> {
    #[serde(borrow)]
    pub borrower_id: Text<'a>,
    #[serde(borrow)]
    pub slot: Text<'a>,
    #[serde(borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub role: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub relation: Text<'a>,
    #[serde(borrow)]
    pub value: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub holder_name: Text<'a>,
    #[serde(borrow)]
    pub bound_since: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub verified_at: Text<'a>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoanRow<'a> {
    #[serde(borrow)]
    pub external_id: Text<'a>,
    #[serde(borrow)]
    pub borrower_id: Text<'a>,
    #[serde(borrow)]
    pub product: Text<'a>,
    #[serde(borrow)]
    pub principal: Text<'a>,
    #[serde(borrow)]
    pub currency: Text<'a>,
    #[serde(borrow)]
    pub disbursed_on: Text<'a>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallmentRow<'a> {
    #[serde(borrow)]
    pub loan_id: Text<'a>,
    #[serde(deserialize_with = "text_or_integer")]
    #[serde(borrow)]
    pub seq: Text<'a>,
    #[serde(borrow)]
    pub due_date: Text<'a>,
    #[serde(borrow)]
    pub amount_due: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub amount_paid: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub paid_at: Text<'a>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRow<'a> {
    #[serde(borrow)]
    pub borrower_id: Text<'a>,
    #[serde(borrow)]
    pub purpose: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    pub channel: Text<'a>,
    #[serde(borrow)]
    pub state: Text<'a>,
    #[serde(borrow)]
    pub at: Text<'a>,
    #[serde(borrow)]
    pub source: Text<'a>,
    #[serde(borrow)]
    pub text_version: Text<'a>,
}

/// Accepts a JSON string or integer for a text field (`"seq": 3` as well as `"seq": "3"`), so
/// JSON Lines books can write counts naturally. Amounts must be strings: a JSON number would
/// pass through a float.
fn text_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum T<'a> {
        #[serde(borrow)]
        S(Text<'a>),
        I(i64),
    }
    Ok(match T::deserialize(d)? {
        T::S(s) => s,
        T::I(i) => Cow::Owned(i.to_string()),
    })
}
