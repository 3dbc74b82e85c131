//! `reachline simulate --sweep PARAM=A..B[:N]`: the same population run again with one
//! scenario parameter stepped from A to B (N points, 5 by default), each strategy's headline
//! metrics printed per point, written as CSV and JSON, and drawn as a chart (SVG, and PNG
//! rendered from that SVG).
//!
//! The chart is drawn by hand, as the dashboard's are: a handful of polylines, axes and labels
//! need no plotting library; `resvg` (a maintained SVG renderer) turns it into the PNG.

use std::fmt::Write;
use std::path::Path;

use anyhow::{bail, Context};
use reachline_server::charts::esc;
use reachline_sim::{run, Metrics, Scenario, Strategy};
use serde::Serialize;

/// A parsed `--sweep`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub param: String,
    pub from: f64,
    pub to: f64,
    pub points: usize,
}

impl Sweep {
    pub fn parse(text: &str) -> anyhow::Result<Sweep> {
        let (param, range) = text
            .split_once('=')
            .context("--sweep takes PARAM=A..B or PARAM=A..B:N")?;
        let (range, points) = match range.split_once(':') {
            Some((r, n)) => (r, n.parse::<usize>().context("--sweep: N is a whole number")?),
            None => (range, 5),
        };
        let (a, b) = range.split_once("..").context("--sweep: the range is A..B")?;
        let from: f64 = a.trim().parse().context("--sweep: A is a number")?;
        let to: f64 = b.trim().parse().context("--sweep: B is a number")?;
        if !(2..=50).contains(&points) {
            bail!("--sweep: N is between 2 and 50 points");
        }
        Ok(Sweep {
            param: param.trim().to_string(),
            from,
            to,
            points,
        })
    }

    pub fn values(&self) -> Vec<f64> {
        (0..self.points)
            .map(|i| self.from + (self.to - self.from) * i as f64 / (self.points - 1) as f64)
            .collect()
    }
}

/// The scenario with `param` set to `value` (rounded for a whole-number parameter); an unknown
/// or non-numeric parameter is an error naming it.
pub fn with_param(sc: &Scenario, param: &str, value: f64) -> anyhow::Result<Scenario> {
    let mut v = serde_json::to_value(sc)?;
    let slot = v
        .get_mut(param)
        .with_context(|| format!("--sweep: the scenario has no parameter {param:?} (see --print-scenario)"))?;
    *slot = if slot.is_f64() {
        serde_json::json!(value)
    } else if slot.is_u64() || slot.is_i64() {
        serde_json::json!(value.round() as i64)
    } else {
        bail!("--sweep: {param:?} is not a number");
    };
    serde_json::from_value(v).with_context(|| format!("--sweep: {param} = {value} is not allowed"))
}

/// One point of a sweep: the parameter's value and each strategy's metrics.
#[derive(Debug, Serialize)]
pub struct Point {
    pub value: f64,
    pub results: Vec<(Strategy, Metrics)>,
}

/// A metric's name and how to read it from the metrics.
pub type Headline = (&'static str, fn(&Metrics) -> f64);

/// The headline metrics a sweep shows.
pub const HEADLINES: [Headline; 4] = [
    ("missed because of a number change (%)", |m| m.missed_rate() * 100.0),
    ("overdue rate (%)", |m| m.overdue_rate() * 100.0),
    ("misdirected per 10,000 sent", |m| m.misdirected_per_10k()),
    ("coverage at the end (%)", |m| m.coverage() * 100.0),
];

pub fn run_sweep(
    sc: &Scenario,
    sweep: &Sweep,
    borrowers: u64,
    days: u32,
    seed: u64,
    strategies: &[Strategy],
) -> anyhow::Result<Vec<Point>> {
    sweep
        .values()
        .into_iter()
        .map(|value| {
            let s = with_param(sc, &sweep.param, value)?;
            Ok(Point {
                value,
                results: run(&s, borrowers, days, seed, strategies).results,
            })
        })
        .collect()
}

pub fn print(sc: &Scenario, sweep: &Sweep, points: &[Point]) {
    println!(
        "Simulated sweep: {} with {} from {} to {} (figures from the simulator, not from real borrowers)\n",
        sc.name, sweep.param, sweep.from, sweep.to
    );
    print!("| {} | strategy |", sweep.param);
    for (name, _) in HEADLINES {
        print!(" {name} |");
    }
    println!();
    println!("|---:|---|{}", "---:|".repeat(HEADLINES.len()));
    for p in points {
        for (s, m) in &p.results {
            print!("| {:.4} | {} |", p.value, s.as_str());
            for (_, f) in HEADLINES {
                print!(" {:.2} |", f(m));
            }
            println!();
        }
    }
}

pub fn csv(sweep: &Sweep, points: &[Point]) -> String {
    let mut out = format!("{},strategy,metric,value\n", sweep.param);
    for p in points {
        for (s, m) in &p.results {
            for (name, f) in HEADLINES {
                let _ = writeln!(out, "{},{},\"{name}\",{:.6}", p.value, s.as_str(), f(m));
            }
        }
    }
    out
}

const COLOURS: [&str; 4] = ["#7a7a7a", "#d08c00", "#0b6e4f", "#1f4e8c"];

/// One panel per headline metric, a line per strategy, the parameter along the bottom.
pub fn svg(sc: &Scenario, sweep: &Sweep, points: &[Point]) -> String {
    let strategies: Vec<Strategy> = points
        .first()
        .map(|p| p.results.iter().map(|(s, _)| *s).collect())
        .unwrap_or_default();
    let panels: Vec<Panel> = HEADLINES
        .iter()
        .map(|(name, f)| Panel {
            name: (*name).to_string(),
            lines: strategies
                .iter()
                .map(|strategy| {
                    let pts = points
                        .iter()
                        .filter_map(|p| {
                            p.results
                                .iter()
                                .find(|(s, _)| s == strategy)
                                .map(|(_, m)| (p.value, f(m)))
                        })
                        .collect();
                    (strategy.as_str().to_string(), pts)
                })
                .collect(),
        })
        .collect();
    let ticks: Vec<(f64, String)> = points.iter().map(|p| (p.value, format!("{:.3}", p.value))).collect();
    lines_svg(
        &format!("{} — sweep of {} (simulated)", sc.name, sweep.param),
        &ticks,
        &panels,
    )
}

/// One chart panel: a named metric, one line of (x, y) points per label.
pub struct Panel {
    pub name: String,
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Panels stacked, each with its lines, labelled ticks along the bottom.
pub fn lines_svg(title: &str, ticks: &[(f64, String)], panels: &[Panel]) -> String {
    let (panel_w, panel_h, left, top, bottom, gap) = (560.0, 200.0, 60.0, 30.0, 36.0, 24.0);
    let width = left + panel_w + 150.0;
    let height = 40.0 + panels.len() as f64 * (top + panel_h + bottom + gap);
    let all_x = ticks.iter().map(|t| t.0).chain(
        panels
            .iter()
            .flat_map(|p| p.lines.iter().flat_map(|l| l.1.iter().map(|xy| xy.0))),
    );
    let (x0, x1) = all_x.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let xs = |v: f64| left + if x1 > x0 { (v - x0) / (x1 - x0) * panel_w } else { 0.0 };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="DejaVu Sans, sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/><text x="10" y="22" font-size="15">{}</text>"##,
        esc(title)
    );
    for (k, panel) in panels.iter().enumerate() {
        let y_top = 40.0 + k as f64 * (top + panel_h + bottom + gap) + top;
        let y_max = panel
            .lines
            .iter()
            .flat_map(|l| l.1.iter().map(|xy| xy.1))
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        let ys = |v: f64| y_top + panel_h - v / y_max * panel_h;
        let _ = write!(
            s,
            r##"<text x="{left}" y="{}" font-size="13">{}</text><line x1="{left}" y1="{}" x2="{left}" y2="{}" stroke="#333"/><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
            y_top - 8.0,
            esc(&panel.name),
            y_top,
            y_top + panel_h,
            y_top + panel_h,
            left + panel_w,
            y_top + panel_h
        );
        for t in 0..=4 {
            let v = y_max * t as f64 / 4.0;
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end">{v:.2}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#e3e3e3"/>"##,
                left - 6.0,
                ys(v) + 4.0,
                left + panel_w,
                y = ys(v)
            );
        }
        for (x, label) in ticks {
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
                xs(*x),
                y_top + panel_h + 16.0,
                esc(label)
            );
        }
        for (i, (label, pts)) in panel.lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", xs(*x), ys(*y)))
                .collect();
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{}"/><text x="{}" y="{}" fill="{colour}">{}</text>"##,
                pts.join(" "),
                left + panel_w + 12.0,
                y_top + 16.0 + 18.0 * i as f64,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Renders the SVG to a PNG with the system's fonts (text is left out where none is found).
pub fn png(svg: &str, path: &Path) -> anyhow::Result<()> {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &opt).context("the chart's SVG")?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).context("the chart's size")?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .save_png(path)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_set_the_parameter() {
        let s = Sweep::parse("yearly_abandon_hazard=0.02..0.2:4").unwrap();
        assert_eq!(s.values().len(), 4);
        assert!((s.values()[3] - 0.2).abs() < 1e-12);
        assert_eq!(Sweep::parse("freeze_days=30..90").unwrap().points, 5);
        assert!(Sweep::parse("freeze_days").is_err());
        assert!(Sweep::parse("freeze_days=30..x").is_err());
        assert!(Sweep::parse("freeze_days=30..90:1").is_err());
        let sc = Scenario::builtin("cn-mainstream").unwrap();
        assert_eq!(with_param(&sc, "freeze_days", 44.6).unwrap().freeze_days, 45);
        assert_eq!(with_param(&sc, "sms_read", 0.5).unwrap().sms_read, 0.5);
        let e = with_param(&sc, "no_such", 1.0).unwrap_err().to_string();
        assert!(e.contains("no parameter \"no_such\""), "{e}");
        assert!(with_param(&sc, "zone", 1.0).is_err(), "not a number");
    }
}
