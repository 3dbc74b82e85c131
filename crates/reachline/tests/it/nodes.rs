//! Three `reachline run` nodes on one PostgreSQL database, sharing a simulated clock, send a
//! business morning's notices to the sandbox SMSC (its own process, logging every part it
//! accepts). Once every node is sending, the node that sequences the ledger is killed with
//! SIGKILL. Afterwards: no notice lost (every send due is sent, or left in doubt by the kill
//! and accounted for), none submitted twice, every send recorded as taken is at the SMSC and
//! has its ledger leaf, the ledger audits clean (what a follower left queued is appended by the
//! next sequencer), and the survivors' throughput came back within a stated time. That last
//! figure is a measurement: run beside other heavy tests on a small machine it can come out
//! long (CI runs this test on its own).

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::crash::{smsc_log, start_smsc};
use crate::helpers::{heavy, PgDatabase, Scratch};

/// The simulated moment the nodes start at: 09:00 in China, 20:00 in New York.
const SIM_START: &str = "2026-11-01T01:00:00Z";
/// A lease, in the clock's seconds (it runs at real speed here): how long the killed node's
/// rows stay out of reach before the others take them.
const LEASE_SECONDS: &str = "8";
/// The recovery this test states and checks: after the kill, the survivors' sending rate is
/// back to half the three nodes' rate within this time.
const RECOVERY: Duration = Duration::from_secs(10);

fn node(s: &Scratch, port: &str, epoch: &str, name: &str) -> Child {
    let err = std::fs::File::create(s.path(&format!("{name}.log"))).unwrap();
    s.node_command(&["run", "--sim-start", SIM_START, "--sim-epoch", epoch], port)
        .env("REACHLINE_ENGINE__TICK_SECONDS", "1")
        // The morning's notices go out together, as the kill and the recovery measure: the
        // send-time model would spread first sends over the day.
        .env("REACHLINE_ENGINE__TIMING__ENABLED", "false")
        .env("REACHLINE_ENGINE__LEASE_SECONDS", LEASE_SECONDS)
        .env(
            "REACHLINE_LOG__LEVEL",
            std::env::var("NODES_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(err)
        .spawn()
        .unwrap()
}

/// A child process killed when dropped, so that a failing assertion leaves no node running.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SMSC log's lines so far, with each line's session.
fn sessions(log: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["session"].as_u64())
        .collect()
}

#[test]
fn three_nodes_share_the_work_and_lose_nothing_when_the_sequencer_is_killed() {
    let Some(db) = PgDatabase::fresh("nodes_test") else {
        return;
    };
    let _heavy = heavy();
    let count = |sql: &str| db.count(sql);

    let s = db.scratch();
    let book = s.gen("book", 24000, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let log = s.path("smsc.jsonl");
    let (smsc, port) = start_smsc(&s, &log);
    let smsc = Node(smsc);
    let epoch = chrono::Utc::now().to_rfc3339();
    let began = Instant::now();

    // The first node claims the ledger's sequencer (it publishes the empty tree's checkpoint)
    // before the other two start: it is the one killed.
    let mut a = Node(node(&s, &port, &epoch, "a"));
    wait_for("the first node publishes a checkpoint", Duration::from_secs(30), || {
        count("SELECT count(*) FROM ledger_checkpoints") > 0
    });
    let mut b = Node(node(&s, &port, &epoch, "b"));
    let mut c = Node(node(&s, &port, &epoch, "c"));

    // Samples of the SMSC's part count over time.
    let mut samples: Vec<(Duration, usize)> = Vec::new();
    let sample = |samples: &mut Vec<(Duration, usize)>| {
        let n = sessions(&log).len();
        samples.push((began.elapsed(), n));
        n
    };
    // Kill the sequencer once all three nodes have been sending (three SMSC sessions at work)
    // for two seconds and 2,500 parts have gone out (a sixth to a quarter of the morning; the
    // nodes are past planning): the rate over the last two seconds is the three nodes' rate.
    let started = Instant::now();
    let mut all_three: Option<Instant> = None;
    loop {
        let n = sample(&mut samples);
        let live: HashSet<u64> = sessions(&log).into_iter().collect();
        if live.len() >= 3 && all_three.is_none() {
            all_three = Some(Instant::now());
        }
        if all_three.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) && n >= 2_500 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "three nodes sending within 120 s: {} sessions",
            live.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_pid = a.0.id();
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    let killed = began.elapsed();
    let at_kill = samples.last().unwrap().1;

    // Run until nothing due is left: no row queued, leased or sending whose time has come, and
    // none a survivor still holds. A survivor slow enough under load to outlast its lease
    // mid-send has its rows marked in doubt by the other's recovery; it records them when the
    // provider's answer comes (the doubt ends), so those are waited for too.
    let survivors = [b.0.id(), c.0.id()];
    let due_left = || {
        count(&format!(
            "SELECT count(*) FROM outbox WHERE (state IN ('queued', 'leased', 'sending') \
             AND not_before <= timestamptz '{SIM_START}' + (now() - timestamptz '{epoch}')) \
             OR (state = 'in_doubt' AND (detail LIKE '%-{} stopped%' OR detail LIKE '%-{} stopped%'))",
            survivors[0], survivors[1]
        ))
    };
    let drained = Instant::now();
    loop {
        sample(&mut samples);
        if due_left() == 0 {
            break;
        }
        for (name, child) in [("b", &mut b), ("c", &mut c)] {
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "node {name} stopped: {}",
                std::fs::read_to_string(s.path(&format!("{name}.log"))).unwrap_or_default()
            );
        }
        assert!(
            drained.elapsed() < Duration::from_secs(180),
            "the survivors sent what was due within 180 s ({} rows left)",
            due_left()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // the SMSC's log is flushed every 20 ms
    sample(&mut samples);
    let log_of = |name: &str| std::fs::read_to_string(s.path(&format!("{name}.log"))).unwrap_or_default();
    for (name, child) in [("b", &mut b), ("c", &mut c)] {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "node {name} stopped: {}",
            log_of(name)
        );
    }
    drop((b, c, smsc));

    // Nothing twice at the SMSC; everything recorded as sent is there; nothing there that the
    // outbox does not account for (a send the kill left in doubt may or may not have arrived).
    let (all, smsc_ids) = smsc_log(&std::fs::read_to_string(&log).unwrap());
    let messages: Vec<_> = all.into_iter().filter(|((_, t), _)| !t.contains("/c/")).collect();
    let mut seen = HashSet::new();
    for (m, _) in &messages {
        assert!(seen.insert(m.clone()), "a message reached the SMSC twice");
    }
    let sent = count("SELECT count(*) FROM outbox WHERE state = 'sent'");
    let in_doubt = count("SELECT count(*) FROM outbox WHERE state = 'in_doubt'");
    let recorded = db.strings(
        "SELECT p.provider_id FROM outbox_provider_ids p JOIN outbox o ON o.id = p.outbox_id WHERE o.state = 'sent'",
    );
    for id in &recorded {
        assert!(smsc_ids.contains(id), "a part recorded as sent is not at the SMSC");
    }
    let at_smsc = messages.len() as i64;
    assert!(
        at_smsc >= sent && at_smsc <= sent + in_doubt,
        "SMSC messages {at_smsc}, sent {sent}, in doubt {in_doubt}"
    );
    // At most the killed node's chunk in flight is in doubt.
    if in_doubt > 64 {
        let by_node = db.counted("SELECT detail, count(*) FROM outbox WHERE state = 'in_doubt' GROUP BY 1");
        panic!(
            "{in_doubt} sends in doubt after one kill (node a was {a_pid}, b {}, c {}): {by_node:?}\nnode b:\n{}\nnode c:\n{}",
            survivors[0],
            survivors[1],
            log_of("b"),
            log_of("c")
        );
    }
    assert!(sent >= 3600, "the morning's notices went out: {sent}");

    // The ledger: every send recorded as taken has its leaf, nothing waits in the queue, and
    // the audit (every leaf re-hashed, every checkpoint checked) is clean.
    assert_eq!(
        count(
            "SELECT count(*) FROM outbox o WHERE o.state = 'sent' \
             AND NOT EXISTS (SELECT 1 FROM ledger_leaves l WHERE l.notice = o.id) \
             AND NOT EXISTS (SELECT 1 FROM ledger_bundles b WHERE b.notices @> ARRAY[o.id])"
        ),
        0,
        "a send recorded as taken has no ledger leaf"
    );
    // Leaves a follower queued just before the nodes were stopped wait in the queue (their
    // callers were never answered); the next node to sequence the log appends them first.
    if count("SELECT count(*) FROM ledger_queue WHERE first_idx IS NULL") > 0 {
        let next = s.run(&["ledger", "stress", "--leaves", "1"]);
        assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
    }
    assert_eq!(count("SELECT count(*) FROM ledger_queue WHERE first_idx IS NULL"), 0);
    let audit = s.run(&["ledger", "audit"]);
    assert!(
        audit.status.success(),
        "ledger audit: {}",
        String::from_utf8_lossy(&audit.stderr)
    );

    // Throughput: the three nodes' rate before the kill, and the first one-second window after
    // it in which the survivors sent at half that rate.
    let at = |t: Duration| samples.iter().rev().find(|(u, _)| *u <= t).map_or(0, |(_, n)| *n);
    let before = (at_kill - at(killed - Duration::from_secs(2))) as f64 / 2.0;
    let rate_at = |t: Duration| -> f64 { (at(t + Duration::from_secs(1)) - at(t)) as f64 };
    let end = samples.last().unwrap().0;
    let mut recovered = None;
    let mut t = killed;
    while t + Duration::from_secs(1) <= end {
        if rate_at(t) >= before / 2.0 {
            recovered = Some(t + Duration::from_secs(1) - killed);
            break;
        }
        t += Duration::from_millis(100);
    }
    let total = samples.last().unwrap().1;
    let after_kill = total - at_kill;
    let mut per_session: HashMap<u64, usize> = HashMap::new();
    for s in sessions(&log) {
        *per_session.entry(s).or_default() += 1;
    }
    eprintln!(
        "three nodes: {sent} sent, {in_doubt} in doubt, {total} parts at the SMSC ({after_kill} after the kill), \
         {:.0} parts/s before the kill, recovered in {recovered:?}, parts per SMSC session {:?}",
        before,
        per_session.values().collect::<Vec<_>>()
    );
    // The work left after the kill may be too little to show a rate; then it was simply done.
    if after_kill as f64 > 2.0 * before {
        let r = recovered.expect("the survivors' rate came back");
        assert!(r <= RECOVERY, "throughput recovered in {r:?}, stated {RECOVERY:?}");
    }
}
