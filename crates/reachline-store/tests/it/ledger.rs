//! Ledger stories, each run on both back ends: durable batched appends that reopen where they
//! left off, proofs from stored tiles, bundles, the audit naming the index of every kind of
//! tampering, and commitment keys that die with the borrower's data key.

use std::sync::Arc;

use reachline_domain::{BorrowerId, Channel, ContactId};
use reachline_ledger::leaf::{Code, Leaf, LeafKind};
use reachline_ledger::note::SignerKey;
use reachline_ledger::proof::{verify_consistency, verify_inclusion};
use reachline_ledger::{leaf_hash, LeafIndex, TreeSize};
use reachline_store::ledger::{self, LedgerStore, Sequencer, SequencerConfig};

use crate::helpers::*;

const ORIGIN: &str = "reachline.test/ledger";

fn signer() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[7; 32]).unwrap()
}

fn config(max: usize) -> SequencerConfig {
    SequencerConfig {
        origin: ORIGIN.into(),
        batch_max_entries: max,
        batch_max_ms: 5,
    }
}

/// A receipt of notice `notice`, varied by `k`.
pub fn receipt(notice: i64, k: u64) -> Leaf {
    Leaf {
        kind: LeafKind::Receipt {
            status: Code::parse(if k % 2 == 0 { "delivered" } else { "expired" }).unwrap(),
        },
        time_micros: 1_767_225_600_000_000 + k as i64,
        borrower: BorrowerId(notice % 17),
        notice: Some(notice),
        contact: Some(ContactId(3)),
        channel: Some(Channel::Sms),
        provider_message_id: Some(format!("smsc-{k}")),
        template: None,
        content_hash: None,
        address_commitment: None,
    }
}

/// Starts a sequencer once the previous one (stopping in the background) has let go.
async fn start_when_free(store: &Arc<dyn LedgerStore>, max: usize) -> Sequencer {
    let mut last = None;
    for _ in 0..100 {
        match Sequencer::start(store.clone(), signer(), config(max)).await {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no sequencer could start: {last:?}");
}

/// Appends `n` leaves from 32 concurrent callers (notice = k % 50); returns (index, leaf) pairs.
async fn append_many(seq: &Sequencer, n: u64, salt: u64) -> Vec<(LeafIndex, Leaf)> {
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in (w..n).step_by(32) {
                let leaf = receipt((k % 50) as i64, k + salt);
                let a = seq.append(&leaf).await.unwrap();
                assert!(a.checkpoint.size.contains(a.index));
                out.push((a.index, leaf));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all
}

pub async fn ledger_appends_reopens_and_proves(h: &Harness) {
    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    let seq = Sequencer::start(store.clone(), signer(), config(64)).await.unwrap();
    let first = append_many(&seq, 300, 0).await;
    assert_eq!(
        first.iter().map(|(i, _)| i.0).collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>(),
        "every append has its own index, none skipped"
    );
    let cp1 = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(cp1.size, TreeSize(300));
    // Batching: far fewer checkpoints than leaves (plus the empty tree's).
    let n_cps = store.checkpoints().await.unwrap().len();
    assert!(n_cps < 150, "{n_cps} checkpoints for 300 leaves");
    drop(seq);
    drop(store);

    // Reopen: a new store and sequencer carry on from the latest checkpoint.
    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    // On PostgreSQL the first sequencer's lock goes with its connection, which its task drops
    // once the channel closes.
    let seq = start_when_free(&store, 256).await;
    let second = append_many(&seq, 700, 1000).await;
    assert_eq!(second.first().unwrap().0, LeafIndex(300));
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.size, TreeSize(1000));

    // Inclusion proofs of leaves from both runs, against the latest root and an older one.
    for (i, leaf) in first.iter().chain(&second).step_by(37) {
        let h = leaf_hash(&leaf.encode().unwrap());
        let p = ledger::inclusion_proof(store.as_ref(), *i, latest.size).await.unwrap();
        verify_inclusion(*i, latest.size, &h, &p, &latest.root).unwrap();
        if cp1.size.contains(*i) {
            let p = ledger::inclusion_proof(store.as_ref(), *i, cp1.size).await.unwrap();
            verify_inclusion(*i, cp1.size, &h, &p, &cp1.root).unwrap();
        }
    }
    // Every checkpoint ever published is a prefix of the latest.
    for cp in store.checkpoints().await.unwrap() {
        assert_eq!(ledger::root_at(store.as_ref(), cp.size).await.unwrap(), cp.root);
        if cp.size.0 > 0 {
            let p = ledger::consistency_proof(store.as_ref(), cp.size, latest.size)
                .await
                .unwrap();
            verify_consistency(cp.size, latest.size, &p, &cp.root, &latest.root).unwrap();
        }
    }
    // A notice's bundle verifies offline and holds exactly that notice's leaves.
    let file = ledger::bundle(store.as_ref(), 7).await.unwrap().to_text();
    let v = reachline_ledger::proof_file::verify(&file, &signer().verifier()).unwrap();
    assert_eq!(v.leaves.len(), 20);
    assert!(v.leaves.iter().all(|(_, l)| l.notice == Some(7)));
    // The audit finds nothing wrong.
    let report = ledger::audit(store.as_ref(), &signer().verifier(), &[]).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.leaves, 1000);
    // Read back as written, across bundles (PostgreSQL keeps full ones as one row each) and the
    // leaves of the one still filling, whatever the window.
    let all: Vec<(LeafIndex, Vec<u8>)> = first
        .iter()
        .chain(&second)
        .map(|(i, l)| (*i, l.encode().unwrap()))
        .collect();
    for (start, limit) in [
        (0, 1000),
        (250, 20),
        (255, 1),
        (256, 300),
        (700, 400),
        (999, 5),
        (1000, 3),
    ] {
        let got: Vec<(LeafIndex, Vec<u8>)> = store
            .leaves(start, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.index, r.data))
            .collect();
        let end = (start + limit).min(1000) as usize;
        assert_eq!(got, all[start as usize..end], "leaves({start}, {limit})");
    }
}

/// The problems' indices, in order.
async fn audit_indices(store: &dyn LedgerStore, known: &[String]) -> Vec<Option<u64>> {
    let r = ledger::audit(store, &signer().verifier(), known).await.unwrap();
    r.problems.iter().map(|p| p.index).collect()
}

pub async fn ledger_audit_names_each_tampering(h: &Harness) {
    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    let seq = Sequencer::start(store.clone(), signer(), config(32)).await.unwrap();
    append_many(&seq, 600, 0).await;
    drop(seq);
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert!(ledger::audit(store.as_ref(), &signer().verifier(), &[])
        .await
        .unwrap()
        .is_clean());
    let leaf = |i: u64| {
        let store = store.clone();
        async move { store.leaves(i, 1).await.unwrap().remove(0).data }
    };
    let set = |i: u64, data: Vec<u8>| h.edit_leaf(i, LeafEdit::Set(data));

    // One changed byte.
    let orig5 = leaf(5).await;
    let mut bad = orig5.clone();
    bad[12] ^= 1;
    set(5, bad).await;
    let got = audit_indices(store.as_ref(), &[]).await;
    assert_eq!(got[0], Some(5), "{got:?}");
    set(5, orig5).await;
    assert!(audit_indices(store.as_ref(), &[]).await.is_empty());

    // Two leaves swapped.
    let (a, b) = (leaf(300).await, leaf(517).await);
    set(300, b.clone()).await;
    set(517, a.clone()).await;
    let got = audit_indices(store.as_ref(), &[]).await;
    assert!(got.contains(&Some(300)) && got.contains(&Some(517)), "{got:?}");
    set(300, a).await;
    set(517, b).await;

    // A deleted leaf.
    let orig7 = store.leaves(7, 1).await.unwrap().remove(0);
    h.edit_leaf(7, LeafEdit::Delete).await;
    let got = audit_indices(store.as_ref(), &[]).await;
    assert_eq!(got[0], Some(7), "{got:?}");
    h.edit_leaf(
        7,
        LeafEdit::Insert {
            notice: orig7.notice,
            data: orig7.data,
        },
    )
    .await;
    assert!(audit_indices(store.as_ref(), &[]).await.is_empty());

    // Rolled back to an older checkpoint (as a restored backup would be): only a checkpoint
    // kept outside the database shows it.
    h.raw_exec("DELETE FROM ledger_checkpoints WHERE size > $2", None, Some(400))
        .await;
    let rolled = store.latest_checkpoint().await.unwrap().unwrap().size.0;
    assert!(rolled <= 400);
    h.truncate_leaves(rolled).await;
    assert!(
        audit_indices(store.as_ref(), &[]).await.is_empty(),
        "a consistent rollback looks clean alone"
    );
    let got = audit_indices(store.as_ref(), std::slice::from_ref(&latest.note)).await;
    assert_eq!(got, vec![Some(rolled)]);
}

pub async fn commitment_keys_die_with_the_data_key(h: &Harness) {
    let mut tx = h.store.begin_import(t(1, 8)).await.unwrap();
    let ids = tx
        .upsert_borrowers(vec![
            borrower("B1", "张伟"),
            borrower("B2", "李娜"),
            borrower("B3", "王芳"),
        ])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let store = h.ledger().await;
    let k1 = store.commitment_key(ids[0]).await.unwrap();
    let k2 = store.commitment_key(ids[0]).await.unwrap();
    assert_eq!(k1, k2, "one key per borrower, kept");
    assert_eq!(
        k1.commit_canonical("+8613800138000"),
        k2.commit_canonical("+8613800138000")
    );
    // Asked together (one existing, two new, one twice): in the order asked, each borrower's
    // own, the same as asked alone afterwards.
    let batch = store.commitment_keys(&[ids[2], ids[0], ids[1], ids[2]]).await.unwrap();
    assert_eq!(batch.len(), 4);
    assert_eq!(batch[1], k1);
    assert_eq!(batch[0], batch[3]);
    assert_ne!(batch[0], batch[2], "two borrowers, two keys");
    assert_eq!(batch[2], store.commitment_key(ids[1]).await.unwrap());
    assert_eq!(batch[0], store.commitment_key(ids[2]).await.unwrap());
    assert!(store.commitment_keys(&[]).await.unwrap().is_empty());
    h.raw_exec(
        "UPDATE borrower_keys SET wrapped_key = NULL WHERE borrower_id = $2",
        None,
        Some(ids[0].0),
    )
    .await;
    let e = store.commitment_key(ids[0]).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "{e}");
    let e = store.commitment_keys(&[ids[1], ids[0]]).await.unwrap_err();
    assert!(e.to_string().contains("destroyed"), "{e}");
}

/// What a crash can leave behind — leaves beyond the latest checkpoint, tiles that disagree with
/// it — is repaired when a sequencer starts: the checkpoint is authoritative.
pub async fn ledger_start_repairs_what_a_crash_leaves(h: &Harness) {
    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    let seq = Sequencer::start(store.clone(), signer(), config(64)).await.unwrap();
    append_many(&seq, 600, 0).await;
    drop(seq);
    let before = store.latest_checkpoint().await.unwrap().unwrap();
    // A leaf of a batch that never committed, and a damaged edge tile.
    h.raw_exec(
        "INSERT INTO ledger_leaves (idx, notice, data) VALUES ($2, NULL, $1)",
        Some(vec![1, 2, 3]),
        Some(600),
    )
    .await;
    h.raw_exec(
        "UPDATE ledger_tiles SET data = $1 WHERE level = 0 AND idx = $2",
        Some(vec![0; 64]),
        Some(2),
    )
    .await;
    h.raw_exec("DELETE FROM ledger_tiles WHERE level = 1", None, None).await;
    drop(store);

    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    let seq = start_when_free(&store, 64).await;
    let a = seq.append(&receipt(3, 9999)).await.unwrap();
    assert_eq!(a.index, LeafIndex(600), "the uncommitted leaf was discarded");
    let p = ledger::consistency_proof(store.as_ref(), before.size, a.checkpoint.size)
        .await
        .unwrap();
    verify_consistency(before.size, a.checkpoint.size, &p, &before.root, &a.checkpoint.root).unwrap();
    let report = ledger::audit(store.as_ref(), &signer().verifier(), &[]).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    drop(seq);

    // Checkpoints lost back to size 300 (a restore that did not match): the checkpoint still
    // rules. Leaves beyond it go, including those PostgreSQL had sealed into a bundle, whose
    // leaves below 300 become single rows again.
    let at300 = store.checkpoint_at(TreeSize(300)).await.unwrap();
    let cut = at300.map_or(300, |c| c.size.0);
    h.raw_exec("DELETE FROM ledger_checkpoints WHERE size > $2", None, Some(cut as i64))
        .await;
    let cut = store.latest_checkpoint().await.unwrap().unwrap();
    let claimed = store.claim_sequencer().await.unwrap();
    assert_eq!(claimed.discarded, 601 - cut.size.0);
    let kept = store.leaves(0, 1000).await.unwrap();
    assert_eq!(kept.len() as u64, cut.size.0);
    assert!(kept.iter().enumerate().all(|(k, l)| l.index.0 == k as u64));
    assert_eq!(ledger::root_at(store.as_ref(), cut.size).await.unwrap(), cut.root);
}

/// Several nodes on one database: one leads, the others queue their leaves for it; every append
/// gets its own index under a signed checkpoint, whichever node made it; when the leader goes,
/// a follower takes the log over and appends what waited. (SQLite: one process owns the log, and
/// `join` is `start`.)
pub async fn ledger_nodes_share_one_log(h: &Harness) {
    let first: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    if first.events().await.unwrap().is_none() {
        let seq = Sequencer::join(first.clone(), signer(), config(64)).await.unwrap();
        let got = append_many(&seq, 100, 0).await;
        assert_eq!(got.len(), 100);
        assert!(
            first.enqueue(vec![(None, vec![1])]).await.is_err(),
            "SQLite has no queue"
        );
        return;
    }
    let leader = Sequencer::join(first.clone(), signer(), config(64)).await.unwrap();
    let mut nodes = vec![leader];
    let mut stores = vec![first.clone()];
    for _ in 0..2 {
        let s: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
        nodes.push(Sequencer::join(s.clone(), signer(), config(64)).await.unwrap());
        stores.push(s);
    }
    assert_eq!(
        nodes.iter().map(Sequencer::is_leader).collect::<Vec<_>>(),
        [true, false, false],
        "the first node leads"
    );
    // 3 nodes × 150 leaves at once, each node's with notices of its own.
    let mut tasks = Vec::new();
    for (n, seq) in nodes.iter().enumerate() {
        let seq = seq.clone();
        tasks.push(tokio::spawn(
            async move { append_many(&seq, 150, 10_000 * n as u64).await },
        ));
    }
    let mut appended: Vec<(LeafIndex, Leaf)> = Vec::new();
    for t in tasks {
        appended.extend(t.await.unwrap());
    }
    let mut indices: Vec<u64> = appended.iter().map(|(i, _)| i.0).collect();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..450).collect::<Vec<_>>(),
        "one index per append, none skipped"
    );
    // Each index holds the leaf its caller was told it holds.
    let stored = first.leaves(0, 1000).await.unwrap();
    for (i, leaf) in &appended {
        assert_eq!(stored[i.0 as usize].data, leaf.encode().unwrap(), "leaf {i}");
    }
    assert!(first.queued(1000).await.unwrap().is_empty(), "nothing left queued");

    // The leader goes (its connection, and the lock, with it); the followers' next appends wait
    // for one of them to take over, then succeed.
    drop(nodes.remove(0));
    drop(stores.remove(0));
    drop(first);
    let gone = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (n, seq) in nodes.iter().enumerate() {
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            append_many(&seq, 64, 50_000 + 10_000 * n as u64).await
        }));
    }
    for t in tasks {
        appended.extend(t.await.unwrap());
    }
    let took = gone.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "takeover took {took:?}");
    assert_eq!(
        nodes.iter().filter(|n| n.is_leader()).count(),
        1,
        "one of the two left leads"
    );
    eprintln!("ledger: a follower took over and 128 appends waiting for it were done {took:?} after the leader went");
    let store = stores[0].clone();
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.size, TreeSize(450 + 128));
    let mut indices: Vec<u64> = appended.iter().map(|(i, _)| i.0).collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), 578);
    let report = ledger::audit(store.as_ref(), &signer().verifier(), &[]).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(store.queued(1000).await.unwrap().is_empty(), "nothing left queued");
}

/// PostgreSQL's migration `0014` moves a log kept a row per leaf into bundles of 256: its SQL
/// writes the very bytes and notices the sequencer writes, leaves the filling bundle's leaves as
/// rows, and the log audits clean afterwards. (SQLite keeps a row per leaf: nothing moves.)
pub async fn ledger_rows_move_into_bundles_byte_for_byte(h: &Harness) {
    let store: Arc<dyn LedgerStore> = Arc::from(h.ledger().await);
    let seq = Sequencer::start(store.clone(), signer(), config(48)).await.unwrap();
    append_many(&seq, 700, 0).await;
    drop(seq);
    if !h.is_postgres() {
        assert_eq!(h.raw_count("SELECT count(*) FROM ledger_leaves").await, 700);
        return;
    }
    assert_eq!(h.raw_count("SELECT count(*) FROM ledger_bundles").await, 2);
    assert_eq!(h.raw_count("SELECT count(*) FROM ledger_leaves").await, 700 - 512);
    h.raw_exec(
        "CREATE TABLE sealed_by_sequencer AS SELECT * FROM ledger_bundles",
        None,
        None,
    )
    .await;
    h.unbundle_leaves(0).await;
    assert_eq!(h.raw_count("SELECT count(*) FROM ledger_bundles").await, 0);
    let migration = include_str!("../../migrations/postgres/0014_ledger_bundles.sql");
    let moves = &migration[migration.find("WITH sealed").expect("the migration moves leaves")..];
    for statement in moves.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        h.raw_exec(statement, None, None).await;
    }
    assert_eq!(
        h.raw_count("SELECT count(*) FROM (SELECT * FROM sealed_by_sequencer EXCEPT SELECT * FROM ledger_bundles) d")
            .await
            + h.raw_count(
                "SELECT count(*) FROM (SELECT * FROM ledger_bundles EXCEPT SELECT * FROM sealed_by_sequencer) d"
            )
            .await,
        0,
        "the migration's bundles differ from the sequencer's"
    );
    assert_eq!(h.raw_count("SELECT count(*) FROM ledger_leaves").await, 700 - 512);
    let report = ledger::audit(store.as_ref(), &signer().verifier(), &[]).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(
        ledger::bundle(store.as_ref(), 7)
            .await
            .unwrap()
            .to_text()
            .matches("tlog-proof")
            .count(),
        14
    );
}
