//! `reachline simulate`: a built-in scenario printed as TOML runs again from the file with the
//! same figures; the table and the CSV/JSON name every strategy.

use crate::helpers::*;

#[test]
fn a_printed_scenario_runs_from_its_file_with_the_same_figures() {
    let s = Scratch::new();
    let toml = s.ok(&["simulate", "--print-scenario", "cn-subprime"]);
    assert!(toml.contains("yearly_abandon_hazard = 0.15"), "{toml}");
    let file = s.path("sc.toml");
    std::fs::write(&file, &toml).unwrap();
    let args = ["--borrowers", "120", "--days", "120", "--seed", "3"];
    let builtin = s.ok(&[&["simulate", "--scenario", "cn-subprime"][..], &args].concat());
    let out = s.path("out");
    let from_file = s.ok(&[
        &[
            "simulate",
            "--scenario-file",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ][..],
        &args,
    ]
    .concat());
    let table = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with('|'))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&builtin), table(&from_file));
    assert!(builtin.contains("Simulated: cn-subprime"), "{builtin}");
    assert!(
        builtin.contains("| compliance violations | 0.00 | 0.00 | — | 0.00 | — |"),
        "{builtin}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("reachline,overdue rate,")), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["results"].as_array().unwrap().len(), 3);
    // A bad scenario key is named.
    std::fs::write(&file, toml.replace("freeze_days", "freeze_dayz")).unwrap();
    let bad = s.run(&["simulate", "--scenario-file", file.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("freeze_dayz"), "{}", stderr(&bad));
}

#[test]
fn bench_policy_prints_its_table() {
    let s = Scratch::new();
    let out = s.ok(&["bench", "policy", "--borrowers", "300", "--threads", "2"]);
    assert!(
        out.contains("| threads | borrowers | decisions | sends | seconds | borrowers/s |"),
        "{out}"
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    // The same decisions on one thread and on two.
    let cols = |l: &str| l.split('|').map(str::trim).map(String::from).collect::<Vec<_>>();
    assert_eq!(cols(rows[0])[3..5], cols(rows[1])[3..5]);
}
