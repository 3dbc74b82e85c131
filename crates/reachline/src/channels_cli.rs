//! `reachline send` and `reachline bench smpp`: one message, or a measured stream of them,
//! through a channel adapter to a real peer (or the in-process sandbox SMSC).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use reachline_channels::smpp::sandbox::Sandbox;
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::{Channel, MessageRef, Outbound};
use reachline_domain::{ContactAddress, PhoneNumber};

/// Where the SMSC is and how to bind to it.
#[derive(clap::Args, Clone)]
pub struct SmscArgs {
    /// SMSC host; without `--host`, an in-process sandbox SMSC is started on loopback.
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long, default_value_t = 2775)]
    pub port: u16,
    #[arg(long, default_value = "reachline")]
    pub system_id: String,
    #[arg(
        long,
        env = "REACHLINE_SMPP_PASSWORD",
        default_value = "secret",
        hide_env_values = true
    )]
    pub password: String,
    /// The sender id.
    #[arg(long, default_value = "Reachline")]
    pub source: String,
    /// Unacknowledged submits allowed at once.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ChannelArg {
    Sms,
    Email,
    Push,
    Im,
    Voice,
}

#[derive(clap::Args)]
pub struct SendArgs {
    #[arg(long, value_enum)]
    pub channel: ChannelArg,
    /// The address: an E.164 number for sms and voice.
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub text: String,
    /// Wait this many seconds for the receipt and print its class.
    #[arg(long)]
    pub wait_receipt: Option<u64>,
    #[command(flatten)]
    pub smsc: SmscArgs,
}

#[derive(clap::Args)]
pub struct BenchSmppArgs {
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// How long to wait for the last receipts after the last submit.
    #[arg(long, default_value_t = 30)]
    pub receipt_timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub smsc: SmscArgs,
}

async fn smsc(args: &SmscArgs) -> anyhow::Result<(Option<Sandbox>, SmppChannel)> {
    let (sandbox, host, port) = match &args.host {
        Some(h) => (None, h.clone(), args.port),
        None => {
            let sb = Sandbox::start("127.0.0.1:0")
                .await
                .context("starting the sandbox SMSC")?;
            let port = sb.addr().port();
            eprintln!("no --host: using the in-process sandbox SMSC on 127.0.0.1:{port}");
            (Some(sb), "127.0.0.1".to_string(), port)
        }
    };
    let cfg = SmppConfig {
        name: format!("smsc {host}:{port}"),
        host,
        port,
        system_id: args.system_id.clone(),
        password: args.password.clone(),
        source_addr: args.source.clone(),
        window: args.window,
        ..SmppConfig::default()
    };
    let ch = SmppChannel::start(cfg);
    if !ch.wait_bound(Duration::from_secs(10)).await {
        bail!("could not bind to the SMSC within 10 s");
    }
    Ok((sandbox, ch))
}

impl ChannelArg {
    fn kind(self) -> (reachline_domain::Channel, reachline_domain::ContactKind) {
        use reachline_domain::{Channel as C, ContactKind as K};
        match self {
            ChannelArg::Sms => (C::Sms, K::Mobile),
            ChannelArg::Email => (C::Email, K::Email),
            ChannelArg::Push => (C::Push, K::PushToken),
            ChannelArg::Im => (C::Im, K::ImAccount),
            ChannelArg::Voice => (C::Voice, K::Mobile),
        }
    }
}

/// Sends one message with the configured providers of the channel (for SMS: the SMSC named by
/// `--host`, else the configured ones, else the in-process sandbox SMSC) and prints what
/// happened as one JSON object: accepted (provider, ids, receipts) or refused (class,
/// permanence, code). The address is printed masked.
pub async fn send(args: SendArgs, cfg: &crate::config::Config) -> anyhow::Result<()> {
    let (channel, kind) = args.channel.kind();
    let to = ContactAddress::parse(kind, &args.to, &cfg.phone_parser()?).context("--to")?;
    let configured = crate::run::channels_of(cfg, Some(channel)).await;
    let mut _sandbox = None;
    let ch: Arc<dyn Channel> = match configured.into_iter().next() {
        Some(c) if channel != reachline_domain::Channel::Sms || args.smsc.host.is_none() => c,
        _ if channel == reachline_domain::Channel::Sms => {
            let (sb, smpp) = smsc(&args.smsc).await?;
            _sandbox = sb;
            Arc::new(smpp)
        }
        _ => bail!(
            "no {} provider is configured: add one to the configuration (see `reachline config example`)",
            channel.as_str()
        ),
    };
    let mut receipts = ch.take_receipts();
    let msg = Outbound {
        reference: MessageRef("cli-1".into()),
        to: to.clone(),
        text: args.text,
    };
    let mut out = serde_json::json!({"channel": channel.as_str(), "to": to.masked()});
    match ch.send(&msg).await {
        Ok(acc) => {
            out["outcome"] = "accepted".into();
            out["provider"] = acc.provider.into();
            out["provider_ids"] = acc.provider_ids.into();
        }
        Err(e) => {
            out["outcome"] = "refused".into();
            out["provider"] = e.provider.clone().into();
            out["class"] = e.class.as_str().into();
            out["permanence"] = if e.is_transient() { "transient" } else { "permanent" }.into();
            out["code"] = e.code.clone().into();
            println!("{out}");
            return Ok(());
        }
    }
    if let (Some(secs), Some(stream)) = (args.wait_receipt, receipts.as_mut()) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(r)) => {
                    seen.push(serde_json::json!({
                        "part": r.part,
                        "class": r.class.as_str(),
                        "code": r.code,
                        "final": r.is_final,
                        "raw": String::from_utf8_lossy(&r.raw),
                    }));
                    if r.is_final {
                        out["class"] = r.class.as_str().into();
                        break;
                    }
                }
                _ => {
                    out["class"] = "unknown".into();
                    out["note"] = format!("no final receipt within {secs} s").into();
                    break;
                }
            }
        }
        out["receipts"] = seen.into();
    }
    println!("{out}");
    Ok(())
}

pub async fn bench_smpp(args: BenchSmppArgs) -> anyhow::Result<()> {
    let (_sandbox, ch) = smsc(&args.smsc).await?;
    let ch = Arc::new(ch);
    let mut receipts = ch.take_receipts().context("receipt stream")?;
    let n = args.count;
    let collector = tokio::spawn(async move {
        let mut classes: BTreeMap<String, u64> = BTreeMap::new();
        let (mut matched, mut unmatched) = (0u64, 0u64);
        while matched < n {
            match receipts.next().await {
                Some(r) if r.reference.is_some() => {
                    matched += 1;
                    *classes.entry(r.class.to_string()).or_default() += 1;
                }
                Some(_) => unmatched += 1,
                None => break,
            }
        }
        (matched, unmatched, classes)
    });
    let window = args.smsc.window.max(1);
    let start = Instant::now();
    // Numbers ending in 0: the sandbox and tools/smsc.py deliver them. Parsed once: the
    // bench measures the channel, not libphonenumber.
    let to = ContactAddress::Phone(PhoneNumber::parse("+8613800138000").expect("a valid mainland mobile number"));
    // One task per message, at most two windows' worth alive, so the sends run on every core.
    let slots = Arc::new(tokio::sync::Semaphore::new(window * 2));
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (ch, to) = (ch.clone(), to.clone());
        tasks.push(tokio::spawn(async move {
            let m = Outbound {
                reference: MessageRef(format!("b{i}")),
                to,
                text: format!("bench {i}"),
            };
            let r = ch.send(&m).await;
            drop(permit);
            r
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    let took = start.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let wait = tokio::time::timeout(Duration::from_secs(args.receipt_timeout), collector).await;
    let receipts_took = start.elapsed();
    let (matched, unmatched, classes) = match wait {
        Ok(r) => r?,
        Err(_) => (0, 0, BTreeMap::new()),
    };
    let st = ch.stats();
    if args.json {
        let out = serde_json::json!({
            "window": window,
            "messages": n,
            "submit_seconds": took.as_secs_f64(),
            "submits_per_second": n as f64 / took.as_secs_f64(),
            "failed": failed,
            "throttled": st.throttled.load(Ordering::Relaxed),
            "receipts_matched": matched,
            "receipts_seconds": receipts_took.as_secs_f64(),
            "receipts_per_second": matched as f64 / receipts_took.as_secs_f64(),
            "unmatched": unmatched,
            "classes": classes,
        });
        println!("{out}");
    } else {
        print_smpp_table(window, n, took, failed, st, matched, receipts_took, unmatched, &classes);
    }
    if failed > 0 || matched < n {
        bail!(
            "{failed} sends failed and {} receipts were not matched",
            n - matched.min(n)
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_smpp_table(
    window: usize,
    n: u64,
    took: Duration,
    failed: usize,
    st: &reachline_channels::smpp::client::SmppStats,
    matched: u64,
    receipts_took: Duration,
    unmatched: u64,
    classes: &BTreeMap<String, u64>,
) {
    println!(
        "| window | messages | submit time | submits/s | failed | throttled | receipts matched | unmatched | classes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} s | {:.0} | {} | {} | {} ({:.1}%, all in {:.2} s) | {} | {} |",
        window,
        n,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        failed,
        st.throttled.load(Ordering::Relaxed),
        matched,
        100.0 * matched as f64 / n.max(1) as f64,
        receipts_took.as_secs_f64(),
        unmatched,
        classes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Dispatches the commands of this module; they need no configuration file or database.
/// `reachline sandbox-smsc`: the sandbox SMSC in a process of its own, for tests and drills
/// that kill the engine while the SMSC goes on counting.
#[derive(clap::Args)]
pub struct SandboxSmscArgs {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:2775")]
    pub listen: String,
    /// Writes the port it listens on here, once listening.
    #[arg(long)]
    pub port_file: Option<std::path::PathBuf>,
    /// Appends every accepted part here as a JSON line (destination, text, id, concatenation).
    #[arg(long)]
    pub log: std::path::PathBuf,
    /// Accept and deliver every message, whatever its number (the receipt carries the id
    /// verbatim in `receipted_message_id`, as most SMSCs send it): a peer for benchmarks that
    /// send to generated numbers.
    #[arg(long)]
    pub all_delivered: bool,
    /// Write the log only once no part has come for this many milliseconds, then set the
    /// file's modification time to the last part's arrival: a benchmark's peer, which would
    /// otherwise write its log every 20 ms while parts arrive (0: every 20 ms).
    #[arg(long, default_value_t = 0)]
    pub log_when_idle_ms: u64,
    /// Speak SMPP over TLS with this certificate chain (PEM; with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

async fn sandbox_smsc(args: SandboxSmscArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(reachline_channels::tls::server_config(cert, key, &[]).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let sandbox = reachline_channels::smpp::sandbox::Sandbox::start_with(&args.listen, tls).await?;
    // The arrival of the last submit, in nanoseconds since the epoch.
    let last_part = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if args.all_delivered || args.log_when_idle_ms > 0 {
        let (all, last) = (args.all_delivered, last_part.clone());
        sandbox.set_script(Arc::new(move |dest: &str| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            last.store(now.as_nanos() as u64, Ordering::Relaxed);
            match all {
                true => reachline_channels::smpp::sandbox::DELIVERED_TLV,
                false => reachline_channels::smpp::sandbox::last_digit(dest),
            }
        }));
    }
    let idle = Duration::from_millis(args.log_when_idle_ms);
    if let Some(f) = &args.port_file {
        crate::write_replacing(f, sandbox.addr().port().to_string().as_bytes())?;
    }
    eprintln!("sandbox SMSC listening on {}", sandbox.addr());
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&args.log)?;
    let mut written = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if sandbox.accepted_count() == written {
            continue;
        }
        let last = UNIX_EPOCH + Duration::from_nanos(last_part.load(Ordering::Relaxed));
        if !idle.is_zero() && SystemTime::now().duration_since(last).unwrap_or_default() < idle {
            continue;
        }
        let new = sandbox.accepted_since(written);
        for m in &new {
            let line = serde_json::json!({
                "destination": m.destination, "text": m.text, "id": m.message_id, "concat": m.concat,
                "session": m.session,
            });
            writeln!(log, "{line}")?;
        }
        if !new.is_empty() {
            log.flush()?;
            written += new.len();
            if !idle.is_zero() {
                log.set_modified(last)?;
            }
        }
    }
}

pub(crate) async fn run(cmd: crate::Command) -> anyhow::Result<()> {
    match cmd {
        crate::Command::SandboxSmsc(args) => sandbox_smsc(args).await,
        crate::Command::Bench {
            command: crate::bench::BenchCommand::Smpp(args),
        } => bench_smpp(args).await,
        _ => unreachable!("only the sandbox SMSC and bench smpp come here"),
    }
}
