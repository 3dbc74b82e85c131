//! Reply classes (the classifier itself lands with its labelled table).

use serde::{Deserialize, Serialize};

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    Acknowledged,
    WrongNumber,
    OptOut,
    Dispute,
    WillPay,
    Paid,
    NewNumber,
    Other,
}

reachline_domain::named_enum!(ReplyClass, "reply class", {
    Acknowledged => "acknowledged",
    WrongNumber => "wrong_number",
    OptOut => "opt_out",
    Dispute => "dispute",
    WillPay => "will_pay",
    Paid => "paid",
    NewNumber => "new_number",
    Other => "other",
});
