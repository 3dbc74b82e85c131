//! The timeline format the contact-health tests are written in, and its parser.
//!
//! ```text
//! # comment
//! zone Asia/Shanghai
//! contact 1 mobile primary bound=2023-01-05 [verified=2023-01-05] [retired]
//! 2025-03-01[T09:30] <contact id | -> <kind> [arguments]
//! expect 2025-03-02 <contact id> <state>        # the state at the end of that day
//! expect 2025-03-02 borrower unreachable|reachable
//! now 2025-09-01                                   # the end of the replay (default: last line's day)
//! ```
//!
//! Kinds: `delivery <channel> <class>`, `reply <channel> <reply class>`, `click <channel>`,
//! `call <outcome>`, `carrier <status>`, `recycled <since> <yes|no|no_data>`,
//! `simswap <since> <yes|no>`, `ported <since> <yes|no>`, `code`, `self <still_mine|
//! changed_number|not_mine>`, `operator <verify|mark_dead|mark_reassigned|retire|reinstate>`,
//! `payment <via|elsewhere>`. Times are borrower-local; a date alone means 12:00.

#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use reachline_domain::{ContactId, ContactKind, ContactRole};
use reachline_policy::{ContactFacts, Evidence, EvidenceId, EvidenceKind, OperatorAction, SelfReport, Source};

pub struct Timeline {
    pub name: String,
    pub zone: Tz,
    pub contacts: Vec<ContactFacts>,
    pub evidence: Vec<Evidence>,
    pub expects: Vec<Expect>,
    pub now: DateTime<Utc>,
}

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

pub fn end_of_day(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    zone.from_local_datetime(&day.and_hms_opt(23, 59, 59).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn when(zone: Tz, s: &str) -> DateTime<Utc> {
    let local = if let Some((d, t)) = s.split_once('T') {
        let t = if t.len() == 5 { format!("{t}:00") } else { t.to_string() };
        NaiveDateTime::new(d.parse().unwrap(), NaiveTime::parse_from_str(&t, "%H:%M:%S").unwrap())
    } else {
        NaiveDateTime::new(s.parse().unwrap(), NaiveTime::from_hms_opt(12, 0, 0).unwrap())
    };
    zone.from_local_datetime(&local).earliest().unwrap().with_timezone(&Utc)
}

fn yes(s: &str) -> bool {
    match s {
        "yes" => true,
        "no" => false,
        other => panic!("expected yes or no, got {other}"),
    }
}

pub fn parse(name: &str, text: &str) -> Timeline {
    let mut t = Timeline {
        name: name.to_string(),
        zone: chrono_tz::Asia::Shanghai,
        contacts: Vec::new(),
        evidence: Vec::new(),
        expects: Vec::new(),
        now: Utc.timestamp_opt(0, 0).unwrap(),
    };
    let mut now = None;
    let mut last_day = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let ctx = || format!("{name}:{}: {raw}", n + 1);
        match w[0] {
            "zone" => t.zone = w[1].parse().unwrap_or_else(|_| panic!("{}", ctx())),
            "now" => now = Some(when(t.zone, &format!("{}T23:59:59", w[1]))),
            "contact" => {
                let mut c = ContactFacts {
                    id: ContactId(w[1].parse().unwrap()),
                    kind: w[2].parse::<ContactKind>().unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                    role: match w[3] {
                        "primary" => ContactRole::Primary,
                        "backup" => ContactRole::Backup,
                        r => ContactRole::from_parts("emergency", Some(r)).unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                    },
                    bound_since: NaiveDate::MIN,
                    verified_at: None,
                    retired: false,
                };
                for a in &w[4..] {
                    match a.split_once('=') {
                        Some(("bound", d)) => c.bound_since = d.parse().unwrap(),
                        Some(("verified", d)) => c.verified_at = Some(when(t.zone, d)),
                        None if *a == "retired" => c.retired = true,
                        _ => panic!("{}: unknown contact attribute {a}", ctx()),
                    }
                }
                assert!(c.bound_since != NaiveDate::MIN, "{}: bound= is required", ctx());
                t.contacts.push(c);
            }
            "expect" => {
                let day: NaiveDate = w[1].parse().unwrap();
                if w[2] == "borrower" {
                    t.expects.push(Expect::Reachable {
                        line: n + 1,
                        day,
                        reachable: match w[3] {
                            "reachable" => true,
                            "unreachable" => false,
                            o => panic!("{}: {o}", ctx()),
                        },
                    });
                } else {
                    t.expects.push(Expect::State {
                        line: n + 1,
                        day,
                        contact: w[2].parse().unwrap(),
                        state: w[3].to_string(),
                    });
                }
                last_day = Some(last_day.map_or(day, |l: NaiveDate| l.max(day)));
            }
            _ => {
                let at = when(t.zone, w[0]);
                last_day = Some(last_day.map_or(at.with_timezone(&t.zone).date_naive(), |l: NaiveDate| {
                    l.max(at.with_timezone(&t.zone).date_naive())
                }));
                let contact = if w[1] == "-" {
                    None
                } else {
                    Some(ContactId(w[1].parse().unwrap_or_else(|_| panic!("{}", ctx()))))
                };
                let arg = |i: usize| *w.get(i).unwrap_or_else(|| panic!("{}: missing argument {i}", ctx()));
                let (source, kind) = match arg(2) {
                    "delivery" => (
                        Source::Provider("sandbox".into()),
                        EvidenceKind::Delivery {
                            channel: arg(3).parse().unwrap(),
                            class: arg(4).parse().unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "reply" => (
                        Source::Holder,
                        EvidenceKind::Reply {
                            channel: arg(3).parse().unwrap(),
                            class: arg(4).parse().unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "click" => (
                        Source::Holder,
                        EvidenceKind::LinkClick {
                            channel: arg(3).parse().unwrap(),
                        },
                    ),
                    "call" => (
                        Source::Provider("sandbox-voice".into()),
                        EvidenceKind::Call {
                            outcome: serde_json::from_value(serde_json::json!(arg(3)))
                                .unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "carrier" => (
                        Source::Lookup("sandbox".into()),
                        EvidenceKind::CarrierStatus {
                            status: arg(3).parse().unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "recycled" => (
                        Source::Lookup("sandbox".into()),
                        EvidenceKind::Recycled {
                            since: arg(3).parse().unwrap(),
                            answer: arg(4).parse().unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "simswap" => (
                        Source::Lookup("sandbox".into()),
                        EvidenceKind::SimSwap {
                            since: arg(3).parse().unwrap(),
                            swapped: yes(arg(4)),
                        },
                    ),
                    "ported" => (
                        Source::Lookup("sandbox".into()),
                        EvidenceKind::Ported {
                            since: arg(3).parse().unwrap(),
                            ported: yes(arg(4)),
                        },
                    ),
                    "code" => (Source::Borrower, EvidenceKind::CodeConfirmed),
                    "self" => (
                        Source::Borrower,
                        EvidenceKind::SelfReport {
                            report: serde_json::from_value::<SelfReport>(serde_json::json!(arg(3)))
                                .unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "operator" => (
                        Source::Operator("op-1".into()),
                        EvidenceKind::Operator {
                            action: serde_json::from_value::<OperatorAction>(serde_json::json!(arg(3)))
                                .unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                        },
                    ),
                    "payment" => (
                        Source::CoreBanking,
                        EvidenceKind::Payment {
                            via_contact: arg(3) == "via",
                        },
                    ),
                    other => panic!("{}: unknown evidence kind {other}", ctx()),
                };
                t.evidence.push(Evidence {
                    id: EvidenceId(n as u64 + 1),
                    contact,
                    at,
                    source,
                    kind,
                });
            }
        }
    }
    t.now = now.unwrap_or_else(|| end_of_day(t.zone, last_day.expect("a timeline needs evidence or a now line")));
    t
}
