//! The self-service tables on both back ends: a number change is versioned (a stale version
//! changes nothing) and applied in one step that replaces the contact in its slot; a borrower
//! has one open contact check however many ask at once; nonces are single-use; borrower
//! sessions expire; and a plan request keeps the borrower's words sealed.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reachline_domain::*;
use reachline_store::selfservice::{BorrowerSession, Filter, NewChange, StepRecord};
use reachline_store::ContactEventKind;

use crate::helpers::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap()
}

fn state(s: &str) -> Filter {
    Filter {
        state: Some(s.into()),
        ..Filter::default()
    }
}

/// B1 from [`crate::stories::import_basic`] (mobile 13812345678): its id and its mobile's.
async fn b1(h: &Harness) -> (BorrowerId, ContactId) {
    crate::stories::import_basic(h, "13812345678").await;
    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    let mobile = h
        .store
        .contacts(b.id)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.point.slot == ext("mobile"))
        .unwrap();
    assert!(mobile.is_current());
    (b.id, mobile.id)
}

pub async fn number_changes_are_versioned_and_applied_in_one_step(h: &Harness) {
    let (b, old) = b1(h).await;
    let s = h.selfservice().await;
    let number = PhoneNumber::parse("139 8765 4321").unwrap();
    let id = s
        .create_change(
            &NewChange {
                borrower: b,
                old_contact: Some(old),
                new_address: &ContactAddress::Phone(number.clone()),
                source: "page",
                state: "pending",
                flow: "{}",
            },
            t0(),
        )
        .await
        .unwrap();
    let ch = s.change(id).await.unwrap().unwrap();
    assert_eq!(
        (ch.id, ch.borrower, ch.old_contact, ch.new_address.as_str()),
        (id, b, Some(old), "+8613987654321")
    );
    assert_eq!(ch.new_address, number.e164());
    // An email address to add is kept the same way.
    let email = ContactAddress::Email(reachline_domain::Email::parse("new.me@example.com").unwrap());
    let added = s
        .create_change(
            &NewChange {
                borrower: b,
                old_contact: None,
                new_address: &email,
                source: "page",
                state: "lapsed",
                flow: "{}",
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.change(added).await.unwrap().unwrap().new_address,
        "new.me@example.com"
    );
    assert_eq!(
        (ch.source.as_str(), ch.state.as_str(), ch.flow.as_str(), ch.version),
        ("page", "pending", "{}", 0)
    );
    assert_eq!((ch.created_at, ch.updated_at), (t0(), t0()));
    assert_eq!((ch.new_contact, ch.decided_by, ch.decision_reason), (None, None, None));
    assert_eq!(s.change(id + 1000).await.unwrap(), None);

    // Two requests read version 0; only the first to write spends it.
    let t1 = t0() + Duration::minutes(1);
    let flow = r#"{"codes_sent":1}"#;
    assert!(s.update_change(id, 0, "pending", flow, None, t1).await.unwrap());
    assert!(!s
        .update_change(id, 0, "rejected", "{}", Some(("operator:o1", "late")), t1)
        .await
        .unwrap());
    let ch = s.change(id).await.unwrap().unwrap();
    assert_eq!(
        (ch.state.as_str(), ch.flow.as_str(), ch.version, ch.updated_at),
        ("pending", flow, 1, t1)
    );
    assert_eq!(ch.decided_by, None, "the stale update wrote nothing");

    let pending = s.changes(&state("pending")).await.unwrap();
    assert_eq!(pending.iter().map(|c| c.id).collect::<Vec<_>>(), [id]);
    assert_eq!(pending[0], ch);
    assert!(s.changes(&state("applied")).await.unwrap().is_empty());
    let of_other = Filter {
        borrower: Some(BorrowerId(b.0 + 1)),
        ..Filter::default()
    };
    assert!(s.changes(&of_other).await.unwrap().is_empty());

    // Applied: the new number takes the mobile slot, verified; the old one is retired.
    let t2 = t0() + Duration::minutes(2);
    let mut point = mobile("mobile", "13987654321", ContactRole::Primary);
    point.source = ContactSource::Borrower;
    point.verified_at = Some(t2);
    let new = s
        .apply_change(
            id,
            1,
            &point,
            r#"{"done":true}"#,
            "borrower",
            Some(("operator:o1", "documents match")),
            t2,
        )
        .await
        .unwrap()
        .expect("the change was at version 1");
    assert_ne!(new, old);
    let contacts = h.store.contacts(b).await.unwrap();
    let was = contacts.iter().find(|c| c.id == old).unwrap();
    let retired = was.retired.as_ref().expect("the old mobile is retired");
    assert_eq!((retired.reason.as_str(), retired.at), ("replaced", t2));
    let now = contacts.iter().find(|c| c.id == new).unwrap();
    assert!(now.is_current());
    assert_eq!(now.point, point);
    assert_eq!(now.point.address.canonical(), "+8613987654321");
    let current_mobiles = contacts
        .iter()
        .filter(|c| c.is_current() && c.point.slot == ext("mobile"))
        .count();
    assert_eq!(current_mobiles, 1);
    let history: Vec<_> = h
        .store
        .contact_history(b)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.at == t2)
        .map(|e| (e.contact_id, e.kind, e.actor, e.detail))
        .collect();
    assert_eq!(
        history,
        [
            (
                old,
                ContactEventKind::Retired,
                "borrower".into(),
                Some("replaced".into())
            ),
            (new, ContactEventKind::Added, "borrower".into(), None),
            (
                new,
                ContactEventKind::Verified,
                "borrower".into(),
                Some("as stated at entry".into())
            ),
        ]
    );
    let ch = s.change(id).await.unwrap().unwrap();
    assert_eq!(
        (ch.state.as_str(), ch.flow.as_str(), ch.version, ch.new_contact),
        ("applied", r#"{"done":true}"#, 2, Some(new))
    );
    assert_eq!(
        (ch.decided_by.as_deref(), ch.decision_reason.as_deref(), ch.updated_at),
        (Some("operator:o1"), Some("documents match"), t2)
    );
    assert_eq!(
        s.changes(&state("applied"))
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        [id]
    );
    assert!(s.changes(&state("pending")).await.unwrap().is_empty());

    // Applied again at the version both read: nothing, and no contact added or retired.
    let before = h.store.contacts(b).await.unwrap();
    let events = h.store.contact_history(b).await.unwrap().len();
    let again = mobile("mobile", "13700009999", ContactRole::Primary);
    assert_eq!(
        s.apply_change(id, 1, &again, "{}", "borrower", None, t2 + Duration::minutes(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(h.store.contacts(b).await.unwrap(), before);
    assert_eq!(h.store.contact_history(b).await.unwrap().len(), events);
    assert_eq!(s.change(id).await.unwrap().unwrap(), ch);
}

pub async fn checks_steps_nonces_sessions_and_failures(h: &Harness) {
    let (b, mobile) = b1(h).await;
    let s = h.selfservice().await;

    // One open check per borrower.
    let (first, created) = s.open_check(b, Some(mobile), "dead_receipts", t0()).await.unwrap();
    assert!(created);
    assert_eq!(
        (
            first.borrower,
            first.contact,
            first.state.as_str(),
            first.reason.as_str()
        ),
        (b, Some(mobile), "open", "dead_receipts")
    );
    assert_eq!((first.opened_at, first.updated_at), (t0(), t0()));
    let (same, created) = s
        .open_check(b, None, "unreachable", t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same, first, "the open check is returned as it is");
    // An operator task is still open.
    s.set_check_state(first.id, "operator_task", t0() + Duration::minutes(2))
        .await
        .unwrap();
    let (same, created) = s.open_check(b, None, "unreachable", t0()).await.unwrap();
    assert_eq!(
        (same.id, same.state.as_str(), created),
        (first.id, "operator_task", false)
    );
    assert_eq!(same.updated_at, t0() + Duration::minutes(2));
    // Once confirmed, the next doubt opens a new check.
    s.set_check_state(first.id, "confirmed", t0() + Duration::hours(1))
        .await
        .unwrap();
    let (second, created) = s
        .open_check(b, None, "unreachable", t0() + Duration::hours(2))
        .await
        .unwrap();
    assert!(created);
    assert!(second.id > first.id);
    assert_eq!((second.contact, second.state.as_str()), (None, "open"));
    let ids = |v: Vec<reachline_store::selfservice::CheckRecord>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(s.checks(&state("open")).await.unwrap()), [second.id]);
    assert_eq!(ids(s.checks(&state("confirmed")).await.unwrap()), [first.id]);
    assert_eq!(ids(s.checks(&Filter::default()).await.unwrap()), [second.id, first.id]);
    let one = Filter {
        borrower: Some(b),
        limit: 1,
        ..Filter::default()
    };
    assert_eq!(ids(s.checks(&one).await.unwrap()), [second.id]);
    let other = Filter {
        state: Some("open".into()),
        borrower: Some(BorrowerId(b.0 + 1)),
        limit: 0,
    };
    assert!(s.checks(&other).await.unwrap().is_empty());
    let confirmed = s.checks(&state("confirmed")).await.unwrap().remove(0);
    assert_eq!(confirmed.updated_at, t0() + Duration::hours(1));
    assert_eq!(confirmed.opened_at, t0());

    // Asked at once by many: one check is opened, and every caller gets it.
    s.set_check_state(second.id, "closed", t0() + Duration::hours(3))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.open_check(b, None, "unreachable", t0() + Duration::hours(4) + Duration::seconds(i))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut opened = Vec::new();
    for t in tasks {
        opened.push(t.await.unwrap());
    }
    let got: Vec<_> = opened.iter().map(|(c, created)| (c.id, *created)).collect();
    assert_eq!(got.iter().filter(|(_, created)| *created).count(), 1, "{got:?}");
    assert!(opened.iter().all(|(c, _)| c.id == opened[0].0.id));
    assert_eq!(s.checks(&state("open")).await.unwrap().len(), 1);

    // Steps, in order, of one change or one check or all.
    let number = PhoneNumber::parse("13987654321").unwrap();
    let change = s
        .create_change(
            &NewChange {
                borrower: b,
                old_contact: Some(mobile),
                new_address: &ContactAddress::Phone(number.clone()),
                source: "reply",
                state: "pending",
                flow: "{}",
            },
            t0(),
        )
        .await
        .unwrap();
    let step = |change: Option<i64>, check: Option<i64>, min: i64, step: &str, detail: Option<&str>| StepRecord {
        borrower: b,
        change,
        check,
        at: t0() + Duration::minutes(min),
        step: step.into(),
        actor: "engine".into(),
        detail: detail.map(Into::into),
    };
    let all = [
        step(None, Some(first.id), 1, "check_started", None),
        step(None, Some(first.id), 2, "link_sent", Some(r#"{"channel":"email"}"#)),
        step(Some(change), None, 3, "code_sent", Some(r#"{"channel":"sms"}"#)),
        step(Some(change), Some(first.id), 4, "code_wrong", None),
        step(None, Some(second.id), 5, "check_started", None),
    ];
    for st in &all {
        s.add_step(st).await.unwrap();
    }
    assert_eq!(s.steps(b, None, None).await.unwrap(), all);
    assert_eq!(s.steps(b, Some(change), None).await.unwrap(), all[2..4]);
    assert_eq!(
        s.steps(b, None, Some(first.id)).await.unwrap(),
        [&all[..2], &all[3..4]].concat()
    );
    assert_eq!(s.steps(b, Some(change), Some(first.id)).await.unwrap(), all[3..4]);
    assert!(s.steps(BorrowerId(b.0 + 1), None, None).await.unwrap().is_empty());

    // A nonce is taken once.
    assert!(s.use_nonce(-7_301_234_567_890, t0()).await.unwrap());
    assert!(!s
        .use_nonce(-7_301_234_567_890, t0() + Duration::minutes(1))
        .await
        .unwrap());
    assert!(s.use_nonce(42, t0()).await.unwrap());

    // Sessions: read while live, factors updated in place, gone once expired.
    let digest = [3u8; 32];
    let session = BorrowerSession {
        borrower: b,
        factors: "[]".into(),
        csrf: "csrf-token-1".into(),
        expires_at: t0() + Duration::minutes(30),
    };
    s.create_borrower_session(digest, &session, t0()).await.unwrap();
    assert_eq!(
        s.borrower_session(digest, t0() + Duration::minutes(1)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(s.borrower_session([4u8; 32], t0()).await.unwrap(), None);
    s.set_session_factors(digest, r#"["sms_code"]"#).await.unwrap();
    let read = s
        .borrower_session(digest, t0() + Duration::minutes(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.factors, r#"["sms_code"]"#);
    assert_eq!(
        (read.csrf.as_str(), read.expires_at),
        ("csrf-token-1", session.expires_at)
    );
    assert_eq!(
        s.borrower_session(digest, t0() + Duration::minutes(30)).await.unwrap(),
        None
    );
    // The next session forgets the expired one: not even an earlier clock finds it.
    let later = BorrowerSession {
        expires_at: t0() + Duration::hours(2),
        ..session.clone()
    };
    s.create_borrower_session([5u8; 32], &later, t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(s.borrower_session(digest, t0()).await.unwrap(), None);
    assert!(s
        .borrower_session([5u8; 32], t0() + Duration::hours(1))
        .await
        .unwrap()
        .is_some());

    // Consecutive failed codes, per borrower.
    assert_eq!(s.code_failures(b).await.unwrap(), 0);
    s.set_code_failures(b, 3, t0()).await.unwrap();
    assert_eq!(s.code_failures(b).await.unwrap(), 3);
    assert_eq!(s.code_failures(BorrowerId(b.0 + 1)).await.unwrap(), 0);
    s.set_code_failures(b, 0, t0() + Duration::minutes(1)).await.unwrap();
    assert_eq!(s.code_failures(b).await.unwrap(), 0);
}

pub async fn plan_requests_keep_the_borrowers_words_sealed(h: &Harness) {
    let (b, _) = b1(h).await;
    let s = h.selfservice().await;
    let loan = h.store.loans(b).await.unwrap()[0].id;
    let words = "工资推迟到月底发放，请打 13755556666 联系我";
    let id = s.add_plan_request(b, loan, "extension", words, t0()).await.unwrap();
    let later = s
        .add_plan_request(b, loan, "due_day", "每月20号还款", t0() + Duration::minutes(5))
        .await
        .unwrap();
    assert!(later > id);

    let all = s.plan_requests(&state("open")).await.unwrap();
    assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), [later, id]);
    let p = &all[1];
    assert_eq!(
        (p.borrower, p.loan, p.kind.as_str(), p.reason.as_str(), p.state.as_str()),
        (b, loan, "extension", words, "open")
    );
    assert_eq!(p.created_at, t0());
    assert_eq!(
        (p.decided_at, p.decided_by.clone(), p.decision_reason.clone()),
        (None, None, None)
    );
    let newest = Filter {
        borrower: Some(b),
        limit: 1,
        ..Filter::default()
    };
    assert_eq!(s.plan_requests(&newest).await.unwrap()[0].reason, "每月20号还款");

    // Decided once.
    let t1 = t0() + Duration::hours(1);
    assert!(s
        .decide_plan_request(id, "accepted", "operator:o1", "one month granted", t1)
        .await
        .unwrap());
    assert!(!s
        .decide_plan_request(id, "declined", "operator:o2", "too late", t1 + Duration::minutes(1))
        .await
        .unwrap());
    assert!(!s
        .decide_plan_request(later + 1000, "accepted", "operator:o1", "", t1)
        .await
        .unwrap());
    let accepted = s.plan_requests(&state("accepted")).await.unwrap();
    assert_eq!(accepted.len(), 1);
    let a = &accepted[0];
    assert_eq!((a.id, a.reason.as_str(), a.state.as_str()), (id, words, "accepted"));
    assert_eq!(
        (a.decided_at, a.decided_by.as_deref(), a.decision_reason.as_deref()),
        (Some(t1), Some("operator:o1"), Some("one month granted"))
    );
    assert_eq!(
        s.plan_requests(&state("open"))
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [later]
    );

    // The borrower's words, and the new number of a change, are not at rest in the clear.
    let number = PhoneNumber::parse("13987654321").unwrap();
    s.create_change(
        &NewChange {
            borrower: b,
            old_contact: None,
            new_address: &ContactAddress::Phone(number.clone()),
            source: "page",
            state: "pending",
            flow: "{}",
        },
        t0(),
    )
    .await
    .unwrap();
    let raw = h.raw_dump().await;
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let found = |n: &[u8]| raw.windows(n.len()).any(|w| w == n);
    for needle in [words, "工资推迟", "13755556666", "每月20号还款", "13987654321"] {
        assert!(!found(needle.as_bytes()), "plaintext {needle:?} found at rest");
        assert!(!found(hex(needle).as_bytes()), "hex of {needle:?} found at rest");
    }
    // The check is not vacuous: what is not personal is there in the clear.
    for clear in ["extension", "one month granted"] {
        assert!(found(clear.as_bytes()), "{clear:?} not found at rest");
    }
}

pub async fn preferences_are_kept_and_reach_the_engine_view(h: &Harness) {
    let (b, _) = b1(h).await;
    let s = h.selfservice().await;
    let e = h.engine().await;
    let day = t0().date_naive();
    assert_eq!(s.preferences(b).await.unwrap(), Preferences::default());
    assert_eq!(
        e.views(&[b], day, day).await.unwrap()[0].preferences,
        Preferences::default()
    );
    let at = |h: u32, m: u32| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let p = Preferences::new(
        vec![Channel::Email, Channel::Sms],
        Some(QuietHours::new(at(21, 30), at(9, 0)).unwrap()),
    )
    .unwrap();
    s.set_preferences(b, &p, t0()).await.unwrap();
    assert_eq!(s.preferences(b).await.unwrap(), p);
    assert_eq!(e.views(&[b], day, day).await.unwrap()[0].preferences, p);
    // Set again: replaced, not added to.
    let q = Preferences::new(vec![Channel::Im], None).unwrap();
    s.set_preferences(b, &q, t0()).await.unwrap();
    assert_eq!(s.preferences(b).await.unwrap(), q);
    assert_eq!(e.views(&[b], day, day).await.unwrap()[0].preferences, q);
}

/// A verification message's receipts match it (not flagged as strays): the first outcome of a
/// message sent to a contact point is evidence about it, its other parts add nothing, and a
/// message to an address that is no contact point yet is matched without evidence.
pub async fn verification_receipts_are_evidence_not_strays(h: &Harness) {
    use reachline_store::engine::{Matched, ReceiptIn, VerificationSent};
    let (b, mobile) = b1(h).await;
    let e = h.engine().await;
    let day = t0().date_naive();
    let evidence_of = |views: Vec<reachline_store::engine::EngineView>| views[0].evidence.len();
    let before = evidence_of(e.views(&[b], day, day).await.unwrap());
    let sent = |contact, ids: &[&str]| VerificationSent {
        borrower: b,
        contact,
        channel: Channel::Sms,
        at: t0(),
        provider: "smsc".into(),
        provider_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    let class_kind = |_: DeliveryClass| r#"{"kind":"delivery","channel":"sms","class":"delivered"}"#.to_string();
    e.record_verification_sent(&sent(Some(mobile), &["v-1a", "v-1b"]), &class_kind)
        .await
        .unwrap();
    e.record_verification_sent(&sent(None, &["v-2"]), &class_kind)
        .await
        .unwrap();
    let receipt = |pid: &str| ReceiptIn {
        at: t0() + Duration::minutes(1),
        provider: "smsc".into(),
        provider_id: pid.into(),
        outbox_id: None,
        class: DeliveryClass::Delivered,
        code: "DELIVRD".into(),
        is_final: true,
        raw: b"stat:DELIVRD".to_vec(),
    };
    let kind = |_: Channel, _: DeliveryClass| r#"{"kind":"delivery","channel":"sms","class":"delivered"}"#.to_string();
    let got = e
        .record_receipts(
            vec![receipt("v-1a"), receipt("v-1b"), receipt("v-2"), receipt("nobody")],
            &kind,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Matched::Verification {
                borrower: b,
                contact: Some(mobile),
                changed: true
            },
            Matched::Verification {
                borrower: b,
                contact: Some(mobile),
                changed: false
            },
            Matched::Verification {
                borrower: b,
                contact: None,
                changed: true
            },
            Matched::Unmatched,
        ]
    );
    let views = e.views(&[b], day, day).await.unwrap();
    assert_eq!(evidence_of(views.clone()), before + 1, "one observation per message");
    assert!(views[0].evidence.iter().any(|ev| ev.contact == Some(mobile)));
    // A receipt that beats the message's record is kept unmatched, then matched by the record.
    let early = e.record_receipts(vec![receipt("v-3")], &kind).await.unwrap();
    assert_eq!(early, vec![Matched::Unmatched]);
    e.record_verification_sent(&sent(Some(mobile), &["v-3"]), &class_kind)
        .await
        .unwrap();
    assert_eq!(
        evidence_of(e.views(&[b], day, day).await.unwrap()),
        before + 2,
        "the early receipt became evidence"
    );
    // Matched once: the same receipt again changes nothing.
    let again = e.record_receipts(vec![receipt("v-3")], &kind).await.unwrap();
    assert!(
        matches!(&again[..], [Matched::Verification { changed: false, .. }]),
        "{again:?}"
    );
}
