//! A borrower's own say in how they are reached: the channels they prefer, in order, and the
//! hours of the day they do not want to be contacted. Both only narrow what the lender's rules
//! allow: a preferred channel still needs consent and a working contact point, and quiet
//! hours never open a time the law closes.

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use crate::Channel;

/// A daily stretch of local time, `[start, end)`; it wraps past midnight when `end < start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// Why quiet hours were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreferencesError {
    #[error("quiet hours must start and end on different times")]
    EmptyQuietHours,
    #[error("quiet hours may cover at most {0} hours of the day")]
    QuietTooLong(u32),
    #[error("a channel is named twice")]
    RepeatedChannel,
}

/// The longest quiet stretch a borrower may ask for: notices must still find a time.
pub const MAX_QUIET_HOURS: u32 = 16;

impl QuietHours {
    pub fn new(start: NaiveTime, end: NaiveTime) -> Result<Self, PreferencesError> {
        let q = QuietHours { start, end };
        if start == end {
            return Err(PreferencesError::EmptyQuietHours);
        }
        if q.minutes() > MAX_QUIET_HOURS * 60 {
            return Err(PreferencesError::QuietTooLong(MAX_QUIET_HOURS));
        }
        Ok(q)
    }

    /// How long the stretch is, in minutes.
    pub fn minutes(&self) -> u32 {
        let m = (self.end - self.start).num_minutes();
        (if m < 0 { m + 24 * 60 } else { m }) as u32
    }

    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// A borrower's preferences; the default says nothing (the lender's order, no quiet hours of
/// their own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Preferred channels, the first most; channels not named follow in the lender's order.
    pub channels: Vec<Channel>,
    pub quiet: Option<QuietHours>,
}

impl Preferences {
    pub fn new(channels: Vec<Channel>, quiet: Option<QuietHours>) -> Result<Self, PreferencesError> {
        for (i, c) in channels.iter().enumerate() {
            if channels[..i].contains(c) {
                return Err(PreferencesError::RepeatedChannel);
            }
        }
        Ok(Preferences { channels, quiet })
    }

    /// `channels` ordered by these preferences: the preferred ones first (in the borrower's
    /// order), then the rest in theirs. Channels not in `channels` are never added.
    pub fn order(&self, channels: &[Channel]) -> Vec<Channel> {
        let mut out: Vec<Channel> = self.channels.iter().copied().filter(|c| channels.contains(c)).collect();
        out.extend(channels.iter().copied().filter(|c| !self.channels.contains(c)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, 0, 0).unwrap()
    }

    #[test]
    fn quiet_hours_wrap_midnight_and_are_bounded() {
        let night = QuietHours::new(t(21), t(9)).unwrap();
        assert_eq!(night.minutes(), 12 * 60);
        assert!(night.contains(t(23)) && night.contains(t(3)) && night.contains(t(21)));
        assert!(!night.contains(t(9)) && !night.contains(t(12)));
        let lunch = QuietHours::new(t(12), t(14)).unwrap();
        assert!(lunch.contains(t(13)) && !lunch.contains(t(14)) && !lunch.contains(t(8)));
        assert_eq!(QuietHours::new(t(8), t(8)), Err(PreferencesError::EmptyQuietHours));
        assert_eq!(QuietHours::new(t(8), t(7)), Err(PreferencesError::QuietTooLong(16)));
        assert!(QuietHours::new(t(18), t(10)).is_ok(), "16 hours is the most");
    }

    #[test]
    fn preferred_channels_come_first_and_add_nothing() {
        use Channel::*;
        let p = Preferences::new(vec![Email, Im], None).unwrap();
        assert_eq!(p.order(&[Sms, Push, Im, Email, Voice]), [Email, Im, Sms, Push, Voice]);
        assert_eq!(
            p.order(&[Sms, Voice]),
            [Sms, Voice],
            "email is not the lender's to use here"
        );
        assert_eq!(Preferences::default().order(&[Sms, Email]), [Sms, Email]);
        assert_eq!(
            Preferences::new(vec![Sms, Sms], None),
            Err(PreferencesError::RepeatedChannel)
        );
    }
}
