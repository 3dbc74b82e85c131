//! Properties of contact health that must hold for any evidence: the order of a day's evidence
//! never changes the outcome, more failures never make a contact healthier, and the kept
//! replay answers exactly as a replay from the start.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use reachline_domain::{Channel, ContactId, ContactKind, ContactRole, DeliveryClass};
use reachline_policy::{
    assess_borrower, BorrowerHealth, CallOutcome, ContactFacts, Evidence, EvidenceId, EvidenceKind, HealthConfig,
    HealthReplay, NumberStatus, OperatorAction, RecycleAnswer, ReplyClass, SelfReport, Source,
};

const ZONE: Tz = chrono_tz::Asia::Shanghai;
const DAYS: i64 = 200;

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
}

fn contacts() -> Vec<ContactFacts> {
    let c = |id, kind, role, verified: bool| ContactFacts {
        id: ContactId(id),
        kind,
        role,
        bound_since: NaiveDate::from_ymd_opt(2023, 6, 1).unwrap(),
        verified_at: verified.then(|| Utc.with_ymd_and_hms(2023, 12, 1, 4, 0, 0).unwrap()),
        retired: false,
    };
    vec![
        c(1, ContactKind::Mobile, ContactRole::Primary, true),
        c(2, ContactKind::Mobile, ContactRole::Backup, false),
        c(3, ContactKind::Email, ContactRole::Primary, false),
    ]
}

fn local(day: i64, minute: i64) -> DateTime<Utc> {
    let naive = (start() + Duration::days(day)).and_hms_opt(0, 0, 0).unwrap() + Duration::minutes(minute);
    ZONE.from_local_datetime(&naive).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    local(DAYS, 24 * 60 - 1)
}

fn any_kind() -> impl Strategy<Value = EvidenceKind> {
    let since = NaiveDate::from_ymd_opt(2023, 6, 1).unwrap();
    prop_oneof![
        6 => prop::sample::select(DeliveryClass::ALL.to_vec())
            .prop_map(|class| EvidenceKind::Delivery { channel: Channel::Sms, class }),
        2 => prop::sample::select(vec![
            ReplyClass::Acknowledged, ReplyClass::WrongNumber, ReplyClass::OptOut, ReplyClass::Dispute,
            ReplyClass::WillPay, ReplyClass::Paid, ReplyClass::NewNumber, ReplyClass::Other,
        ])
        .prop_map(|class| EvidenceKind::Reply { channel: Channel::Sms, class }),
        1 => Just(EvidenceKind::LinkClick { channel: Channel::Email }),
        1 => prop::sample::select(vec![
            CallOutcome::ConfirmedBorrower, CallOutcome::WrongParty, CallOutcome::Answered, CallOutcome::NoAnswer,
            CallOutcome::Busy, CallOutcome::Voicemail, CallOutcome::NotInService, CallOutcome::Barred,
        ])
        .prop_map(|outcome| EvidenceKind::Call { outcome }),
        2 => prop::sample::select(NumberStatus::ALL.to_vec()).prop_map(|status| EvidenceKind::CarrierStatus { status }),
        1 => prop::sample::select(vec![RecycleAnswer::Yes, RecycleAnswer::No, RecycleAnswer::NoData])
            .prop_map(move |answer| EvidenceKind::Recycled { since, answer }),
        1 => any::<bool>().prop_map(move |swapped| EvidenceKind::SimSwap { since, swapped }),
        1 => any::<bool>().prop_map(move |ported| EvidenceKind::Ported { since, ported }),
        1 => Just(EvidenceKind::CodeConfirmed),
        1 => prop::sample::select(vec![SelfReport::StillMine, SelfReport::ChangedNumber, SelfReport::NotMine])
            .prop_map(|report| EvidenceKind::SelfReport { report }),
        1 => prop::sample::select(vec![
            OperatorAction::Verify, OperatorAction::MarkDead, OperatorAction::MarkReassigned,
            OperatorAction::Retire, OperatorAction::Reinstate,
        ])
        .prop_map(|action| EvidenceKind::Operator { action }),
        1 => any::<bool>().prop_map(|via_contact| EvidenceKind::Payment { via_contact }),
    ]
}

/// (contact 0 = none, day, minute of the day, kind)
fn any_timeline(max: usize) -> impl Strategy<Value = Vec<(i64, i64, i64, EvidenceKind)>> {
    prop::collection::vec((0i64..=3, 0..DAYS, 0i64..24 * 60, any_kind()), 0..max)
}

fn build(items: &[(i64, i64, i64, EvidenceKind)], first_id: u64) -> Vec<Evidence> {
    items
        .iter()
        .enumerate()
        .map(|(i, (contact, day, minute, kind))| {
            let contact = match kind {
                // A payment through a contact needs one; a payment elsewhere names none.
                EvidenceKind::Payment { via_contact: false } => None,
                _ => Some(ContactId((*contact).max(1))),
            };
            Evidence {
                id: EvidenceId(first_id + i as u64),
                contact,
                at: local(*day, *minute),
                source: Source::Provider("prop".into()),
                kind: kind.clone(),
            }
        })
        .collect()
}

fn assess(evidence: &[Evidence]) -> BorrowerHealth {
    assess_borrower(&contacts(), evidence, ZONE, now(), &HealthConfig::default())
}

/// Everything but the score (which decays with the exact time, and so may move with it).
fn outcome(h: &BorrowerHealth) -> String {
    let mut out = String::new();
    for a in &h.contacts {
        out += &format!("{} {} {} {} {:?}\n", a.contact.0, a.state, a.rule, a.since, a.needs);
        for t in &a.transitions {
            out += &format!("  {} {} {} {} {:?}\n", t.day, t.from, t.to, t.rule, t.evidence);
        }
    }
    for e in &h.events {
        out += &format!("{} {} {:?} {} {:?}\n", e.day, e.kind, e.contact, e.rule, e.evidence);
    }
    out += &format!("{} {:?}", h.reachable, h.unreachable_since);
    out
}

/// A case the property search found: a number proven by a code, then suspended (a second
/// "suspended" receipt the same day) across the day it became dormant, then delivering again.
/// The dormancy must not be lost while it is suspended.
#[test]
fn a_number_suspended_when_it_became_dormant_stays_in_doubt() {
    let items = vec![
        (
            1,
            192,
            0,
            EvidenceKind::Delivery {
                channel: Channel::Sms,
                class: DeliveryClass::Delivered,
            },
        ),
        (
            1,
            101,
            0,
            EvidenceKind::Call {
                outcome: CallOutcome::Barred,
            },
        ),
        (1, 57, 0, EvidenceKind::CodeConfirmed),
    ];
    let base = build(&items, 1);
    let mut more = base.clone();
    more.push(Evidence {
        id: EvidenceId(10_000),
        contact: Some(ContactId(1)),
        at: local(57, 0),
        source: Source::Provider("prop".into()),
        kind: EvidenceKind::Delivery {
            channel: Channel::Sms,
            class: DeliveryClass::Suspended,
        },
    });
    let (a, b) = (assess(&base), assess(&more));
    assert_eq!(a.contacts[0].rule, reachline_policy::Rule::Dormant, "{}", outcome(&a));
    assert_eq!(b.contacts[0].rule, reachline_policy::Rule::Dormant, "{}", outcome(&b));
    assert!(b.contacts[0].state.rank() <= a.contacts[0].state.rank());
}

proptest! {
    // 400 cases by default; PROPTEST_CASES=20000 for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn order_within_a_day_does_not_change_the_outcome(
        items in any_timeline(60),
        minutes in prop::collection::vec(0i64..24 * 60, 60),
        seed in any::<u64>(),
    ) {
        let evidence = build(&items, 1);
        let mut moved = evidence.clone();
        // Same day, another time of day, and another position in the input.
        for (e, (i, m)) in moved.iter_mut().zip(items.iter().zip(&minutes)) {
            e.at = local(i.1, *m);
        }
        let n = moved.len();
        if n > 1 {
            let k = (seed as usize) % n;
            moved.rotate_left(k);
            moved.reverse();
        }
        prop_assert_eq!(outcome(&assess(&evidence)), outcome(&assess(&moved)));
    }

    #[test]
    fn more_failures_never_make_a_contact_healthier(
        items in any_timeline(50),
        failures in prop::collection::vec(
            (1i64..=3, 0..DAYS, 0i64..24 * 60, prop::sample::select(vec![
                DeliveryClass::Dead, DeliveryClass::Suspended, DeliveryClass::Transient,
            ])),
            1..12,
        ),
    ) {
        let base = build(&items, 1);
        let mut more = base.clone();
        for (i, (contact, day, minute, class)) in failures.iter().enumerate() {
            more.push(Evidence {
                id: EvidenceId(10_000 + i as u64),
                contact: Some(ContactId(*contact)),
                at: local(*day, *minute),
                source: Source::Provider("prop".into()),
                kind: EvidenceKind::Delivery { channel: Channel::Sms, class: *class },
            });
        }
        let (a, b) = (assess(&base), assess(&more));
        for (x, y) in a.contacts.iter().zip(&b.contacts) {
            prop_assert!(
                y.state.rank() <= x.state.rank(),
                "contact {}: {} ({}) became {} ({}) with more failures\nbefore:\n{}\nafter:\n{}",
                x.contact.0, x.state, x.rule, y.state, y.rule, outcome(&a), outcome(&b)
            );
            prop_assert!(y.score <= x.score + 1e-9, "contact {}: score {} rose to {}", x.contact.0, x.score, y.score);
        }
        prop_assert!(!b.reachable || a.reachable);
    }

    #[test]
    fn the_kept_replay_answers_as_a_replay_from_the_start(
        mut items in any_timeline(80),
        checks in prop::collection::vec((0i64..DAYS, 0i64..24 * 60, 0usize..=80), 1..30),
        sorted in any::<bool>(),
        drop_contact_at in prop::option::of(0usize..30),
    ) {
        // Mostly in time order, as evidence arrives; sometimes not at all (late receipts of a
        // folded day make the replay start again).
        if sorted {
            items.sort_by_key(|(_, day, minute, _)| (*day, *minute));
        }
        let evidence = build(&items, 1);
        let cfg = HealthConfig::default();
        let mut all = contacts();
        let mut replay = HealthReplay::new(&all, ZONE, &cfg);
        let mut lean = HealthReplay::new(&all, ZONE, &cfg).without_history();
        let mut checks = checks;
        if sorted {
            checks.sort();
        }
        let mut seen = 0usize;
        for (k, (day, minute, grown)) in checks.into_iter().enumerate() {
            if drop_contact_at == Some(k) {
                all.pop();
            }
            seen = seen.max(grown.min(evidence.len()));
            let now = local(day, minute);
            let kept = replay.assess(&all, &evidence[..seen], now, &cfg);
            let fresh = assess_borrower(&all, &evidence[..seen], ZONE, now, &cfg);
            // Without history: the same states, and the ends of the same story.
            let mut short = lean.assess(&all, &evidence[..seen], now, &cfg);
            prop_assert!(fresh.events.ends_with(&short.events), "events at check {}", k);
            prop_assert_eq!(short.contacts.len(), fresh.contacts.len());
            for (s, f) in short.contacts.iter_mut().zip(&fresh.contacts) {
                prop_assert!(!s.transitions.is_empty() || f.transitions.is_empty());
                prop_assert!(f.transitions.ends_with(&s.transitions), "transitions at check {}", k);
                s.transitions = f.transitions.clone();
            }
            short.events = fresh.events.clone();
            prop_assert_eq!(&short, &fresh, "check {} without history", k);
            prop_assert_eq!(kept, fresh, "check {} at {} with {} items", k, now, seen);
        }
    }

    #[test]
    fn nothing_changes_before_the_review_day_without_new_evidence(
        mut items in any_timeline(60),
        day in 0i64..DAYS,
    ) {
        // No payments by other means: those are announced by `payment_from`, not `day`.
        items.retain(|(_, _, _, k)| !matches!(k, EvidenceKind::Payment { via_contact: false }));
        let evidence = build(&items, 1);
        let cfg = HealthConfig::default();
        let mut replay = HealthReplay::new(&contacts(), ZONE, &cfg);
        let now = local(day, 23 * 60);
        let later: Vec<Evidence> = evidence.iter().filter(|e| e.at <= now).cloned().collect();
        let first = replay.assess(&contacts(), &later, now, &cfg);
        let review = replay.review().day;
        let today = now.with_timezone(&ZONE).date_naive();
        for d in 1..=150 {
            let at = now + Duration::days(d);
            let date = at.with_timezone(&ZONE).date_naive();
            let h = assess_borrower(&contacts(), &later, ZONE, at, &cfg);
            if review.is_none_or(|r| date < r) {
                prop_assert_eq!(
                    outcome(&first), outcome(&h),
                    "changed on {} (assessed {}, review {:?})", date, today, review
                );
            } else {
                break;
            }
        }
    }
}
