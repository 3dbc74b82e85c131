//! Evidence timelines in a plain-text format: how contact-health stories are written, tested and
//! replayed (`reachline health replay FILE`), by engineers, operators and auditors alike.
//!
//! ```text
//! # comment
//! zone Asia/Shanghai
//! contact 1 mobile primary bound=2023-01-05 [verified=2023-01-05] [retired]
//! contact 9 mobile parent bound=2023-01-05          # an emergency contact: its relation as role
//! 2025-03-01[T09:30] <contact id | -> <kind> [arguments]
//! expect 2025-03-02 <contact id> <state>            # the state at the end of that day
//! expect 2025-03-02 borrower unreachable|reachable
//! now 2025-09-01                                    # the end of the replay (default: the last day named)
//! ```
//!
//! Kinds: `delivery <channel> <class>`, `reply <channel> <reply class>`, `click <channel>`,
//! `call <outcome>`, `carrier <status>`, `recycled <since> <yes|no|no_data>`,
//! `simswap <since> <yes|no>`, `ported <since> <yes|no>`, `code`,
//! `self <still_mine|changed_number|not_mine>`,
//! `operator <verify|mark_dead|mark_reassigned|retire|reinstate>`, `payment <via|elsewhere>`
//! (`-` as the contact for a payment made elsewhere). Times are borrower-local; a date alone
//! means 12:00. Evidence ids are line numbers, so a transition names the lines that caused it.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use reachline_domain::{ContactId, ContactKind, ContactRole};

use crate::evidence::{Evidence, EvidenceId, EvidenceKind, Source};
use crate::health::{assess_borrower, BorrowerHealth, ContactFacts, HealthConfig};

/// A parsed timeline.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub zone: Tz,
    pub contacts: Vec<ContactFacts>,
    pub evidence: Vec<Evidence>,
    pub expects: Vec<Expect>,
    pub now: DateTime<Utc>,
}

/// An expectation written in the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    State {
        line: usize,
        day: NaiveDate,
        contact: i64,
        state: String,
    },
    Reachable {
        line: usize,
        day: NaiveDate,
        reachable: bool,
    },
}

/// A line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TimelineError {
    pub line: usize,
    pub message: String,
}

/// The last moment of a borrower-local day.
pub fn end_of_day(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    let t = day.and_hms_opt(23, 59, 59).unwrap_or_default();
    zone.from_local_datetime(&t)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&t), |d| d.with_timezone(&Utc))
}

fn word<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| format!("{what}: {e}"))
}

fn date(s: &str) -> Result<NaiveDate, String> {
    reachline_domain::date::parse_ymd(s).ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn when(zone: Tz, s: &str) -> Result<DateTime<Utc>, String> {
    let local = match s.split_once('T') {
        Some((d, t)) => {
            let t = NaiveTime::parse_from_str(t, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
                .map_err(|_| format!("{t:?} is not a time (HH:MM)"))?;
            NaiveDateTime::new(date(d)?, t)
        }
        None => NaiveDateTime::new(date(s)?, NaiveTime::from_hms_opt(12, 0, 0).unwrap_or_default()),
    };
    zone.from_local_datetime(&local)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("{s} does not exist in {zone}"))
}

fn yes(s: &str) -> Result<bool, String> {
    match s {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("expected yes or no, got {other:?}")),
    }
}

/// Parses a timeline; the first bad line is reported with its number.
pub fn parse(text: &str) -> Result<Timeline, TimelineError> {
    let mut t = Timeline {
        zone: chrono_tz::Asia::Shanghai,
        contacts: Vec::new(),
        evidence: Vec::new(),
        expects: Vec::new(),
        now: DateTime::<Utc>::MIN_UTC,
    };
    let mut now = None;
    let mut last_day: Option<NaiveDate> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        parse_line(&mut t, &mut now, &mut last_day, line, content)
            .map_err(|message| TimelineError { line, message })?;
    }
    t.now = match (now, last_day) {
        (Some(n), _) => n,
        (None, Some(d)) => end_of_day(t.zone, d),
        (None, None) => {
            return Err(TimelineError {
                line: text.lines().count().max(1),
                message: "a timeline needs evidence, an expectation or a now line".into(),
            })
        }
    };
    Ok(t)
}

fn parse_line(
    t: &mut Timeline,
    now: &mut Option<DateTime<Utc>>,
    last_day: &mut Option<NaiveDate>,
    line: usize,
    content: &str,
) -> Result<(), String> {
    let w: Vec<&str> = content.split_whitespace().collect();
    let arg = |i: usize| {
        w.get(i)
            .copied()
            .ok_or_else(|| format!("missing argument {i} of {:?}", w[0]))
    };
    let mut saw = |d: NaiveDate| *last_day = Some(last_day.map_or(d, |l| l.max(d)));
    match w[0] {
        "zone" => t.zone = arg(1)?.parse().map_err(|_| format!("unknown time zone {:?}", w[1]))?,
        "now" => *now = Some(end_of_day(t.zone, date(arg(1)?)?)),
        "contact" => {
            let mut c = ContactFacts {
                id: ContactId(word(arg(1)?, "contact id")?),
                kind: word::<ContactKind>(arg(2)?, "contact kind")?,
                role: match arg(3)? {
                    "primary" => ContactRole::Primary,
                    "backup" => ContactRole::Backup,
                    r => ContactRole::from_parts("emergency", Some(r)).map_err(|e| e.to_string())?,
                },
                bound_since: NaiveDate::MIN,
                verified_at: None,
                retired: false,
            };
            for a in &w[4..] {
                match a.split_once('=') {
                    Some(("bound", d)) => c.bound_since = date(d)?,
                    Some(("verified", d)) => c.verified_at = Some(when(t.zone, d)?),
                    None if *a == "retired" => c.retired = true,
                    _ => return Err(format!("unknown contact attribute {a:?}")),
                }
            }
            if c.bound_since == NaiveDate::MIN {
                return Err("a contact needs bound=YYYY-MM-DD".into());
            }
            t.contacts.push(c);
        }
        "expect" => {
            let day = date(arg(1)?)?;
            saw(day);
            if arg(2)? == "borrower" {
                let reachable = match arg(3)? {
                    "reachable" => true,
                    "unreachable" => false,
                    o => return Err(format!("expected reachable or unreachable, got {o:?}")),
                };
                t.expects.push(Expect::Reachable { line, day, reachable });
            } else {
                let state = arg(3)?;
                word::<crate::health::HealthState>(state, "state")?;
                t.expects.push(Expect::State {
                    line,
                    day,
                    contact: word(arg(2)?, "contact id")?,
                    state: state.to_string(),
                });
            }
        }
        _ => {
            let at = when(t.zone, w[0])?;
            saw(at.with_timezone(&t.zone).date_naive());
            let contact = match arg(1)? {
                "-" => None,
                id => Some(ContactId(word(id, "contact id")?)),
            };
            let lookup = || Source::Lookup("timeline".into());
            let (source, kind) = match arg(2)? {
                "delivery" => (
                    Source::Provider("timeline".into()),
                    EvidenceKind::Delivery {
                        channel: word(arg(3)?, "channel")?,
                        class: word(arg(4)?, "delivery class")?,
                    },
                ),
                "reply" => (
                    Source::Holder,
                    EvidenceKind::Reply {
                        channel: word(arg(3)?, "channel")?,
                        class: word(arg(4)?, "reply class")?,
                    },
                ),
                "click" => (
                    Source::Holder,
                    EvidenceKind::LinkClick {
                        channel: word(arg(3)?, "channel")?,
                    },
                ),
                "call" => (
                    Source::Provider("timeline".into()),
                    EvidenceKind::Call {
                        outcome: word(arg(3)?, "call outcome")?,
                    },
                ),
                "carrier" => (
                    lookup(),
                    EvidenceKind::CarrierStatus {
                        status: word(arg(3)?, "number status")?,
                    },
                ),
                "recycled" => (
                    lookup(),
                    EvidenceKind::Recycled {
                        since: date(arg(3)?)?,
                        answer: word(arg(4)?, "recycled answer")?,
                    },
                ),
                "simswap" => (
                    lookup(),
                    EvidenceKind::SimSwap {
                        since: date(arg(3)?)?,
                        swapped: yes(arg(4)?)?,
                    },
                ),
                "ported" => (
                    lookup(),
                    EvidenceKind::Ported {
                        since: date(arg(3)?)?,
                        ported: yes(arg(4)?)?,
                    },
                ),
                "code" => (Source::Borrower, EvidenceKind::CodeConfirmed),
                "self" => (
                    Source::Borrower,
                    EvidenceKind::SelfReport {
                        report: word(arg(3)?, "self report")?,
                    },
                ),
                "operator" => (
                    Source::Operator("timeline".into()),
                    EvidenceKind::Operator {
                        action: word(arg(3)?, "operator action")?,
                    },
                ),
                "payment" => (
                    Source::CoreBanking,
                    EvidenceKind::Payment {
                        via_contact: match arg(3)? {
                            "via" => true,
                            "elsewhere" => false,
                            o => return Err(format!("expected via or elsewhere, got {o:?}")),
                        },
                    },
                ),
                other => return Err(format!("unknown evidence kind {other:?}")),
            };
            if let Some(c) = contact {
                if !t.contacts.iter().any(|x| x.id == c) {
                    return Err(format!("contact {} is not declared above", c.0));
                }
            }
            t.evidence.push(Evidence {
                id: EvidenceId(line as u64),
                contact,
                at,
                source,
                kind,
            });
        }
    }
    Ok(())
}

impl Timeline {
    /// Health at the end of the replay (`now`).
    pub fn assess(&self, cfg: &HealthConfig) -> BorrowerHealth {
        self.assess_at(self.now, cfg)
    }

    pub fn assess_at(&self, at: DateTime<Utc>, cfg: &HealthConfig) -> BorrowerHealth {
        assess_borrower(&self.contacts, &self.evidence, self.zone, at, cfg)
    }

    /// Every expectation that does not hold, as a sentence naming its line.
    pub fn failed_expectations(&self, cfg: &HealthConfig) -> Vec<String> {
        let mut failures = Vec::new();
        for x in &self.expects {
            match x {
                Expect::State {
                    line,
                    day,
                    contact,
                    state,
                } => {
                    let h = self.assess_at(end_of_day(self.zone, *day), cfg);
                    match h.contacts.iter().find(|a| a.contact.0 == *contact) {
                        None => failures.push(format!("line {line}: no contact {contact}")),
                        Some(a) if a.state.as_str() != state => failures.push(format!(
                            "line {line}: contact {contact} on {day}: expected {state}, got {} ({})",
                            a.state, a.rule
                        )),
                        Some(_) => {}
                    }
                }
                Expect::Reachable { line, day, reachable } => {
                    let h = self.assess_at(end_of_day(self.zone, *day), cfg);
                    if h.reachable != *reachable {
                        failures.push(format!(
                            "line {line}: borrower on {day}: expected {}",
                            if *reachable { "reachable" } else { "unreachable" }
                        ));
                    }
                }
            }
        }
        failures
    }

    /// A readable account of the outcome: each contact's state, score, needs and transitions
    /// (with the evidence lines that caused them), then the events.
    pub fn render(&self, h: &BorrowerHealth) -> String {
        let mut out = String::new();
        for a in &h.contacts {
            let kind = self
                .contacts
                .iter()
                .find(|c| c.id == a.contact)
                .map_or("?".to_string(), |c| c.kind.to_string());
            let needs: Vec<String> = a
                .needs
                .iter()
                .map(|n| match n {
                    crate::health::Need::CarrierCheck => "carrier_check".to_string(),
                    crate::health::Need::RecycledCheck { since } => format!("recycled_check since {since}"),
                    crate::health::Need::Reverify => "reverify".to_string(),
                })
                .collect();
            let _ = writeln!(
                out,
                "contact {} ({kind} {}): {} since {} by {}; score {:.2}; needs [{}]",
                a.contact.0,
                a.role.name(),
                a.state,
                a.since,
                a.rule,
                a.score,
                needs.join(", ")
            );
            for tr in &a.transitions {
                let _ = writeln!(
                    out,
                    "  {} {:<10} -> {:<10} {:<32} {:?}",
                    tr.day,
                    tr.from,
                    tr.to,
                    tr.rule,
                    tr.evidence.iter().map(|e| e.0).collect::<Vec<_>>()
                );
            }
        }
        out.push_str("events:\n");
        for e in &h.events {
            let _ = writeln!(
                out,
                "  {} {:<20} {:<10} {:<32} {:?}",
                e.day,
                e.kind,
                e.contact.map_or("borrower".to_string(), |c| format!("contact {}", c.0)),
                e.rule,
                e.evidence.iter().map(|e| e.0).collect::<Vec<_>>()
            );
        }
        let _ = writeln!(
            out,
            "borrower: {}",
            match h.unreachable_since {
                Some(d) => format!("unreachable since {d}"),
                None if h.reachable => "reachable".to_string(),
                None => "unreachable".to_string(),
            }
        );
        out
    }
}
