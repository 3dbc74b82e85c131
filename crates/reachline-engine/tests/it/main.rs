//! The engine end to end on SQLite — and on PostgreSQL when `REACHLINE_TEST_DATABASE_URL`
//! names a server (each run gets a fresh database there) — against the sandbox SMSC over
//! loopback SMPP, driven by a test clock: a small book kept aside for this (borrowers in two jurisdictions and zones, a dead
//! primary with a backup, a dead primary with only an emergency contact, a withdrawn
//! collection consent), run across a due date and the first weeks of the overdue ladder.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use reachline_channels::smpp::sandbox::{Sandbox, DELIVERED_TLV};
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_domain::{
    Borrower, Consent, ConsentSource, ConsentState, ContactAddress, ContactKind, ContactPoint, ContactRole,
    ContactSource, Currency, ExternalId, Installment, Jurisdiction, Loan, Locale, Money, PersonName, PhoneParser,
    Purpose, Relation,
};
use reachline_engine::{Engine, EngineConfig, LedgerSink};
use reachline_ledger::note::SignerKey;
use reachline_policy::{NoticeKind, Templates};
use reachline_store::engine::{EngineStore, SendState};
use reachline_store::ledger::{LedgerStore, Sequencer, SequencerConfig};
use reachline_store::postgres::{self, PgStore};
use reachline_store::sqlite::SqliteStore;
use reachline_store::{Keyring, Store};

fn ext(s: &str) -> ExternalId {
    ExternalId::parse(s).unwrap()
}

fn borrower(id: &str, us: bool) -> Borrower {
    Borrower {
        external_id: ext(id),
        name: PersonName::parse(if us { "Ann Lee" } else { "王芳" }).unwrap(),
        national_id: None,
        locale: if us { Locale::En } else { Locale::ZhCn },
        time_zone: if us {
            chrono_tz::America::New_York
        } else {
            chrono_tz::Asia::Shanghai
        },
        jurisdiction: if us { Jurisdiction::Us } else { Jurisdiction::Cn },
    }
}

fn phone(slot: &str, number: &str, role: ContactRole) -> ContactPoint {
    ContactPoint {
        slot: ext(slot),
        kind: ContactKind::Mobile,
        address: ContactAddress::parse(ContactKind::Mobile, number, &PhoneParser::default()).unwrap(),
        role,
        holder_name: role.is_third_party().then(|| PersonName::parse("李娜").unwrap()),
        bound_since: NaiveDate::from_ymd_opt(2025, 5, 1).unwrap(),
        source: ContactSource::Book,
        verified_at: None,
    }
}

const DUE: (i32, u32, u32) = (2026, 3, 16);

fn due() -> NaiveDate {
    NaiveDate::from_ymd_opt(DUE.0, DUE.1, DUE.2).unwrap()
}

/// Numbers and what the sandbox does with each (the digit of the sandbox's table).
const LIVE: &str = "+8613812340010";
const DEAD: &str = "+8613812340021";
const BACKUP: &str = "+8613812340030";
const DEAD2: &str = "+8613812340041";
const EMERGENCY: &str = "+8613812340050";
const WITHDRAWN: &str = "+8613812340060";
const US_LIVE: &str = "+12025550170";

fn script(dest: &str) -> u8 {
    let dest = dest.trim_start_matches('+');
    if dest.ends_with("13812340021") || dest.ends_with("13812340041") {
        1
    } else {
        DELIVERED_TLV
    }
}

const ORIGIN: &str = "reachline.test/ledger";

/// A back end: the loan book's store and the engine's, in one.
trait Both: Store + EngineStore {}
impl<T: Store + EngineStore> Both for T {}

/// Where a run keeps its data.
enum Backend {
    Sqlite,
    /// A server's admin URL; the run creates (and drops) its own database there.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL if the environment names a server; `None` with a note on stderr when it does
    /// not (with `REACHLINE_TEST_REQUIRE_POSTGRES=1`, a missing server fails the test).
    fn postgres() -> Option<Self> {
        match std::env::var("REACHLINE_TEST_DATABASE_URL") {
            Ok(url) => Some(Backend::Postgres(url)),
            Err(_) => {
                assert!(
                    std::env::var("REACHLINE_TEST_REQUIRE_POSTGRES").is_err(),
                    "REACHLINE_TEST_REQUIRE_POSTGRES is set but REACHLINE_TEST_DATABASE_URL is not"
                );
                eprintln!("REACHLINE_TEST_DATABASE_URL not set: the PostgreSQL run is skipped");
                None
            }
        }
    }
}

struct Run {
    store: Arc<dyn Both>,
    ledger: Arc<dyn LedgerStore>,
    sandbox: Sandbox,
    ids: HashMap<&'static str, reachline_domain::BorrowerId>,
    /// Rows the dispatcher held back while a send to their borrower was on the wire.
    held: u64,
    /// The PostgreSQL database the run made (dropped by the test once it has checked it).
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

/// Each run on PostgreSQL has a database of its own (tests of one process run at once).
static PG_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A new, empty database on the server `admin` names, for one run: its name and URL.
async fn fresh_pg_database(admin: &str) -> (String, String) {
    let db = format!(
        "reachline_engine_test_{}_{}",
        std::process::id(),
        PG_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let _ = postgres::drop_database(admin, &db).await;
    postgres::create_database(admin, &db).await.unwrap();
    let url = postgres::url_with_database(admin, &db);
    (db, url)
}

/// The book; with `second_loan`, B1 also holds a second loan due the same day (two notices of
/// theirs queued at once).
async fn book(
    store: &dyn Both,
    at: DateTime<Utc>,
    second_loan: bool,
) -> HashMap<&'static str, reachline_domain::BorrowerId> {
    let b = [
        ("B1", false, vec![phone("mobile", LIVE, ContactRole::Primary)]),
        (
            "B2",
            false,
            vec![
                phone("mobile", DEAD, ContactRole::Primary),
                phone("backup1", BACKUP, ContactRole::Backup),
            ],
        ),
        (
            "B3",
            false,
            vec![
                phone("mobile", DEAD2, ContactRole::Primary),
                phone("emergency1", EMERGENCY, ContactRole::Emergency(Relation::Parent)),
            ],
        ),
        ("B4", false, vec![phone("mobile", WITHDRAWN, ContactRole::Primary)]),
        ("B5", true, vec![phone("mobile", US_LIVE, ContactRole::Primary)]),
    ];
    let mut tx = store.begin_import(at).await.unwrap();
    let ids = tx
        .upsert_borrowers(b.iter().map(|(id, us, _)| borrower(id, *us)).collect())
        .await
        .unwrap();
    let contacts = b
        .iter()
        .zip(&ids)
        .flat_map(|((_, _, cs), id)| cs.iter().map(move |c| (*id, c.clone())))
        .collect();
    tx.upsert_contacts(contacts).await.unwrap();
    let loan = |id: &str, n: u32, us: bool| Loan {
        external_id: ext(&format!("L-{id}-{n:04}")),
        borrower: ext(id),
        product: "consumer-12m".into(),
        principal: Money::from_minor(1_200_000, if us { Currency::USD } else { Currency::CNY }),
        disbursed_on: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
    };
    let mut loans: Vec<(reachline_domain::BorrowerId, Loan)> = b
        .iter()
        .zip(&ids)
        .map(|((id, us, _), bid)| (*bid, loan(id, 42, *us)))
        .collect();
    if second_loan {
        loans.push((ids[0], loan("B1", 43, false)));
    }
    let loan_ids = tx.upsert_loans(loans.clone()).await.unwrap();
    tx.upsert_installments(
        loans
            .iter()
            .zip(&loan_ids)
            .map(|((_, l), lid)| {
                (
                    *lid,
                    Installment {
                        loan: l.external_id.clone(),
                        seq: 2,
                        due_date: due(),
                        amount_due: Money::from_minor(105_000, l.principal.currency()),
                        amount_paid: Money::from_minor(0, l.principal.currency()),
                        paid_at: None,
                    },
                )
            })
            .collect(),
    )
    .await
    .unwrap();
    let granted = |p, at| Consent {
        purpose: p,
        channel: None,
        state: ConsentState::Granted,
        at,
        source: ConsentSource::Contract,
        text_version: "2026-01".into(),
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 15, 2, 0, 0).unwrap();
    let mut consents = Vec::new();
    for bid in &ids {
        for p in [
            Purpose::Service,
            Purpose::Collection,
            Purpose::Verification,
            Purpose::ThirdParty,
        ] {
            consents.push((*bid, granted(p, start)));
        }
    }
    // B4 withdraws consent to collection notices before the due date.
    consents.push((
        ids[3],
        Consent {
            state: ConsentState::Withdrawn,
            source: ConsentSource::Page,
            ..granted(Purpose::Collection, Utc.with_ymd_and_hms(2026, 3, 1, 3, 0, 0).unwrap())
        },
    ));
    tx.add_consents(consents).await.unwrap();
    tx.commit().await.unwrap();
    // Each borrower paid the first installment through the link sent to their number: the
    // numbers were theirs a month ago.
    for bid in &ids {
        let primary = store
            .contacts(*bid)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.point.role == ContactRole::Primary);
        store
            .add_evidence(
                *bid,
                primary.map(|c| c.id),
                Utc.with_ymd_and_hms(2026, 2, 15, 3, 0, 0).unwrap(),
                r#"{"source":"core_banking"}"#,
                r#"{"kind":"payment","via_contact":true}"#,
            )
            .await
            .unwrap();
    }
    ["B1", "B2", "B3", "B4", "B5"].into_iter().zip(ids).collect()
}

/// Runs the engine hour by hour from `from` for `days`.
async fn run(backend: Backend, days: i64) -> Run {
    run_with(backend, days, EngineConfig::default(), false).await
}

async fn run_with(backend: Backend, days: i64, cfg: EngineConfig, second_loan: bool) -> Run {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::random("t");
    let (store, url, pg_database): (Arc<dyn Both>, String, Option<String>) = match &backend {
        Backend::Sqlite => {
            let db = dir.path().join("e.db");
            let store = Arc::new(SqliteStore::open(&db, keys.clone()).await.unwrap());
            (store, format!("sqlite://{}", db.display()), None)
        }
        Backend::Postgres(admin) => {
            let (db, url) = fresh_pg_database(admin).await;
            (
                Arc::new(PgStore::connect(&url, keys.clone()).await.unwrap()),
                url,
                Some(db),
            )
        }
    };
    let ledger_store: Arc<dyn LedgerStore> = reachline_store::open_ledger(&url, keys).await.unwrap().into();
    let sequencer = Sequencer::start(
        ledger_store.clone(),
        SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap(),
        SequencerConfig {
            origin: ORIGIN.into(),
            batch_max_entries: 256,
            batch_max_ms: 5,
        },
    )
    .await
    .unwrap();
    let start = Utc.with_ymd_and_hms(DUE.0, DUE.1, DUE.2, 0, 0, 0).unwrap() - Duration::days(8);
    let ids = book(store.as_ref(), start, second_loan).await;
    let sandbox = Sandbox::start("127.0.0.1:0").await.unwrap();
    sandbox.set_script(Arc::new(script));
    let sms = SmppChannel::start(SmppConfig {
        port: sandbox.addr().port(),
        ..SmppConfig::default()
    });
    assert!(sms.wait_bound(StdDuration::from_secs(5)).await);
    let templates = Templates::load(Templates::builtin_sources()).unwrap();
    let engine = Arc::new(
        Engine::new(
            store.clone() as Arc<dyn EngineStore>,
            vec![Arc::new(sms)],
            templates,
            cfg,
        )
        .with_ledger(LedgerSink {
            sequencer: Arc::new(sequencer),
            store: ledger_store.clone(),
        }),
    );
    let clock = Arc::new(Mutex::new(start));
    let c = clock.clone();
    engine.spawn_intake(Arc::new(move || *c.lock().unwrap()));
    let mut held = 0;
    for h in 0..days * 24 {
        let now = start + Duration::hours(h);
        *clock.lock().unwrap() = now;
        let (p, d) = engine.step(now).await.unwrap();
        held += d.held;
        // The step's dispatch ran beside its planning pass until the pass was over: whatever
        // the pass queued as due now was sent (or cancelled) by the step itself.
        let after = engine.dispatch(now).await.unwrap();
        assert_eq!(after.leased, 0, "{now}: rows due were left after the step: {after:?}");
        if std::env::var("ENGINE_TRACE").is_ok() {
            eprintln!("{now} {p:?} {d:?}");
        }
        // Let every receipt for what was accepted arrive before time moves on.
        for _ in 0..200 {
            if engine.counters.receipts.load(std::sync::atomic::Ordering::Relaxed) >= sandbox.accepted_count() as u64 {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }
    Run {
        store,
        ledger: ledger_store,
        sandbox,
        ids,
        held,
        pg_database,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_aside_book_across_a_due_date_on_sqlite() {
    check_kept_aside_book(run(Backend::Sqlite, 24).await).await;
}

/// Leased one row at a time, every batch is prepared while the one before it is on the wire,
/// and a borrower's next row is held back until their last send is recorded (B1's two loans
/// fall due together, so two of their rows are queued at once): the same checks (caps, hours,
/// third parties) hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_aside_book_leased_a_row_at_a_time() {
    let mut cfg = EngineConfig {
        lease_batch: 1,
        ..EngineConfig::default()
    };
    // Without the send-time model a borrower's notices of a day go at the same hour.
    cfg.timing.enabled = false;
    let r = run_with(Backend::Sqlite, 24, cfg, true).await;
    assert!(r.held > 0, "no row was ever held back: the overlap was not exercised");
    check_kept_aside_book(r).await;
}

/// Planned a borrower at a time and leased a row at a time, the dispatch beside the planning
/// pass takes each borrower's sends as soon as they are written, while the pass reads and
/// writes the borrowers after them: the same checks hold, on each back end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_aside_book_dispatched_beside_a_borrower_at_a_time_planning() {
    let cfg = || EngineConfig {
        plan_batch: 1,
        lease_batch: 1,
        ..EngineConfig::default()
    };
    check_kept_aside_book(run_with(Backend::Sqlite, 24, cfg(), true).await).await;
    check_kept_aside_book_on_postgres(cfg(), true).await;
}

/// A dispatch beside a planning pass does not end while the pass runs, though nothing is due
/// yet; once the pass is over it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_beside_planning_waits_for_the_pass_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("e.db"), Keyring::random("t"))
            .await
            .unwrap(),
    );
    let templates = Templates::load(Templates::builtin_sources()).unwrap();
    let engine = Arc::new(Engine::new(
        store as Arc<dyn EngineStore>,
        Vec::new(),
        templates,
        EngineConfig::default(),
    ));
    let (progress, watch) = reachline_engine::plan_progress();
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 1, 0, 0).unwrap();
    let e = engine.clone();
    let dispatch = tokio::spawn(async move { e.dispatch_beside(now, watch).await });
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    assert!(
        !dispatch.is_finished(),
        "the dispatch ended while planning was still under way"
    );
    let (planned, _) = engine.plan_pass_with(now, Some(&progress)).await.unwrap();
    assert_eq!(planned.borrowers, 0);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert!(
        !dispatch.is_finished(),
        "the dispatch ended before the pass said it was over"
    );
    drop(progress);
    let report = tokio::time::timeout(StdDuration::from_secs(5), dispatch)
        .await
        .expect("the dispatch did not end once the pass was over")
        .unwrap()
        .unwrap();
    assert_eq!(report.leased, 0);
}

/// Two nodes on one PostgreSQL database plan the same pass at once, a borrower a batch, each
/// claiming a slice of the pass when its batches reach it (the read-ahead running on from one
/// slice into the next): between them every due borrower is planned, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_planning_pass_each_borrower_planned_once() {
    let Some(Backend::Postgres(admin)) = Backend::postgres() else {
        return;
    };
    let (db, url) = fresh_pg_database(&admin).await;
    let store = Arc::new(PgStore::connect(&url, Keyring::random("t")).await.unwrap());
    let now = Utc.with_ymd_and_hms(DUE.0, DUE.1, DUE.2, 1, 0, 0).unwrap();
    let ids = book(store.as_ref(), now - Duration::days(8), true).await;
    let node = |owner: &str| {
        Engine::new(
            store.clone() as Arc<dyn EngineStore>,
            Vec::new(),
            Templates::load(Templates::builtin_sources()).unwrap(),
            EngineConfig {
                owner: owner.into(),
                plan_batch: 1,
                plan_reads: 3,
                // As `reachline run` holds a claimed slice (the default, none, is one node's).
                plan_hold: Duration::seconds(30),
                ..EngineConfig::default()
            },
        )
    };
    let (a, b) = (node("node-a"), node("node-b"));
    let (ra, rb) = futures::try_join!(a.plan_pass(now), b.plan_pass(now)).unwrap();
    assert_eq!(
        ra.0.borrowers + rb.0.borrowers,
        ids.len() as u64,
        "node a planned {}, node b {}, of {} borrowers due",
        ra.0.borrowers,
        rb.0.borrowers,
        ids.len()
    );
    assert!(
        ra.0.decisions + rb.0.decisions > 0,
        "no decision: the test shows nothing"
    );
    for (name, id) in &ids {
        let decided = store.decisions_of(*id).await.unwrap();
        assert!(!decided.is_empty(), "{name} was never planned");
    }
    // Every slice is held for this pass: a node passing again at the same moment finds none.
    let (again, _) = a.plan_pass(now).await.unwrap();
    assert_eq!(again.borrowers, 0);
    drop((a, b, store));
    postgres::drop_database(&admin, &db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_aside_book_across_a_due_date_on_postgres() {
    check_kept_aside_book_on_postgres(EngineConfig::default(), false).await;
}

/// `run_with` and `check_kept_aside_book` on PostgreSQL, when a server is configured; the
/// run's database is dropped once checked.
async fn check_kept_aside_book_on_postgres(cfg: EngineConfig, second_loan: bool) {
    let Some(backend) = Backend::postgres() else { return };
    let admin = match &backend {
        Backend::Postgres(u) => u.clone(),
        Backend::Sqlite => unreachable!(),
    };
    let r = run_with(backend, 24, cfg, second_loan).await;
    let db = r.pg_database.clone().expect("a run on PostgreSQL names its database");
    check_kept_aside_book(r).await;
    postgres::drop_database(&admin, &db).await.unwrap();
}

async fn check_kept_aside_book(r: Run) {
    let engine_store: &dyn EngineStore = r.store.as_ref();
    // Per borrower: (sent at, address, to a third party).
    type Sent = (DateTime<Utc>, String, bool);
    let mut sent_to: HashMap<&str, Vec<Sent>> = HashMap::new();
    for (name, id) in &r.ids {
        for row in engine_store.sends_of(*id).await.unwrap() {
            if row.state.attempted() {
                let contact = r
                    .store
                    .contacts(*id)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|c| c.id == row.contact)
                    .unwrap();
                sent_to.entry(name).or_default().push((
                    row.sent_at.unwrap(),
                    contact.point.address.canonical(),
                    row.third_party,
                ));
                // Every send inside its purpose's hours in the borrower's zone.
                let kind: NoticeKind = row.kind.parse().unwrap();
                let purpose = if row.third_party {
                    Purpose::ThirdParty
                } else {
                    kind.purpose()
                };
                let b = r.store.contacts(*id).await.unwrap();
                assert!(!b.is_empty());
                let (zone, profile) = if *name == "B5" {
                    (chrono_tz::America::New_York, reachline_policy::GateProfile::us())
                } else {
                    (chrono_tz::Asia::Shanghai, reachline_policy::GateProfile::cn())
                };
                if let Some(w) = profile.window(purpose) {
                    let local = row.sent_at.unwrap().with_timezone(&zone).time();
                    assert!(w.contains(local), "{name}: {} sent at {local} local", row.kind);
                }
            }
            assert_ne!(row.state, SendState::Sending, "nothing is left half-sent");
        }
    }
    // Nothing went to the SMSC twice.
    let all = r.sandbox.messages();
    let mut seen = HashSet::new();
    for m in &all {
        assert!(seen.insert(m.clone()), "sent twice: a message to {}", m.0);
    }
    // Contact checks' links (`…/c/<token>`) are verification messages: one per `link_sent`
    // step, not outbox rows.
    let (links, accepted): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, text)| text.contains("/c/"));
    let mut link_steps = 0;
    for id in r.ids.values() {
        link_steps += engine_store
            .steps(*id, None, None)
            .await
            .unwrap()
            .iter()
            .filter(|s| s.step == "link_sent")
            .count();
    }
    assert_eq!(
        links.len(),
        link_steps,
        "every check link the SMSC took is one recorded step"
    );
    let attempts: usize = {
        let mut n = 0;
        for id in r.ids.values() {
            n += engine_store
                .sends_of(*id)
                .await
                .unwrap()
                .iter()
                .filter(|s| s.state == SendState::Sent)
                .count();
        }
        n
    };
    assert_eq!(
        accepted.len(),
        attempts,
        "every message the SMSC took is one recorded attempt"
    );
    // B1: the cadence before and on the due date reached the one number.
    let b1 = &sent_to["B1"];
    assert!(b1.iter().all(|(_, to, _)| to == LIVE));
    let d1 = engine_store.decisions_of(r.ids["B1"]).await.unwrap();
    assert!(
        b1.len() >= 4,
        "pre-due ×3 and due today: {} {:#?}",
        b1.len(),
        d1.iter()
            .map(|(t, d)| (t, &d.notice, &d.action, &d.reason, &d.gate, d.until))
            .collect::<Vec<_>>()
    );
    // B2: the dead primary failed, the backup carried the notices.
    let b2 = &sent_to["B2"];
    assert!(b2.iter().any(|(_, to, _)| to == DEAD));
    assert!(b2.iter().any(|(_, to, _)| to == BACKUP), "{b2:?}");
    let last_dead = b2
        .iter()
        .filter(|(_, to, _)| to == DEAD)
        .map(|(t, _, _)| *t)
        .max()
        .unwrap();
    assert!(
        last_dead < Utc.with_ymd_and_hms(DUE.0, DUE.1, DUE.2, 0, 0, 0).unwrap() + Duration::days(3),
        "a dead number stops being tried: last at {last_dead}"
    );
    // B3: no working number of their own; the emergency contact got the third-party text, once.
    let b3 = &sent_to["B3"];
    let to_third: Vec<_> = b3.iter().filter(|(_, to, _)| to == EMERGENCY).collect();
    assert_eq!(to_third.len(), 1, "{b3:?}");
    assert!(to_third[0].2, "the emergency contact gets the third-party template");
    let third_texts: Vec<&String> = accepted
        .iter()
        .filter(|m| m.0.ends_with("13812340050"))
        .map(|m| &m.1)
        .collect();
    assert!(!third_texts.is_empty());
    for t in third_texts {
        for w in ["逾期", "还款", "借款", "欠"] {
            assert!(!t.contains(w), "third-party text mentions the debt: {t}");
        }
    }
    // B4 withdrew collection consent: service notices before the due date, nothing after.
    let b4 = &sent_to["B4"];
    assert!(!b4.is_empty());
    let due_start = Utc.with_ymd_and_hms(DUE.0, DUE.1, DUE.2, 0, 0, 0).unwrap() - Duration::hours(8);
    assert!(b4.iter().all(|(t, _, _)| *t < due_start + Duration::days(1)), "{b4:?}");
    let d4 = engine_store.decisions_of(r.ids["B4"]).await.unwrap();
    assert!(
        d4.iter()
            .any(|(_, d)| d.gate.as_deref() == Some("no_consent") || d.reason == "ladder_exhausted"),
        "the overdue notices are suppressed with a reason: {:?}",
        d4.iter()
            .map(|(_, d)| (&d.action, &d.reason, &d.gate))
            .collect::<Vec<_>>()
    );
    // B5 (US): English text, New York hours (checked above).
    assert!(accepted
        .iter()
        .any(|m| m.0.ends_with("2025550170") && m.1.contains("due")));
    // Every send is a ledger leaf, with its delivery receipt; a notice's bundle verifies offline
    // and holds no personal data.
    let b1_sent: Vec<i64> = engine_store
        .sends_of(r.ids["B1"])
        .await
        .unwrap()
        .iter()
        .filter(|s| s.state == SendState::Sent)
        .map(|s| s.id)
        .collect();
    assert!(!b1_sent.is_empty());
    let verifier = SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap().verifier();
    for id in &b1_sent {
        let file = reachline_store::ledger::bundle(r.ledger.as_ref(), *id).await.unwrap();
        let text = file.to_text();
        let v = reachline_ledger::proof_file::verify(&text, &verifier).unwrap();
        let kinds: Vec<String> = v.leaves.iter().map(|(_, l)| format!("{:?}", l.kind)).collect();
        assert!(kinds.iter().any(|k| k == "NoticeSent"), "{kinds:?}");
        assert!(kinds.iter().any(|k| k.contains("delivered")), "{kinds:?}");
        assert!(
            !text.contains("13812340010") && !text.contains("王芳"),
            "no personal data in a bundle"
        );
    }
    // Every borrower's notices are explained: each has decisions recorded.
    for id in r.ids.values() {
        assert!(!engine_store.decisions_of(*id).await.unwrap().is_empty());
    }
}

/// A channel that only hands the engine the receipts the test sends it.
struct ReceiptsOnly(Mutex<Option<futures::channel::mpsc::UnboundedReceiver<reachline_channels::Receipt>>>);

#[async_trait::async_trait]
impl reachline_channels::Channel for ReceiptsOnly {
    fn kind(&self) -> reachline_domain::Channel {
        reachline_domain::Channel::Sms
    }

    fn provider(&self) -> &str {
        "receipts-only"
    }

    async fn send(
        &self,
        _: &reachline_channels::Outbound,
    ) -> Result<reachline_channels::Accepted, reachline_channels::SendError> {
        Err(reachline_channels::SendError::unavailable(
            "receipts-only",
            "sends nothing",
        ))
    }

    fn take_receipts(&self) -> Option<reachline_channels::ReceiptStream> {
        let rx = self.0.lock().unwrap().take()?;
        Some(Box::pin(rx))
    }
}

/// Receipts that arrive while the database is away (a restart) are recorded once it is back:
/// the provider has been answered and will not send them again, so the intake keeps trying
/// for as long as it takes — it used to give up after five tries, about two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_that_arrive_while_the_database_is_away_are_recorded_when_it_is_back() {
    let Some(Backend::Postgres(admin)) = Backend::postgres() else {
        return;
    };
    let db = format!("reachline_engine_outage_{}", std::process::id());
    let _ = postgres::drop_database(&admin, &db).await;
    postgres::create_database(&admin, &db).await.unwrap();
    let url = postgres::url_with_database(&admin, &db);
    let store = Arc::new(PgStore::connect(&url, Keyring::random("t")).await.unwrap());
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let engine = Arc::new(Engine::new(
        store.clone() as Arc<dyn EngineStore>,
        vec![Arc::new(ReceiptsOnly(Mutex::new(Some(rx))))],
        Templates::load(Templates::builtin_sources()).unwrap(),
        EngineConfig::default(),
    ));
    let intake = engine.spawn_intake(Arc::new(Utc::now));
    postgres::set_database_reachable(&admin, &db, false).await.unwrap();
    for i in 0..3 {
        tx.unbounded_send(reachline_channels::Receipt {
            provider: "receipts-only".into(),
            reference: None,
            provider_id: format!("r-{i}"),
            part: None,
            class: reachline_domain::DeliveryClass::Delivered,
            code: "stat:DELIVRD".into(),
            is_final: true,
            raw: format!("id:r-{i} stat:DELIVRD").into_bytes(),
            unanswered: reachline_channels::Unanswered::none(),
        })
        .unwrap();
    }
    tokio::time::sleep(StdDuration::from_secs(4)).await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        engine.counters.receipts.load(Relaxed),
        0,
        "recorded while the database was away?"
    );
    postgres::set_database_reachable(&admin, &db, true).await.unwrap();
    assert!(
        engine.wait_receipts(3, StdDuration::from_secs(30)).await,
        "the receipts were recorded once the database was back: {}",
        engine.counters.receipts.load(Relaxed)
    );
    assert_eq!(
        engine.counters.receipts_unmatched.load(Relaxed),
        3,
        "kept, flagged unmatched"
    );
    for t in intake {
        t.abort();
    }
    drop((engine, store));
    postgres::drop_database(&admin, &db).await.unwrap();
}

/// A provider that never answers: every send it is handed may or may not have gone out.
#[derive(Default)]
struct NeverAnswers {
    handed: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl reachline_channels::Channel for NeverAnswers {
    fn kind(&self) -> reachline_domain::Channel {
        reachline_domain::Channel::Sms
    }

    fn provider(&self) -> &str {
        "never-answers"
    }

    async fn send(
        &self,
        msg: &reachline_channels::Outbound,
    ) -> Result<reachline_channels::Accepted, reachline_channels::SendError> {
        self.handed.lock().unwrap().push(msg.reference.0.clone());
        Err(reachline_channels::SendError::in_doubt(
            "never-answers",
            "submit_sm unanswered",
        ))
    }

    fn take_receipts(&self) -> Option<reachline_channels::ReceiptStream> {
        None
    }
}

/// A send the provider may have taken (it went out, no answer came) is recorded in doubt and
/// never handed over again; the ladder reads it as a send with no outcome and climbs: B2's dead
/// primary gives way to its backup a day later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_doubt_is_never_handed_over_again_and_the_ladder_climbs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("e.db"), Keyring::random("t"))
            .await
            .unwrap(),
    );
    let start = Utc.with_ymd_and_hms(DUE.0, DUE.1, DUE.2, 0, 0, 0).unwrap() - Duration::days(8);
    let ids = book(store.as_ref(), start, false).await;
    let provider = Arc::new(NeverAnswers::default());
    let engine = Engine::new(
        store.clone() as Arc<dyn EngineStore>,
        vec![provider.clone()],
        Templates::load(Templates::builtin_sources()).unwrap(),
        EngineConfig::default(),
    );
    let mut in_doubt = 0;
    for h in 0..6 * 24 {
        let (_, d) = engine.step(start + Duration::hours(h)).await.unwrap();
        assert_eq!(d.sent + d.failed + d.released, 0, "{d:?}");
        in_doubt += d.in_doubt;
    }
    // Notices carry their outbox row's id; contact checks' links (`verify-…`) go their own way.
    let handed: Vec<String> = provider
        .handed
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.starts_with("verify-"))
        .cloned()
        .collect();
    assert!(in_doubt > 0);
    assert_eq!(handed.len() as u64, in_doubt, "one hand-over per row in doubt");
    let once: HashSet<&String> = handed.iter().collect();
    assert_eq!(once.len(), handed.len(), "a row handed over twice: {handed:?}");
    let mut rows = Vec::new();
    for id in ids.values() {
        rows.extend(store.sends_of(*id).await.unwrap());
    }
    let doubted: Vec<_> = rows.iter().filter(|r| r.state == SendState::InDoubt).collect();
    assert_eq!(doubted.len() as u64, in_doubt);
    assert!(doubted.iter().all(|r| r.sent_at.is_some()));
    // B2: the primary's send stayed silent, so the next rung went to the backup.
    let b2: Vec<_> = rows.iter().filter(|r| r.borrower == ids["B2"]).collect();
    let first = b2.iter().map(|r| r.rung).min().unwrap();
    assert!(
        b2.iter().any(|r| r.rung > first && r.contact != b2[0].contact),
        "B2 never climbed: {b2:?}"
    );
}
