//! `reachline run`: the notice engine against the configured gateways — the same code the demo
//! runs, on the real clock. `--clock-file` runs it on a simulated clock instead (a test harness
//! and drills use it): each pass moves the clock by `--tick-minutes`, and the file remembers
//! where it stood, so a killed and restarted run resumes there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use reachline_channels::smpp::SmppChannel;
use reachline_engine::{Engine, EngineConfig};
use reachline_policy::Templates;
use reachline_store::engine::EngineStore;
use reachline_store::Keyring;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run on a simulated clock kept in this file (created at --clock-start).
    #[arg(long)]
    pub clock_file: Option<PathBuf>,
    /// Where a new simulated clock starts (RFC 3339).
    #[arg(long, requires = "clock_file")]
    pub clock_start: Option<DateTime<Utc>>,
    /// How far the simulated clock moves per pass.
    #[arg(long, default_value_t = 60, requires = "clock_file")]
    pub tick_minutes: i64,
    /// Run on a simulated clock that several nodes share: it stood at this time (RFC 3339) at
    /// `--sim-epoch` and moves `--sim-speed` times as fast as the real one. Nodes started with
    /// the same three values agree on the time, whenever each starts (drills, tests).
    #[arg(long, conflicts_with = "clock_file")]
    pub sim_start: Option<DateTime<Utc>>,
    /// The real moment the shared simulated clock stood at `--sim-start` (default: now).
    #[arg(long, requires = "sim_start")]
    pub sim_epoch: Option<DateTime<Utc>>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0, requires = "sim_start")]
    pub sim_speed: f64,
    /// Stop once the simulated clock reaches this time.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Run one pass and stop.
    #[arg(long)]
    pub once: bool,
}

/// The engine's settings from the configuration; the link key is derived from the keyring.
pub fn engine_config(cfg: &Config, keys: &Keyring) -> anyhow::Result<EngineConfig> {
    let e = &cfg.engine;
    for c in &e.cadences {
        c.validate().context("engine.cadences")?;
    }
    Ok(EngineConfig {
        cadences: e.cadences.clone(),
        ladder: e.ladder.clone(),
        timing: e.timing.clone(),
        health: cfg.health.clone(),
        lender_name: e.lender_name.clone(),
        service_phone: e.service_phone.clone(),
        link_base: e.link_base.clone(),
        self_service_base: e.self_service_base.clone(),
        link_key: keys.blind_index("notice-link", "v1").to_vec(),
        lease: Duration::seconds(e.lease_seconds as i64),
        plan_hold: Duration::seconds(e.plan_hold_seconds as i64),
        concurrency: e.concurrency,
        lookup_timeout: std::time::Duration::from_millis(e.lookup_timeout_ms),
        max_tries: e.max_tries,
        // Unique among the nodes sharing a database: the host's name and this process's id.
        owner: format!("{}-{}", host_name(), std::process::id()),
        ..EngineConfig::default()
    })
}

/// Opens the ledger and joins its sequencer, for the engine to write its leaves through. On a
/// PostgreSQL database several nodes share, one node sequences the log and the others hand it
/// their leaves through the database, taking over when it is gone (`Sequencer::join`).
pub async fn ledger_sink(cfg: &Config) -> anyhow::Result<reachline_engine::LedgerSink> {
    let store: Arc<dyn reachline_store::ledger::LedgerStore> =
        reachline_store::open_ledger(cfg.database.url.as_str(), cfg.keyring()?)
            .await
            .with_context(|| format!("opening the ledger in {}", cfg.database.url.redacted()))?
            .into();
    let sequencer =
        reachline_store::ledger::Sequencer::join(store.clone(), cfg.ledger_signer()?, cfg.sequencer_config()).await?;
    Ok(reachline_engine::LedgerSink {
        sequencer: Arc::new(sequencer),
        store,
    })
}

/// Opens the engine's store on the configured database (SQLite or PostgreSQL).
pub async fn open_engine_store(cfg: &Config) -> anyhow::Result<Arc<dyn EngineStore>> {
    reachline_store::open_engine(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))
}

fn read_clock(path: &Path) -> anyhow::Result<Option<DateTime<Utc>>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().parse().with_context(|| {
            format!("clock file {} does not hold an RFC 3339 time", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_clock(path: &Path, t: DateTime<Utc>) -> anyhow::Result<()> {
    crate::write_replacing(path, t.to_rfc3339().as_bytes())
}

/// The configured channels: the SMSC of `[smpp]` (started, and bound if the SMSC answers),
/// the mail server of `[smtp]`, the `[[http]]` providers. Several providers of one channel
/// become one failover group, tried in that order, each behind its own circuit breaker.
pub async fn channels(cfg: &Config) -> Vec<Arc<dyn reachline_channels::Channel>> {
    channels_of(cfg, None).await
}

/// [`channels`], only those of one channel when `only` names it: the others are not started
/// (`reachline send --channel email` binds no SMSC).
pub async fn channels_of(
    cfg: &Config,
    only: Option<reachline_domain::Channel>,
) -> Vec<Arc<dyn reachline_channels::Channel>> {
    use reachline_channels::failover::{BreakerConfig, Failover, Provider};
    let mut by_kind: Vec<(reachline_domain::Channel, Vec<Provider>)> = Vec::new();
    for (ch, timeout_ms) in providers(cfg, only).await {
        let provider = Provider::new(
            ch.clone(),
            BreakerConfig::default(),
            None,
            std::time::Duration::from_millis(timeout_ms),
        );
        match by_kind.iter_mut().find(|(k, _)| *k == ch.kind()) {
            Some((_, group)) => group.push(provider),
            None => by_kind.push((ch.kind(), vec![provider])),
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, mut group)| -> Arc<dyn reachline_channels::Channel> {
            if group.len() == 1 {
                group.remove(0).channel
            } else {
                Arc::new(Failover::new(kind.as_str(), kind, group))
            }
        })
        .collect()
}

/// Each configured provider, with how long a send to it may take.
async fn providers(
    cfg: &Config,
    only: Option<reachline_domain::Channel>,
) -> Vec<(Arc<dyn reachline_channels::Channel>, u64)> {
    use reachline_channels::Channel as _;
    let wanted = |kind: reachline_domain::Channel| only.is_none_or(|o| o == kind);
    let mut channels: Vec<(Arc<dyn reachline_channels::Channel>, u64)> = Vec::new();
    if let Some(smpp) = cfg.smpp.as_ref().filter(|_| wanted(reachline_domain::Channel::Sms)) {
        let sms = SmppChannel::start(smpp.clone());
        if !sms
            .wait_bound(std::time::Duration::from_millis(smpp.bind_wait_ms))
            .await
        {
            tracing::warn!(provider = %smpp.name, "SMSC not bound yet; sends wait for it");
        }
        channels.push((Arc::new(sms), 30_000));
    }
    if let Some(smtp) = cfg.smtp.as_ref().filter(|_| wanted(reachline_domain::Channel::Email)) {
        let mail = Arc::new(reachline_channels::smtp::SmtpChannel::new(smtp.clone()));
        mail.spawn_bounce_reader();
        channels.push((mail, smtp.timeout_ms + 1_000));
    }
    for http in &cfg.http {
        let ch = Arc::new(reachline_channels::http::HttpChannel::new(http.clone()));
        if wanted(ch.kind()) {
            channels.push((ch, http.timeout_ms + 1_000));
        }
    }
    channels
}

/// The engine over `store` and `channels`, with the configured number intelligence and the
/// ledger (whose sequencer this starts: one per database).
pub async fn build_engine(
    cfg: &Config,
    store: Arc<dyn EngineStore>,
    channels: Vec<Arc<dyn reachline_channels::Channel>>,
) -> anyhow::Result<(Arc<Engine>, reachline_engine::LedgerSink)> {
    let keys = cfg.keyring()?;
    let templates = Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?;
    let intel = reachline_intel::from_config(&cfg.intel, crate::open_store(cfg).await?.into())?;
    let sink = ledger_sink(cfg).await?;
    let engine = Arc::new(
        Engine::new(store, channels, templates, engine_config(cfg, &keys)?)
            .with_intel(Arc::new(intel))
            .with_ledger(sink.clone()),
    );
    Ok((engine, sink))
}

pub async fn run(cfg: &Config, args: RunArgs) -> anyhow::Result<()> {
    let store = open_engine_store(cfg).await?;
    let channels = channels(cfg).await;
    if channels.is_empty() {
        bail!("no channel is configured: add an [smpp], [smtp] or [[http]] section (see `reachline config example`)");
    }
    // Several `reachline run` nodes on one PostgreSQL database share the work.
    let (engine, _) = build_engine(cfg, store, channels).await?;
    let simulated = match &args.clock_file {
        Some(f) => Some(match read_clock(f)? {
            Some(t) => t,
            None => {
                let t = args.clock_start.context("a new --clock-file needs --clock-start")?;
                write_clock(f, t)?;
                t
            }
        }),
        None => None,
    };
    let shared = match args.sim_start {
        Some(start) => {
            if !(args.sim_speed.is_finite() && args.sim_speed > 0.0) {
                bail!("--sim-speed must be a positive number, not {}", args.sim_speed);
            }
            Some(SharedClock {
                start,
                epoch: args.sim_epoch.unwrap_or_else(Utc::now),
                speed: args.sim_speed,
            })
        }
        None => None,
    };
    let now_cell = Arc::new(Mutex::new(simulated.unwrap_or_else(Utc::now)));
    let clock = {
        let c = now_cell.clone();
        let sim = simulated.is_some();
        Arc::new(move || match shared {
            Some(s) => s.now(),
            None if sim => *c.lock().unwrap_or_else(|p| p.into_inner()),
            None => Utc::now(),
        })
    };
    engine.use_clock(clock.clone());
    engine.spawn_intake(clock.clone());
    let recovered = engine.recover(clock()).await?;
    tracing::info!(in_doubt = recovered, "engine started");
    loop {
        let now = clock();
        let (p, d) = match engine.step(now).await {
            Ok(done) => done,
            // A node on the live (or shared) clock rides out a database restart or a network
            // cut: the pass is logged as failed and the next tried a tick later, as `serve`
            // does. A stepped clock (`--clock-file`) or `--once` stops on the error.
            Err(e) if args.clock_file.is_none() && !args.once && args.until.is_none_or(|u| now < u) => {
                tracing::error!(error = %e, "engine pass failed; next pass in one tick");
                tokio::time::sleep(std::time::Duration::from_secs(cfg.engine.tick_seconds)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            %now,
            borrowers = p.borrowers,
            queued = p.queued,
            sent = d.sent,
            failed = d.failed,
            cancelled = d.cancelled,
            "pass"
        );
        if args.once {
            break;
        }
        match (&args.clock_file, simulated) {
            (Some(f), Some(_)) => {
                // A moment for this pass's receipts, so they are stamped with its time.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let next = now + Duration::minutes(args.tick_minutes);
                write_clock(f, next)?;
                *now_cell.lock().unwrap_or_else(|p| p.into_inner()) = next;
                if args.until.is_some_and(|u| next >= u) {
                    break;
                }
            }
            _ => {
                if args.until.is_some_and(|u| clock() >= u) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(cfg.engine.tick_seconds)).await
            }
        }
    }
    Ok(())
}

/// A simulated clock several processes agree on: `start` at the real moment `epoch`, moving
/// `speed` times as fast as real time.
#[derive(Debug, Clone, Copy)]
struct SharedClock {
    start: DateTime<Utc>,
    epoch: DateTime<Utc>,
    speed: f64,
}

impl SharedClock {
    fn now(&self) -> DateTime<Utc> {
        let real = (Utc::now() - self.epoch).num_microseconds().unwrap_or(i64::MAX);
        self.start + Duration::microseconds((real as f64 * self.speed) as i64)
    }
}

/// This machine's name (Linux), for lease owners; `host` where it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}
