//! Two `reachline run` nodes on one PostgreSQL database: the second stands by while the first
//! sequences the ledger, and takes over — ledger and engine — when the first is killed.

use std::time::{Duration, Instant};

use crate::crash::{spawn, start_smsc};
use crate::helpers::Scratch;

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_run_stands_by_and_takes_over_when_the_first_is_killed() {
    let Ok(admin) = std::env::var("REACHLINE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("REACHLINE_TEST_REQUIRE_POSTGRES").is_err(),
            "REACHLINE_TEST_REQUIRE_POSTGRES is set but REACHLINE_TEST_DATABASE_URL is not"
        );
        return;
    };
    let db = format!("reachline_standby_test_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = rt.block_on(reachline_store::postgres::drop_database(&admin, &db));
    rt.block_on(reachline_store::postgres::create_database(&admin, &db))
        .unwrap();
    let s = Scratch::on_database(reachline_store::postgres::url_with_database(&admin, &db));
    let book = s.gen("book", 100, 0, "csv");
    s.ok(&["import", book.to_str().unwrap()]);
    let (mut smsc, port) = start_smsc(&s, &s.path("smsc.jsonl"));
    let run = |clock: &str| {
        [
            "run".to_string(),
            "--clock-file".into(),
            s.path(clock).to_str().unwrap().to_string(),
            "--clock-start".into(),
            "2026-11-01T00:00:00Z".into(),
            "--until".into(),
            "2026-12-01T00:00:00Z".into(),
        ]
    };
    let read = |f: &str| std::fs::read_to_string(s.path(f)).unwrap_or_default();

    let a_args = run("a.clock");
    let mut a = spawn(&s, &a_args.each_ref().map(String::as_str), &port);
    wait_for("the first node moves its clock", Duration::from_secs(30), || {
        !read("a.clock").is_empty() && read("a.clock") != "2026-11-01T00:00:00+00:00"
    });
    let b_args = run("b.clock");
    let mut b = spawn(&s, &b_args.each_ref().map(String::as_str), &port);
    // The second waits for the ledger before it starts its clock.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        read("b.clock").is_empty(),
        "the standby node ran passes beside the active one"
    );
    assert!(
        b.try_wait().unwrap().is_none(),
        "the standby node stopped instead of waiting"
    );

    a.kill().unwrap(); // SIGKILL: its database connections die with it
    a.wait().unwrap();
    let killed = Instant::now();
    wait_for(
        "the standby node takes over and moves its clock",
        Duration::from_secs(20),
        || !read("b.clock").is_empty() && read("b.clock") != "2026-11-01T00:00:00+00:00",
    );
    eprintln!("standby took over and ran a pass {:?} after the kill", killed.elapsed());
    b.kill().unwrap();
    b.wait().unwrap();
    smsc.kill().unwrap();
    smsc.wait().unwrap();
    rt.block_on(reachline_store::postgres::drop_database(&admin, &db))
        .unwrap();
}
