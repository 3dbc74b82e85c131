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

#[test]
fn a_sweep_steps_one_parameter_and_draws_it() {
    let s = Scratch::new();
    let out = s.path("sweep");
    let table = s.ok(&[
        "simulate",
        "--scenario",
        "cn-mainstream",
        "--borrowers",
        "150",
        "--days",
        "120",
        "--seed",
        "5",
        "--sweep",
        "yearly_abandon_hazard=0.02..0.3:3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        table.contains("Simulated sweep: cn-mainstream with yearly_abandon_hazard"),
        "{table}"
    );
    // Three points × three strategies, each a row.
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 0.")).collect();
    assert_eq!(rows.len(), 9, "{table}");
    // More numbers abandoned, more notices missed under the baseline.
    let missed = |value: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| {value} | baseline |")))
            .unwrap();
        row.split('|').nth(3).unwrap().trim().parse().unwrap()
    };
    assert!(missed("0.3000") > missed("0.0200"), "{table}");
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 3 * 4, "{csv}");
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 3 * 4);
    let png = std::fs::read(out.join("sweep.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
    // An unknown parameter is named.
    let bad = s.run(&["simulate", "--sweep", "abandon=0..1"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("no parameter \"abandon\""), "{}", stderr(&bad));
}
