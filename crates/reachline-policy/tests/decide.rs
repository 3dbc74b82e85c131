//! `decide`: the escalation ladder over contacts and channels, the gates on every rung, the
//! emergency contact only when the borrower is formally unreachable, and health's requests.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use reachline_domain::{
    Channel, Consent, ConsentSource, ContactId, ContactKind, ContactRole, DeliveryClass, InstallmentId, Preferences,
    Purpose, QuietHours, Relation,
};
use reachline_policy::decide::formally_unreachable;
use reachline_policy::{
    assess_borrower, decide, Action, BorrowerHealth, Cadence, ChannelChoice, ChannelModel, ContactFacts, Decision,
    DecisionReason, DueInstallment, Evidence, EvidenceId, EvidenceKind, GateProfile, HealthConfig, HourOfWeek,
    LadderConfig, NoticeKey, NoticeKind, Outcome, Reason, SegmentPrior, SendRecord, SendTimeModel, Snapshot, Source,
    ThirdPartyRecord, Timing, TimingConfig,
};

const SH: Tz = chrono_tz::Asia::Shanghai;

fn at(s: &str) -> DateTime<Utc> {
    SH.from_local_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn contacts() -> Vec<ContactFacts> {
    let c = |id, kind, role| ContactFacts {
        id: ContactId(id),
        kind,
        role,
        bound_since: "2023-01-01".parse().unwrap(),
        verified_at: None,
        retired: false,
    };
    vec![
        c(1, ContactKind::Mobile, ContactRole::Primary),
        c(2, ContactKind::Email, ContactRole::Primary),
        c(3, ContactKind::Mobile, ContactRole::Backup),
        c(9, ContactKind::Mobile, ContactRole::Emergency(Relation::Parent)),
    ]
}

fn consents() -> Vec<Consent> {
    Consent::grant_all(at("2023-01-01 09:00"), ConsentSource::Contract, "v1")
}

/// Health from the sends' outcomes, as the engine would record them as evidence.
fn health(sends: &[SendRecord], now: DateTime<Utc>) -> BorrowerHealth {
    let evidence: Vec<Evidence> = sends
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let class = match r.outcome {
                Outcome::Pending => return None,
                Outcome::Delivered => DeliveryClass::Delivered,
                Outcome::Engaged => DeliveryClass::Engaged,
                Outcome::Failed(c) => c,
            };
            Some(Evidence {
                id: EvidenceId(i as u64 + 1),
                contact: Some(r.contact),
                at: r.at,
                source: Source::Provider("test".into()),
                kind: EvidenceKind::Delivery {
                    channel: r.channel,
                    class,
                },
            })
        })
        .collect();
    assess_borrower(&contacts(), &evidence, SH, now, &HealthConfig::default())
}

const INST: InstallmentId = InstallmentId(77);

fn key() -> NoticeKey {
    // The standard cadence's T+1 overdue step.
    NoticeKey {
        installment: INST,
        step: 4,
        kind: NoticeKind::Overdue,
    }
}

fn send(rung: usize, contact: i64, channel: Channel, t: &str, outcome: Outcome) -> SendRecord {
    SendRecord {
        key: key(),
        rung,
        contact: ContactId(contact),
        channel,
        at: at(t),
        outcome,
        conversation: false,
    }
}

/// Builds the snapshot of the test borrower (the standard cadence, the `cn` profile, every
/// consent granted, health from the sends' outcomes) and hands it to `f`.
fn with_snapshot<R>(
    sends: &[SendRecord],
    third: &[ThirdPartyRecord],
    installments: &[DueInstallment],
    now: DateTime<Utc>,
    f: impl FnOnce(&Snapshot) -> R,
) -> R {
    with_preferences(&Preferences::default(), sends, third, installments, now, f)
}

/// As [`with_snapshot`], for a borrower who stated preferences.
fn with_preferences<R>(
    preferences: &Preferences,
    sends: &[SendRecord],
    third: &[ThirdPartyRecord],
    installments: &[DueInstallment],
    now: DateTime<Utc>,
    f: impl FnOnce(&Snapshot) -> R,
) -> R {
    let contacts = contacts();
    let consents = consents();
    let health = health(sends, now);
    let profile = GateProfile::cn();
    let cadence = Cadence::standard("p");
    let ladder = LadderConfig::default();
    f(&Snapshot {
        zones: &[SH],
        profile: &profile,
        cadence: &cadence,
        ladder: &ladder,
        contacts: &contacts,
        health: &health,
        consents: &consents,
        installments,
        sends,
        third_parties: third,
        preferences,
        timing: None,
        channels: None,
    })
}

fn run(sends: &[SendRecord], third: &[ThirdPartyRecord], paid: bool, now: &str) -> Vec<Decision> {
    run_with(&Preferences::default(), sends, third, paid, now)
}

fn run_with(
    preferences: &Preferences,
    sends: &[SendRecord],
    third: &[ThirdPartyRecord],
    paid: bool,
    now: &str,
) -> Vec<Decision> {
    let now = at(now);
    let inst = [DueInstallment {
        id: INST,
        due_date: "2024-05-20".parse().unwrap(),
        paid,
    }];
    with_preferences(preferences, sends, third, &inst, now, |s| decide(s, now))
}

fn notice(ds: &[Decision]) -> &Decision {
    ds.iter().find(|d| d.key.is_some()).expect("a notice decision")
}

fn sent_to(d: &Decision) -> (usize, i64, Channel, bool) {
    match &d.action {
        Action::Send {
            rung,
            third_party,
            permit,
        } => (*rung, permit.contact.0, permit.channel, *third_party),
        other => panic!("expected a send, got {other:?} ({})", d.reason),
    }
}

#[test]
fn the_first_rung_is_sms_to_the_primary_number() {
    let ds = run(&[], &[], false, "2024-05-21 10:00");
    let d = notice(&ds);
    assert_eq!(d.key, Some(key()));
    assert_eq!(d.reason, DecisionReason::CadenceStep);
    assert_eq!(sent_to(d), (0, 1, Channel::Sms, false));
    assert_eq!(d.key.unwrap().kind.purpose(), Purpose::Collection);
}

#[test]
fn the_borrowers_preferred_channel_and_quiet_hours_are_kept() {
    let hm = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
    // Email first: the primary email is the first rung, then SMS.
    let email_first = Preferences::new(vec![Channel::Email], None).unwrap();
    let d = notice(&run_with(&email_first, &[], &[], false, "2024-05-21 10:00")).clone();
    assert_eq!(sent_to(&d), (0, 2, Channel::Email, false));
    let s0 = send(
        0,
        2,
        Channel::Email,
        "2024-05-21 10:00",
        Outcome::Failed(DeliveryClass::Dead),
    );
    let d = notice(&run_with(&email_first, &[s0], &[], false, "2024-05-21 10:05")).clone();
    assert_eq!(sent_to(&d), (1, 1, Channel::Sms, false));

    // Quiet until 12:00: at 10:00 the notice waits for noon, for the borrower's reason.
    let mornings = Preferences::new(vec![], Some(QuietHours::new(hm(21, 0), hm(12, 0)).unwrap())).unwrap();
    let d = notice(&run_with(&mornings, &[], &[], false, "2024-05-21 10:00")).clone();
    assert_eq!(
        d.action,
        Action::Defer {
            until: at("2024-05-21 12:00")
        }
    );
    assert_eq!(d.gate, Some(Reason::BorrowerQuietHours));
    let d = notice(&run_with(&mornings, &[], &[], false, "2024-05-21 12:30")).clone();
    assert_eq!(sent_to(&d), (0, 1, Channel::Sms, false));

    // Quiet hours that would leave no time inside the law's (08:00–22:00) are not applied.
    let always = Preferences::new(vec![], Some(QuietHours::new(hm(7, 0), hm(23, 0)).unwrap())).unwrap();
    let d = notice(&run_with(&always, &[], &[], false, "2024-05-21 10:00")).clone();
    assert_eq!(sent_to(&d), (0, 1, Channel::Sms, false));
}

#[test]
fn a_failure_climbs_at_once_and_silence_after_the_window() {
    let s0 = send(
        0,
        1,
        Channel::Sms,
        "2024-05-21 10:00",
        Outcome::Failed(DeliveryClass::Dead),
    );
    let d = notice(&run(&[s0], &[], false, "2024-05-21 10:05")).clone();
    assert_eq!(d.reason, DecisionReason::EscalatedAfterFailure);
    // Primary's next channel in order: email.
    assert_eq!(sent_to(&d), (1, 2, Channel::Email, false));

    let s1 = send(1, 2, Channel::Email, "2024-05-21 10:05", Outcome::Pending);
    let d = notice(&run(&[s0, s1], &[], false, "2024-05-21 16:00")).clone();
    assert_eq!(d.reason, DecisionReason::AwaitingOutcome);
    assert_eq!(
        d.action,
        Action::Wait {
            until: at("2024-05-22 10:05")
        }
    );

    let d = notice(&run(&[s0, s1], &[], false, "2024-05-22 10:10")).clone();
    assert_eq!(d.reason, DecisionReason::EscalatedAfterSilence);
    // Then a call to the primary number (collection allows voice).
    assert_eq!(sent_to(&d), (2, 1, Channel::Voice, false));
}

#[test]
fn a_delivered_collection_notice_waits_for_engagement_and_engagement_ends_it() {
    let s0 = send(0, 1, Channel::Sms, "2024-05-21 10:00", Outcome::Delivered);
    let d = notice(&run(&[s0], &[], false, "2024-05-21 12:00")).clone();
    assert_eq!(d.reason, DecisionReason::AwaitingOutcome);
    let s0 = send(0, 1, Channel::Sms, "2024-05-21 10:00", Outcome::Engaged);
    let d = notice(&run(&[s0], &[], false, "2024-05-22 12:00")).clone();
    assert_eq!((d.action, d.reason), (Action::Suppress, DecisionReason::Done));
    // A paid installment gets no notice at all.
    assert!(run(&[], &[], true, "2024-05-21 10:00").iter().all(|d| d.key.is_none()));
}

#[test]
fn night_defers_to_the_morning() {
    let d = notice(&run(&[], &[], false, "2024-05-21 22:30")).clone();
    assert_eq!(
        d.action,
        Action::Defer {
            until: at("2024-05-22 08:00")
        }
    );
    assert_eq!((d.reason, d.gate), (DecisionReason::Gate, Some(Reason::QuietHours)));
}

#[test]
fn the_emergency_contact_only_when_unreachable_once_and_without_the_debt() {
    // Three failures on the 21st, on every own rung the day allows.
    let fails = [
        send(
            0,
            1,
            Channel::Sms,
            "2024-05-21 09:00",
            Outcome::Failed(DeliveryClass::Dead),
        ),
        send(
            1,
            2,
            Channel::Email,
            "2024-05-21 09:05",
            Outcome::Failed(DeliveryClass::Dead),
        ),
        send(
            2,
            1,
            Channel::Voice,
            "2024-05-21 09:10",
            Outcome::Failed(DeliveryClass::Dead),
        ),
        send(
            3,
            3,
            Channel::Sms,
            "2024-05-21 09:15",
            Outcome::Failed(DeliveryClass::Dead),
        ),
        send(
            4,
            3,
            Channel::Voice,
            "2024-05-21 09:20",
            Outcome::Failed(DeliveryClass::Dead),
        ),
    ];
    // The same day the borrower is not yet formally unreachable: the ladder ends in a check.
    let d = notice(&run(&fails, &[], false, "2024-05-21 09:30")).clone();
    assert_eq!(d.reason, DecisionReason::LadderExhausted, "{d:?}");
    assert!(d.skipped.contains(&(5, Reason::BorrowerReachable)), "{:?}", d.skipped);
    // From the day after three failed attempts: the emergency contact, third-party template.
    let d = notice(&run(&fails, &[], false, "2024-05-22 10:00")).clone();
    assert_eq!(sent_to(&d), (5, 9, Channel::Sms, true));
    // Once per contact, and never after a refusal.
    let contacted = [ThirdPartyRecord {
        contact: ContactId(9),
        contacted: true,
        refused: false,
    }];
    let d = notice(&run(&fails, &contacted, false, "2024-05-22 10:00")).clone();
    assert_eq!(d.reason, DecisionReason::LadderExhausted);
    assert!(d.skipped.contains(&(5, Reason::ThirdPartyContacted)));
    let refused = [ThirdPartyRecord {
        contact: ContactId(9),
        contacted: false,
        refused: true,
    }];
    let d = notice(&run(&fails, &refused, false, "2024-05-22 10:00")).clone();
    assert!(d.skipped.contains(&(5, Reason::ThirdPartyRefused)));
}

#[test]
fn two_notices_due_at_once_ask_the_emergency_contact_once() {
    // The first notice has failed on every own rung (the five of the test above); the second
    // climbed to the same place (its last own rung failed too).
    let second = InstallmentId(78);
    let mut fails: Vec<SendRecord> = [
        (1, Channel::Sms),
        (2, Channel::Email),
        (1, Channel::Voice),
        (3, Channel::Sms),
        (3, Channel::Voice),
    ]
    .iter()
    .enumerate()
    .map(|(i, (c, ch))| send(i, *c, *ch, "2024-05-21 09:00", Outcome::Failed(DeliveryClass::Dead)))
    .collect();
    fails.push(SendRecord {
        key: NoticeKey {
            installment: second,
            ..key()
        },
        ..send(
            4,
            3,
            Channel::Voice,
            "2024-05-21 09:30",
            Outcome::Failed(DeliveryClass::Dead),
        )
    });
    let now = at("2024-05-22 10:00");
    let inst = [
        DueInstallment {
            id: INST,
            due_date: "2024-05-20".parse().unwrap(),
            paid: false,
        },
        DueInstallment {
            id: second,
            due_date: "2024-05-20".parse().unwrap(),
            paid: false,
        },
    ];
    let ds = with_snapshot(&fails, &[], &inst, now, |s| decide(s, now));
    let asked: Vec<&Decision> = ds
        .iter()
        .filter(|d| matches!(d.action, Action::Send { third_party: true, .. }))
        .collect();
    assert_eq!(asked.len(), 1, "{ds:#?}");
    let other = ds
        .iter()
        .find(|d| {
            d.key
                .is_some_and(|k| k.installment != asked[0].key.unwrap().installment)
        })
        .unwrap();
    assert!(
        other.skipped.iter().any(|(_, r)| *r == Reason::ThirdPartyContacted),
        "{other:?}"
    );
}

#[test]
fn two_notices_due_at_once_share_the_days_last_slot_under_the_cap() {
    // Two messages today already (another installment's notices), against the `cn` profile's
    // three a day; two notices fall due at once. One may take the last slot, not both.
    let earlier = InstallmentId(79);
    let today: Vec<SendRecord> = [
        (1, Channel::Sms, "2024-05-21 08:10"),
        (2, Channel::Email, "2024-05-21 08:20"),
    ]
    .iter()
    .map(|(c, ch, t)| SendRecord {
        key: NoticeKey {
            installment: earlier,
            ..key()
        },
        ..send(0, *c, *ch, t, Outcome::Delivered)
    })
    .collect();
    let second = InstallmentId(78);
    let inst = [INST, second].map(|id| DueInstallment {
        id,
        due_date: "2024-05-20".parse().unwrap(),
        paid: false,
    });
    let now = at("2024-05-21 10:00");
    let ds = with_snapshot(&today, &[], &inst, now, |s| decide(s, now));
    let sends = ds
        .iter()
        .filter(|d| d.key.is_some() && matches!(d.action, Action::Send { .. }))
        .count();
    assert_eq!(sends, 1, "{ds:#?}");
    assert_eq!(ds.iter().filter(|d| d.key.is_some()).count(), 2, "both notices decided");
}

#[test]
fn health_requests_become_lookups_and_checks() {
    // One hard failure: suspect, a carrier check asked for.
    let s0 = send(
        0,
        1,
        Channel::Sms,
        "2024-05-21 10:00",
        Outcome::Failed(DeliveryClass::Dead),
    );
    let ds = run(&[s0], &[], false, "2024-05-21 10:05");
    assert!(ds.iter().any(|d| matches!(
        d.action,
        Action::Lookup {
            contact: ContactId(1),
            need: reachline_policy::Need::CarrierCheck
        }
    ) && d.reason == DecisionReason::HealthNeedsLookup));
}

#[test]
fn unreachable_by_rule() {
    let two = [
        send(
            0,
            1,
            Channel::Sms,
            "2024-05-21 09:00",
            Outcome::Failed(DeliveryClass::Transient),
        ),
        send(
            1,
            2,
            Channel::Email,
            "2024-05-21 09:05",
            Outcome::Failed(DeliveryClass::OurFault),
        ),
        send(
            2,
            1,
            Channel::Voice,
            "2024-05-21 09:10",
            Outcome::Failed(DeliveryClass::Transient),
        ),
    ];
    let now = at("2024-05-22 10:00");
    // Our own failure does not count against the borrower: two failures are not three.
    assert!(!with_snapshot(&two, &[], &[], now, |s| formally_unreachable(s, now)));
}

// ------------------------------------------------------------ timing

/// The test borrower's T+1 notice at `now`, timed by `model` (flat prior 0.2 worth 4 sends).
fn timed(model: &SendTimeModel, sends: &[SendRecord], now: &str, seed: u64) -> Decision {
    let now = at(now);
    let inst = [DueInstallment {
        id: INST,
        due_date: "2024-05-20".parse().unwrap(),
        paid: false,
    }];
    let prior = SegmentPrior::flat(0.2, 4.0);
    with_snapshot(sends, &[], &inst, now, |s| {
        let s = Snapshot {
            timing: Some(Timing {
                model,
                prior: &prior,
                seed,
            }),
            ..*s
        };
        notice(&decide(&s, now)).clone()
    })
}

/// A borrower who engaged at 19:00 (local) 30 times out of 30 and never at 10:00.
fn evening_model(day: &str) -> SendTimeModel {
    let mut m = SendTimeModel::default();
    let h = |t: &str| HourOfWeek::of(at(&format!("{day} {t}")), SH);
    for _ in 0..30 {
        m.observe(h("19:00"), true);
        m.observe(h("10:00"), false);
    }
    m
}

#[test]
fn a_first_send_waits_for_the_hour_the_borrower_engages() {
    let d = timed(&evening_model("2024-05-21"), &[], "2024-05-21 10:00", 1);
    assert_eq!(
        d.action,
        Action::Defer {
            until: at("2024-05-21 19:00")
        },
        "{d:?}"
    );
    assert_eq!(d.reason, DecisionReason::BestHour);
    let why = d.timing.expect("the estimate that timed it");
    assert_eq!(why.hour_of_week, HourOfWeek::of(at("2024-05-21 19:00"), SH).0);
    assert_eq!(why.observations, 30);
    assert!(why.mean_permille > 800, "{why:?}");
    // 10:00 to 21:00 local: the cn collection window ends at 22:00.
    assert_eq!(why.candidates, 12);
    // At 19:00 the same draw picks the hour it is: send now, and say why.
    let d = timed(&evening_model("2024-05-21"), &[], "2024-05-21 19:00", 1);
    assert_eq!(sent_to(&d), (0, 1, Channel::Sms, false));
    assert_eq!(d.reason, DecisionReason::CadenceStep);
    assert_eq!(d.timing.map(|t| t.observations), Some(30));
}

#[test]
fn the_draw_is_the_same_all_day_and_differs_between_seeds() {
    let empty = SendTimeModel::default();
    let pick = |now: &str, seed| match timed(&empty, &[], now, seed).action {
        Action::Defer { until } => until,
        Action::Send { permit, .. } => permit.at,
        other => panic!("{other:?}"),
    };
    // Without observations every allowed hour is a candidate; a pass an hour later (before
    // the chosen hour) draws the same hour.
    let first = pick("2024-05-21 08:00", 3);
    for seed in [3, 3, 3] {
        assert_eq!(pick("2024-05-21 08:00", seed), first);
    }
    if first > at("2024-05-21 09:00") {
        assert_eq!(pick("2024-05-21 09:00", 3), first);
    }
    let picks: std::collections::BTreeSet<_> = (0..40).map(|seed| pick("2024-05-21 08:00", seed)).collect();
    assert!(
        picks.len() >= 5,
        "an unobserved borrower is explored over the day: {picks:?}"
    );
    assert!(picks
        .iter()
        .all(|t| *t >= at("2024-05-21 08:00") && *t < at("2024-05-21 22:00")));
}

#[test]
fn timing_never_leaves_the_allowed_hours_nor_delays_the_ladder() {
    // At 21:30 only the current hour is left: send now.
    let d = timed(&evening_model("2024-05-21"), &[], "2024-05-21 21:30", 1);
    assert_eq!(sent_to(&d).2, Channel::Sms);
    assert_eq!(d.timing.map(|t| t.candidates), Some(1));
    // A climb after a failure goes at once, whatever the model says.
    let failed = [send(
        0,
        1,
        Channel::Sms,
        "2024-05-21 09:00",
        Outcome::Failed(DeliveryClass::Dead),
    )];
    let d = timed(&evening_model("2024-05-21"), &failed, "2024-05-21 10:00", 1);
    assert_eq!(d.reason, DecisionReason::EscalatedAfterFailure);
    assert!(matches!(d.action, Action::Send { .. }), "{d:?}");
    assert_eq!(d.timing, None);
    // Before the window opens, the gate defers as before; the model times the send from there.
    let d = timed(&evening_model("2024-05-21"), &[], "2024-05-21 06:00", 1);
    assert_eq!(d.reason, DecisionReason::Gate);
}

// ------------------------------------------------------------ channel choice

/// The test borrower's T+1 notice at `now`, its first channel chosen by `model`.
fn chosen(model: &ChannelModel, sends: &[SendRecord], preferences: &Preferences, now: &str) -> Decision {
    let now = at(now);
    let inst = [DueInstallment {
        id: INST,
        due_date: "2024-05-20".parse().unwrap(),
        paid: false,
    }];
    let cfg = TimingConfig::default();
    with_preferences(preferences, sends, &[], &inst, now, |s| {
        let s = Snapshot {
            channels: Some(ChannelChoice {
                model,
                channels: &cfg.channels,
                prior_strength: cfg.prior_strength,
                cost_weight: cfg.cost_weight,
                seed: 5,
            }),
            ..*s
        };
        notice(&decide(&s, now)).clone()
    })
}

fn email_reader() -> ChannelModel {
    let mut m = ChannelModel::default();
    for _ in 0..30 {
        m.observe(Channel::Email, true);
        m.observe(Channel::Sms, false);
    }
    m
}

#[test]
fn a_notice_opens_on_the_channel_the_borrower_answers() {
    let d = chosen(&email_reader(), &[], &Preferences::default(), "2024-05-21 10:00");
    // The email rung moved to the front of the ladder.
    assert_eq!(sent_to(&d), (0, 2, Channel::Email, false));
    let pick = d.channel.expect("the estimate that chose it");
    assert_eq!(
        (pick.channel, pick.observations, pick.candidates),
        (Channel::Email, 30, 2)
    );
    assert!(pick.mean_permille > 500, "{pick:?}");
    // Without history, the priors favour SMS (email is free but rarely read).
    let d = chosen(
        &ChannelModel::default(),
        &[],
        &Preferences::default(),
        "2024-05-21 10:00",
    );
    assert_eq!(sent_to(&d).2, Channel::Sms);
}

#[test]
fn once_opened_the_ladder_keeps_its_shape_and_a_stated_order_wins() {
    // The notice went by email (rung 0 of the chosen ladder) and failed: the next rung is the
    // SMS to the primary number, whatever the counts now say.
    let failed = [send(
        0,
        2,
        Channel::Email,
        "2024-05-21 09:00",
        Outcome::Failed(DeliveryClass::Dead),
    )];
    let d = chosen(
        &ChannelModel::default(),
        &failed,
        &Preferences::default(),
        "2024-05-21 10:00",
    );
    assert_eq!(sent_to(&d), (1, 1, Channel::Sms, false));
    assert_eq!(d.channel, None);
    // A borrower who stated their channels is not second-guessed.
    let prefs = Preferences::new(vec![Channel::Sms], None).unwrap();
    let d = chosen(&email_reader(), &[], &prefs, "2024-05-21 10:00");
    assert_eq!(sent_to(&d).2, Channel::Sms);
    assert_eq!(d.channel, None);
}
