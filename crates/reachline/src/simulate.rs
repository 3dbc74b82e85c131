//! `reachline simulate`: runs the simulator over a built-in or file scenario and prints the
//! metrics of each strategy side by side, with the change against `baseline`; writes CSV and
//! JSON when asked. Every figure is simulated, and the table says so.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use reachline_sim::{run, Metrics, Period, RunReport, Scenario, Strategy};

#[derive(Args)]
pub struct SimulateArgs {
    /// A built-in scenario: cn-mainstream, cn-subprime, us-prime, em-prepaid.
    #[arg(long, default_value = "cn-mainstream")]
    scenario: String,
    /// A TOML scenario with every parameter as a key (see --print-scenario).
    #[arg(long)]
    scenario_file: Option<PathBuf>,
    /// Print a built-in scenario as TOML and exit.
    #[arg(long)]
    print_scenario: Option<String>,
    #[arg(long, default_value_t = 2000)]
    borrowers: u64,
    #[arg(long, default_value_t = 365)]
    days: u32,
    #[arg(long, default_value = "baseline,multichannel,reachline")]
    strategies: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write results.csv, results.json and the metrics week by week (weekly.csv, and a chart
    /// as weekly.svg and weekly.png) into this directory; with --sweep: sweep.csv, sweep.json,
    /// sweep.svg and sweep.png.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run again with one scenario parameter stepped: PARAM=A..B or PARAM=A..B:N (N points,
    /// 5 by default), e.g. yearly_abandon_hazard=0.02..0.2.
    #[arg(long)]
    sweep: Option<String>,
}

fn rows(m: &Metrics) -> Vec<(&'static str, Option<f64>, &'static str)> {
    vec![
        ("missed because of a number change", Some(m.missed_rate() * 100.0), "%"),
        ("overdue rate", Some(m.overdue_rate() * 100.0), "%"),
        ("misdirected notices per 10,000 sent", Some(m.misdirected_per_10k()), ""),
        ("median days to detect a changed number", m.median_detect_days(), ""),
        (
            "number changes the lender came to know",
            Some(m.detected_share() * 100.0),
            "%",
        ),
        ("coverage at the end", Some(m.coverage() * 100.0), "%"),
        ("delivered SMS the borrower read", Some(m.read_share() * 100.0), "%"),
        ("notices per installment", Some(m.notices_per_installment()), ""),
        (
            "unreachable exposure (major units)",
            Some(m.unreachable_exposure_minor as f64 / 100.0),
            "",
        ),
        ("compliance violations", Some(m.violations as f64), ""),
    ]
}

fn print(r: &RunReport) {
    println!(
        "Simulated: {} — {} borrowers, {} days, seed {} (figures from the simulator, not from real borrowers)\n",
        r.scenario, r.borrowers, r.days, r.seed
    );
    let base = r
        .results
        .iter()
        .find(|(s, _)| *s == Strategy::Baseline)
        .map(|(_, m)| rows(m));
    print!("| metric |");
    for (s, _) in &r.results {
        print!(" {} |", s.as_str());
        if base.is_some() && *s != Strategy::Baseline {
            print!(" vs baseline |");
        }
    }
    println!();
    print!("|---|");
    for (s, _) in &r.results {
        print!("---:|");
        if base.is_some() && *s != Strategy::Baseline {
            print!("---:|");
        }
    }
    println!();
    let all: Vec<_> = r.results.iter().map(|(s, m)| (*s, rows(m))).collect();
    for (i, (name, _, unit)) in all[0].1.iter().enumerate() {
        print!("| {name} |");
        for (s, rs) in &all {
            match rs[i].1 {
                Some(v) => print!(" {v:.2}{unit} |"),
                None => print!(" — |"),
            }
            if let (Some(b), true) = (&base, *s != Strategy::Baseline) {
                match (b[i].1, rs[i].1) {
                    (Some(bv), Some(v)) if bv.abs() > 1e-12 => print!(" {:+.0}% |", (v - bv) / bv * 100.0),
                    _ => print!(" — |"),
                }
            }
        }
        println!();
    }
    println!(
        "\nmissed because of a number change: installments whose borrower read no pre-due notice while one went to a dead or reassigned number, over installments due.\n\
         misdirected: debt notices delivered to someone other than the borrower. coverage: borrowers with a way the lender uses that truly reaches them."
    );
}

pub fn run_cli(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.print_scenario {
        let sc = Scenario::builtin(name).with_context(|| {
            format!(
                "no built-in scenario {name:?}; try one of {}",
                Scenario::BUILTIN.join(", ")
            )
        })?;
        print!("{}", toml::to_string(&sc)?);
        return Ok(());
    }
    let sc = match &args.scenario_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            toml::from_str::<Scenario>(&text).with_context(|| format!("{}", f.display()))?
        }
        None => Scenario::builtin(&args.scenario).with_context(|| {
            format!(
                "no built-in scenario {:?}; try one of {}",
                args.scenario,
                Scenario::BUILTIN.join(", ")
            )
        })?,
    };
    let strategies = args
        .strategies
        .split(',')
        .map(str::parse::<Strategy>)
        .collect::<Result<Vec<_>, _>>()?;
    let t = std::time::Instant::now();
    if let Some(text) = &args.sweep {
        let sweep = crate::sweep::Sweep::parse(text)?;
        let points = crate::sweep::run_sweep(&sc, &sweep, args.borrowers, args.days, args.seed, &strategies)?;
        crate::sweep::print(&sc, &sweep, &points);
        println!(
            "\n{} points × {} strategies × {} borrowers × {} days in {:.1} s",
            points.len(),
            strategies.len(),
            args.borrowers,
            args.days,
            t.elapsed().as_secs_f64()
        );
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("sweep.csv"), crate::sweep::csv(&sweep, &points))?;
            std::fs::write(dir.join("sweep.json"), serde_json::to_string_pretty(&points)?)?;
            let svg = crate::sweep::svg(&sc, &sweep, &points);
            std::fs::write(dir.join("sweep.svg"), &svg)?;
            crate::sweep::png(&svg, &dir.join("sweep.png"))?;
            println!(
                "wrote sweep.csv, sweep.json, sweep.svg and sweep.png in {}",
                dir.display()
            );
        }
        return Ok(());
    }
    let r = run(&sc, args.borrowers, args.days, args.seed, &strategies);
    print(&r);
    println!(
        "\n{} strategies × {} borrowers × {} days in {:.1} s",
        strategies.len(),
        args.borrowers,
        args.days,
        t.elapsed().as_secs_f64()
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&r)?)?;
        let mut csv = String::from("strategy,metric,value\n");
        for (s, m) in &r.results {
            for (name, v, _) in rows(m) {
                csv += &format!(
                    "{},{},{}\n",
                    s.as_str(),
                    name,
                    v.map_or(String::new(), |v| format!("{v:.6}"))
                );
            }
        }
        std::fs::write(dir.join("results.csv"), csv)?;
        std::fs::write(dir.join("weekly.csv"), weekly_csv(&r))?;
        let svg = weekly_svg(&r);
        std::fs::write(dir.join("weekly.svg"), &svg)?;
        crate::sweep::png(&svg, &dir.join("weekly.png"))?;
        println!(
            "wrote results.json, results.csv, weekly.csv, weekly.svg and weekly.png in {}",
            dir.display()
        );
    }
    Ok(())
}

/// A weekly metric: its name and how a week's counts give it.
type WeeklyMetric = (&'static str, fn(&Period) -> f64);

/// The metrics that have a value each week, as charted.
const WEEKLY: [WeeklyMetric; 4] = [
    ("overdue rate (%), installments by due week", |p| {
        p.overdue_rate() * 100.0
    }),
    ("missed because of a number change (%)", |p| p.missed_rate() * 100.0),
    ("misdirected per 10,000 sent", |p| p.misdirected_per_10k()),
    ("delivered SMS the borrower read (%)", |p| p.read_share() * 100.0),
];

/// Every strategy's counts and rates week by week.
fn weekly_csv(r: &RunReport) -> String {
    let mut out = String::from(
        "strategy,week,installments_due,paid_late_or_not,missed_number_change,notices_sent,misdirected,\
         sms_delivered_own,sms_read_own,overdue_rate,missed_rate,misdirected_per_10k,sms_read_share\n",
    );
    for (s, m) in &r.results {
        for (w, p) in m.weekly.iter().enumerate() {
            out += &format!(
                "{},{w},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
                s.as_str(),
                p.installments_due,
                p.paid_late_or_not,
                p.missed_number_change,
                p.notices_sent,
                p.misdirected,
                p.delivered_own,
                p.read_own,
                p.overdue_rate(),
                p.missed_rate(),
                p.misdirected_per_10k(),
                p.read_share()
            );
        }
    }
    out
}

/// The weekly metrics over the run, a line per strategy (weeks with nothing due or sent are
/// left out of that metric's line rather than drawn as zero).
fn weekly_svg(r: &RunReport) -> String {
    let weeks = r.results.iter().map(|(_, m)| m.weekly.len()).max().unwrap_or(0);
    let panels = WEEKLY
        .iter()
        .map(|(name, f)| crate::sweep::Panel {
            name: (*name).to_string(),
            lines: r
                .results
                .iter()
                .map(|(s, m)| {
                    let pts = m
                        .weekly
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.installments_due > 0 && p.notices_sent > 0)
                        .map(|(w, p)| (w as f64, f(p)))
                        .collect();
                    (s.as_str().to_string(), pts)
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    let step = (weeks / 12).max(1);
    let ticks: Vec<(f64, String)> = (0..weeks)
        .step_by(step)
        .map(|w| (w as f64, format!("wk {w}")))
        .collect();
    crate::sweep::lines_svg(
        &format!(
            "{} — {} borrowers, {} days, week by week (simulated)",
            r.scenario, r.borrowers, r.days
        ),
        &ticks,
        &panels,
    )
}
