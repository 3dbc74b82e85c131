//! The `reachline` binary: command line, configuration, and the wiring of concrete back ends.

mod bench;
mod bench_engine;
mod bench_ledger;
mod bench_policy;
mod bench_server;
mod book;
mod borrower_cmd;
mod channels_cli;
mod config;
mod demo;
mod drill;
mod import;
mod intel_cmd;
mod keys;
mod ledger;
mod privacy_cmd;
mod run;
mod serve;
mod show;
mod simulate;
mod sweep;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "reachline",
    version,
    about = "Keeps repayment notices reaching borrowers after they change number."
)]
struct Cli {
    /// Configuration file (default: ./reachline.toml if it exists).
    #[arg(long, global = true, env = "REACHLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL, overriding the configuration (sqlite://PATH or postgres://…).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a small book, import it into a fresh embedded database, import a later export
    /// with changed numbers, and show what Reachline made of it.
    Demo {
        /// Where the demo's database, keys and books go (recreated on each run).
        #[arg(long, default_value = "./reachline-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        borrowers: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Simulated days the engine runs.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// The communication emergency drill: run the engine against the sandbox gateways with a
    /// fault injected (a built-in scenario or --file), beside a control run, and report time to
    /// detect, time to fail over, notices delayed and lost, sends outside the rules.
    Drill(drill::DrillArgs),
    /// Import a loan book (a directory of CSV or JSON Lines files; see docs/book-format.md).
    /// All or nothing: a book with any error is reported and nothing is written.
    Import {
        path: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a deterministic synthetic loan book.
    GenBook {
        #[arg(long)]
        borrowers: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// The export date (YYYY-MM-DD); installments due before it are paid, late or overdue.
        /// Default: today.
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// Later exports of the same book: each revision changes ~3% of primary numbers.
        #[arg(long, default_value_t = 0)]
        revision: u32,
        #[arg(long, value_enum, default_value_t = BookFormatArg::Csv)]
        format: BookFormatArg,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Contact points, masked: a borrower's history, or who ever held a number.
    Contacts {
        #[command(subcommand)]
        command: show::ContactsCommand,
    },
    /// Row counts of the database.
    Summary,
    /// Classify a borrower's reply (Chinese or English) and print the class, the cue that
    /// decided it and any new number stated, as JSON.
    ClassifyReply { text: String },
    /// Run the simulator: strategies side by side on a synthetic book whose borrowers change
    /// numbers (simulated figures).
    Simulate(simulate::SimulateArgs),
    /// Contact health: replay an evidence timeline.
    Health {
        #[command(subcommand)]
        command: intel_cmd::HealthCommand,
    },
    /// Number intelligence: load a disconnection registry, check a number.
    Intel {
        #[command(subcommand)]
        command: intel_cmd::IntelCommand,
    },
    /// The notice ledger: checkpoints, evidence bundles, offline verification, audit.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Send one message through the configured providers of a channel; prints the outcome as JSON.
    Send(channels_cli::SendArgs),
    /// Run the notice engine: plan, send through the configured gateways, take receipts.
    Run(run::RunArgs),
    /// Serve the API, webhooks, docs and metrics (and run the engine's passes on this node when
    /// a channel is configured).
    Serve(serve::ServeArgs),
    /// API tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: serve::TokenCommand,
    },
    /// A borrower's data: `export` writes everything held about them (their right of access);
    /// `erase` destroys it (their right to deletion).
    Borrower {
        #[command(subcommand)]
        command: borrower_cmd::BorrowerCommand,
    },
    /// Write a copy of the database into [backup] dir (erasure reaches the SQLite ones there).
    Backup(privacy_cmd::BackupArgs),
    /// The retention job: what each rule of [retention] reaches now (a dry run), or, with
    /// --apply, erase and delete it.
    Retention(privacy_cmd::RetentionArgs),
    /// Dashboard operators: add (or reset a password).
    Operator {
        #[command(subcommand)]
        command: serve::OperatorCommand,
    },
    /// The sandbox SMSC in its own process (for tests and drills), logging what it accepts.
    SandboxSmsc(channels_cli::SandboxSmscArgs),
    /// Benchmarks that print a table.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BookFormatArg {
    Csv,
    Jsonl,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key file with a new master key and blind-index key (never overwrites).
    Init {
        /// Default: keys.file from the configuration (./reachline.keys).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Name of the master key, recorded beside every data key it wraps.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Add a ledger signing key to a key file written before the ledger existed (keeps the
    /// other keys; refuses if the file has one).
    AddLedgerKey {
        /// Default: keys.file from the configuration (./reachline.keys).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Rotate the master key: a new one in the key file, every borrower's data key re-wrapped
    /// under it (no data is re-encrypted), the old one removed at the end. Resumable: run it
    /// again after an interruption. Stop the nodes using the key file first.
    RotateMaster {
        /// Default: keys.file from the configuration (./reachline.keys).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Name of the new master key (default: k-<UTC time>).
        #[arg(long)]
        new_key_id: Option<String>,
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Stop after this many batches (rotate in slices; run again to go on).
        #[arg(long)]
        batches: Option<u64>,
    },
    /// Rotate the blind-index key: a new one in the key file, every borrower's numbers, email
    /// addresses and ID number re-indexed under it, the old one removed at the end. Resumable;
    /// other commands refuse the database until it finishes. Stop the nodes first.
    RotateBlindIndex {
        /// Default: keys.file from the configuration (./reachline.keys).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Borrowers re-indexed per transaction.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Stop after this many batches (run again to go on).
        #[arg(long)]
        batches: Option<u64>,
    },
    /// The master keys the database's data keys are wrapped under, with counts.
    Status,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration.
    Example,
    /// Load and validate the configuration, and print it (secrets redacted).
    Check,
}

/// Exit code for a book that was refused because of errors in it.
const EXIT_BOOK_REJECTED: u8 = 2;

/// A replayed timeline whose expectations did not all hold (each was printed).
#[derive(Debug, thiserror::Error)]
#[error("some expectations of the timeline do not hold")]
struct ExpectationsFailed;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command that prints and ends stops quietly when the reader of its output goes away
    // (`reachline … | head`), as command-line tools do, instead of panicking on a closed pipe.
    // The commands that talk to peers keep SIGPIPE ignored (Rust's default): a vectored write
    // (`writev`, which hyper and the SMPP client use) to a connection the peer closed would
    // otherwise end the whole node instead of failing that one write.
    let talks_to_peers = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Drill(_)
            | Command::Run(_)
            | Command::Serve(_)
            | Command::Send(_)
            | Command::SandboxSmsc(_)
            | Command::Bench { .. }
            | Command::Intel { .. }
    );
    #[cfg(unix)]
    if !talks_to_peers {
        // SAFETY: setting a signal's disposition to the default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts on any supported platform");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(import::Rejected(problems)) = e.downcast_ref::<import::Rejected>() {
                for p in &problems.first {
                    eprintln!("{p}");
                }
                if problems.total > problems.first.len() as u64 {
                    eprintln!("… and {} more", problems.total - problems.first.len() as u64);
                }
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BOOK_REJECTED);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database {
        cfg.database.url = config::DatabaseUrl(url.clone());
        cfg.validate()?;
    }
    Ok(cfg)
}

/// Libraries whose detailed logs carry what they carry: the SMPP codec and client print whole
/// PDUs (destination numbers, message text), `lettre` the SMTP dialogue (recipients), the HTTP
/// stack request lines. However detailed the configured level, these stay at `info` or less,
/// so no number, address or notice text reaches the logs through them.
const PEER_LOG_CAPS: &[&str] = &[
    "rusmpp=info",
    "rusmppc=info",
    "lettre=info",
    "reqwest=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
];

fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    for cap in PEER_LOG_CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

fn init_logging(cfg: &Config) {
    let filter = log_filter(&cfg.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub async fn open_store(cfg: &Config) -> anyhow::Result<Box<dyn reachline_store::Store>> {
    let keys = cfg.keyring()?;
    reachline_store::open(cfg.database.url.as_str(), keys)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands that must work without (or before) a valid configuration.
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::EXAMPLE);
            return Ok(());
        }
        Command::GenBook {
            borrowers,
            seed,
            out,
            as_of,
            revision,
            format,
        } => {
            let opts = book::gen::GenOptions {
                borrowers: *borrowers,
                seed: *seed,
                as_of: as_of.unwrap_or_else(|| chrono::Utc::now().date_naive()),
                revision: *revision,
                format: match format {
                    BookFormatArg::Csv => book::Format::Csv,
                    BookFormatArg::Jsonl => book::Format::JsonLines,
                },
            };
            let pb = indicatif::ProgressBar::new(*borrowers);
            let counts = book::gen::generate(out, &opts, &|n| pb.set_position(n))?;
            pb.finish_and_clear();
            println!(
                "wrote {} rows to {}: {} borrowers, {} contacts, {} loans, {} installments, {} consents",
                counts.total(),
                out.display(),
                counts.borrowers,
                counts.contacts,
                counts.loans,
                counts.installments,
                counts.consents
            );
            return Ok(());
        }
        Command::Demo {
            dir,
            borrowers,
            seed,
            days,
        } => return demo::run(dir, *borrowers, *seed, *days).await,
        Command::Drill(args) => {
            if cli.database.is_some() {
                anyhow::bail!(
                    "the drill makes its own databases (a control and a drill run): SQLite files under --work-dir, or --postgres URL for fresh PostgreSQL ones"
                );
            }
            return drill::run(args).await;
        }
        // Offline: no configuration, no database, no network.
        Command::Ledger {
            command: ledger::LedgerCommand::Verify { file, key },
        } => return ledger::verify(file, key),
        Command::SandboxSmsc(_)
        | Command::Bench {
            command: bench::BenchCommand::Smpp(_),
        } => return channels_cli::run(cli.command).await,
        _ => {}
    }

    let cfg = load_config(&cli)?;
    init_logging(&cfg);
    match cli.command {
        Command::Send(args) => channels_cli::send(args, &cfg).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("{cfg:#?}");
            println!("configuration is valid");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Init { out, key_id },
        } => {
            let path = out.unwrap_or_else(|| cfg.keys.file.clone());
            let id = key_id.unwrap_or_else(|| format!("k-{}", chrono::Utc::now().format("%Y%m%d")));
            keys::KeyFile::generate(&id).write_new(&path)?;
            println!(
                "wrote new keys {id} to {} (mode 600); back it up apart from the database",
                path.display()
            );
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::RotateMaster {
                    file,
                    new_key_id,
                    batch,
                    batches,
                },
        } => {
            let path = file.unwrap_or_else(|| cfg.keys.file.clone());
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            keys::rotate_master(&cfg, &path, new_key_id, batch, batches).await
        }
        Command::Keys {
            command: KeysCommand::RotateBlindIndex { file, batch, batches },
        } => {
            let path = file.unwrap_or_else(|| cfg.keys.file.clone());
            anyhow::ensure!(batch > 0, "--batch must be at least 1");
            keys::rotate_blind(&cfg, &path, batch, batches).await
        }
        Command::Keys {
            command: KeysCommand::Status,
        } => {
            let ring = cfg.keyring()?;
            let stores = reachline_store::open_all(cfg.database.url.as_str(), ring.clone()).await?;
            println!("current master key: {:?}", ring.key_id());
            if !ring.previous_key_ids().is_empty() {
                println!("rotation in progress; retiring: {:?}", ring.previous_key_ids());
            }
            for (id, n) in stores.privacy.wrapped_key_counts().await? {
                println!("data keys under {id:?}: {n}");
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::AddLedgerKey { file },
        } => {
            let path = file.unwrap_or_else(|| cfg.keys.file.clone());
            keys::KeyFile::add_ledger_key(&path)?;
            println!(
                "added a ledger signing key to {}; the log's verifier key is {}",
                path.display(),
                cfg.ledger_signer()
                    .map(|s| s.verifier().to_string())
                    .unwrap_or_else(|e| format!("unavailable ({e})"))
            );
            Ok(())
        }
        Command::Ledger { command } => ledger::run(&cfg, command).await,
        Command::Import { path, json, quiet } => {
            let store = open_store(&cfg).await?;
            let opts = import::ImportOptions {
                batch_size: cfg.book.batch_size,
                progress: !quiet && !json,
            };
            let summary = import::import(
                store.as_ref(),
                &path,
                &cfg.phone_parser()?,
                &cfg.book_defaults()?,
                &opts,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                show::print_import_summary(&summary);
            }
            Ok(())
        }
        Command::Contacts { command } => {
            let store = open_store(&cfg).await?;
            show::contacts(store.as_ref(), &cfg, command).await
        }
        Command::Summary => {
            let store = open_store(&cfg).await?;
            show::print_counts(&store.counts().await?);
            Ok(())
        }
        Command::Bench {
            command: bench::BenchCommand::Engine(args),
        } => bench_engine::run(&cfg, args).await,
        Command::Bench { command } => bench::run(command).await,
        Command::ClassifyReply { text } => intel_cmd::classify_reply(&cfg, &text),
        Command::Intel { command } => intel_cmd::run(&cfg, command).await,
        Command::Simulate(args) => simulate::run_cli(args),
        Command::Health { command } => {
            if intel_cmd::health(&cfg, command)? {
                Ok(())
            } else {
                Err(ExpectationsFailed.into())
            }
        }
        Command::Run(args) => run::run(&cfg, args).await,
        Command::Serve(args) => serve::serve(&cfg, args).await,
        Command::Token { command } => serve::token(&cfg, command).await,
        Command::Operator { command } => serve::operator(&cfg, command).await,
        Command::Borrower { command } => borrower_cmd::run(&cfg, command).await,
        Command::Backup(args) => privacy_cmd::backup(&cfg, args).await,
        Command::Retention(args) => privacy_cmd::retention(&cfg, args).await,
        Command::Demo { .. } | Command::Drill(_) | Command::GenBook { .. } | Command::SandboxSmsc(_) => {
            unreachable!("handled before configuration is loaded")
        }
        Command::Config {
            command: ConfigCommand::Example,
        } => unreachable!("handled before configuration is loaded"),
    }
}

/// Writes a file whole or not at all: a temporary file beside it, renamed over it.
pub(crate) fn write_replacing(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .with_context(|| format!("{} names no file", path.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
