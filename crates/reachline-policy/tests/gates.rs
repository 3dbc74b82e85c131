//! The contact-rule gates: hours in the borrower's zones, caps, consent, health and the
//! third-party rules, with a property that a deferred send is allowed at the moment named.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use reachline_domain::{Channel, Consent, ConsentSource, ConsentState, ContactId, ContactKind, ContactRole, Purpose};
use reachline_policy::gates::{hours_allow_later_today, Request};
use reachline_policy::{
    allowed_at, assess_borrower, check, check_moment, Assessment, Attempt, AttemptKind, ContactFacts, Evidence,
    EvidenceId, EvidenceKind, Gate, GateProfile, HealthConfig, History, Reason, ReplyClass, Source, ThirdParty,
};

const SH: Tz = chrono_tz::Asia::Shanghai;
const NY: Tz = chrono_tz::America::New_York;
const LA: Tz = chrono_tz::America::Los_Angeles;

fn at(zone: Tz, s: &str) -> DateTime<Utc> {
    zone.from_local_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn contact(evidence: Vec<EvidenceKind>) -> Assessment {
    let facts = ContactFacts {
        id: ContactId(1),
        kind: ContactKind::Mobile,
        role: ContactRole::Primary,
        bound_since: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        verified_at: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
        retired: false,
    };
    let ev: Vec<Evidence> = evidence
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Evidence {
            id: EvidenceId(i as u64 + 1),
            contact: Some(ContactId(1)),
            at: Utc.with_ymd_and_hms(2024, 2, 1, 4, 0, 0).unwrap(),
            source: Source::Holder,
            kind,
        })
        .collect();
    let now = Utc.with_ymd_and_hms(2024, 2, 2, 0, 0, 0).unwrap();
    assess_borrower(&[facts], &ev, SH, now, &HealthConfig::default())
        .contacts
        .remove(0)
}

fn all_consents() -> Vec<Consent> {
    Consent::grant_all(
        Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap(),
        ConsentSource::Contract,
        "v1",
    )
}

fn req<'a>(
    zones: &'a [Tz],
    purpose: Purpose,
    channel: Channel,
    c: &'a Assessment,
    consents: &'a [Consent],
) -> Request<'a> {
    Request {
        zones,
        purpose,
        channel,
        contact: c,
        third_party: None,
        mentions_debt: true,
        consents,
        quiet: None,
    }
}

fn attempt(t: DateTime<Utc>, kind: AttemptKind) -> Attempt {
    Attempt {
        at: t,
        contact: ContactId(1),
        purpose: Purpose::Collection,
        kind,
    }
}

#[test]
fn night_in_china_defers_to_eight_the_next_morning() {
    let c = contact(vec![]);
    let k = all_consents();
    let g = check(
        &req(&[SH], Purpose::Collection, Channel::Sms, &c, &k),
        &[],
        &GateProfile::cn(),
        at(SH, "2024-03-05 22:30"),
    );
    assert_eq!(
        g,
        Gate::Defer {
            until: at(SH, "2024-03-06 08:00"),
            reason: Reason::QuietHours
        }
    );
    let g = check(
        &req(&[SH], Purpose::Collection, Channel::Sms, &c, &k),
        &[],
        &GateProfile::cn(),
        at(SH, "2024-03-05 21:59"),
    );
    assert!(matches!(g, Gate::Allow(_)), "{g:?}");
    // A code the borrower asked for goes at any hour.
    let g = check(
        &req(&[SH], Purpose::Verification, Channel::Sms, &c, &k),
        &[],
        &GateProfile::cn(),
        at(SH, "2024-03-05 23:30"),
    );
    assert!(matches!(g, Gate::Allow(_)), "{g:?}");
}

#[test]
fn an_uncertain_zone_allows_only_hours_allowed_in_every_candidate() {
    let c = contact(vec![]);
    let k = all_consents();
    let zones = [NY, LA];
    let r = req(&zones, Purpose::Collection, Channel::Sms, &c, &k);
    // 08:30 in New York is 05:30 in Los Angeles: wait for 08:00 there (11:00 in New York).
    assert_eq!(
        check(&r, &[], &GateProfile::us(), at(NY, "2024-03-05 08:30")),
        Gate::Defer {
            until: at(LA, "2024-03-05 08:00"),
            reason: Reason::QuietHours
        }
    );
    assert!(matches!(
        check(&r, &[], &GateProfile::us(), at(NY, "2024-03-05 20:30")),
        Gate::Allow(_)
    ));
    // 21:30 in New York: the next moment allowed in both is 11:00 New York time.
    assert_eq!(
        check(&r, &[], &GateProfile::us(), at(NY, "2024-03-05 21:30")),
        Gate::Defer {
            until: at(NY, "2024-03-06 11:00"),
            reason: Reason::QuietHours
        }
    );
}

#[test]
fn caps_defer_to_when_they_allow_again() {
    let c = contact(vec![]);
    let k = all_consents();
    let r = req(&[SH], Purpose::Collection, Channel::Sms, &c, &k);
    let now = at(SH, "2024-03-05 15:00");
    let today = |h: u32| at(SH, &format!("2024-03-05 {h:02}:00"));
    // Three messages today (one to another contact, so the per-contact cap is not the one hit).
    let mut h = vec![
        attempt(today(9), AttemptKind::Message),
        attempt(today(10), AttemptKind::Message),
    ];
    h[1].contact = ContactId(2);
    let mut third = attempt(today(11), AttemptKind::Message);
    third.contact = ContactId(3);
    h.push(third);
    assert_eq!(
        check(&r, &h, &GateProfile::cn(), now),
        Gate::Defer {
            until: at(SH, "2024-03-06 08:00"),
            reason: Reason::DailyCap
        }
    );
    // Two to this contact today: the per-contact cap.
    let h = vec![
        attempt(today(9), AttemptKind::Message),
        attempt(today(10), AttemptKind::Message),
    ];
    assert!(matches!(
        check(&r, &h, &GateProfile::cn(), now),
        Gate::Defer {
            reason: Reason::DailyCap,
            ..
        }
    ));

    // China: three connected calls today stop further calls until tomorrow.
    let mut p = GateProfile::cn();
    p.max_per_day = 100;
    p.max_per_contact_per_day = 100;
    let call = req(&[SH], Purpose::Collection, Channel::Voice, &c, &k);
    let h: Vec<Attempt> = (9..12)
        .map(|hh| attempt(today(hh), AttemptKind::CallConnected))
        .collect();
    assert!(matches!(
        check(&call, &h, &p, now),
        Gate::Defer {
            reason: Reason::ConnectedCallCap,
            ..
        }
    ));
    let h: Vec<Attempt> = (8..14)
        .map(|hh| attempt(today(hh), AttemptKind::CallUnanswered))
        .collect();
    assert!(matches!(
        check(&call, &h, &p, now),
        Gate::Defer {
            reason: Reason::UnansweredCallCap,
            ..
        }
    ));
    // Messages are not calls.
    assert!(matches!(check(&r, &h[..2], &p, now), Gate::Allow(_)));
}

#[test]
fn us_calls_seven_in_seven_days_and_none_after_a_conversation() {
    let c = contact(vec![]);
    let k = all_consents();
    let mut p = GateProfile::us();
    p.max_per_day = 100;
    p.max_per_week = 100;
    p.max_per_contact_per_day = 100;
    let call = req(&[NY], Purpose::Collection, Channel::Voice, &c, &k);
    let now = at(NY, "2024-04-10 12:00");
    // Seven attempts in the rolling week (the first 6 days 2 hours ago): the next is allowed
    // when that first one leaves the week.
    let h: Vec<Attempt> = (4..=10)
        .map(|d| attempt(at(NY, &format!("2024-04-{d:02} 10:00")), AttemptKind::CallUnanswered))
        .collect();
    assert_eq!(
        check(&call, &h, &p, now),
        Gate::Defer {
            until: at(NY, "2024-04-11 10:00"),
            reason: Reason::CallFrequency7d
        }
    );
    assert!(matches!(check(&call, &h[1..], &p, now), Gate::Allow(_)));
    let talked = vec![attempt(at(NY, "2024-04-08 10:00"), AttemptKind::CallConnected)];
    assert_eq!(
        check(&call, &talked, &p, now),
        Gate::Defer {
            until: at(NY, "2024-04-15 10:00"),
            reason: Reason::AfterConversation
        }
    );
}

#[test]
fn what_no_later_moment_cures_is_suppressed() {
    let k = all_consents();
    let now = at(SH, "2024-03-05 15:00");
    let p = GateProfile::cn();
    // No consent for collection by SMS (withdrawn by a reply).
    let mut withdrawn = k.clone();
    withdrawn.push(Consent {
        purpose: Purpose::Collection,
        channel: Some(Channel::Sms),
        state: ConsentState::Withdrawn,
        at: at(SH, "2024-03-01 09:00"),
        source: ConsentSource::Reply,
        text_version: "v1".into(),
    });
    let c = contact(vec![]);
    assert!(matches!(
        check(
            &req(&[SH], Purpose::Collection, Channel::Sms, &c, &withdrawn),
            &[],
            &p,
            now
        ),
        Gate::Suppress {
            reason: Reason::NoConsent,
            ..
        }
    ));
    assert!(matches!(
        check(
            &req(&[SH], Purpose::Collection, Channel::Email, &c, &withdrawn),
            &[],
            &p,
            now
        ),
        Gate::Allow(_)
    ));
    // A number a stranger answered "wrong number" on gets nothing.
    let gone = contact(vec![EvidenceKind::Reply {
        channel: Channel::Sms,
        class: ReplyClass::WrongNumber,
    }]);
    let g = check(&req(&[SH], Purpose::Service, Channel::Sms, &gone, &k), &[], &p, now);
    assert!(
        matches!(
            g,
            Gate::Suppress {
                reason: Reason::ContactHealth,
                health: Some(_)
            }
        ),
        "{g:?}"
    );
}

#[test]
fn third_parties_only_when_unreachable_once_and_never_about_the_debt() {
    let k = all_consents();
    let now = at(SH, "2024-03-05 15:00");
    let p = GateProfile::cn();
    let c = contact(vec![]);
    let tp = |unreachable, before, refused, debt| {
        let mut r = req(&[SH], Purpose::ThirdParty, Channel::Sms, &c, &k);
        r.third_party = Some(ThirdParty {
            borrower_unreachable: unreachable,
            contacted_before: before,
            refused,
        });
        r.mentions_debt = debt;
        match check(&r, &[], &p, now) {
            Gate::Allow(_) => None,
            Gate::Suppress { reason, .. } => Some(reason),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(tp(true, false, false, false), None);
    assert_eq!(tp(true, false, false, true), Some(Reason::ThirdPartyDebtContent));
    assert_eq!(tp(false, false, false, false), Some(Reason::BorrowerReachable));
    assert_eq!(tp(true, true, false, false), Some(Reason::ThirdPartyContacted));
    assert_eq!(tp(true, false, true, false), Some(Reason::ThirdPartyRefused));
}

#[test]
fn the_borrowers_quiet_hours_narrow_their_own_notices_only() {
    let hm = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let c = contact(vec![]);
    let k = all_consents();
    let p = GateProfile::cn();
    // Quiet over lunch, 12:00–14:00 (the window outside it wraps past midnight).
    let lunch = reachline_domain::QuietHours::new(hm(12, 0), hm(14, 0)).unwrap();
    let judge = |purpose, third: bool, t: &str| {
        let mut r = req(&[SH], purpose, Channel::Sms, &c, &k);
        r.quiet = Some(lunch);
        if third {
            r.third_party = Some(ThirdParty {
                borrower_unreachable: true,
                contacted_before: false,
                refused: false,
            });
            r.mentions_debt = false;
        }
        check(&r, &[], &p, at(SH, t))
    };
    assert_eq!(
        judge(Purpose::Service, false, "2024-03-05 12:30"),
        Gate::Defer {
            until: at(SH, "2024-03-05 14:00"),
            reason: Reason::BorrowerQuietHours
        }
    );
    assert!(matches!(
        judge(Purpose::Collection, false, "2024-03-05 14:00"),
        Gate::Allow(_)
    ));
    // At 21:30 the law's hours end first; the next moment both allow is 08:00.
    assert_eq!(
        judge(Purpose::Collection, false, "2024-03-05 22:30"),
        Gate::Defer {
            until: at(SH, "2024-03-06 08:00"),
            reason: Reason::QuietHours
        }
    );
    // A code the borrower asked for, and a message to an emergency contact, are not theirs
    // to quiet.
    assert!(matches!(
        judge(Purpose::Verification, false, "2024-03-05 12:30"),
        Gate::Allow(_)
    ));
    assert!(matches!(
        judge(Purpose::ThirdParty, true, "2024-03-05 12:30"),
        Gate::Allow(_)
    ));
}

fn zone_sets() -> Vec<Vec<Tz>> {
    vec![
        vec![SH],
        vec![NY],
        vec![NY, LA],
        vec![LA, chrono_tz::Pacific::Honolulu],
        vec![chrono_tz::Europe::London],
    ]
}

/// Generated attempts: (minutes before `now`, contact id, message / connected / unanswered call).
fn past_attempts(now: DateTime<Utc>, past: &[(i64, i64, usize)]) -> Vec<Attempt> {
    past.iter()
        .map(|(m, contact, kind)| Attempt {
            at: now - Duration::minutes(*m),
            contact: ContactId(*contact),
            purpose: Purpose::Collection,
            kind: [
                AttemptKind::Message,
                AttemptKind::CallConnected,
                AttemptKind::CallUnanswered,
            ][*kind],
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the moment and the history: an allowed send is inside the hours in every
    /// candidate zone; a deferred one is allowed at exactly the moment named.
    #[test]
    fn deferred_sends_are_allowed_when_named(
        minutes in 0i64..(60 * 24 * 30),
        zones in prop::sample::select(zone_sets()),
        us in any::<bool>(),
        voice in any::<bool>(),
        purpose in prop::sample::select(vec![Purpose::Service, Purpose::Collection]),
        past in prop::collection::vec((0i64..(60 * 24 * 10), 1i64..4, 0usize..3), 0..30),
    ) {
        let c = contact(vec![]);
        let k = all_consents();
        let start = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let now = start + Duration::minutes(minutes);
        let history = past_attempts(now, &past);
        let profile = if us { GateProfile::us() } else { GateProfile::cn() };
        let channel = if voice { Channel::Voice } else { Channel::Sms };
        let r = req(&zones, purpose, channel, &c, &k);
        // Health and consent allow this request: the rules of the moment alone answer the same.
        let counted = History::new(zones[0], history.iter().copied());
        prop_assert_eq!(check_moment(&r, &counted, &profile, now), check(&r, &history, &profile, now));
        // The yes-or-no form `decide` asks of later hours answers as the full one does.
        prop_assert_eq!(
            allowed_at(&r, &counted, &profile, now),
            matches!(check_moment(&r, &counted, &profile, now), Gate::Allow(_))
        );
        match check(&r, &history, &profile, now) {
            Gate::Allow(permit) => {
                prop_assert_eq!(permit.at, now);
                let w = if purpose == Purpose::Service { profile.service_hours } else { profile.collection_hours };
                for z in &zones {
                    let t = now.with_timezone(z).time();
                    prop_assert!(w.start <= t && t < w.end, "allowed at {} in {}", t, z);
                }
                // No attempt is after now: at any later moment of the same day in the first
                // zone, the hours alone answer as the full check does (the caps cannot refuse).
                prop_assert!(counted.none_after(now));
                let day = now.with_timezone(&zones[0]).date_naive();
                let mut t = now;
                while t.with_timezone(&zones[0]).date_naive() == day {
                    let wall = t.with_timezone(&zones[0]).naive_local();
                    prop_assert_eq!(
                        hours_allow_later_today(&r, &profile, t, wall),
                        allowed_at(&r, &counted, &profile, t),
                        "at {} after {}", t, now
                    );
                    t += Duration::minutes(17);
                }
            }
            Gate::Defer { until, reason } => {
                prop_assert!(until > now);
                let again = check(&r, &history, &profile, until);
                prop_assert!(matches!(again, Gate::Allow(_)), "deferred for {} to {}, then {:?}", reason, until, again);
            }
            Gate::Suppress { reason, .. } => prop_assert!(false, "suppressed: {}", reason),
        }
    }

    /// Attempts older than the profile's lookback never count: the gates answer the same with
    /// or without them (the decision core leaves them out of the history it builds), also with
    /// a pause after a conversation longer than the rolling week.
    #[test]
    fn attempts_before_the_lookback_change_nothing(
        minutes in 0i64..(60 * 24 * 30),
        zones in prop::sample::select(zone_sets()),
        us in any::<bool>(),
        pause in prop::option::of(1u32..40),
        voice in any::<bool>(),
        purpose in prop::sample::select(vec![Purpose::Service, Purpose::Collection]),
        past in prop::collection::vec((0i64..(60 * 24 * 50), 1i64..4, 0usize..3), 0..40),
    ) {
        let c = contact(vec![]);
        let k = all_consents();
        let now = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes);
        let history = past_attempts(now, &past);
        let mut profile = if us { GateProfile::us() } else { GateProfile::cn() };
        profile.no_calls_days_after_conversation = pause;
        let recent: Vec<Attempt> = history.iter().copied().filter(|a| a.at > now - profile.lookback()).collect();
        let channel = if voice { Channel::Voice } else { Channel::Sms };
        let r = req(&zones, purpose, channel, &c, &k);
        prop_assert_eq!(check(&r, &history, &profile, now), check(&r, &recent, &profile, now));
    }
}
