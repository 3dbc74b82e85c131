//! `reachline drill`: every built-in scenario runs small (a control run and a drill run of the
//! real engine against the sandbox gateways) and its measured figures are sane — nothing lost,
//! nothing outside the rules, the fault noticed within a bound, a failover where there is
//! somewhere to fail over to; a scenario file with an unknown key is refused, naming it.

use serde_json::Value;

use crate::helpers::*;

/// Runs a built-in scenario with `borrowers`, returns the report and the printed Markdown.
fn drill(name: &str, borrowers: u32) -> (Value, String) {
    drill_with(name, borrowers, &[])
}

/// The same, with more arguments (`--postgres URL`).
fn drill_with(name: &str, borrowers: u32, more: &[&str]) -> (Value, String) {
    let s = Scratch::new();
    let out = s.path("report");
    let borrowers = borrowers.to_string();
    let mut args = vec!["drill", name, "--borrowers", &borrowers, "--out", out.to_str().unwrap()];
    args.extend_from_slice(more);
    let res = s.run(&args);
    let stdout = String::from_utf8_lossy(&res.stdout).to_string();
    assert!(res.status.success(), "{name}: {}\n{stdout}", stderr(&res));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(stdout.contains(&md), "the report is printed as written");
    assert_eq!(json["lost"], 0, "{md}");
    assert_eq!(json["outside_rules"], 0, "{md}");
    assert_eq!(json["passed"], true, "{md}");
    assert!(json["notices_sent_control"].as_u64().unwrap() > 20, "{md}");
    (json, md)
}

fn fault<'a>(r: &'a Value, kind: &str) -> &'a Value {
    r["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {r}"))
}

/// Detected, within `max` minutes of the fault's start.
fn detected_within(f: &Value, max: f64, md: &str) -> f64 {
    let m = f["detect_minutes"]
        .as_f64()
        .unwrap_or_else(|| panic!("not detected: {md}"));
    assert!((0.0..=max).contains(&m), "detected after {m} min: {md}");
    m
}

#[test]
fn smsc_down_fails_over_to_the_second_smsc() {
    let (r, md) = drill("smsc-down", 120);
    let f = fault(&r, "smsc_down");
    detected_within(f, 30.0, &md);
    assert!(f["failover_minutes"].as_f64().is_some_and(|m| m <= 30.0), "{md}");
    assert!(f["failover_by"].as_str().unwrap().contains("smsc-b"), "{md}");
    assert!(f["notices_hit"].as_u64().unwrap() > 0, "{md}");
    assert!(md.contains("| **notices lost** (must be 0) | **0** |"), "{md}");
}

#[test]
fn smsc_throttling_hard_fails_over_to_the_second_smsc() {
    let (r, md) = drill("smsc-throttle", 120);
    let f = fault(&r, "smsc_throttle");
    detected_within(f, 30.0, &md);
    assert!(f["failover_by"].as_str().unwrap().contains("smsc-b"), "{md}");
    assert!(f["failover_minutes"].as_f64().is_some_and(|m| m <= 30.0), "{md}");
}

#[test]
fn smtp_bouncing_everything_climbs_to_sms() {
    let (r, md) = drill("smtp-bounce-all", 120);
    let f = fault(&r, "smtp_bounce_all");
    detected_within(f, 30.0, &md);
    assert!(f["failover_by"].as_str().unwrap().contains("sms"), "{md}");
    assert!(f["failover_minutes"].as_f64().is_some(), "{md}");
}

#[test]
fn push_provider_5xx_climbs_to_another_channel() {
    let (r, md) = drill("push-5xx", 120);
    let f = fault(&r, "push_5xx");
    detected_within(f, 30.0, &md);
    let by = f["failover_by"].as_str().unwrap();
    assert!(by.contains("sms") || by.contains("email"), "{md}");
}

#[test]
fn carrier_lookup_down_is_noticed_and_loses_nothing() {
    let (r, md) = drill("intel-down", 120);
    assert!(r["lookups_failed"].as_u64().unwrap() > 0, "{md}");
    detected_within(fault(&r, "intel_down"), 24.0 * 60.0, &md);
}

#[test]
fn a_slow_carrier_lookup_slows_the_passes_and_loses_nothing() {
    let (r, md) = drill("intel-slow", 120);
    let f = fault(&r, "intel_slow");
    // Every lookup would take 300 ms of real time; the engine waits 250 ms (the drill's
    // deadline) and goes on without the answer: a pass waited, and the engine noticed.
    assert!(f["pass_ms_max"].as_f64().unwrap() >= 250.0, "{md}");
    assert!(r["lookups_abandoned"].as_u64().unwrap() > 0, "{md}");
    detected_within(f, 24.0 * 60.0, &md);
    assert!(f["detected_by"].as_str().unwrap().contains("gave up"), "{md}");
}

#[test]
fn a_database_restart_is_recovered_from() {
    let (r, md) = drill("db-restart", 120);
    let f = fault(&r, "db_restart");
    // The node is back when the database is (45 minutes), and says so at once.
    assert_eq!(detected_within(f, 45.0, &md), 45.0, "{md}");
    assert!(f["detected_by"].as_str().unwrap().contains("restarted"), "{md}");
}

/// On PostgreSQL the database is cut off under the running node (its sessions terminated, new
/// ones refused) for 45 minutes: the passes fail and say so at once, the node works again as
/// soon as the database is back, and the chunk in flight is not left in doubt — the ledger's
/// sequencer takes its lock again on a new connection before its next batch.
#[test]
fn a_database_cut_off_under_the_node_on_postgres_is_ridden_out() {
    let Some(admin) = postgres_admin() else {
        return;
    };
    let (r, md) = drill_with("db-restart", 120, &["--postgres", &admin]);
    assert_eq!(r["database"], "PostgreSQL", "{md}");
    let f = fault(&r, "db_restart");
    assert_eq!(detected_within(f, 0.0, &md), 0.0, "{md}");
    assert!(f["detected_by"].as_str().unwrap().contains("a pass failed"), "{md}");
    assert_eq!(f["failover_minutes"].as_f64(), Some(45.0), "{md}");
    assert!(r["passes_failed"].as_u64().unwrap() > 0, "{md}");
    assert_eq!(r["in_doubt"], 0, "{md}");
    assert_eq!(r["notices_sent_control"], r["notices_sent_faulty"], "{md}");
}

#[test]
fn a_mass_recycling_is_noticed_and_what_went_astray_is_counted() {
    let (r, md) = drill("mass-recycle", 120);
    let f = fault(&r, "mass_recycle");
    detected_within(f, 24.0 * 60.0, &md);
    assert!(r["sent_to_dead_number"].as_u64().is_some(), "{md}");
    assert!(r["misdirected_to_stranger"].as_u64().is_some(), "{md}");
    assert!(md.contains("messages to a number after a stranger got it"), "{md}");
}

#[test]
fn a_scenario_file_with_an_unknown_key_is_refused_naming_it() {
    let s = Scratch::new();
    let list = s.ok(&["drill", "--list"]);
    for name in [
        "smsc-down",
        "smsc-throttle",
        "smtp-bounce-all",
        "push-5xx",
        "intel-slow",
        "intel-down",
        "db-restart",
        "mass-recycle",
    ] {
        assert!(list.contains(name), "{list}");
    }
    let text = s.ok(&["drill", "--print", "smsc-down"]);
    let file = s.path("mine.toml");
    std::fs::write(&file, text.replace("[[fault]]\n", "[[fault]]\nseverity = \"high\"\n")).unwrap();
    let out = s.run(&["drill", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown field `severity`"), "{err}");
    std::fs::write(&file, text.replace("provider = \"smsc-a\"", "provider = \"smsc-z\"")).unwrap();
    let err = stderr(&s.run(&["drill", "--file", file.to_str().unwrap()]));
    assert!(err.contains("provider \"smsc-z\" is not one of channels.sms"), "{err}");
}
