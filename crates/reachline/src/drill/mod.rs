//! `reachline drill SCENARIO`: the communication emergency drill. Runs the real engine twice
//! over the same generated book on a simulated clock against in-process sandbox gateways — once
//! as the control, once with the scenario's faults injected into the gateways (or the database)
//! at their times — and reports how long Reachline took to notice and to fail over, which
//! notices were delayed and by how much, whether any was lost, whether any send broke a contact
//! rule, and what a mass recycling misdirected. Exits non-zero when a notice was lost or a send
//! broke a rule, so CI can run it as a gate.

pub mod gateways;
pub mod report;
pub mod runner;
pub mod scenario;

use std::path::PathBuf;

use anyhow::{bail, Context};

pub use report::Report;
pub use scenario::Scenario;

#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// A built-in scenario (`--list` names them).
    #[arg(conflicts_with = "file", required_unless_present_any = ["file", "list", "print"])]
    pub scenario: Option<String>,
    /// A scenario file of your own (TOML; `--print NAME` shows the format).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Lists the built-in scenarios.
    #[arg(long)]
    pub list: bool,
    /// Prints a built-in scenario's file, to copy and edit.
    #[arg(long, value_name = "NAME")]
    pub print: Option<String>,
    /// Writes report.md and report.json here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overrides the scenario's number of borrowers.
    #[arg(long)]
    pub borrowers: Option<u64>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the two runs' files go (a fresh temporary directory by default, removed after).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Run on this PostgreSQL server instead of SQLite: a fresh database per run (the URL's
    /// database is only used to connect), dropped afterwards. There, `db_restart` cuts the
    /// run's database off under the running node (sessions terminated, new ones refused).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

fn builtin(name: &str) -> anyhow::Result<&'static str> {
    Scenario::builtin(name).with_context(|| {
        let names: Vec<&str> = scenario::BUILTIN.iter().map(|(n, _)| *n).collect();
        format!("no built-in scenario {name:?}; there are: {}", names.join(", "))
    })
}

/// Loads the scenario the arguments name.
pub fn load(args: &DrillArgs) -> anyhow::Result<Scenario> {
    let mut s = match (&args.scenario, &args.file) {
        (Some(name), None) => Scenario::parse(builtin(name)?)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Scenario::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        _ => bail!("name a built-in scenario or give --file"),
    };
    if let Some(b) = args.borrowers {
        s.borrowers = b;
    }
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    Ok(s)
}

/// Runs the control and the faulty run and compares them.
pub async fn drill(s: &Scenario, work: &std::path::Path, backend: &runner::Backend) -> anyhow::Result<Report> {
    let book = work.join("book");
    runner::write_book(s, &book)?;
    let (c, f) = (work.join("control"), work.join("drill"));
    std::fs::create_dir_all(&c)?;
    std::fs::create_dir_all(&f)?;
    let control = runner::run(s, false, &c, &book, backend, "control").await;
    backend.drop_run("control").await?;
    let control = control.context("the control run")?;
    let faulty = runner::run(s, true, &f, &book, backend, "drill").await;
    backend.drop_run("drill").await?;
    let faulty = faulty.context("the drill run")?;
    Ok(report::compare(s, &control, &faulty))
}

/// The command: prints the report, writes it with `--out`, and fails when the drill did.
pub async fn run(args: &DrillArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, text) in scenario::BUILTIN {
            let s = Scenario::parse(text)?;
            println!("{name:<16} {}", s.description.lines().next().unwrap_or(""));
        }
        return Ok(());
    }
    if let Some(name) = &args.print {
        print!("{}", builtin(name)?);
        return Ok(());
    }
    let s = load(args)?;
    let began = std::time::Instant::now();
    let tmp;
    let work = match &args.work_dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty; give an empty or new --work-dir", d.display());
            }
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = TempDir::new("reachline-drill")?;
            tmp.0.clone()
        }
    };
    eprintln!(
        "drill {}: {} borrowers, {} simulated, control run then drill run…",
        s.name, s.borrowers, s.duration
    );
    let backend = match &args.postgres {
        Some(admin) => runner::Backend::Postgres { admin: admin.clone() },
        None => runner::Backend::Sqlite,
    };
    let report = drill(&s, &work, &backend).await?;
    let md = report.markdown();
    println!("{md}");
    eprintln!("(took {:.1} s)", began.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("report.md"), &md)?;
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!(
            "wrote {} and {}",
            out.join("report.md").display(),
            out.join("report.json").display()
        );
    }
    if !report.passed {
        bail!(
            "the drill failed: {} notices lost, {} sends outside the rules",
            report.lost,
            report.outside_rules
        );
    }
    Ok(())
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
