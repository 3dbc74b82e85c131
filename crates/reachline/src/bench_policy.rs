//! `reachline bench policy`: how fast the decision core plans — contact health replayed from
//! each borrower's evidence, then `decide` over their due notices — on synthetic borrowers.

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reachline_domain::{
    Channel, Consent, ConsentSource, ContactId, ContactKind, ContactRole, DeliveryClass, InstallmentId, Relation,
};
use reachline_policy::{
    assess_borrower, decide, Cadence, ContactFacts, DueInstallment, Evidence, EvidenceId, EvidenceKind, GateProfile,
    HealthConfig, LadderConfig, NoticeKey, NoticeKind, Outcome, ReplyClass, SendRecord, Snapshot, Source,
};

struct Borrower {
    contacts: Vec<ContactFacts>,
    evidence: Vec<Evidence>,
    consents: Vec<Consent>,
    installments: Vec<DueInstallment>,
    sends: Vec<SendRecord>,
}

fn synth(rng: &mut ChaCha8Rng, id: i64, now: DateTime<Utc>) -> Borrower {
    let c = |n: i64, kind, role| ContactFacts {
        id: ContactId(id * 10 + n),
        kind,
        role,
        bound_since: "2023-01-01".parse().unwrap(),
        verified_at: (n == 1).then(|| Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap()),
        retired: false,
    };
    let contacts = vec![
        c(1, ContactKind::Mobile, ContactRole::Primary),
        c(2, ContactKind::Email, ContactRole::Primary),
        c(3, ContactKind::Mobile, ContactRole::Emergency(Relation::Parent)),
    ];
    let mut evidence = Vec::new();
    for i in 0..rng.gen_range(10..30) {
        let at = now - Duration::minutes(rng.gen_range(0..180 * 24 * 60));
        let contact = Some(ContactId(id * 10 + rng.gen_range(1..3)));
        let kind = match rng.gen_range(0..100) {
            0..=69 => EvidenceKind::Delivery {
                channel: Channel::Sms,
                class: DeliveryClass::Delivered,
            },
            70..=84 => EvidenceKind::Reply {
                channel: Channel::Sms,
                class: ReplyClass::Acknowledged,
            },
            85..=92 => EvidenceKind::Delivery {
                channel: Channel::Sms,
                class: DeliveryClass::Transient,
            },
            93..=96 => EvidenceKind::LinkClick {
                channel: Channel::Email,
            },
            _ => EvidenceKind::Delivery {
                channel: Channel::Sms,
                class: DeliveryClass::Dead,
            },
        };
        evidence.push(Evidence {
            id: EvidenceId(i),
            contact,
            at,
            source: Source::Provider("bench".into()),
            kind,
        });
    }
    let consents = Consent::grant_all(
        Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap(),
        ConsentSource::Contract,
        "v1",
    );
    let today = now.date_naive();
    let installments: Vec<DueInstallment> = (0..3)
        .map(|k| DueInstallment {
            id: InstallmentId(id * 10 + k),
            due_date: today + Duration::days(rng.gen_range(-20..10) + 30 * k),
            paid: false,
        })
        .collect();
    let sends = (0..rng.gen_range(0..4))
        .map(|k| SendRecord {
            key: NoticeKey {
                installment: installments[0].id,
                step: 3,
                kind: NoticeKind::DueToday,
            },
            rung: k,
            contact: ContactId(id * 10 + 1),
            channel: Channel::Sms,
            at: now - Duration::hours(rng.gen_range(1..72)),
            outcome: Outcome::Delivered,
            conversation: false,
        })
        .collect();
    Borrower {
        contacts,
        evidence,
        consents,
        installments,
        sends,
    }
}

/// With `json`, prints one JSON object (`runs`: threads, decisions, sends, seconds,
/// borrowers per second) instead of the table.
pub fn run(borrowers: u64, threads: usize, seed: u64, json: bool) -> anyhow::Result<()> {
    let now = Utc.with_ymd_and_hms(2024, 6, 15, 6, 0, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = Instant::now();
    let book: Vec<Borrower> = (0..borrowers as i64).map(|i| synth(&mut rng, i, now)).collect();
    let gen = t0.elapsed();
    let evidence: usize = book.iter().map(|b| b.evidence.len()).sum();
    let profile = GateProfile::cn();
    let cadence = Cadence::standard("p");
    let ladder = LadderConfig::default();
    let cfg = HealthConfig::default();
    let zones = [chrono_tz::Asia::Shanghai];
    let plan = |part: &[Borrower]| -> (usize, usize) {
        let (mut decisions, mut sends) = (0, 0);
        for b in part {
            let health = assess_borrower(&b.contacts, &b.evidence, zones[0], now, &cfg);
            let s = Snapshot {
                zones: &zones,
                profile: &profile,
                cadence: &cadence,
                ladder: &ladder,
                contacts: &b.contacts,
                health: &health,
                consents: &b.consents,
                installments: &b.installments,
                sends: &b.sends,
                third_parties: &[],
                preferences: &Default::default(),
                timing: None,
                channels: None,
            };
            let ds = decide(&s, now);
            sends += ds
                .iter()
                .filter(|d| matches!(d.action, reachline_policy::Action::Send { .. }))
                .count();
            decisions += ds.len();
        }
        (decisions, sends)
    };
    if !json {
        println!(
            "{} synthetic borrowers, {} pieces of evidence ({:.1} per borrower), generated in {:.1} s",
            borrowers,
            evidence,
            evidence as f64 / borrowers as f64,
            gen.as_secs_f64()
        );
        println!("| threads | borrowers | decisions | sends | seconds | borrowers/s |");
        println!("|---:|---:|---:|---:|---:|---:|");
    }
    let mut runs = Vec::new();
    for n in [1, threads.max(1)] {
        let t = Instant::now();
        let chunk = book.len().div_ceil(n).max(1);
        let (decisions, sends) = std::thread::scope(|sc| {
            let hs: Vec<_> = book.chunks(chunk).map(|part| sc.spawn(move || plan(part))).collect();
            hs.into_iter()
                .map(|h| h.join().expect("planning thread"))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        let secs = t.elapsed().as_secs_f64();
        if json {
            runs.push(serde_json::json!({
                "threads": n, "decisions": decisions, "sends": sends, "seconds": secs,
                "borrowers_per_second": borrowers as f64 / secs,
            }));
        } else {
            println!(
                "| {n} | {borrowers} | {decisions} | {sends} | {secs:.2} | {:.0} |",
                borrowers as f64 / secs
            );
        }
        if threads <= 1 {
            break;
        }
    }
    if json {
        let out = serde_json::json!({"borrowers": borrowers, "evidence": evidence, "runs": runs});
        println!("{out}");
    }
    Ok(())
}
