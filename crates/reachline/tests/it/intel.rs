//! `reachline classify-reply` and `reachline intel`: a reply's class as JSON; a disconnection file
//! loaded all or nothing and answered with the recycled-number rules.

use crate::helpers::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn classify_reply_prints_the_class_and_the_stated_number() {
    let s = Scratch::new();
    let v = json(&s.ok(&["classify-reply", "换号了，我的新号码是１３９１２３４５６７８"]));
    assert_eq!(v["new_number"], "+8613912345678");
    assert!(v["class"] == "new_number" || v["class"] == "wrong_number", "{v}");
    assert_eq!(json(&s.ok(&["classify-reply", "STOP!!!"]))["class"], "opt_out");
    assert_eq!(
        json(&s.ok(&["classify-reply", "打错了，我不认识这个人"]))["class"],
        "wrong_number"
    );
    assert_eq!(json(&s.ok(&["classify-reply", "收到，谢谢"]))["class"], "acknowledged");
    let v = json(&s.ok(&["classify-reply", "明天天气怎么样"]));
    assert_eq!(v["class"], "other");
    assert!(v["new_number"].is_null());
}

#[test]
fn disconnections_load_all_or_nothing_and_answer_the_fcc_way() {
    let s = Scratch::new();
    let bad = s.path("bad.csv");
    std::fs::write(
        &bad,
        "number,disconnect_date\n+12025550123,2024-09-15\n+12025550124,someday\n",
    )
    .unwrap();
    let out = s.run(&["intel", "load-disconnects", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3, field disconnect_date"), "{err}");
    assert!(
        err.contains("nothing was loaded") && !err.contains("2025550124"),
        "{err}"
    );

    let good = s.path("rnd.csv");
    std::fs::write(
        &good,
        "number,disconnect_date\n+12025550123,2024-09-15\n+8613812345678,20240120\n",
    )
    .unwrap();
    let out = s.ok(&["intel", "load-disconnects", good.to_str().unwrap()]);
    assert!(
        out.contains("2 disconnection records read, 2 new, from rnd.csv"),
        "{out}"
    );

    let check = |number: &str, since: &str| json(&s.ok(&["intel", "check", number, "--since", since]));
    // Disconnected on or after the date the lender last knew it: it may have changed hands.
    let v = check("+12025550123", "2024-01-01");
    assert_eq!(v["recycled_since"]["result"]["answer"], "yes", "{v}");
    assert_eq!(v["number"], "+12025****0123");
    // Disconnected before that date: still the borrower's as far as the registry knows.
    assert_eq!(
        check("+12025550123", "2024-10-01")["recycled_since"]["result"]["answer"],
        "no"
    );
    // Not in the registry: "no" inside its complete period, "no data" before it.
    assert_eq!(
        check("+12025550199", "2022-01-01")["recycled_since"]["result"]["answer"],
        "no"
    );
    assert_eq!(
        check("+12025550199", "2020-01-01")["recycled_since"]["result"]["answer"],
        "no_data"
    );
    // The original carrier comes from the numbering plan; status needs a vendor.
    let v = check("13812345678", "2024-01-01");
    assert_eq!(v["recycled_since"]["result"]["answer"], "yes");
    assert_eq!(v["original_carrier"]["name"], "China Mobile");
    assert!(
        v["status"]["error"]
            .as_str()
            .unwrap()
            .contains("does not answer status"),
        "{v}"
    );
}

#[test]
fn health_replay_prints_the_outcome_and_checks_expectations() {
    let s = Scratch::new();
    let good = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../reachline-policy/tests/timelines/recycled-after-dead.txt"
    );
    let out = s.run(&["health", "replay", good]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.contains("reassigned since 2024-06-21 by recycled_yes"), "{text}");
    assert!(text.contains("hard_failure_two_days"), "{text}");
    assert!(stderr(&out).contains("all 6 expectations hold"), "{}", stderr(&out));
    // As of an earlier day, as JSON.
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["health", "replay", good, "--at", "2024-03-11", "--json"])).unwrap();
    assert_eq!(v["contacts"][0]["state"], "dead");
    assert_eq!(v["reachable"], false);
    // A wrong expectation fails the command and names its line.
    let bad = s.path("bad.txt");
    std::fs::write(
        &bad,
        "contact 1 mobile primary bound=2024-01-01\n2024-02-01 1 delivery sms dead\nexpect 2024-02-01 1 dead\n",
    )
    .unwrap();
    let out = s.run(&["health", "replay", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 3: contact 1 on 2024-02-01: expected dead, got suspect"),
        "{}",
        stderr(&out)
    );
}
