//! Number intelligence, the pure half: what a carrier or registry lookup can answer, and the
//! exact semantics of a recycled-number ("二次号" / Reassigned Numbers Database) query.
//!
//! The lookups themselves (an HTTP vendor, a loaded disconnection file) are IO and live in the
//! shell; they return these types, and contact health reads them as evidence.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A carrier's answer to "what state is this number in?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberStatus {
    /// In service.
    Normal,
    /// Not allocated to any subscriber (空号).
    Empty,
    /// Barred, usually for non-payment (停机); may come back.
    Suspended,
    /// Cancelled by the subscriber or the carrier (销号); will be recycled after a freeze.
    Cancelled,
    /// Switched off or out of coverage now (关机): says nothing about ownership.
    PoweredOff,
    /// The carrier did not say.
    Unknown,
}

reachline_domain::named_enum!(NumberStatus, "number status", {
    Normal => "normal",
    Empty => "empty",
    Suspended => "suspended",
    Cancelled => "cancelled",
    PoweredOff => "powered_off",
    Unknown => "unknown",
});

/// The three answers of a recycled-number query: has the number been permanently disconnected
/// (and so possibly given to someone else) on or after the date the lender last knew it was
/// the borrower's?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecycleAnswer {
    /// Disconnected on or after that date: it may have changed hands. Blocks the number and asks
    /// for re-verification.
    Yes,
    /// Not disconnected since that date: still the borrower's as far as the registry knows.
    No,
    /// The registry cannot tell. Leaves the number unverified.
    NoData,
}

reachline_domain::named_enum!(RecycleAnswer, "recycled-number answer", {
    Yes => "yes",
    No => "no",
    NoData => "no_data",
});

/// The day the FCC Reassigned Numbers Database starts to hold complete data (FCC DA 21-1649):
/// a number absent from it is known not to have been disconnected since then.
pub const RND_COMPLETE_SINCE: NaiveDate = match NaiveDate::from_ymd_opt(2021, 1, 27) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// The recycled-number answer from a disconnection registry, with the FCC's semantics:
///
/// - **yes**: the number's last permanent disconnection is on or after `since`;
/// - **no**: it is in the registry and was last disconnected before `since`, or it is not in
///   the registry and `since` is on or after the day the registry became complete;
/// - **no data**: otherwise (not in the registry, and `since` is earlier than its data).
///
/// `last_disconnect` is the latest disconnection the registry holds for the number, if any.
pub fn recycled_since(
    last_disconnect: Option<NaiveDate>,
    since: NaiveDate,
    complete_since: NaiveDate,
) -> RecycleAnswer {
    match last_disconnect {
        Some(d) if d >= since => RecycleAnswer::Yes,
        Some(_) => RecycleAnswer::No,
        None if since >= complete_since => RecycleAnswer::No,
        None => RecycleAnswer::NoData,
    }
}

/// An answer about a SIM swap or a port since a date: whether one happened, and when if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSince {
    pub since: NaiveDate,
    pub changed: bool,
    pub on: Option<NaiveDate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_three_answers_follow_the_fcc_rules() {
        let c = RND_COMPLETE_SINCE;
        // Disconnected on the very day the lender last knew it: yes (on or after).
        assert_eq!(
            recycled_since(Some(d("2024-03-01")), d("2024-03-01"), c),
            RecycleAnswer::Yes
        );
        assert_eq!(
            recycled_since(Some(d("2024-05-01")), d("2024-03-01"), c),
            RecycleAnswer::Yes
        );
        // Disconnected before: the borrower got it afterwards, or kept it.
        assert_eq!(
            recycled_since(Some(d("2024-02-29")), d("2024-03-01"), c),
            RecycleAnswer::No
        );
        // Absent: "no" only if the date is inside the registry's complete period.
        assert_eq!(recycled_since(None, d("2021-01-27"), c), RecycleAnswer::No);
        assert_eq!(recycled_since(None, d("2021-01-26"), c), RecycleAnswer::NoData);
        // A disconnection record answers even for dates before the complete period.
        assert_eq!(
            recycled_since(Some(d("2020-01-01")), d("2019-06-01"), c),
            RecycleAnswer::Yes
        );
        assert_eq!(
            recycled_since(Some(d("2019-01-01")), d("2019-06-01"), c),
            RecycleAnswer::No
        );
    }
}
