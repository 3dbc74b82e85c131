//! A small seeded run of every built-in scenario: deterministic for a seed, no compliance
//! violation, and the full strategy ahead of today's practice on what it is built for.

use reachline_sim::{run, run_on, Scenario, Strategy};

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
fn a_small_seeded_run_keeps_its_figures() {
    // Any change to the population model, a strategy or the policy core shows here; review the
    // new figures (`cargo insta review`) before accepting them.
    let sc = Scenario::builtin("cn-subprime").unwrap();
    insta::assert_snapshot!(table(&run(&sc, 300, 180, 7, &ALL)));
}

#[test]
fn the_result_does_not_depend_on_the_number_of_cores() {
    // 700 borrowers: two blocks of the segment prior, each shared out unevenly.
    let sc = Scenario::builtin("em-prepaid").unwrap();
    let one = run_on(&sc, 700, 150, 4, &ALL, 1);
    let three = run_on(&sc, 700, 150, 4, &ALL, 3);
    for ((s, a), (_, b)) in one.results.iter().zip(&three.results) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", s.as_str());
    }
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

#[test]
fn the_weekly_series_adds_up_to_the_totals() {
    let sc = Scenario::builtin("em-prepaid").unwrap();
    let r = run(&sc, 120, 150, 3, &ALL);
    for (s, m) in &r.results {
        let sum = |f: fn(&reachline_sim::Period) -> u64| m.weekly.iter().map(f).sum::<u64>();
        assert_eq!(sum(|p| p.installments_due), m.installments_due, "{}", s.as_str());
        assert_eq!(sum(|p| p.paid_late_or_not), m.paid_late_or_not);
        assert_eq!(sum(|p| p.missed_number_change), m.missed_number_change);
        assert_eq!(sum(|p| p.notices_sent), m.notices_sent);
        assert_eq!(sum(|p| p.misdirected), m.misdirected);
        assert_eq!(sum(|p| p.read_own), m.read_own);
        assert!(m.weekly.len() <= 150 / 7 + 1, "weeks of the run only");
        assert!(
            m.weekly.iter().filter(|p| p.notices_sent > 0).count() > 10,
            "notices spread over the run"
        );
    }
}

#[test]
fn learned_send_times_raise_what_borrowers_read() {
    // Each simulated borrower reads likelier at their own active hours; the reachline
    // strategy, learning from the engagement it sees, reads better in its second half-year
    // than in its first (it starts from a flat prior).
    let sc = Scenario::builtin("cn-mainstream").unwrap();
    let r = run(&sc, 600, 364, 9, &[Strategy::Reachline]);
    let m = &r.results[0].1;
    let share = |ws: &[reachline_sim::Period]| {
        let (d, rd) = ws
            .iter()
            .fold((0, 0), |(d, rd), p| (d + p.delivered_own, rd + p.read_own));
        rd as f64 / d as f64
    };
    let (first, second) = m.weekly.split_at(m.weekly.len() / 2);
    println!(
        "SMS read: first half {:.4}, second half {:.4}",
        share(first),
        share(second)
    );
    assert!(share(second) > share(first), "{} then {}", share(first), share(second));
}
