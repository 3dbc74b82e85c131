//! Storage stories, each written once against `dyn Store` and run on both back ends.

use reachline_domain::*;
use reachline_store::{ContactEventKind, Counts, StoreError, REPLACED_BY_BOOK};

use crate::helpers::*;

/// Imports one borrower with two contacts, an emergency contact, a loan of three installments
/// and two consents.
pub async fn import_basic(h: &Harness, number: &str) -> reachline_store::ImportReport {
    let mut tx = h.store.begin_import(t(1, 8)).await.unwrap();
    let ids = tx.upsert_borrowers(vec![borrower("B1", "张伟")]).await.unwrap();
    tx.upsert_contacts(vec![
        (ids[0], mobile("mobile", number, ContactRole::Primary)),
        (ids[0], email("email", "Zhang.Wei@Example.com")),
        (
            ids[0],
            mobile("emergency1", "13900001111", ContactRole::Emergency(Relation::Spouse)),
        ),
    ])
    .await
    .unwrap();
    let loans = tx.upsert_loans(vec![(ids[0], loan("L1", "B1"))]).await.unwrap();
    tx.upsert_installments((1..=3).map(|s| (loans[0], installment("L1", s, s == 1))).collect())
        .await
        .unwrap();
    tx.add_consents(vec![
        (ids[0], consent(Purpose::Service, None, ConsentState::Granted, t(1, 8))),
        (
            ids[0],
            consent(Purpose::Collection, Some(Channel::Sms), ConsentState::Granted, t(1, 8)),
        ),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap()
}

pub async fn import_round_trip(h: &Harness) {
    let report = import_basic(h, "13812345678").await;
    assert_eq!(report.borrowers_created, 1);
    assert_eq!(report.contacts_added, 3);
    assert_eq!(report.installments_written, 3);
    assert_eq!(report.consents_added, 2);

    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    assert_eq!(b.borrower, borrower("B1", "张伟"));
    assert!(h.store.borrower_by_external_id(&ext("B2")).await.unwrap().is_none());

    let contacts = h.store.contacts(b.id).await.unwrap();
    assert_eq!(contacts.len(), 3);
    assert_eq!(contacts[0].point, mobile("mobile", "13812345678", ContactRole::Primary));
    assert_eq!(contacts[1].point.address.canonical(), "Zhang.Wei@example.com");
    assert_eq!(contacts[1].point.verified_at, Some(t(1, 9)));
    assert_eq!(contacts[2].point.holder_name.as_ref().unwrap().as_str(), "李娜");
    assert!(contacts.iter().all(|c| c.is_current() && c.added_at == t(1, 8)));

    let loans = h.store.loans(b.id).await.unwrap();
    assert_eq!(loans.len(), 1);
    assert_eq!(loans[0].loan, loan("L1", "B1"));
    let inst = h.store.installments(loans[0].id).await.unwrap();
    assert_eq!(
        inst.iter().map(|i| i.installment.clone()).collect::<Vec<_>>(),
        (1..=3).map(|s| installment("L1", s, s == 1)).collect::<Vec<_>>()
    );

    let consents = h.store.consents(b.id).await.unwrap();
    assert_eq!(consents.len(), 2);
    assert!(reachline_domain::consent::permits(
        &consents,
        Purpose::Collection,
        Channel::Sms
    ));
    assert!(!reachline_domain::consent::permits(
        &consents,
        Purpose::Collection,
        Channel::Email
    ));

    assert_eq!(
        h.store.counts().await.unwrap(),
        Counts {
            borrowers: 1,
            contacts_current: 3,
            contacts_retired: 0,
            loans: 1,
            installments: 3,
            consents: 2
        }
    );
}

pub async fn reimport_is_idempotent(h: &Harness) {
    import_basic(h, "13812345678").await;
    let before = h.store.counts().await.unwrap();
    let report = import_basic(h, "13812345678").await;
    assert_eq!(report.borrowers_created, 0);
    assert_eq!(report.borrowers_unchanged, 1);
    assert_eq!(report.contacts_added + report.contacts_replaced, 0);
    assert_eq!(report.contacts_unchanged, 3);
    assert_eq!(report.consents_added, 0);
    assert_eq!(h.store.counts().await.unwrap(), before);
    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    assert_eq!(
        h.store.contact_history(b.id).await.unwrap().len(),
        4,
        "3 added + 1 verified, nothing more"
    );
}

pub async fn changed_number_replaces_and_keeps_history(h: &Harness) {
    import_basic(h, "13812345678").await;
    let mut tx = h.store.begin_import(t(20, 8)).await.unwrap();
    let mut b = borrower("B1", "张伟");
    b.locale = Locale::En;
    let ids = tx.upsert_borrowers(vec![b.clone()]).await.unwrap();
    tx.upsert_contacts(vec![(ids[0], mobile("mobile", "13987654321", ContactRole::Primary))])
        .await
        .unwrap();
    let report = tx.commit().await.unwrap();
    assert_eq!(report.borrowers_updated, 1);
    assert_eq!(report.contacts_replaced, 1);

    let rec = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    assert_eq!(rec.borrower, b);
    assert_eq!(rec.updated_at, t(20, 8));
    let contacts = h.store.contacts(rec.id).await.unwrap();
    let current: Vec<_> = contacts
        .iter()
        .filter(|c| c.is_current() && c.point.slot == ext("mobile"))
        .collect();
    let retired: Vec<_> = contacts.iter().filter(|c| !c.is_current()).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].point.address.canonical(), "+8613987654321");
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].point.address.canonical(), "+8613812345678");
    assert_eq!(retired[0].retired.as_ref().unwrap().reason, REPLACED_BY_BOOK);
    assert_eq!(retired[0].retired.as_ref().unwrap().at, t(20, 8));

    let history = h.store.contact_history(rec.id).await.unwrap();
    let tail: Vec<_> = history.iter().rev().take(2).map(|e| (e.kind, e.contact_id)).collect();
    assert_eq!(
        tail,
        vec![
            (ContactEventKind::Added, current[0].id),
            (ContactEventKind::Retired, retired[0].id)
        ]
    );
    assert_eq!(
        history.iter().rev().nth(1).unwrap().detail.as_deref(),
        Some(REPLACED_BY_BOOK)
    );
}

pub async fn recycled_number_belongs_to_two_borrowers(h: &Harness) {
    import_basic(h, "13812345678").await;
    // The number is retired from B1 and, months later, given to B2.
    let b1 = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    let old = h.store.contacts(b1.id).await.unwrap()[0].id;
    h.store
        .retire_contact(old, t(5, 12), "operator:7", "number dead")
        .await
        .unwrap();
    let mut tx = h.store.begin_import(t(28, 8)).await.unwrap();
    let ids = tx.upsert_borrowers(vec![borrower("B2", "王芳")]).await.unwrap();
    tx.upsert_contacts(vec![(
        ids[0],
        mobile("mobile", "+86 138 1234 5678", ContactRole::Primary),
    )])
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let holders = h
        .store
        .contacts_by_phone(&PhoneNumber::parse("13812345678").unwrap())
        .await
        .unwrap();
    assert_eq!(holders.len(), 2);
    assert_eq!(holders[0].borrower_id, b1.id);
    assert!(!holders[0].is_current());
    assert_eq!(holders[1].borrower_id, ids[0]);
    assert!(holders[1].is_current());
    assert!(h
        .store
        .contacts_by_phone(&PhoneNumber::parse("13700000000").unwrap())
        .await
        .unwrap()
        .is_empty());
}

pub async fn dropped_import_writes_nothing(h: &Harness) {
    {
        let mut tx = h.store.begin_import(t(1, 8)).await.unwrap();
        let ids = tx.upsert_borrowers(vec![borrower("B1", "张伟")]).await.unwrap();
        tx.upsert_contacts(vec![(ids[0], mobile("mobile", "13812345678", ContactRole::Primary))])
            .await
            .unwrap();
        // Dropped without commit.
    }
    assert_eq!(h.store.counts().await.unwrap(), Counts::default());
    // And the store takes the next import.
    import_basic(h, "13812345678").await;
    assert_eq!(h.store.counts().await.unwrap().borrowers, 1);
}

pub async fn contact_events_through_the_api(h: &Harness) {
    import_basic(h, "13812345678").await;
    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    let mut backup = mobile("backup1", "13700001234", ContactRole::Backup);
    backup.source = ContactSource::Borrower;
    let id = h
        .store
        .add_contact(b.id, &backup, t(10, 9), "borrower", "replaced by borrower")
        .await
        .unwrap();
    h.store
        .verify_contact(id, t(10, 10), "borrower", "sms code")
        .await
        .unwrap();
    // Adding to an occupied slot retires the previous holder of the slot.
    let newer = mobile("backup1", "13700005678", ContactRole::Backup);
    let id2 = h
        .store
        .add_contact(b.id, &newer, t(11, 9), "operator:7", "replaced by operator")
        .await
        .unwrap();
    h.store
        .retire_contact(id2, t(12, 9), "operator:7", "wrong party")
        .await
        .unwrap();
    let err = h
        .store
        .retire_contact(id2, t(12, 10), "operator:7", "again")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    let all = h.store.contacts(b.id).await.unwrap();
    let first = all.iter().find(|c| c.id == id).unwrap();
    assert_eq!(first.point.verified_at, Some(t(10, 10)));
    assert_eq!(first.retired.as_ref().unwrap().reason, "replaced by operator");
    let history: Vec<_> = h
        .store
        .contact_history(b.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.contact_id == id || e.contact_id == id2)
        .map(|e| (e.contact_id, e.kind, e.actor, e.detail))
        .collect();
    use ContactEventKind::*;
    assert_eq!(
        history,
        vec![
            (id, Added, "borrower".into(), None),
            (id, Verified, "borrower".into(), Some("sms code".into())),
            (id, Retired, "operator:7".into(), Some("replaced by operator".into())),
            (id2, Added, "operator:7".into(), None),
            (id2, Retired, "operator:7".into(), Some("wrong party".into())),
        ]
    );
}

pub async fn consents_are_events(h: &Harness) {
    import_basic(h, "13812345678").await;
    let b = h.store.borrower_by_external_id(&ext("B1")).await.unwrap().unwrap();
    let withdraw = Consent {
        source: ConsentSource::Reply,
        ..consent(Purpose::Service, Some(Channel::Sms), ConsentState::Withdrawn, t(15, 21))
    };
    h.store.record_consent(b.id, &withdraw).await.unwrap();
    h.store.record_consent(b.id, &withdraw).await.unwrap();
    let events = h.store.consents(b.id).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], withdraw);
    assert!(!reachline_domain::consent::permits(
        &events,
        Purpose::Service,
        Channel::Sms
    ));
    assert!(reachline_domain::consent::permits(
        &events,
        Purpose::Service,
        Channel::Email
    ));
}

pub async fn loan_cannot_change_borrower(h: &Harness) {
    import_basic(h, "13812345678").await;
    let mut tx = h.store.begin_import(t(2, 8)).await.unwrap();
    let ids = tx.upsert_borrowers(vec![borrower("B2", "王芳")]).await.unwrap();
    let err = tx.upsert_loans(vec![(ids[0], loan("L1", "B2"))]).await.unwrap_err();
    assert!(
        err.to_string().contains("loan L1 already belongs to another borrower"),
        "{err}"
    );
    drop(tx);
    assert_eq!(h.store.counts().await.unwrap().borrowers, 1);
}

pub async fn no_plaintext_pii_at_rest(h: &Harness) {
    import_basic(h, "13812345678").await;
    let raw = h.raw_dump().await;
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for needle in [
        "13812345678",
        "13900001111",
        "Zhang.Wei",
        "张伟",
        "李娜",
        "11010519491231002X",
        "19491231",
    ] {
        let found = |n: &[u8]| raw.windows(n.len()).any(|w| w == n);
        assert!(!found(needle.as_bytes()), "plaintext {needle:?} found at rest");
        assert!(!found(hex(needle).as_bytes()), "hex of {needle:?} found at rest");
    }
    // The check is not vacuous: non-personal fields are there in the clear.
    assert!(raw.windows(12).any(|w| w == b"consumer-12m"));
}

pub async fn blind_index_needs_the_key(h: &Harness) {
    import_basic(h, "13812345678").await;
    let raw = h.raw_dump().await;
    let ours = h.keys.blind_index("phone", "+8613812345678");
    let other = reachline_store::Keyring::random("other").blind_index("phone", "+8613812345678");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let found = |n: &[u8]| raw.windows(n.len()).any(|w| w == n);
    assert!(
        found(&ours) || found(hex(&ours).as_bytes()),
        "the store indexes the number under its key"
    );
    assert!(!found(&other) && !found(hex(&other).as_bytes()));
}

/// More borrowers than the import keeps data keys for: contact points of borrowers whose key
/// left the cache are sealed with the key unwrapped again from the store, and read back whole.
pub async fn contacts_after_many_borrowers(h: &Harness) {
    let n = 9_000;
    let mut tx = h.store.begin_import(t(1, 8)).await.unwrap();
    let borrowers: Vec<Borrower> = (0..n).map(|i| borrower(&format!("B{i}"), "张伟")).collect();
    let mut ids = Vec::new();
    for chunk in borrowers.chunks(2000) {
        ids.extend(tx.upsert_borrowers(chunk.to_vec()).await.unwrap());
    }
    let first = mobile("mobile", "13812345678", ContactRole::Primary);
    tx.upsert_contacts(vec![(ids[0], first.clone()), (ids[n - 1], first.clone())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for id in [ids[0], ids[n - 1]] {
        let c = h.store.contacts(id).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].point, first);
    }
}

/// A disconnection file loads once (a second load adds nothing), answers with the latest
/// disconnection per number, is found by the same blind index as contact points, and leaves
/// no number in the clear.
pub async fn disconnects_load_and_answer(h: &Harness) {
    let n = |s: &str| PhoneNumber::parse(s).unwrap();
    let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let rows = vec![
        (n("+12025550123"), d("2023-04-01")),
        (n("+12025550123"), d("2024-09-15")),
        (n("+8613812345678"), d("2024-01-20")),
    ];
    let added = h
        .store
        .load_disconnects(rows.clone(), "rnd-2024-10", t(1, 9))
        .await
        .unwrap();
    assert_eq!(added, 3);
    assert_eq!(h.store.load_disconnects(rows, "rnd-2024-10", t(2, 9)).await.unwrap(), 0);
    assert_eq!(
        h.store.last_disconnect(&n("+12025550123")).await.unwrap(),
        Some(d("2024-09-15"))
    );
    assert_eq!(
        h.store.last_disconnect(&n("+8613812345678")).await.unwrap(),
        Some(d("2024-01-20"))
    );
    assert_eq!(h.store.last_disconnect(&n("+8613900001111")).await.unwrap(), None);
    let raw = h.raw_dump().await;
    let found = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!found(b"2025550123") && !found(b"13812345678"));
    let bidx = h.keys.blind_index("phone", "+8613812345678");
    let hex = bidx.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(found(&bidx) || found(hex.as_bytes()));
}
