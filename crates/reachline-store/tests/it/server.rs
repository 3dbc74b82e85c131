//! The server's tables on both back ends: tokens are stored once and revoked once, the access
//! log reads back newest first and by borrower, and a webhook signature is taken once per
//! provider until it expires (or is forgotten).

use chrono::{DateTime, Duration, TimeZone, Utc};
use reachline_domain::BorrowerId;
use reachline_store::server::{AccessEntry, Sighting, TokenRecord};
use reachline_store::StoreError;

use crate::helpers::Harness;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap()
}

pub async fn tokens_access_log_and_webhook_sightings(h: &Harness) {
    let s = h.server().await;
    let token = TokenRecord {
        id: "a1b2c3d4e5f6".into(),
        name: "core banking".into(),
        role: "integration".into(),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: t0(),
        revoked_at: None,
    };
    s.create_token(&token).await.unwrap();
    assert!(matches!(s.create_token(&token).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.token("a1b2c3d4e5f6").await.unwrap(), Some(token.clone()));
    assert_eq!(s.token("nope").await.unwrap(), None);
    assert!(s.revoke_token("a1b2c3d4e5f6", t0() + Duration::hours(1)).await.unwrap());
    assert!(!s.revoke_token("a1b2c3d4e5f6", t0() + Duration::hours(2)).await.unwrap());
    let all = s.tokens().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].revoked_at, Some(t0() + Duration::hours(1)));

    for (i, b) in [1, 2, 1].into_iter().enumerate() {
        s.log_access(&AccessEntry {
            at: t0() + Duration::minutes(i as i64),
            actor: "token:a1b2c3d4e5f6".into(),
            action: "borrower.read".into(),
            borrower: Some(BorrowerId(b)),
            reason: format!("case {i}"),
            request_id: format!("r{i}"),
        })
        .await
        .unwrap();
    }
    let of_1 = s.access_log(Some(BorrowerId(1)), 10).await.unwrap();
    assert_eq!(
        of_1.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(),
        ["r2", "r0"]
    );
    assert_eq!(of_1[0].at, t0() + Duration::minutes(2));
    assert_eq!(s.access_log(None, 2).await.unwrap().len(), 2);

    let d = [7u8; 32];
    let exp = t0() + Duration::minutes(10);
    let seen = |provider: &str, expires| Sighting {
        provider: provider.into(),
        digest: d,
        expires,
    };
    // The second copy in one batch is a replay of the first; another provider's identical
    // digest is its own.
    assert_eq!(
        s.first_sightings(&[seen("agg", exp), seen("agg", exp), seen("voice", exp)], t0())
            .await
            .unwrap(),
        [true, false, true]
    );
    assert_eq!(
        s.first_sightings(&[seen("agg", exp)], t0() + Duration::minutes(1))
            .await
            .unwrap(),
        [false]
    );
    // Forgotten (its receipt was not recorded): the retry passes.
    s.forget_sighting("voice", d).await.unwrap();
    assert_eq!(s.first_sightings(&[seen("voice", exp)], t0()).await.unwrap(), [true]);
    // Expired: forgotten by the next batch.
    assert_eq!(
        s.first_sightings(&[seen("agg", exp + Duration::minutes(10))], exp)
            .await
            .unwrap(),
        [true]
    );
}

pub async fn the_dashboard_reads_what_happened(h: &Harness) {
    crate::stories::import_basic(h, "13812345678").await;
    let e = h.engine().await;
    let b = h
        .store
        .borrower_by_external_id(&crate::helpers::ext("B1"))
        .await
        .unwrap()
        .unwrap();
    let contacts = h.store.contacts(b.id).await.unwrap();
    let (mobile, email) = (contacts[0].id, contacts[1].id);
    // Delivered three days before the mobile's first dead receipt: lost for at most three days.
    e.add_evidence(
        b.id,
        Some(mobile),
        t0() - Duration::days(3),
        "{}",
        r#"{"kind":"delivery","channel":"sms","class":"delivered"}"#,
    )
    .await
    .unwrap();
    // A dead receipt on the mobile (twice: one contact point), a wrong-number reply on the email.
    for at in [t0(), t0() + Duration::days(1)] {
        e.add_evidence(
            b.id,
            Some(mobile),
            at,
            "{}",
            r#"{"kind":"delivery","channel":"sms","class":"dead"}"#,
        )
        .await
        .unwrap();
    }
    e.add_evidence(
        b.id,
        Some(email),
        t0(),
        "{}",
        r#"{"kind":"reply","channel":"email","class":"wrong_number"}"#,
    )
    .await
    .unwrap();
    // A delivery says nothing about being lost.
    e.add_evidence(
        b.id,
        Some(email),
        t0(),
        "{}",
        r#"{"kind":"delivery","channel":"email","class":"delivered"}"#,
    )
    .await
    .unwrap();
    h.store
        .retire_contact(mobile, t0(), "operator:o1", "dead")
        .await
        .unwrap();
    let today = t0().date_naive();
    let d = e.dashboard(today).await.unwrap();
    // 2026-05-01 is a Friday: its week starts on Monday 27 April.
    let monday = chrono::NaiveDate::from_ymd_opt(2026, 4, 27).unwrap();
    assert_eq!(
        d.found,
        [(monday, "dead".to_string(), 1), (monday, "wrong_party".to_string(), 1)]
    );
    assert_eq!(d.retired, [(monday, "dead".to_string(), 1)]);
    assert!(d.exposure.is_empty(), "nobody is unreachable yet");
    // The email had no delivery before its wrong-number reply: no figure for it.
    assert_eq!(d.detect_seconds, [3 * 86_400]);
    assert!(d.reach.is_empty() && d.queue.is_empty());

    // The ladder ran out on a paid installment: nobody is unreachable for it.
    let loans = h.store.loans(b.id).await.unwrap();
    let inst = h.store.installments(loans[0].id).await.unwrap();
    let state = |i: usize| {
        format!(
            "INSERT INTO notice_states (borrower_id, notice, action, reason, at) VALUES ({}, '{}/6/overdue', 'contact_check', 'ladder_exhausted', {})",
            b.id.0,
            inst[i].id.0,
            match h.store.backend() {
                reachline_store::Backend::Sqlite => t0().timestamp_micros().to_string(),
                reachline_store::Backend::Postgres => "now()".to_string(),
            }
        )
    };
    assert!(inst[0].installment.paid_at.is_some());
    h.raw_exec(&state(0), None, None).await;
    assert!(e.dashboard(today).await.unwrap().exposure.is_empty());
    // It ran out on an open one: what B1 still owes is exposure, by how late it is.
    h.raw_exec(&state(1), None, None).await;
    let d = e.dashboard(today).await.unwrap();
    assert_eq!(d.exposure.len(), 1, "{:?}", d.exposure);
    let x = &d.exposure[0];
    // Installments 2 and 3 are open; the oldest fell due on 15 March, 47 days before.
    assert_eq!(
        (
            x.product.as_str(),
            x.bucket.as_str(),
            x.currency.as_str(),
            x.borrowers,
            x.outstanding_minor
        ),
        ("consumer-12m", "31-60", "CNY", 1, 210_000)
    );
}
