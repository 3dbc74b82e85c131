//! `DeliveryClass`: what one delivery outcome says about a contact point. Channels turn every
//! receipt, error and call outcome into one of these; contact health weighs them.

use serde::{Deserialize, Serialize};

/// The class of a delivery outcome, as the table in the channels design defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryClass {
    /// The handset, mailbox or device accepted it. Weak: a recycled number also delivers.
    Delivered,
    /// Read, clicked, replied, keyed, confirmed: the holder acted on it.
    Engaged,
    /// A reply or call outcome says "not me / wrong number": the strongest sign of reassignment.
    WrongParty,
    /// Permanent: the address does not exist or is switched off for good (a hard failure).
    Dead,
    /// Exists but barred (停机), for non-payment or similar; may recover.
    Suspended,
    /// Absent, busy, full, throttled, timed out: retry later.
    Transient,
    /// Our side: sender, payload, credentials, content blocked. Never the number's fault.
    OurFault,
    /// No receipt, or an unmapped code.
    Unknown,
}

crate::named_enum!(DeliveryClass, "delivery class", {
    Delivered => "delivered",
    Engaged => "engaged",
    WrongParty => "wrong_party",
    Dead => "dead",
    Suspended => "suspended",
    Transient => "transient",
    OurFault => "our_fault",
    Unknown => "unknown",
});

impl DeliveryClass {
    /// A failure that says the address itself is gone or barred, not that the moment was bad.
    pub fn is_hard_failure(self) -> bool {
        matches!(self, DeliveryClass::Dead)
    }
}
