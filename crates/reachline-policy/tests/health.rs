//! Contact health, driven by the timelines in `tests/timelines/`: each states evidence and the
//! states expected on given days; the full outcome at the end is snapshot-tested, and every
//! timeline is checked against the rules no outcome may break.

mod common;

use std::collections::HashMap;

use common::{end_of_day, Expect, Timeline};
use reachline_domain::DeliveryClass;
use reachline_policy::{assess_borrower, BorrowerHealth, EvidenceId, HealthConfig, HealthState, Rule};

fn timelines() -> Vec<Timeline> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/timelines");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected the timeline files, found {}", files.len());
    files
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            common::parse(&name, &std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

fn assess(t: &Timeline, at: chrono::DateTime<chrono::Utc>) -> BorrowerHealth {
    assess_borrower(&t.contacts, &t.evidence, t.zone, at, &HealthConfig::default())
}

fn render(t: &Timeline, h: &BorrowerHealth) -> String {
    let mut out = String::new();
    for a in &h.contacts {
        let facts = t.contacts.iter().find(|c| c.id == a.contact).unwrap();
        out += &format!(
            "contact {} ({} {}): {} since {} by {}; score {:.2}; needs {}\n",
            a.contact.0,
            facts.kind,
            a.role.name(),
            a.state,
            a.since,
            a.rule,
            a.score,
            serde_json::to_string(&a.needs).unwrap()
        );
        for tr in &a.transitions {
            out += &format!(
                "  {} {:<10} -> {:<10} {:<32} {:?}\n",
                tr.day,
                tr.from,
                tr.to,
                tr.rule,
                tr.evidence.iter().map(|e| e.0).collect::<Vec<_>>()
            );
        }
    }
    out += "events:\n";
    for e in &h.events {
        out += &format!(
            "  {} {:<20} {:<8} {:<32} {:?}\n",
            e.day,
            e.kind,
            e.contact.map_or("borrower".to_string(), |c| format!("contact {}", c.0)),
            e.rule,
            e.evidence.iter().map(|e| e.0).collect::<Vec<_>>()
        );
    }
    out += &format!(
        "borrower: {}\n",
        match h.unreachable_since {
            Some(d) => format!("unreachable since {d}"),
            None if h.reachable => "reachable".to_string(),
            None => "unreachable".to_string(),
        }
    );
    out
}

#[test]
fn timelines_reach_the_expected_states() {
    let mut failures = Vec::new();
    for t in timelines() {
        assert!(!t.expects.is_empty(), "{} expects nothing", t.name);
        for x in &t.expects {
            match x {
                Expect::State {
                    line,
                    day,
                    contact,
                    state,
                } => {
                    let h = assess(&t, end_of_day(t.zone, *day));
                    let a = h.contacts.iter().find(|a| a.contact.0 == *contact).unwrap();
                    if a.state.as_str() != state {
                        failures.push(format!(
                            "{}:{line}: contact {contact} on {day}: expected {state}, got {} ({})",
                            t.name, a.state, a.rule
                        ));
                    }
                }
                Expect::Reachable { line, day, reachable } => {
                    let h = assess(&t, end_of_day(t.zone, *day));
                    if h.reachable != *reachable {
                        failures.push(format!(
                            "{}:{line}: borrower on {day}: expected reachable={reachable}",
                            t.name
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn timelines_snapshot() {
    for t in timelines() {
        let h = assess(&t, t.now);
        insta::assert_snapshot!(t.name.clone(), render(&t, &h));
    }
}

/// No contact is declared dead on one message: every automatic `dead` names hard failures on
/// two different days, or a hard failure and a carrier's answer.
#[test]
fn no_contact_is_dead_on_one_failure() {
    for t in timelines() {
        let by_id: HashMap<EvidenceId, &reachline_policy::Evidence> = t.evidence.iter().map(|e| (e.id, e)).collect();
        // Check every day of the timeline, not only the end.
        let first = t.evidence.iter().map(|e| e.at).min().unwrap();
        let mut day = first.with_timezone(&t.zone).date_naive();
        let last = t.now.with_timezone(&t.zone).date_naive();
        while day <= last {
            let h = assess(&t, end_of_day(t.zone, day));
            for a in &h.contacts {
                for tr in a.transitions.iter().filter(|tr| tr.to == HealthState::Dead) {
                    let ev: Vec<_> = tr.evidence.iter().map(|id| by_id[id]).collect();
                    let hard_days: std::collections::BTreeSet<_> = ev
                        .iter()
                        .filter(|e| e.class() == Some(DeliveryClass::Dead))
                        .map(|e| e.at.with_timezone(&t.zone).date_naive())
                        .collect();
                    let carrier = ev
                        .iter()
                        .any(|e| matches!(e.kind, reachline_policy::EvidenceKind::CarrierStatus { .. }));
                    let ok = match tr.rule {
                        Rule::HardFailureTwoDays => hard_days.len() >= 2,
                        Rule::HardFailureCarrierConfirmed => !hard_days.is_empty() && carrier,
                        Rule::OperatorMarkedDead => true,
                        other => panic!("{}: dead by unexpected rule {other}", t.name),
                    };
                    assert!(
                        ok,
                        "{}: contact {} dead on {} without enough evidence",
                        t.name, a.contact.0, tr.day
                    );
                }
            }
            day = day.succ_opt().unwrap();
        }
    }
}

/// Health gates what a contact may carry: a number held for a recycled-number check gets no
/// debt content (a code to re-verify it may go), a reassigned one gets nothing, and a healthy
/// one anything.
#[test]
fn health_gates_debt_content() {
    use reachline_domain::Purpose;
    let t = timelines().into_iter().find(|t| t.name == "recycled-silent").unwrap();
    let day = |s: &str| end_of_day(t.zone, s.parse().unwrap());
    let contact = |h: &BorrowerHealth| h.contacts.iter().find(|a| a.contact.0 == 1).unwrap().clone();

    let held = contact(&assess(&t, day("2024-04-05")));
    assert_eq!(held.state, HealthState::Suspect);
    assert_eq!(held.suspicions, vec![Rule::SilentLong]);
    assert!(matches!(held.needs[..], [reachline_policy::Need::RecycledCheck { .. }]));
    assert!(held.may_carry(Purpose::Collection).is_err());
    assert!(held.may_carry(Purpose::Service).is_err());
    assert!(held.may_carry(Purpose::Verification).is_ok());

    let gone = contact(&assess(&t, day("2024-04-06")));
    assert_eq!(gone.state, HealthState::Reassigned);
    for p in Purpose::ALL {
        assert!(gone.may_carry(*p).is_err(), "{p}");
    }

    let fine = contact(&assess(&t, day("2024-03-06")));
    assert_eq!(fine.state, HealthState::Healthy);
    assert!(fine.may_carry(Purpose::Collection).is_ok());
}
