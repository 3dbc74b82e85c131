//! The engine's tables on both back ends: leases never give one row to two dispatchers and
//! pass on when they run out; only the holder may hand a row to the channel; a receipt is
//! matched to its send whether it is recorded before, after or at the same time as the send;
//! planning twice queues nothing twice and records a decision only when it changes.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use reachline_domain::{BorrowerId, Channel, ContactId, DeliveryClass, InstallmentId};
use reachline_store::engine::{
    DecisionRow, EngineStore, Matched, NewSend, PlanWrite, ReceiptIn, SendOutcome, SendState, SentRecord, Sighted,
};
use reachline_store::server::Sighting;

use crate::helpers::Harness;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap()
}

fn send(n: i64) -> NewSend {
    NewSend {
        idem_key: format!("{n}/0/pre_due_t3/{n}/sms/0"),
        borrower: BorrowerId(n),
        installment: InstallmentId(n),
        step: 0,
        kind: "pre_due_t3".into(),
        rung: 0,
        contact: ContactId(n),
        channel: Channel::Sms,
        third_party: false,
        not_before: t0(),
    }
}

async fn queue(e: &dyn EngineStore, n: i64) {
    let queued = e
        .write_plan(PlanWrite {
            at: Some(t0()),
            sends: (1..=n).map(send).collect(),
            ..PlanWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(queued, n as usize);
}

fn sent(id: i64, pid: &str, at: DateTime<Utc>) -> SentRecord {
    SentRecord {
        id,
        at,
        provider: "smsc".into(),
        provider_ids: vec![pid.into()],
        template_id: "pre_due_t3".into(),
        template_version: 1,
        text_sha256: [7; 32],
    }
}

fn receipt(pid: &str, at: DateTime<Utc>) -> ReceiptIn {
    ReceiptIn {
        at,
        provider: "smsc".into(),
        provider_id: pid.into(),
        outbox_id: None,
        class: DeliveryClass::Delivered,
        code: "DELIVRD".into(),
        is_final: true,
        raw: b"id:x stat:DELIVRD".to_vec(),
    }
}

fn evidence(_: Channel) -> String {
    r#"{"kind":"delivered"}"#.into()
}

fn delivery(_: Channel, _: DeliveryClass) -> String {
    evidence(Channel::Sms)
}

pub async fn outbox_leases_are_exclusive_and_expire(h: &Harness) {
    let e = h.engine().await;
    queue(e.as_ref(), 400).await;
    // Four dispatchers, each with its own connections, lease at once until nothing is left.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store: Arc<dyn EngineStore> = h.engine().await.into();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let rows = store
                    .lease(&format!("node-{w}"), t0(), Duration::minutes(5), 25)
                    .await
                    .unwrap();
                if rows.is_empty() {
                    break got;
                }
                assert!(rows.iter().all(|r| r.state == SendState::Leased));
                got.extend(rows.into_iter().map(|r| r.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = HashSet::new();
    let mut per_node = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_node.push(got.len());
        for id in got {
            assert!(all.insert(id), "row {id} leased by two dispatchers");
        }
    }
    assert_eq!(all.len(), 400, "every row leased once: {per_node:?}");

    // Only the holder hands a row to the channel.
    let mut ids: Vec<i64> = all.iter().copied().collect();
    ids.sort_unstable();
    let rows = e.sends_of(BorrowerId(1)).await.unwrap();
    let first = rows[0].id;
    let other = e.mark_sending_many("intruder", vec![first], t0()).await.unwrap();
    assert!(other.is_empty(), "a row another node holds is not marked sending");

    // A lease that has run out is not sent on, by its holder or anyone; its borrowers stay
    // held through the grace (a quarter of the lease), then pass to the next dispatcher.
    let none_marked = |at: DateTime<Utc>, why: &'static str| {
        let (e, ids) = (&e, &ids);
        async move {
            for w in 0..4 {
                let moved = e
                    .mark_sending_many(&format!("node-{w}"), ids.clone(), at)
                    .await
                    .unwrap();
                assert!(moved.is_empty(), "node-{w}: {why}");
            }
        }
    };
    let ran_out = t0() + Duration::minutes(6);
    none_marked(ran_out, "its leases ran out").await;
    assert!(e
        .lease("node-9", ran_out, Duration::minutes(5), 1000)
        .await
        .unwrap()
        .is_empty());
    let later = t0() + Duration::minutes(7);
    let taken = e.lease("node-9", later, Duration::minutes(5), 1000).await.unwrap();
    assert_eq!(taken.len(), 400, "expired leases are taken over");
    none_marked(later, "it lost its leases").await;
    let moved = e.mark_sending_many("node-9", ids[..10].to_vec(), later).await.unwrap();
    assert_eq!(moved, ids[..10].to_vec());
    assert!(e
        .lease("node-8", later, Duration::minutes(5), 1000)
        .await
        .unwrap()
        .is_empty());

    // A send still inside its lease is live; after it, it is in doubt, never resubmitted.
    assert_eq!(e.recover_in_doubt(later + Duration::minutes(1)).await.unwrap(), 0);
    let after = later + Duration::minutes(6);
    assert_eq!(e.recover_in_doubt(after).await.unwrap(), 10);
    assert!(e
        .lease("node-8", after, Duration::minutes(5), 5)
        .await
        .unwrap()
        .iter()
        .all(|r| !ids[..10].contains(&r.id)));
    // Its provider did answer, late: the answer is kept and the row is sent.
    e.record_sent_many(vec![sent(ids[0], "late-1", after)], &delivery)
        .await
        .unwrap();
    let all_rows: Vec<_> = {
        let mut v = Vec::new();
        for b in 1..=400 {
            v.extend(e.sends_of(BorrowerId(b)).await.unwrap());
        }
        v
    };
    let state_of = |id: i64| all_rows.iter().find(|r| r.id == id).unwrap().state;
    assert_eq!(state_of(ids[0]), SendState::Sent);
    assert_eq!(state_of(ids[1]), SendState::InDoubt);
    assert_eq!(all_rows.iter().filter(|r| r.state == SendState::InDoubt).count(), 9);
    assert_eq!(all_rows.iter().map(|r| r.tries).max(), Some(1), "tried once");
}

/// The `k`th send of borrower `b` (its own installment `k`).
fn send_of(b: i64, k: i64) -> NewSend {
    NewSend {
        idem_key: format!("{b}/{k}/pre_due_t3/{b}/sms/0"),
        installment: InstallmentId(b * 100 + k),
        ..send(b)
    }
}

pub async fn a_borrower_is_dispatched_by_one_node_at_a_time(h: &Harness) {
    let e = h.engine().await;
    let lease = Duration::minutes(5);
    e.write_plan(PlanWrite {
        at: Some(t0()),
        sends: vec![send_of(1, 1), send_of(1, 2), send_of(2, 1)],
        ..PlanWrite::default()
    })
    .await
    .unwrap();
    let rows = |v: Vec<reachline_store::engine::OutboxRow>| {
        v.into_iter()
            .map(|r| (r.borrower.0, r.installment.0))
            .collect::<Vec<_>>()
    };
    // Node a leases one of borrower 1's rows; node b may lease borrower 2's, not the other of
    // borrower 1's: its cap check would not see a's send.
    let a = rows(e.lease("a", t0(), lease, 1).await.unwrap());
    assert_eq!(a, vec![(1, 101)]);
    let b = rows(e.lease("b", t0(), lease, 10).await.unwrap());
    assert_eq!(b, vec![(2, 201)], "borrower 1 is node a's");
    // Node a's own next lease may take it.
    let again = rows(e.lease("a", t0() + Duration::minutes(1), lease, 10).await.unwrap());
    assert_eq!(again, vec![(1, 102)]);
    let a_ids: Vec<i64> = e.sends_of(BorrowerId(1)).await.unwrap().iter().map(|r| r.id).collect();
    // Past its lease node a sends nothing; within the grace, nobody takes borrower 1 over.
    let ran_out = t0() + Duration::minutes(6) + Duration::seconds(30);
    assert!(e
        .mark_sending_many("a", a_ids.clone(), ran_out)
        .await
        .unwrap()
        .is_empty());
    // (Node b's own lease of borrower 2's row has run out too: that it takes again.)
    let b = rows(e.lease("b", ran_out, lease, 10).await.unwrap());
    assert_eq!(b, vec![(2, 201)], "borrower 1 is still node a's");
    // Once the hold lapses (the last lease at t0+1 min, 5 min, a grace of 1¼ min) node b takes
    // both rows over, and holds borrower 1 against node a.
    let lapsed = t0() + Duration::minutes(7) + Duration::seconds(30);
    let b = rows(e.lease("b", lapsed, lease, 10).await.unwrap());
    assert_eq!(b, vec![(1, 101), (1, 102)]);
    assert!(e.lease("a", lapsed, lease, 10).await.unwrap().is_empty());
    assert!(e
        .mark_sending_many("a", a_ids.clone(), lapsed)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(e.mark_sending_many("b", a_ids.clone(), lapsed).await.unwrap(), a_ids);

    // Four nodes leasing a book of many rows per borrower at once: every borrower's rows go to
    // one node.
    let book: Vec<NewSend> = (10..60).flat_map(|b| (1..=4).map(move |k| send_of(b, k))).collect();
    e.write_plan(PlanWrite {
        at: Some(t0()),
        sends: book,
        ..PlanWrite::default()
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store: Arc<dyn EngineStore> = h.engine().await.into();
        tasks.push(tokio::spawn(async move {
            let owner = format!("node-{w}");
            let mut got = Vec::new();
            // An empty lease may only mean another node's lease had this one's rows locked
            // for a moment: what is left is drained below, one node at a time.
            loop {
                let rows = store.lease(&owner, t0(), lease, 7).await.unwrap();
                if rows.is_empty() {
                    break got;
                }
                got.extend(rows.into_iter().map(|r| (r.borrower.0, w)));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    for w in 0..4 {
        let rows = e.lease(&format!("node-{w}"), t0(), lease, 1000).await.unwrap();
        got.extend(rows.into_iter().map(|r| (r.borrower.0, w)));
    }
    let mut owner_of = std::collections::HashMap::new();
    for &(b, w) in &got {
        let first = *owner_of.entry(b).or_insert(w);
        assert_eq!(first, w, "borrower {b} leased by node-{first} and node-{w}");
    }
    assert_eq!(got.len(), 200, "every row leased");
}

pub async fn receipts_are_matched_whichever_comes_first(h: &Harness) {
    let e: Arc<dyn EngineStore> = h.engine().await.into();
    queue(e.as_ref(), 200).await;
    let rows = e.lease("n", t0(), Duration::minutes(5), 1000).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(e.mark_sending_many("n", ids.clone(), t0()).await.unwrap(), ids);
    let at = t0() + Duration::seconds(1);
    // The first receipt comes before its send is recorded: kept, unmatched, then matched late.
    let early = e.record_receipts(vec![receipt("p-0", at)], &delivery).await.unwrap();
    assert_eq!(early, vec![Matched::Unmatched]);
    // The rest race: each send recorded on one handle while its receipt arrives on another.
    let other: Arc<dyn EngineStore> = h.engine().await.into();
    let sends = {
        let e = e.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut late = Vec::new();
            for chunk in ids.chunks(16) {
                let batch = chunk
                    .iter()
                    .map(|&id| sent(id, &format!("p-{}", id - ids[0]), at))
                    .collect();
                late.extend(e.record_sent_many(batch, &delivery).await.unwrap());
            }
            late
        })
    };
    let receipts = {
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut changed = Vec::new();
            for chunk in (1..ids.len()).collect::<Vec<_>>().chunks(8) {
                let batch = chunk.iter().map(|i| receipt(&format!("p-{i}"), at)).collect();
                for m in other.record_receipts(batch, &delivery).await.unwrap() {
                    if let Matched::Send(m) = m {
                        assert!(m.changed, "a first receipt changes its send's outcome");
                        changed.push(m.outbox_id);
                    }
                }
            }
            changed
        })
    };
    let late = sends.await.unwrap();
    let on_arrival = receipts.await.unwrap();
    // Each send's outcome changed once: on its receipt's arrival, or, for a receipt that beat
    // the record, when the record matched it — then returned (for the ledger) with what the
    // receipt said, and evidence added all the same.
    assert!(
        late.iter()
            .any(|m| m.receipt.outbox_id == ids[0] && m.provider_id == "p-0"),
        "the early receipt is matched late and returned"
    );
    for m in &late {
        assert_eq!(m.class, DeliveryClass::Delivered);
        assert!(m.receipt.changed);
        assert_eq!(m.receipt.borrower, BorrowerId(m.receipt.outbox_id - ids[0] + 1));
        assert_eq!(m.receipt.contact, ContactId(m.receipt.outbox_id - ids[0] + 1));
        assert!(m.at >= at);
    }
    let mut all: Vec<i64> = late.iter().map(|m| m.receipt.outbox_id).chain(on_arrival).collect();
    all.sort_unstable();
    assert_eq!(all, ids, "every send's outcome changed exactly once");
    assert_eq!(h.raw_count("SELECT count(*) FROM evidence").await, 200);
    assert_eq!(
        h.raw_count("SELECT count(DISTINCT borrower_id) FROM evidence").await,
        200
    );
    // A repeated receipt changes nothing; one for no send is kept and flagged.
    let again = e.record_receipts(vec![receipt("p-5", at)], &delivery).await.unwrap();
    assert!(matches!(&again[..], [Matched::Send(m)] if !m.changed));
    let stray = e.record_receipts(vec![receipt("nobody", at)], &delivery).await.unwrap();
    assert_eq!(stray, vec![Matched::Unmatched]);
    for (i, id) in ids.iter().enumerate() {
        let row = e
            .sends_of(BorrowerId(i as i64 + 1))
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == *id)
            .unwrap();
        assert_eq!(row.state, SendState::Sent);
        assert_eq!(
            row.outcome,
            SendOutcome::Delivered,
            "row {id} (receipt p-{i}) is matched"
        );
    }
}

pub async fn webhook_receipts_are_recorded_with_their_replay_guards(h: &Harness) {
    let e: Arc<dyn EngineStore> = h.engine().await.into();
    queue(e.as_ref(), 4).await;
    let rows = e.lease("n", t0(), Duration::minutes(5), 10).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    e.mark_sending_many("n", ids.clone(), t0()).await.unwrap();
    let at = t0() + Duration::seconds(1);
    let batch = (0..4).map(|i| sent(ids[i], &format!("w-{i}"), at)).collect();
    e.record_sent_many(batch, &delivery).await.unwrap();
    let sighting = |k: u8, expires: DateTime<Utc>| Sighting {
        provider: "agg".into(),
        digest: [k; 32],
        expires,
    };
    let until = at + Duration::minutes(5);
    let with_class = |pid: &str, class: DeliveryClass| ReceiptIn {
        class,
        ..receipt(pid, at)
    };
    // The evidence names the receipt's own class: receipts of several classes in one batch.
    let kind = |_: Channel, c: DeliveryClass| format!(r#"{{"kind":"delivery","class":"{c}"}}"#);
    let got = e
        .record_sighted(
            vec![
                (sighting(1, until), Some(with_class("w-0", DeliveryClass::Delivered))),
                (sighting(2, until), Some(with_class("w-1", DeliveryClass::Dead))),
                // The same signature twice in one batch: the second is a replay.
                (sighting(1, until), Some(with_class("w-2", DeliveryClass::Delivered))),
                // A guard with no receipt (a reply's): taken, nothing recorded.
                (sighting(3, until), None),
            ],
            at,
            &kind,
        )
        .await
        .unwrap();
    assert!(matches!(&got[0], Sighted::Taken(Some(Matched::Send(m))) if m.outbox_id == ids[0] && m.changed));
    assert!(matches!(&got[1], Sighted::Taken(Some(Matched::Send(m))) if m.outbox_id == ids[1] && m.changed));
    assert_eq!(got[2], Sighted::Replayed);
    assert_eq!(got[3], Sighted::Taken(None));
    assert_eq!(h.raw_count("SELECT count(*) FROM receipts").await, 2);
    assert_eq!(
        h.raw_count(r#"SELECT count(*) FROM evidence WHERE kind = '{"kind":"delivery","class":"dead"}'"#)
            .await,
        1
    );
    assert_eq!(
        h.raw_count(r#"SELECT count(*) FROM evidence WHERE kind = '{"kind":"delivery","class":"delivered"}'"#)
            .await,
        1
    );
    // A later batch: signatures already taken are replays and record nothing.
    let again = e
        .record_sighted(
            vec![
                (sighting(2, until), Some(with_class("w-3", DeliveryClass::Delivered))),
                (sighting(3, until), None),
            ],
            at,
            &kind,
        )
        .await
        .unwrap();
    assert_eq!(again, vec![Sighted::Replayed, Sighted::Replayed]);
    assert_eq!(h.raw_count("SELECT count(*) FROM receipts").await, 2);
    // Past its window a signature is forgotten (the webhook's timestamp check refuses it by
    // then): the same key is new again.
    let later = e
        .record_sighted(
            vec![(
                sighting(2, until + Duration::minutes(10)),
                Some(with_class("w-3", DeliveryClass::Delivered)),
            )],
            until + Duration::seconds(1),
            &kind,
        )
        .await
        .unwrap();
    assert!(matches!(&later[0], Sighted::Taken(Some(Matched::Send(m))) if m.outbox_id == ids[3]));
    assert_eq!(h.raw_count("SELECT count(*) FROM receipts").await, 3);
}

pub async fn plan_writes_are_idempotent_and_keep_history(h: &Harness) {
    let e = h.engine().await;
    let decision = |reason: &str| DecisionRow {
        borrower: BorrowerId(1),
        notice: "1/0/pre_due_t3".into(),
        action: "defer".into(),
        reason: reason.into(),
        gate: Some("quiet_hours".into()),
        until: Some(t0() + Duration::hours(6)),
        detail: None,
    };
    let plan = |reason: &str, at: DateTime<Utc>| PlanWrite {
        at: Some(at),
        sends: vec![send(1), send(2)],
        decisions: vec![decision(reason)],
        wakes: vec![(BorrowerId(1), at + Duration::hours(6), 0)],
    };
    assert_eq!(e.write_plan(plan("outside_hours", t0())).await.unwrap(), 2);
    assert_eq!(
        e.write_plan(plan("outside_hours", t0() + Duration::hours(1)))
            .await
            .unwrap(),
        0,
        "a re-run queues nothing twice"
    );
    assert_eq!(
        e.decisions_of(BorrowerId(1)).await.unwrap().len(),
        1,
        "an unchanged decision is not history"
    );
    e.write_plan(plan("cap_reached", t0() + Duration::hours(2)))
        .await
        .unwrap();
    let history = e.decisions_of(BorrowerId(1)).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|(at, d)| (*at, d.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(t0(), "outside_hours"), (t0() + Duration::hours(2), "cap_reached")]
    );
    assert_eq!(history[0].1.until, Some(t0() + Duration::hours(6)));
    let counts = e.outbox_counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 2);
    assert_eq!(counts[0].keys, vec!["pre_due_t3", "sms", "queued", "pending", ""]);
}

pub async fn a_wake_by_evidence_outlives_a_plan_read_before_it(h: &Harness) {
    crate::stories::import_basic(h, "13812345678").await;
    let e = h.engine().await;
    let (from, to) = (
        chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 4, 30).unwrap(),
    );
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 2, 0, 0).unwrap();
    let due = e.due_borrowers(from, to, now).await.unwrap();
    assert_eq!(due.len(), 1, "B1's open installments of March and April");
    let b = due[0];
    let plan = |seq: i64| PlanWrite {
        at: Some(now),
        wakes: vec![(b, now + Duration::days(10), seq)],
        ..PlanWrite::default()
    };
    // A pass reads the view, decides and sets the next wake: the borrower rests until then.
    let seq = e.views(&[b], from, to).await.unwrap()[0].wake_seq;
    e.write_plan(plan(seq)).await.unwrap();
    assert!(e
        .due_borrowers(from, to, now + Duration::hours(1))
        .await
        .unwrap()
        .is_empty());
    // The next pass reads the view; a receipt comes before that pass writes.
    let seq = e.views(&[b], from, to).await.unwrap()[0].wake_seq;
    e.add_evidence(
        b,
        None,
        now + Duration::hours(2),
        r#"{"source":"test"}"#,
        r#"{"kind":"reply"}"#,
    )
    .await
    .unwrap();
    e.write_plan(plan(seq)).await.unwrap();
    assert_eq!(
        e.due_borrowers(from, to, now + Duration::hours(3)).await.unwrap(),
        vec![b],
        "the receipt's wake stands: the pass that wrote had not seen it"
    );
    // A pass that has seen it sets the wake again.
    let seq = e.views(&[b], from, to).await.unwrap()[0].wake_seq;
    e.write_plan(plan(seq)).await.unwrap();
    assert!(e
        .due_borrowers(from, to, now + Duration::hours(4))
        .await
        .unwrap()
        .is_empty());
}
