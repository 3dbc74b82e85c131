//! Contact health, driven by the timelines in `tests/timelines/`: each states evidence and the
//! states expected on given days; the full outcome at the end is snapshot-tested, and every
//! timeline is checked against the rules no outcome may break.

use std::collections::HashMap;

use reachline_domain::DeliveryClass;
use reachline_policy::timeline::{end_of_day, Timeline};
use reachline_policy::{BorrowerHealth, EvidenceId, HealthConfig, HealthState, Rule};

struct Named {
    name: String,
    t: Timeline,
}

impl std::ops::Deref for Named {
    type Target = Timeline;
    fn deref(&self) -> &Timeline {
        &self.t
    }
}

fn timelines() -> Vec<Named> {
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
            let t = reachline_policy::timeline::parse(&std::fs::read_to_string(p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            Named { name, t }
        })
        .collect()
}

fn assess(t: &Timeline, at: chrono::DateTime<chrono::Utc>) -> BorrowerHealth {
    t.assess_at(at, &HealthConfig::default())
}

#[test]
fn timelines_reach_the_expected_states() {
    let mut failures = Vec::new();
    for t in timelines() {
        assert!(!t.expects.is_empty(), "{} expects nothing", t.name);
        for f in t.failed_expectations(&HealthConfig::default()) {
            failures.push(format!("{}: {f}", t.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn timelines_snapshot() {
    for t in timelines() {
        let h = t.assess(&HealthConfig::default());
        insta::assert_snapshot!(t.name.clone(), t.render(&h));
    }
}

#[test]
fn bad_timelines_are_refused_with_the_line() {
    let e = reachline_policy::timeline::parse(
        "zone Asia/Shanghai\ncontact 1 mobile primary bound=2024-01-01\n2024-02-01 2 delivery sms dead\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("contact 2 is not declared"), "{e}");
    let e = reachline_policy::timeline::parse(
        "contact 1 mobile primary bound=2024-01-01\n2024-02-01 1 delivery sms dead-ish\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("delivery class"), "{e}");
    let e = reachline_policy::timeline::parse("expect 2024-02-01 1 zombie\n").unwrap_err();
    assert!(e.message.contains("state"), "{e}");
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
    let named = timelines().into_iter().find(|t| t.name == "recycled-silent").unwrap();
    let t = &named.t;
    let day = |s: &str| end_of_day(t.zone, s.parse().unwrap());
    let contact = |h: &BorrowerHealth| h.contacts.iter().find(|a| a.contact.0 == 1).unwrap().clone();

    let held = contact(&assess(t, day("2024-04-05")));
    assert_eq!(held.state, HealthState::Suspect);
    assert_eq!(held.suspicions, vec![Rule::SilentLong]);
    assert!(matches!(held.needs[..], [reachline_policy::Need::RecycledCheck { .. }]));
    assert!(held.may_carry(Purpose::Collection).is_err());
    assert!(held.may_carry(Purpose::Service).is_err());
    assert!(held.may_carry(Purpose::Verification).is_ok());

    let gone = contact(&assess(t, day("2024-04-06")));
    assert_eq!(gone.state, HealthState::Reassigned);
    for p in Purpose::ALL {
        assert!(gone.may_carry(*p).is_err(), "{p}");
    }

    let fine = contact(&assess(t, day("2024-03-06")));
    assert_eq!(fine.state, HealthState::Healthy);
    assert!(fine.may_carry(Purpose::Collection).is_ok());
}
