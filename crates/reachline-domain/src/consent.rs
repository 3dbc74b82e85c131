//! `Consent`: the borrower's permission to be contacted for a purpose, on one channel or all,
//! granted or withdrawn at a time, from a source, against a version of the consent text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Channel;

/// Why a message is sent. Each purpose needs its own consent and has its own windows and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Disbursement, due reminders, payment received.
    Service,
    /// Overdue notices.
    Collection,
    /// One-time codes and number checks.
    Verification,
    /// Sharing data with a third party (an SMS vendor, an emergency contact).
    ThirdParty,
}

crate::named_enum!(Purpose, "purpose", {
    Service => "service",
    Collection => "collection",
    Verification => "verification",
    ThirdParty => "third_party",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Granted,
    Withdrawn,
}

crate::named_enum!(ConsentState, "consent state", {
    Granted => "granted",
    Withdrawn => "withdrawn",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    Contract,
    Page,
    Reply,
    Operator,
    Api,
}

crate::named_enum!(ConsentSource, "consent source", {
    Contract => "contract",
    Page => "page",
    Reply => "reply",
    Operator => "operator",
    Api => "api",
});

/// One consent event. The current consent for a (purpose, channel) is the latest event; a
/// channel-specific event overrides an all-channel one of the same time or earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub purpose: Purpose,
    /// `None` covers every channel.
    pub channel: Option<Channel>,
    pub state: ConsentState,
    pub at: DateTime<Utc>,
    pub source: ConsentSource,
    /// Version of the consent text the borrower saw.
    pub text_version: String,
}

/// Whether `events` leave `purpose` on `channel` permitted: the most recent event that covers
/// the channel decides; with no event, nothing is permitted.
impl Consent {
    /// A grant of every purpose on every channel at `at`: a contract that covers everything,
    /// as synthetic books, the simulator and tests start from.
    pub fn grant_all(at: DateTime<Utc>, source: ConsentSource, text_version: &str) -> Vec<Consent> {
        Purpose::ALL
            .iter()
            .map(|p| Consent {
                purpose: *p,
                channel: None,
                state: ConsentState::Granted,
                at,
                source,
                text_version: text_version.to_string(),
            })
            .collect()
    }
}

pub fn permits(events: &[Consent], purpose: Purpose, channel: Channel) -> bool {
    events
        .iter()
        .filter(|c| c.purpose == purpose && c.channel.is_none_or(|ch| ch == channel))
        // Later wins; at the same instant the channel-specific event wins.
        .max_by_key(|c| (c.at, c.channel.is_some()))
        .is_some_and(|c| c.state == ConsentState::Granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(purpose: Purpose, channel: Option<Channel>, state: ConsentState, t: i64) -> Consent {
        Consent {
            purpose,
            channel,
            state,
            at: DateTime::from_timestamp(t, 0).unwrap(),
            source: ConsentSource::Contract,
            text_version: "v1".into(),
        }
    }

    #[test]
    fn latest_covering_event_decides() {
        use ConsentState::*;
        let events = vec![
            ev(Purpose::Service, None, Granted, 100),
            ev(Purpose::Service, Some(Channel::Sms), Withdrawn, 200),
            ev(Purpose::Collection, Some(Channel::Email), Granted, 100),
        ];
        assert!(permits(&events, Purpose::Service, Channel::Email));
        assert!(!permits(&events, Purpose::Service, Channel::Sms));
        assert!(permits(&events, Purpose::Collection, Channel::Email));
        assert!(!permits(&events, Purpose::Collection, Channel::Sms));
        assert!(!permits(&events, Purpose::Verification, Channel::Sms));
        let mut later = events.clone();
        later.push(ev(Purpose::Service, None, Granted, 300));
        assert!(permits(&later, Purpose::Service, Channel::Sms));
    }
}
