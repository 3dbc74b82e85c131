//! The crash test: `reachline run` on a simulated clock against the sandbox SMSC in a process of
//! its own (which counts every part it accepts), killed with SIGKILL at 50 random moments and
//! restarted each time, then run to the end. Afterwards: no message reached the SMSC twice,
//! every send recorded as taken is in the SMSC's log, the SMSC holds nothing the engine does not
//! account for, nothing is left half-sent, and every send is explained by a recorded decision.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::helpers::{heavy, PgDatabase, Scratch};

pub fn spawn(s: &Scratch, args: &[&str], port: &str) -> Child {
    s.node_command(args, port).stderr(Stdio::null()).spawn().unwrap()
}

/// The SMSC's log as whole messages — (destination, text) with the ids of their parts — and
/// every part's id. Parts are joined by (session, destination, reference): a reference is unique
/// only within one client's session. A message whose parts did not all arrive (its sender was
/// killed between parts) is not whole.
/// A whole message, (destination, text), with its parts' ids.
pub type Message = ((String, String), Vec<String>);

pub fn smsc_log(log: &str) -> (Vec<Message>, HashSet<String>) {
    type Key = (u64, String, u64, u64);
    let mut open: HashMap<Key, Vec<(u64, String, String)>> = HashMap::new();
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let dest = v["destination"].as_str().unwrap().to_string();
        let text = v["text"].as_str().unwrap().to_string();
        let id = v["id"].as_str().unwrap().to_string();
        ids.insert(id.clone());
        match v["concat"].as_array() {
            None => out.push(((dest, text), vec![id])),
            Some(c) => {
                let (r, total, seq) = (c[0].as_u64().unwrap(), c[1].as_u64().unwrap(), c[2].as_u64().unwrap());
                let key = (v["session"].as_u64().unwrap(), dest.clone(), r, total);
                let parts = open.entry(key.clone()).or_default();
                parts.push((seq, text, id));
                if parts.len() as u64 == total {
                    let mut parts = open.remove(&key).unwrap();
                    parts.sort();
                    let text: String = parts.iter().map(|p| p.1.as_str()).collect();
                    out.push(((dest, text), parts.into_iter().map(|p| p.2).collect()));
                }
            }
        }
    }
    (out, ids)
}

/// Starts `reachline sandbox-smsc` logging every part to `log`; returns it and its port.
pub fn start_smsc(s: &Scratch, log: &std::path::Path) -> (Child, String) {
    let port_file = s.path("smsc.port");
    let smsc = Command::new(env!("CARGO_BIN_EXE_reachline"))
        .args([
            "sandbox-smsc",
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            port_file.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    for _ in 0..200 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            port = p;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!port.is_empty(), "the sandbox SMSC did not start");
    (smsc, port)
}

#[test]
fn killed_fifty_times_the_engine_loses_nothing_and_sends_nothing_twice() {
    let _heavy = heavy();
    let s = Scratch::new();
    let db = rusqlite::Connection::open(s.db()).unwrap();
    killed_fifty_times(
        &s,
        &|sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() },
        &|sql| {
            let mut stmt = db.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        },
    );
}

/// The same on PostgreSQL (when `REACHLINE_TEST_DATABASE_URL` names a server): the outbox's
/// leases, the planning slices and the ledger's sequencer lock, each left behind by a killed
/// process, are taken up by the next one.
#[test]
fn killed_fifty_times_on_postgres_the_engine_loses_nothing_and_sends_nothing_twice() {
    let Some(db) = PgDatabase::fresh("crash_test") else {
        return;
    };
    let _heavy = heavy();
    killed_fifty_times(&db.scratch(), &|sql| db.count(sql), &|sql| db.strings(sql));
}

/// The crash test on the scratch's database; `count` and `strings` run a query there.
fn killed_fifty_times(s: &Scratch, count: &dyn Fn(&str) -> i64, strings: &dyn Fn(&str) -> Vec<String>) {
    let book = s.gen("book", 150, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let log = s.path("smsc.jsonl");
    let (mut smsc, port) = start_smsc(s, &log);
    let clock = s.path("clock");
    let run = [
        "run",
        "--clock-file",
        clock.to_str().unwrap(),
        "--clock-start",
        "2026-11-01T00:00:00Z",
        "--until",
        "2026-11-28T00:00:00Z",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let began = std::time::Instant::now();
    let mut mid_run = 0;
    let mut last = String::new();
    for _ in 0..50 {
        let before = std::fs::read_to_string(&clock).unwrap_or_default();
        let mut child = spawn(s, &run, &port);
        // A start takes longer on a busy machine: wait until this run has moved the clock (at
        // most 5 s), then kill it at a random moment of what follows.
        let started = std::time::Instant::now();
        while std::fs::read_to_string(&clock).unwrap_or_default() == before
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let now = std::fs::read_to_string(&clock).unwrap_or_default();
        if now.as_str() < "2026-11-28" && now != last {
            mid_run += 1;
        }
        last = now;
    }
    let moved = std::fs::read_to_string(&clock).unwrap();
    assert!(
        mid_run >= 40,
        "only {mid_run} of the 50 kills fell in the middle of the run"
    );
    eprintln!(
        "crash test: 50 kills in {:?}, clock at {}",
        began.elapsed(),
        moved.trim()
    );
    let status = spawn(s, &run, &port).wait().unwrap();
    eprintln!("crash test: final run done at {:?}", began.elapsed());
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300)); // the SMSC's log is flushed every 20 ms
    smsc.kill().unwrap();
    smsc.wait().unwrap();

    let (all, smsc_ids) = smsc_log(&std::fs::read_to_string(&log).unwrap());
    // Contact checks' links (`…/c/<token>`) are verification messages, recorded as steps, not
    // outbox rows: counted apart below.
    let (links, messages): (Vec<Message>, Vec<Message>) = all.into_iter().partition(|((_, t), _)| t.contains("/c/"));
    let mut seen = HashSet::new();
    for (m, _) in &messages {
        assert!(seen.insert(m.clone()), "a message reached the SMSC twice: {m:?}");
    }

    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE state IN ('sending', 'leased')"),
        0
    );
    // Every link the engine recorded as sent reached the SMSC; at most the links of checks a
    // kill caught mid-send (each `links_sending` without its `link_sent` rows) are unrecorded.
    let links_sent = count("SELECT COUNT(*) FROM contact_change_steps WHERE step = 'link_sent'");
    let checks_sending = count("SELECT COUNT(*) FROM contact_change_steps WHERE step = 'links_sending'");
    assert!(
        links_sent <= links.len() as i64 && links.len() as i64 <= links_sent + 3 * checks_sending,
        "links at the SMSC {}, recorded {links_sent}, checks {checks_sending}",
        links.len()
    );
    let sent = count("SELECT COUNT(*) FROM outbox WHERE state = 'sent'");
    let in_doubt = count("SELECT COUNT(*) FROM outbox WHERE state = 'in_doubt'");
    assert!(sent > 200, "the run sent notices: {sent}");
    // Every part the engine recorded as taken is in the SMSC's log…
    let recorded = strings(
        "SELECT p.provider_id FROM outbox_provider_ids p JOIN outbox o ON o.id = p.outbox_id WHERE o.state = 'sent'",
    );
    for id in &recorded {
        assert!(
            smsc_ids.contains(id),
            "part {id} recorded as sent is not in the SMSC's log"
        );
    }
    // …and the SMSC holds nothing the engine does not account for: each message is a recorded
    // send, or one of the sends a kill left in doubt (which are never resubmitted).
    let accounted = messages.len() as i64;
    assert!(
        accounted >= sent && accounted <= sent + in_doubt,
        "SMSC messages {accounted}, sent {sent}, in doubt {in_doubt}"
    );
    // Every attempt is explained by a recorded decision to send that notice.
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.borrower_id = o.borrower_id \
             AND d.notice = o.installment_id || '/' || o.step || '/' || o.kind AND d.action = 'send')"
        ),
        0
    );
    eprintln!("crash test: {sent} sent, {in_doubt} in doubt, {accounted} messages at the SMSC");
}
