//! Erasure and retention on both back ends: an erased borrower's keys, ciphertexts, indexes
//! and raw receipts are gone and the rest is kept; retention deletes only what is past its
//! class's maximum, never the standing consent.

use chrono::{Duration, TimeZone, Utc};
use reachline_domain::*;
use reachline_store::engine::{NewSend, PlanWrite, ReceiptIn, SentRecord};
use reachline_store::privacy::{ErasureRequest, RetentionRules};

use crate::helpers::*;
use crate::stories::import_basic;

/// The receipt's raw bytes carry the destination number, as some SMSCs' do.
const RAW: &[u8] = b"id:p-1 stat:DELIVRD dest:8613812345678";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn holds(dump: &[u8], needle: &[u8]) -> bool {
    let h = hex(needle);
    dump.windows(needle.len()).any(|w| w == needle) || dump.windows(h.len()).any(|w| w == h.as_bytes())
}

/// B1 with one send handed over and receipted, one still queued.
async fn contacted(h: &Harness) -> (BorrowerId, chrono::DateTime<Utc>) {
    import_basic(h, "13812345678").await;
    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap().id;
    let mobile = h
        .store
        .contacts(b)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.point.slot.as_str() == "mobile")
        .unwrap()
        .id;
    let at = Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap();
    let e = h.engine().await;
    let send = |n: i64| NewSend {
        idem_key: format!("k{n}"),
        borrower: b,
        installment: InstallmentId(n),
        step: 0,
        kind: "pre_due_t3".into(),
        rung: 0,
        contact: mobile,
        channel: Channel::Sms,
        third_party: false,
        not_before: at + Duration::days(n - 1),
    };
    e.write_plan(PlanWrite {
        at: Some(at),
        sends: vec![send(1), send(2)],
        ..PlanWrite::default()
    })
    .await
    .unwrap();
    let rows = e.lease("n", at, Duration::minutes(5), 10).await.unwrap();
    assert_eq!(rows.len(), 1, "the second is not due yet");
    e.mark_sending_many("n", vec![rows[0].id], at).await.unwrap();
    e.record_sent_many(
        vec![SentRecord {
            id: rows[0].id,
            at,
            provider: "smsc".into(),
            provider_ids: vec!["p-1".into()],
            template_id: "pre_due_t3".into(),
            template_version: 1,
            text_sha256: [7; 32],
        }],
        &|_, _| String::new(),
    )
    .await
    .unwrap();
    e.record_receipts(
        vec![ReceiptIn {
            at,
            provider: "smsc".into(),
            provider_id: "p-1".into(),
            outbox_id: None,
            class: DeliveryClass::Delivered,
            code: "DELIVRD".into(),
            is_final: true,
            raw: RAW.to_vec(),
        }],
        &|_, _| r#"{"kind":"delivered"}"#.into(),
    )
    .await
    .unwrap();
    (b, at)
}

pub async fn erasure_shreds_everything_that_could_reach_the_borrower(h: &Harness) {
    let (b, at) = contacted(h).await;
    let p = h.privacy().await;
    assert_eq!(p.borrower_id(&ext("B1")).await.unwrap(), Some(b));
    let facts = p.erasure_facts(b).await.unwrap();
    assert_eq!(facts.unpaid_installments, 2);
    assert_eq!(facts.last_contact, Some(at));
    assert!(facts.erased.is_none());
    assert_eq!(
        RetentionRules::default().erasable_from(facts.last_contact),
        Some(at + Duration::days(730))
    );
    assert_eq!(p.wrapped_key_counts().await.unwrap(), vec![("test".to_string(), 1)]);
    let number = PhoneNumber::parse("13812345678").unwrap();
    assert_eq!(h.store.contacts_by_phone(&number).await.unwrap().len(), 1);
    assert!(holds(&h.raw_dump().await, RAW), "the raw receipt is kept until erasure");

    let when = at + Duration::days(800);
    let shredded = p.erase(b, when, "test", "borrower_request", "case 1").await.unwrap();
    assert_eq!(shredded.contact_points, 3);
    assert_eq!(shredded.raw_receipts, 1);
    assert_eq!(shredded.sends_cancelled, 1, "the queued send will not go");
    // Again: nothing more to do.
    let again = p.erase(b, when, "test", "borrower_request", "case 1").await.unwrap();
    assert_eq!(again, Default::default());

    let facts = p.erasure_facts(b).await.unwrap();
    let row = facts.erased.expect("the erasure is recorded");
    assert_eq!(
        (row.at, row.basis.as_str(), row.ledger_index),
        (when, "borrower_request", None)
    );
    p.erasure_logged(b, 5).await.unwrap();
    assert_eq!(p.erasures().await.unwrap()[0].1.ledger_index, Some(5));
    assert!(p.wrapped_key_counts().await.unwrap().is_empty(), "no live data key");

    // Nothing opens, nothing finds them, the engine no longer sees them.
    let e = h.store.contacts(b).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "{e}");
    assert!(h.store.contacts_by_phone(&number).await.unwrap().is_empty());
    let views = h
        .engine()
        .await
        .views(&[b], at.date_naive(), when.date_naive())
        .await
        .unwrap();
    assert!(views.is_empty());
    let e = h.ledger().await.commitment_key(b).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "{e}");
    let dump = h.raw_dump().await;
    assert!(!holds(&dump, RAW), "the raw receipt is blanked");
    assert!(!holds(&dump, b"8613812345678"));
    // What the retention floors keep stays: the attempt, the loan, the consents.
    let sends = h.engine().await.sends_of(b).await.unwrap();
    assert_eq!(sends.len(), 2);
    assert_eq!(h.store.loans(b).await.unwrap().len(), 1);
    assert_eq!(h.store.consents(b).await.unwrap().len(), 2);
}

pub async fn retention_purges_past_the_maximum_and_keeps_standing_consent(h: &Harness) {
    let (b, at) = contacted(h).await;
    let p = h.privacy().await;
    // A consent given, then withdrawn: the withdrawal stands, the grant is history.
    h.store
        .record_consent(
            b,
            &consent(Purpose::Collection, Some(Channel::Sms), ConsentState::Withdrawn, at),
        )
        .await
        .unwrap();
    let rules = RetentionRules::default();
    let count = |lines: &[reachline_store::privacy::RetentionLine], table: &str| {
        lines.iter().find(|l| l.what == table).map(|l| l.count).unwrap()
    };
    // Within the maximum, nothing is reached.
    let soon = p.purge(&rules, at + Duration::days(365), false).await.unwrap();
    assert!(soon.iter().all(|l| l.count == 0), "{soon:?}");
    // Six years on: the attempts, the receipt, the superseded consent event.
    let later = at + Duration::days(6 * 365);
    let plan = p.purge(&rules, later, false).await.unwrap();
    assert_eq!(count(&plan, "receipts"), 1);
    assert_eq!(count(&plan, "outbox"), 1, "the sent one; the queued one is not final");
    assert_eq!(count(&plan, "outbox_provider_ids"), 1);
    assert_eq!(count(&plan, "consents"), 1, "only the grant the withdrawal replaced");
    assert!(plan.iter().all(|l| l.action == "would delete"));
    // A dry run changes nothing.
    assert_eq!(p.purge(&rules, later, false).await.unwrap(), plan);
    let done = p.purge(&rules, later, true).await.unwrap();
    assert_eq!(
        done.iter().map(|l| l.count).collect::<Vec<_>>(),
        plan.iter().map(|l| l.count).collect::<Vec<_>>()
    );
    assert!(p
        .purge(&rules, later, false)
        .await
        .unwrap()
        .iter()
        .all(|l| l.count == 0));
    let consents = h.store.consents(b).await.unwrap();
    assert!(consents
        .iter()
        .any(|c| c.purpose == Purpose::Collection && c.state == ConsentState::Withdrawn));
    assert!(!consents
        .iter()
        .any(|c| c.purpose == Purpose::Collection && c.state == ConsentState::Granted));

    // B1 owes: never reached by the personal-data rule. B2 paid long ago and went quiet: reached.
    let mut tx = h.store.begin_import(t(1, 8)).await.unwrap();
    let ids = tx.upsert_borrowers(vec![borrower("B2", "李娜")]).await.unwrap();
    let loans = tx.upsert_loans(vec![(ids[0], loan("L2", "B2"))]).await.unwrap();
    tx.upsert_installments(vec![(loans[0], installment("L2", 1, true))])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let now = Utc::now();
    assert!(p.expired_borrowers(&rules, now).await.unwrap().is_empty());
    let far = now + Duration::days(rules.personal_data_max_days.into()) + Duration::days(1);
    assert_eq!(p.expired_borrowers(&rules, far).await.unwrap(), vec![ids[0]]);
    // A request waits for its date.
    p.request_erasure(
        ids[0],
        &ErasureRequest {
            requested_at: now,
            not_before: now + Duration::days(10),
            actor: "test".into(),
            reason: "case 2".into(),
        },
    )
    .await
    .unwrap();
    assert!(p.due_erasure_requests(now).await.unwrap().is_empty());
    assert_eq!(
        p.due_erasure_requests(now + Duration::days(10)).await.unwrap(),
        vec![ids[0]]
    );
    assert_eq!(
        p.erasure_facts(ids[0]).await.unwrap().requested.unwrap().reason,
        "case 2"
    );
    // Erasing carries the request out (and removes it).
    p.erase(ids[0], now, "test", "borrower_request", "case 2")
        .await
        .unwrap();
    assert!(p.due_erasure_requests(far).await.unwrap().is_empty());
    assert!(p.expired_borrowers(&rules, far).await.unwrap().is_empty());

    // Rules below the law's floors are refused, naming the key.
    let e = RetentionRules {
        collection_min_days: 365,
        ..rules
    }
    .validate()
    .unwrap_err();
    assert!(e.contains("retention.collection_min_days") && e.contains("730"), "{e}");
    let e = RetentionRules {
        processing_max_days: 1000,
        ..rules
    }
    .validate()
    .unwrap_err();
    assert!(e.contains("processing_max_days"), "{e}");
}
