//! A drill's scenario: the population, the simulated time, the gateways present and the faults
//! with their times. A TOML file; an unknown key is refused, naming it. The built-in scenarios
//! are the files in `drills/` (compiled in).

use chrono::{DateTime, Duration, Utc};
use reachline_domain::Channel;
use serde::{Deserialize, Serialize};

/// The built-in scenarios: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("smsc-down", include_str!("../../../../drills/smsc-down.toml")),
    ("smsc-throttle", include_str!("../../../../drills/smsc-throttle.toml")),
    (
        "smtp-bounce-all",
        include_str!("../../../../drills/smtp-bounce-all.toml"),
    ),
    ("push-5xx", include_str!("../../../../drills/push-5xx.toml")),
    ("intel-slow", include_str!("../../../../drills/intel-slow.toml")),
    ("intel-down", include_str!("../../../../drills/intel-down.toml")),
    ("db-restart", include_str!("../../../../drills/db-restart.toml")),
    ("mass-recycle", include_str!("../../../../drills/mass-recycle.toml")),
];

/// A span of simulated time written `2d`, `90m`, `1h30m`, `1d6h` (days, hours, minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span(pub Duration);

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a span of time such as 2d, 90m or 1h30m");
        let mut total = Duration::zero();
        let mut digits = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total += match c {
                'd' => Duration::days(n),
                'h' => Duration::hours(n),
                'm' => Duration::minutes(n),
                _ => return Err(bad()),
            };
            any = true;
        }
        if !digits.is_empty() || !any {
            return Err(bad());
        }
        Ok(Span(total))
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        let m = s.0.num_minutes();
        let (d, h, m) = (m / 1440, (m % 1440) / 60, m % 60);
        let mut out = String::new();
        for (n, u) in [(d, 'd'), (h, 'h'), (m, 'm')] {
            if n > 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
        if out.is_empty() {
            out.push_str("0m");
        }
        out
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(*self))
    }
}

/// A drill scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Borrowers in the generated book.
    #[serde(default = "default_borrowers")]
    pub borrowers: u64,
    /// Seeds the book, the world and the gateways' scripts: the control and the faulty run
    /// share it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where the simulated clock starts (RFC 3339, UTC).
    pub start: DateTime<Utc>,
    /// How long the simulated run lasts.
    pub duration: Span,
    /// How far the simulated clock moves between the engine's passes.
    #[serde(default = "default_tick")]
    pub tick: Span,
    #[serde(default)]
    pub channels: Channels,
    /// The send-time model on (`true`) or off for this drill; unset, as configured. Off, a
    /// notice's first send goes as soon as the gates allow (08:00 for the morning's notices),
    /// so a fault placed on the morning meets the sends whatever hours the model would draw.
    #[serde(default)]
    pub timing: Option<bool>,
    /// The faults, each with its kind, start and end (offsets from `start`).
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

fn default_borrowers() -> u64 {
    200
}

fn default_seed() -> u64 {
    1
}

fn default_tick() -> Span {
    Span(Duration::minutes(15))
}

/// The gateways the engine is given (all sandboxes, in process, on loopback).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Channels {
    /// SMSC accounts (sandbox SMSCs over SMPP), tried in this order: two or more make a
    /// failover group.
    pub sms: Vec<String>,
    /// A mail server (the sandbox SMTP server, taken as the recipients' own).
    pub email: bool,
    /// FCM push (the HTTP sandbox); borrowers with the app get a push token.
    pub push: bool,
    /// Share of borrowers with the app (a push token), when push is present.
    pub push_share: f64,
    /// The carrier lookup (a sandbox answering from the world's truth).
    pub carrier_lookup: bool,
    /// The ladder's channel order on each contact point (the engine's default when empty).
    pub order: Vec<Channel>,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            sms: vec!["smsc-a".into(), "smsc-b".into()],
            email: true,
            push: false,
            push_share: 0.5,
            carrier_lookup: true,
            order: Vec::new(),
        }
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// An SMSC drops every session and refuses connections (`provider`).
    SmscDown,
    /// An SMSC answers every submit with `ESME_RTHROTTLED` (`provider`).
    SmscThrottle,
    /// The mail server refuses every recipient with `reply` (default `550 5.1.1 …`).
    SmtpBounceAll,
    /// FCM answers every send with HTTP `status` (default 503).
    #[serde(rename = "push_5xx")]
    Push5xx,
    /// The carrier lookup answers after `delay_ms` of real time.
    IntelSlow,
    /// The carrier lookup does not answer (connection refused).
    IntelDown,
    /// The database goes away at `start` with the node on it (store closed, engine dropped),
    /// and both come back at `end`.
    DbRestart,
    /// At `start` the carriers recycle `share` of the borrowers' primary numbers: each is dead
    /// until `end`, then given to a stranger.
    MassRecycle,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::SmscDown => "smsc_down",
            FaultKind::SmscThrottle => "smsc_throttle",
            FaultKind::SmtpBounceAll => "smtp_bounce_all",
            FaultKind::Push5xx => "push_5xx",
            FaultKind::IntelSlow => "intel_slow",
            FaultKind::IntelDown => "intel_down",
            FaultKind::DbRestart => "db_restart",
            FaultKind::MassRecycle => "mass_recycle",
        }
    }

    /// The channel whose notices the fault hits, if one.
    pub fn channel(self) -> Option<Channel> {
        match self {
            FaultKind::SmscDown | FaultKind::SmscThrottle | FaultKind::MassRecycle => Some(Channel::Sms),
            FaultKind::SmtpBounceAll => Some(Channel::Email),
            FaultKind::Push5xx => Some(Channel::Push),
            _ => None,
        }
    }
}

/// One fault and when it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// When it begins, from the scenario's start.
    pub start: Span,
    /// When it ends, from the scenario's start.
    pub end: Span,
    /// smsc_down, smsc_throttle: which SMSC (by its name in `channels.sms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// smtp_bounce_all: the reply to every `RCPT TO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// push_5xx: the HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// intel_slow: how long each lookup takes (real milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// mass_recycle: the share of primary numbers recycled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

impl Fault {
    pub fn smtp_reply(&self) -> String {
        self.reply
            .clone()
            .unwrap_or_else(|| "550 5.1.1 mailbox unavailable".into())
    }

    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or(503)
    }
}

impl Scenario {
    /// Parses and checks a scenario file's text; errors name the key.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text).map_err(|e| anyhow::anyhow!("the scenario is refused: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    pub fn builtin(name: &str) -> Option<&'static str> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.duration.0
    }

    fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if !(1..=100_000).contains(&self.borrowers) {
            bail!("borrowers: {} is outside 1..=100000", self.borrowers);
        }
        if self.tick.0 < Duration::minutes(1) || self.tick.0 > Duration::hours(6) {
            bail!("tick: {} is outside 1m..=6h", self.tick);
        }
        if self.duration.0 < self.tick.0 || self.duration.0 > Duration::days(60) {
            bail!("duration: {} is outside one tick..=60d", self.duration);
        }
        if !(0.0..=1.0).contains(&self.channels.push_share) {
            bail!("channels.push_share: {} is outside 0..=1", self.channels.push_share);
        }
        let mut names = std::collections::HashSet::new();
        for n in &self.channels.sms {
            if n.is_empty() || !names.insert(n) {
                bail!("channels.sms: provider names must be distinct and not empty");
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault[{i}] ({})", f.kind.as_str());
            if f.end.0 <= f.start.0 {
                bail!("{at}: end {} is not after start {}", f.end, f.start);
            }
            if f.start.0 > self.duration.0 {
                bail!("{at}: start {} is after the drill's end ({})", f.start, self.duration);
            }
            let allowed: &[&str] = match f.kind {
                FaultKind::SmscDown | FaultKind::SmscThrottle => &["provider"],
                FaultKind::SmtpBounceAll => &["reply"],
                FaultKind::Push5xx => &["status"],
                FaultKind::IntelSlow => &["delay_ms"],
                FaultKind::MassRecycle => &["share"],
                FaultKind::IntelDown | FaultKind::DbRestart => &[],
            };
            for (key, set) in [
                ("provider", f.provider.is_some()),
                ("reply", f.reply.is_some()),
                ("status", f.status.is_some()),
                ("delay_ms", f.delay_ms.is_some()),
                ("share", f.share.is_some()),
            ] {
                if set && !allowed.contains(&key) {
                    bail!("{at}: `{key}` does not apply to this kind of fault");
                }
            }
            match f.kind {
                FaultKind::SmscDown | FaultKind::SmscThrottle => {
                    let p = f.provider.as_deref().unwrap_or("");
                    if !self.channels.sms.iter().any(|n| n == p) {
                        bail!("{at}: provider {p:?} is not one of channels.sms");
                    }
                }
                FaultKind::SmtpBounceAll if !self.channels.email => {
                    bail!("{at}: the scenario has no email channel (channels.email)")
                }
                FaultKind::SmtpBounceAll => {
                    let r = f.smtp_reply();
                    if !(r.starts_with('4') || r.starts_with('5')) || r.len() < 3 {
                        bail!("{at}: reply {r:?} is not a 4xx or 5xx SMTP reply");
                    }
                }
                FaultKind::Push5xx if !self.channels.push => {
                    bail!("{at}: the scenario has no push channel (channels.push)")
                }
                FaultKind::Push5xx if !(400..=599).contains(&f.http_status()) => {
                    bail!("{at}: status {} is not an HTTP error", f.http_status())
                }
                FaultKind::IntelSlow | FaultKind::IntelDown if !self.channels.carrier_lookup => {
                    bail!("{at}: the scenario has no carrier lookup (channels.carrier_lookup)")
                }
                FaultKind::IntelSlow if f.delay_ms.is_none_or(|d| d > 60_000) => {
                    bail!("{at}: delay_ms is required, at most 60000")
                }
                FaultKind::MassRecycle if f.share.is_none_or(|s| !(0.0..=1.0).contains(&s) || s == 0.0) => {
                    bail!("{at}: share is required, in (0, 1]")
                }
                _ => {}
            }
        }
        if self.channels.sms.is_empty() && !self.channels.email && !self.channels.push {
            bail!("channels: the drill needs at least one channel");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses_and_round_trips() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&s.name, name);
            assert!(!s.faults.is_empty(), "{name} injects a fault");
            let again = Scenario::parse(&toml::to_string(&s).unwrap()).unwrap();
            assert_eq!(again.faults.len(), s.faults.len());
        }
    }

    #[test]
    fn spans_parse_and_print() {
        assert_eq!(Span::try_from("1h30m".to_string()).unwrap().0, Duration::minutes(90));
        assert_eq!(String::from(Span(Duration::minutes(24 * 60 + 90))), "1d1h30m");
        assert!(Span::try_from("90".to_string()).is_err());
        assert!(Span::try_from("2x".to_string()).is_err());
    }

    #[test]
    fn unknown_keys_and_misplaced_parameters_are_refused_by_name() {
        let base = Scenario::builtin("smsc-down").unwrap();
        let e = Scenario::parse(&base.replace("duration =", "durration =")).unwrap_err();
        assert!(format!("{e:#}").contains("durration"), "{e:#}");
        let e = Scenario::parse(&format!(
            "{base}\n[[fault]]\nkind = \"intel_down\"\nstart = \"1h\"\nend = \"2h\"\nshare = 0.5\n"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("`share`"), "{e:#}");
    }
}
