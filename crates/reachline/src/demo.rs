//! `reachline demo`: the main job end to end on the embedded default. Generates a loan book and
//! imports it into a fresh SQLite database; runs the notice engine over simulated days against
//! the sandbox SMSC over SMPP and the sandbox mail server over SMTP on loopback (the ladder falls
//! back to email when a number fails or stays silent), in a world where some borrowers move to a new number
//! (the old one dies, some are recycled to strangers) and pay more readily when a notice reaches
//! them; imports the lender's next export mid-run; prints what was sent, delivered and failed,
//! what was deferred or suppressed and why, how fast dead numbers were found; shows one moved
//! borrower's history and decisions; and shows a damaged export refused whole.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, NaiveTime, Utc};
use reachline_channels::smpp::sandbox::Sandbox;
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::smtp::{SmtpChannel, SmtpConfig};
use reachline_channels::smtp_sandbox::SmtpSandbox;
use reachline_engine::{Engine, EngineConfig};
use reachline_policy::Templates;
use reachline_store::engine::{EngineStore, SendOutcome};
use reachline_store::sqlite::SqliteStore;
use reachline_store::Store;

use crate::book::gen::{generate, GenOptions};
use crate::book::Format;
use crate::config::{Config, DatabaseUrl};
use crate::import::{import, ImportOptions, Rejected};
use crate::keys::KeyFile;
use crate::show;
use crate::world::{self, World, WorldIntel};

const MARKER: &str = ".reachline-demo";

/// The day of the run on which the lender's next export arrives (and tells of new numbers).
const LEARN_DAY: u32 = 45;

pub async fn run(dir: &Path, borrowers: u64, seed: u64, days: u32) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    prepare(dir)?;
    let keys = dir.join("reachline.keys");
    KeyFile::generate("demo").write_new(&keys)?;
    let mut cfg = Config::default();
    let db = dir.join("reachline.db");
    cfg.database.url = DatabaseUrl(format!("sqlite://{}", db.display()));
    cfg.keys.file = keys.clone();
    // The simulated clock waits for nothing but the ledger: a batch closes as soon as the last
    // one committed (the default; a 5 ms wait for more leaves here cost the 90 days ~30 s).
    cfg.ledger.batch_max_ms = 0;
    cfg.validate()?;
    let sqlite = Arc::new(SqliteStore::open(&db, cfg.keyring()?).await?);
    let store: &dyn Store = sqlite.as_ref();
    let phones = cfg.phone_parser()?;
    let defaults = cfg.book_defaults()?;
    let quiet = ImportOptions {
        batch_size: cfg.book.batch_size,
        progress: false,
    };
    let start = Utc::now().date_naive();
    let gen = |rev: u32| GenOptions {
        borrowers,
        seed,
        as_of: start,
        revision: rev,
        format: Format::Csv,
    };

    println!("== 1. The lender's loan book: {borrowers} synthetic borrowers (seed {seed}) ==");
    let first = dir.join("book-1");
    let counts = generate(&first, &gen(0), &|_| {})?;
    println!("wrote {} rows to {}", counts.total(), first.display());
    let s = import(store, &first, &phones, &defaults, &quiet).await?;
    show::print_import_summary(&s);
    let second = dir.join("book-2");
    generate(&second, &gen(1), &|_| {})?;

    println!(
        "\n== 2. {days} days of notices, over SMPP to the sandbox SMSC and SMTP to the sandbox mail server, on loopback =="
    );
    let world = World::from_exports(&first, &second, &phones, start, LEARN_DAY)?;
    println!(
        "In this world {} borrowers move to a new number during the run (the old one dies; some are \
         given to strangers later). The lender's next export, on day {LEARN_DAY}, tells of the new numbers.",
        world.moves().count()
    );
    let sandbox = Sandbox::start("127.0.0.1:0").await?;
    let w = world.clone();
    sandbox.set_script(Arc::new(move |dest: &str| w.script(dest)));
    let sms = SmppChannel::start(SmppConfig {
        port: sandbox.addr().port(),
        ..SmppConfig::default()
    });
    if !sms.wait_bound(std::time::Duration::from_secs(5)).await {
        bail!("could not bind to the sandbox SMSC at {}", sandbox.addr());
    }
    // The sandbox mail server stands for the borrowers' own mail servers: its 250 means the
    // mailbox took the message (delivered), its 550 5.1.1 that the mailbox is gone (dead).
    let mail = SmtpSandbox::start("127.0.0.1:0").await?;
    let w = world.clone();
    mail.set_script(Arc::new(move |to: &str| w.script_email(to)));
    let email = SmtpChannel::new(SmtpConfig {
        port: mail.addr().port(),
        accepted_is_delivered: true,
        ..SmtpConfig::default()
    });
    let sandboxes = Sandboxes {
        sms: &sandbox,
        mail: &mail,
    };
    let engine = Arc::new(
        Engine::new(
            sqlite.clone() as Arc<dyn EngineStore>,
            vec![
                Arc::new(sms) as Arc<dyn reachline_channels::Channel>,
                Arc::new(email) as Arc<dyn reachline_channels::Channel>,
            ],
            Templates::load(Templates::builtin_sources()).map_err(|e| anyhow::anyhow!("templates: {e:?}"))?,
            crate::run::engine_config(&cfg, &cfg.keyring()?)?,
        )
        .with_intel(Arc::new(WorldIntel(world.clone())))
        .with_ledger(crate::run::ledger_sink(&cfg).await?),
    );
    let t0 = start.and_time(NaiveTime::MIN).and_utc();
    let clock = Arc::new(Mutex::new(t0));
    let c = clock.clone();
    engine.spawn_intake(Arc::new(move || *c.lock().unwrap_or_else(|p| p.into_inner())));
    let bar = indicatif::ProgressBar::new(u64::from(days)).with_style(
        indicatif::ProgressStyle::with_template("  day {pos}/{len} {bar:40} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut detection = None;
    let mut sent = 0u64;
    for day in 0..days {
        world.set_day(day);
        if day == LEARN_DAY {
            import(store, &second, &phones, &defaults, &quiet).await?;
            bar.println(format!(
                "  day {day}: the lender's new export imported (changed numbers replace old ones)"
            ));
        }
        for hour in 0..24 {
            let now = t0 + Duration::days(i64::from(day)) + Duration::hours(hour);
            *clock.lock().unwrap_or_else(|p| p.into_inner()) = now;
            let (_, d) = engine.step(now).await?;
            sent += d.sent;
            settle(&engine, &sandboxes).await;
            if hour == 12 {
                payments(&sqlite, &engine, &world, now, seed).await?;
            }
        }
        if day + 1 == LEARN_DAY.min(days) {
            detection = Some(
                detect(
                    &sqlite,
                    &world,
                    engine.config(),
                    t0 + Duration::days(i64::from(day + 1)),
                )
                .await?,
            );
        }
        bar.set_message(format!("{sent} notices sent"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let end = t0 + Duration::days(i64::from(days));
    report(&sqlite, &world, engine.config(), detection, start, end).await?;

    if let Some(m) = world.moves().min_by_key(|m| m.borrower.clone()) {
        println!("\n== 4. One borrower whose number changed (personal data masked) ==");
        let ext = reachline_domain::ExternalId::parse(&m.borrower)?;
        show::print_history(store, &ext).await?;
        if let Some(b) = store.borrower_by_external_id(&ext).await? {
            println!("  decisions about their notices (changes only, oldest first):");
            for (at, d) in sqlite.decisions_of(b.id).await?.iter().take(14) {
                println!(
                    "    {}  {:<22} {:<14} {:<24} {}",
                    at.format("%Y-%m-%d %H:%M"),
                    d.notice,
                    d.action,
                    d.reason,
                    d.gate.as_deref().unwrap_or("")
                );
            }
        }
    }

    println!("\n== 5. Proof that a notice was given, checked offline ==");
    if let Some(notice) = proof_notice(&sqlite, &world).await? {
        let ledger = crate::run::ledger_sink(&cfg).await?;
        let file = reachline_store::ledger::bundle(ledger.store.as_ref(), notice).await?;
        let path = dir.join(format!("notice-{notice}.proof"));
        std::fs::write(&path, file.to_text())?;
        let key = cfg.ledger_signer()?.verifier().to_string();
        println!(
            "  every send and receipt is a leaf of the notice ledger; notice {notice}'s evidence bundle is {}:",
            path.display()
        );
        crate::ledger::verify(&path, &key)?;
        println!(
            "  (anyone can run: reachline ledger verify {} --key '{key}')",
            path.display()
        );
    }

    println!("\n== 6. A damaged export is refused whole ==");
    let bad = dir.join("book-bad");
    std::fs::create_dir_all(&bad)?;
    for f in ["borrowers", "loans", "installments", "consents"] {
        std::fs::copy(second.join(format!("{f}.csv")), bad.join(format!("{f}.csv")))?;
    }
    let contacts = std::fs::read_to_string(second.join("contacts.csv"))?;
    let damaged: Vec<String> = contacts
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            3 => l.replacen(",mobile,primary,", ",mobile,primry,", 1),
            7 => l.replacen(",mobile,", ",fax,", 1),
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(bad.join("contacts.csv"), damaged.join("\n") + "\n")?;
    let before = store.counts().await?;
    match import(store, &bad, &phones, &defaults, &quiet).await {
        Err(e) => match e.downcast_ref::<Rejected>() {
            Some(Rejected(p)) => {
                for problem in &p.first {
                    println!("  {problem}");
                }
                println!("  → {e}");
            }
            None => return Err(e),
        },
        Ok(_) => bail!("the damaged book was accepted"),
    }
    if store.counts().await? != before {
        bail!("a refused import changed the database");
    }
    println!("  database unchanged:");
    show::print_counts(&before);

    println!(
        "\nDone in {:.1} s. The database and keys are in {}. Look around with, for example:",
        began.elapsed().as_secs_f64(),
        dir.display()
    );
    let env = format!(
        "REACHLINE_KEYS__FILE={} REACHLINE_DATABASE__URL={}",
        keys.display(),
        cfg.database.url.as_str()
    );
    println!("  {env} cargo run --release -- summary");
    println!("  {env} cargo run --release -- contacts history B00000001");
    Ok(())
}

/// The demo's gateways.
struct Sandboxes<'a> {
    sms: &'a Sandbox,
    mail: &'a SmtpSandbox,
}

/// Waits until every part the SMSC accepted and every email the mail server took has had its
/// receipt recorded (at most 2 s).
async fn settle(engine: &Engine, sandboxes: &Sandboxes<'_>) {
    let expected = sandboxes.sms.accepted_count() as u64 + sandboxes.mail.counts().0;
    engine.wait_receipts(expected, std::time::Duration::from_secs(2)).await;
}

/// The world's borrowers pay: readily when a notice reached them in the last three days, now
/// and then on their own; reliable payers more than others.
async fn payments(
    store: &SqliteStore,
    engine: &Engine,
    world: &World,
    now: DateTime<Utc>,
    seed: u64,
) -> anyhow::Result<()> {
    let today = now.date_naive();
    let (from, to) = (today - Duration::days(30), today + Duration::days(3));
    let everyone = now + Duration::days(3650);
    for ids in store.due_borrowers(from, to, everyone).await?.chunks(2_000) {
        for v in store.views(ids, from, to).await? {
            let ext = &v.external_id;
            let reached = world.reached(ext, 3);
            let reliability = 0.5 + (world::stable(ext, 11) % 100) as f64 / 100.0;
            // A borrower a notice reached opens its link now and then, and always when paying
            // because of it.
            let latest = if reached {
                store
                    .sends_of(v.id)
                    .await?
                    .into_iter()
                    .filter(|r| {
                        r.outcome == SendOutcome::Delivered && r.sent_at.is_some_and(|t| now - t < Duration::days(3))
                    })
                    .max_by_key(|r| r.sent_at)
            } else {
                None
            };
            let mut clicked = false;
            for i in v.installments.iter().filter(|i| !i.paid) {
                let p = match (i.due_date.cmp(&today), reached) {
                    (std::cmp::Ordering::Greater, true) => 0.25,
                    (std::cmp::Ordering::Greater, false) => 0.0,
                    (std::cmp::Ordering::Equal, true) => 0.6,
                    (std::cmp::Ordering::Equal, false) => 0.25,
                    (std::cmp::Ordering::Less, true) => 0.3,
                    (std::cmp::Ordering::Less, false) => 0.04,
                } * reliability;
                let draw = (world::stable(&format!("{}:{today}", i.id), seed) % 10_000) as f64 / 10_000.0;
                if draw < p {
                    if let (Some(r), false) = (&latest, clicked) {
                        engine.click(r.id, now).await?;
                        clicked = true;
                    }
                    store
                        .record_payment(i.id, i.amount_due_minor - i.amount_paid_minor, now)
                        .await?;
                }
            }
            if let (Some(r), false) = (&latest, clicked) {
                if world::stable(&format!("click:{}", r.id), seed) % 10 < 3 {
                    engine.click(r.id, now).await?;
                }
            }
        }
    }
    Ok(())
}

/// A delivered notice of a moved borrower (the dispute the ledger is for), else any sent one.
async fn proof_notice(store: &SqliteStore, world: &World) -> anyhow::Result<Option<i64>> {
    for m in world.moves() {
        let ext = reachline_domain::ExternalId::parse(&m.borrower)?;
        if let Some(b) = store.borrower_by_external_id(&ext).await? {
            let sends = store.sends_of(b.id).await?;
            if let Some(r) = sends.iter().find(|r| r.outcome == SendOutcome::Delivered) {
                return Ok(Some(r.id));
            }
        }
    }
    Ok(None)
}

/// How each moved borrower's old number stands in Reachline's eyes the day before the
/// lender's export says it changed.
async fn detect(
    store: &SqliteStore,
    world: &World,
    cfg: &EngineConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<Detection> {
    let mut d = Detection::default();
    for m in world.moves() {
        if m.dies > world.day() {
            continue;
        }
        d.dead += 1;
        let number = reachline_domain::PhoneNumber::parse(&format!("+{}", m.old))?;
        let Some(c) = store
            .contacts_by_phone(&number)
            .await?
            .into_iter()
            .find(|c| c.is_current())
        else {
            continue;
        };
        let today = now.date_naive();
        let views = store
            .views(
                &[c.borrower_id],
                today - Duration::days(400),
                today + Duration::days(60),
            )
            .await?;
        let Some(v) = views.first() else { continue };
        let owned = reachline_engine::plan::Owned::build(v, cfg, now)?;
        let Some(a) = owned.health.contacts.iter().find(|a| a.contact == c.id) else {
            continue;
        };
        use reachline_policy::HealthState::*;
        match a.state {
            Dead | Reassigned | Suspended | Suspect => {
                d.found += 1;
                d.days.push((a.since - world.date(m.dies)).num_days().max(0));
            }
            other => *d.missed.entry(other.as_str()).or_default() += 1,
        }
    }
    d.days.sort_unstable();
    Ok(d)
}

#[derive(Debug, Default)]
struct Detection {
    dead: u64,
    found: u64,
    days: Vec<i64>,
    missed: std::collections::BTreeMap<&'static str, u64>,
}

async fn report(
    store: &SqliteStore,
    world: &World,
    cfg: &EngineConfig,
    detection: Option<Detection>,
    start: chrono::NaiveDate,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    println!("\n== 3. What happened ==");
    #[derive(Default)]
    struct Row {
        sent: u64,
        delivered: u64,
        engaged: u64,
        failed: BTreeMap<String, u64>,
        in_doubt: u64,
        cancelled: u64,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for c in store.outbox_counts().await? {
        let (kind, channel, state, outcome, class) = (&c.keys[0], &c.keys[1], &c.keys[2], &c.keys[3], &c.keys[4]);
        let r = rows.entry((kind.clone(), channel.clone())).or_default();
        match state.as_str() {
            "sent" | "failed" | "in_doubt" => r.sent += c.count,
            "cancelled" => r.cancelled += c.count,
            _ => {}
        }
        if state == "in_doubt" {
            r.in_doubt += c.count;
        }
        match outcome.as_str() {
            "delivered" => r.delivered += c.count,
            "engaged" => r.engaged += c.count,
            "failed" => *r.failed.entry(class.clone()).or_default() += c.count,
            _ => {}
        }
    }
    println!("  notices by kind and channel:");
    println!(
        "    {:<18} {:<7} {:>7} {:>10} {:>8} {:>9} {:>10}  failed by class",
        "kind", "channel", "sent", "delivered", "engaged", "in doubt", "cancelled"
    );
    for ((kind, channel), r) in &rows {
        let failed: Vec<String> = r.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "    {:<18} {:<7} {:>7} {:>10} {:>8} {:>9} {:>10}  {}",
            kind,
            channel,
            r.sent,
            r.delivered,
            r.engaged,
            r.in_doubt,
            r.cancelled,
            if failed.is_empty() {
                "-".into()
            } else {
                failed.join(", ")
            }
        );
    }
    println!("  decisions that did not send (each change of a notice's decision, by reason):");
    for c in store.decision_counts().await? {
        let (action, reason, gate) = (&c.keys[0], &c.keys[1], &c.keys[2]);
        if action == "send" {
            continue;
        }
        let why = if gate.is_empty() {
            reason.clone()
        } else {
            format!("{reason}: {gate}")
        };
        println!("    {:<14} {:<40} {:>7}", action, why, c.count);
    }
    let (to_stranger, to_dead) = world.misdirected();
    println!("  number changes:");
    if let Some(d) = detection {
        let median = d.days.get(d.days.len() / 2).copied();
        println!(
            "    {} old numbers had died before the lender's export; Reachline had found {} of them \
             dead, suspended or suspect by then{}",
            d.dead,
            d.found,
            median.map_or(String::new(), |m| format!(" (median {m} days after they died)"))
        );
        if !d.missed.is_empty() {
            let m: Vec<String> = d.missed.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("    the rest were still: {}", m.join(", "));
        }
    }
    println!("    message parts that reached a stranger on a recycled number: {to_stranger}");
    println!("    message parts sent to a dead number (and failed): {to_dead}");
    let (taken, bounced) = world.emails();
    println!("    emails taken by the borrowers' mail servers: {taken}; refused by an abandoned mailbox: {bounced}");
    // Who is unreachable at the end, and how the installments due in the run stand.
    let today = end.date_naive();
    let (from, to) = (start - Duration::days(31), today + Duration::days(8));
    let (mut unreachable, mut due, mut paid, mut borrowers) = (0u64, 0u64, 0u64, 0u64);
    for ids in store
        .due_borrowers(from, to, end + Duration::days(3650))
        .await?
        .chunks(2_000)
    {
        for v in store.views(ids, start, today).await? {
            borrowers += 1;
            let owned = reachline_engine::plan::Owned::build(&v, cfg, end)?;
            unreachable += u64::from(!owned.health.reachable);
            for i in &v.installments {
                due += 1;
                paid += u64::from(i.paid);
            }
        }
    }
    println!(
        "  at the end: {unreachable} of {borrowers} borrowers with an open installment are unreachable on \
         every number they have; installments due during the run still open: {} of {due}",
        due - paid
    );
    Ok(())
}

/// Empties `dir` if it is an earlier demo's, refuses if it holds anything else.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a Reachline demo directory; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "This directory is recreated by `reachline demo`.\n")?;
    Ok(())
}
