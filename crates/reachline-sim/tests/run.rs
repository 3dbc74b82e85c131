//! A small seeded run of every built-in scenario: deterministic for a seed, no compliance
//! violation, and the full strategy ahead of today's practice on what it is built for.

use reachline_sim::{run, Scenario, Strategy};

const ALL: [Strategy; 3] = [Strategy::Baseline, Strategy::Multichannel, Strategy::Reachline];

fn table(r: &reachline_sim::RunReport) -> String {
    let mut out = format!(
        "{} ({} borrowers, {} days, seed {})\n",
        r.scenario, r.borrowers, r.days, r.seed
    );
    for (s, m) in &r.results {
        out += &format!(
            "  {:<12} missed {:.4} overdue {:.4} misdirected/10k {:.1} detect {:?} d ({:.0}% known) coverage {:.3} notices/inst {:.2} violations {}\n",
            s.as_str(),
            m.missed_rate(),
            m.overdue_rate(),
            m.misdirected_per_10k(),
            m.median_detect_days(),
            m.detected_share() * 100.0,
            m.coverage(),
            m.notices_per_installment(),
            m.violations
        );
    }
    out
}

#[test]
fn a_seeded_run_is_deterministic() {
    let sc = Scenario::builtin("cn-subprime").unwrap();
    let a = run(&sc, 150, 120, 5, &ALL);
    let b = run(&sc, 150, 120, 5, &ALL);
    assert_eq!(table(&a), table(&b));
}

#[test]
fn reachline_beats_todays_practice_without_breaking_rules() {
    for name in Scenario::BUILTIN {
        let sc = Scenario::builtin(name).unwrap();
        let r = run(&sc, 250, 200, 11, &ALL);
        println!("{}", table(&r));
        let get = |s: Strategy| &r.results.iter().find(|(x, _)| *x == s).unwrap().1;
        let (base, ours) = (get(Strategy::Baseline), get(Strategy::Reachline));
        assert_eq!(ours.violations, 0, "{name}");
        assert!(ours.number_changes > 0, "{name}: the run has number changes");
        assert!(ours.missed_rate() <= base.missed_rate(), "{name}: missed");
        assert!(
            ours.misdirected_per_10k() <= base.misdirected_per_10k(),
            "{name}: misdirected"
        );
        assert!(ours.overdue_rate() <= base.overdue_rate(), "{name}: overdue");
        assert!(ours.coverage() >= base.coverage(), "{name}: coverage");
    }
}
