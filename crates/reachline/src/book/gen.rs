//! `reachline gen-book`: a deterministic synthetic loan book. The same seed, size, as-of date
//! and revision always give the same bytes.
//!
//! Each borrower draws from its own generator, seeded from (seed, borrower number), so a
//! revision can change a few borrowers' numbers while every other byte stays the same — which is
//! what a lender's next monthly export looks like.
//!
//! The numbers are random draws from real mobile prefixes and may belong to real people: never
//! point a real SMS gateway at a generated book. Emails use the reserved `example.*` domains.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{Days, Months, NaiveDate, TimeZone, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reachline_domain::national_id::cn_check_char;

use super::{BorrowerRow, ConsentRow, ContactRow, Format, InstallmentRow, LoanRow, Text};

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub borrowers: u64,
    pub seed: u64,
    /// The day the book is "exported": installments due before it are paid, late or overdue.
    pub as_of: NaiveDate,
    /// 0 for the first export; each later revision gives about 3% of borrowers a new primary
    /// number (a number change the lender learnt of), cumulatively.
    pub revision: u32,
    pub format: Format,
}

/// Rows written, per file.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GenCounts {
    pub borrowers: u64,
    pub contacts: u64,
    pub loans: u64,
    pub installments: u64,
    pub consents: u64,
}

impl GenCounts {
    pub fn total(&self) -> u64 {
        self.borrowers + self.contacts + self.loans + self.installments + self.consents
    }
}

// China Mobile, China Unicom, China Telecom and China Broadnet mobile prefixes. The carrier
// tells nothing after porting; the spread only makes the book look like a real one.
const CN_PREFIXES: &[&str] = &[
    "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158", "159", "178", "182", "183",
    "184", "187", "188", "195", "198", // China Mobile
    "130", "131", "132", "145", "155", "156", "166", "175", "176", "185", "186", "196", // China Unicom
    "133", "153", "173", "177", "180", "181", "189", "190", "191", "193", "199", // China Telecom
    "192", // China Broadnet
];
const US_AREA_CODES: &[&str] = &[
    "201", "202", "212", "213", "305", "312", "415", "512", "617", "646", "713", "718",
];
const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林",
    "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾", "肖", "田", "董", "袁", "潘", "于",
    "蒋", "蔡",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "秀", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "霞",
    "平", "刚", "桂", "英", "华", "玉", "文", "辉", "建", "国", "红", "丹", "萍", "鹏", "宇", "浩", "凯", "婷", "雪",
    "琳", "晨",
];
const FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Daniel",
    "Karen",
    "Wei",
    "Mei",
    "Kevin",
    "Grace",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Lee",
    "Chen",
    "Wong",
    "Liu",
    "Nguyen",
    "Kim",
];
const REGIONS: &[&str] = &[
    "110101", "110105", "310101", "310115", "440106", "440304", "510104", "330106", "420102", "320102",
];
const MAIL_DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];
const RELATIONS: &[&str] = &[
    "spouse",
    "parent",
    "child",
    "sibling",
    "relative",
    "friend",
    "colleague",
];
/// Products: code, months, monthly rate in basis points.
const PRODUCTS: &[(&str, u32, i64)] = &[
    ("cash-3m", 3, 150),
    ("consumer-6m", 6, 120),
    ("consumer-12m", 12, 100),
    ("auto-24m", 24, 60),
];

/// One output file, in either of the book's formats.
enum Sink {
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Jsonl(BufWriter<File>),
}

impl Sink {
    fn open(dir: &Path, stem: &str, format: Format) -> anyhow::Result<Self> {
        let f = BufWriter::with_capacity(
            1 << 20,
            File::create(dir.join(format!("{stem}.{}", format.extension())))?,
        );
        Ok(match format {
            Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(f))),
            Format::JsonLines => Sink::Jsonl(f),
        })
    }

    fn serialize<T: serde::Serialize>(&mut self, row: T) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w) => w.serialize(row)?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, &row)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let mut f = match self {
            Sink::Csv(w) => w.into_inner().map_err(|e| anyhow::anyhow!("{}", e.error()))?,
            Sink::Jsonl(w) => w,
        };
        f.flush()?;
        f.into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?
            .sync_all()?;
        Ok(())
    }
}

struct Writers {
    borrowers: Sink,
    contacts: Sink,
    loans: Sink,
    installments: Sink,
    consents: Sink,
}

/// Writes the book's five CSV files into `dir` (created if missing); `progress` gets the
/// number of borrowers written so far.
pub fn generate(dir: &Path, opts: &GenOptions, progress: &dyn Fn(u64)) -> anyhow::Result<GenCounts> {
    std::fs::create_dir_all(dir)?;
    let f = opts.format;
    let mut w = Writers {
        borrowers: Sink::open(dir, "borrowers", f)?,
        contacts: Sink::open(dir, "contacts", f)?,
        loans: Sink::open(dir, "loans", f)?,
        installments: Sink::open(dir, "installments", f)?,
        consents: Sink::open(dir, "consents", f)?,
    };
    let mut counts = GenCounts::default();
    for i in 0..opts.borrowers {
        one_borrower(&mut w, &mut counts, opts, i)?;
        if i % 4096 == 0 {
            progress(i);
        }
    }
    progress(opts.borrowers);
    for sink in [w.borrowers, w.contacts, w.loans, w.installments, w.consents] {
        sink.finish()?;
    }
    Ok(counts)
}

fn rng_for(seed: u64, i: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(stream);
    r
}

fn cn_mobile(r: &mut impl Rng) -> String {
    format!(
        "{}{:08}",
        CN_PREFIXES.choose(r).expect("non-empty"),
        r.gen_range(0..100_000_000u32)
    )
}

fn us_number(r: &mut impl Rng) -> String {
    // Exchange codes 200-999 except N11 service codes; lines 0000-9999.
    let exchange = loop {
        let e = r.gen_range(200..1000u32);
        if e % 100 != 11 {
            break e;
        }
    };
    format!(
        "+1{}{exchange}{:04}",
        US_AREA_CODES.choose(r).expect("non-empty"),
        r.gen_range(0..10_000u32)
    )
}

fn cn_name(r: &mut impl Rng) -> String {
    let mut n = SURNAMES.choose(r).expect("non-empty").to_string();
    for _ in 0..r.gen_range(1..=2) {
        n.push_str(GIVEN.choose(r).expect("non-empty"));
    }
    n
}

fn national_id(r: &mut impl Rng) -> String {
    let birth = NaiveDate::from_ymd_opt(1960, 1, 1).expect("valid date") + Days::new(r.gen_range(0..16_000));
    let first17 = format!(
        "{}{}{:03}",
        REGIONS.choose(r).expect("non-empty"),
        birth.format("%Y%m%d"),
        r.gen_range(0..1000u32)
    );
    let check = cn_check_char(first17.as_bytes());
    format!("{first17}{check}")
}

fn rfc3339(d: NaiveDate, hour: u32, minute: u32) -> String {
    // 08:00 in China is 00:00 UTC: write times in UTC, as an export from a core system would.
    let t = Utc.from_utc_datetime(&d.and_hms_opt(hour, minute, 0).expect("valid time"));
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn one_borrower(w: &mut Writers, counts: &mut GenCounts, opts: &GenOptions, i: u64) -> anyhow::Result<()> {
    let r = &mut rng_for(opts.seed, i, 0);
    let id = format!("B{i:08}");
    let english = r.gen_bool(0.15);
    let abroad = english && r.gen_bool(0.5);
    let (name, email_local) = if english {
        let (f, l) = (FIRST.choose(r).expect("non-empty"), LAST.choose(r).expect("non-empty"));
        (
            format!("{f} {l}"),
            format!("{}.{}{}", f.to_lowercase(), l.to_lowercase(), r.gen_range(1..100)),
        )
    } else {
        (cn_name(r), format!("u{}", r.gen_range(10_000_000..99_999_999u32)))
    };
    let nid = if abroad { String::new() } else { national_id(r) };
    w.borrowers.serialize(BorrowerRow {
        external_id: Text::from(id.clone()),
        name: name.into(),
        national_id_scheme: if nid.is_empty() { "" } else { "cn_resident" }.into(),
        national_id: Text::from(nid),
        locale: if english { "en" } else { "zh-CN" }.into(),
        time_zone: if abroad { "America/New_York" } else { "Asia/Shanghai" }.into(),
        jurisdiction: if abroad { "us" } else { "cn" }.into(),
    })?;
    counts.borrowers += 1;

    // Loans first (in memory), so contacts can be dated from the first disbursement.
    let n_loans: u64 = *[1, 1, 1, 2, 2, 3].choose(r).expect("non-empty");
    let first_disbursed = opts.as_of - Days::new(r.gen_range(30..720));
    let reliability: f64 = *[0.97, 0.9, 0.75, 0.5].choose(r).expect("non-empty");

    let number = |r: &mut ChaCha8Rng| if abroad { us_number(r) } else { cn_mobile(r) };
    let bound = first_disbursed - Days::new(r.gen_range(0..400));
    let mut primary = number(r);
    let mut primary_since = bound;
    let mut changed = false;
    // Revisions: a few borrowers changed number since the last export. The lender learnt the
    // new number shortly before that export and has not verified it.
    for rev in 1..=opts.revision {
        let rr = &mut rng_for(opts.seed, i, u64::from(rev));
        if rr.gen_bool(0.03) {
            primary = if abroad { us_number(rr) } else { cn_mobile(rr) };
            let months_before = u64::from(opts.revision - rev) * 30;
            primary_since = (opts.as_of - Days::new(months_before + rr.gen_range(1..28))).max(bound);
            changed = true;
        }
    }
    let verified = if r.gen_bool(0.5) {
        rfc3339(bound, 2, 15)
    } else {
        String::new()
    };
    let mut contact = |slot: &str,
                       kind: &str,
                       role: &str,
                       relation: &str,
                       value: String,
                       holder: String,
                       since: NaiveDate,
                       verified_at: String| {
        counts.contacts += 1;
        w.contacts.serialize(ContactRow {
            borrower_id: Text::from(id.clone()),
            slot: slot.into(),
            kind: kind.into(),
            role: role.into(),
            relation: relation.into(),
            value: value.into(),
            holder_name: Text::from(holder),
            bound_since: Text::from(since.to_string()),
            verified_at: verified_at.into(),
        })
    };
    let verified = if changed { String::new() } else { verified };
    contact(
        "mobile",
        "mobile",
        "primary",
        "",
        primary,
        String::new(),
        primary_since,
        verified,
    )?;
    if r.gen_bool(0.6) {
        let email = format!("{email_local}@{}", MAIL_DOMAINS.choose(r).expect("non-empty"));
        contact(
            "email",
            "email",
            "primary",
            "",
            email,
            String::new(),
            bound,
            String::new(),
        )?;
    }
    if r.gen_bool(0.2) {
        let n = number(r);
        contact(
            "backup1",
            "mobile",
            "backup",
            "",
            n,
            String::new(),
            bound,
            String::new(),
        )?;
    }
    if r.gen_bool(0.15) {
        let im = format!("wechat:wxid_{:010}", r.gen_range(0..10_000_000_000u64));
        contact(
            "wechat",
            "im_account",
            "primary",
            "",
            im,
            String::new(),
            bound,
            String::new(),
        )?;
    }
    let emergencies = if r.gen_bool(0.7) {
        if r.gen_bool(0.3) {
            2
        } else {
            1
        }
    } else {
        0
    };
    for k in 1..=emergencies {
        let n = number(r);
        let holder = if english {
            format!(
                "{} {}",
                FIRST.choose(r).expect("non-empty"),
                LAST.choose(r).expect("non-empty")
            )
        } else {
            cn_name(r)
        };
        let rel = RELATIONS.choose(r).expect("non-empty");
        contact(
            &format!("emergency{k}"),
            "mobile",
            "emergency",
            rel,
            n,
            holder,
            bound,
            String::new(),
        )?;
    }

    for l in 0..n_loans {
        let loan_id = format!("L{i:08}-{}", l + 1);
        let (product, months, rate_bp) = *PRODUCTS.choose(r).expect("non-empty");
        let disbursed = first_disbursed + Days::new(l * r.gen_range(20..200));
        let principal: i64 = r.gen_range(10..500) * 10_000; // 1,000 – 50,000 CNY in fen
        w.loans.serialize(LoanRow {
            external_id: Text::from(loan_id.clone()),
            borrower_id: Text::from(id.clone()),
            product: product.into(),
            principal: Text::from(money(principal)),
            currency: if abroad { "USD" } else { "CNY" }.into(),
            disbursed_on: Text::from(disbursed.to_string()),
        })?;
        counts.loans += 1;
        let total = principal + principal * rate_bp * i64::from(months) / 10_000;
        let each = total / i64::from(months);
        for s in 1..=months {
            let due = disbursed.checked_add_months(Months::new(s)).expect("date in range");
            let amount = if s == months {
                total - each * i64::from(months - 1)
            } else {
                each
            };
            let (paid, paid_at) = if due < opts.as_of {
                let roll: f64 = r.gen();
                if roll < reliability {
                    (
                        amount,
                        rfc3339(
                            due - Days::new(r.gen_range(0..4)),
                            r.gen_range(1..14),
                            r.gen_range(0..60),
                        ),
                    )
                } else if roll < reliability + (1.0 - reliability) * 0.5 && due + Days::new(10) < opts.as_of {
                    (
                        amount,
                        rfc3339(
                            due + Days::new(r.gen_range(1..10)),
                            r.gen_range(1..14),
                            r.gen_range(0..60),
                        ),
                    )
                } else if r.gen_bool(0.2) {
                    (amount / 2, rfc3339(due, 3, 0))
                } else {
                    (0, String::new())
                }
            } else {
                (0, String::new())
            };
            w.installments.serialize(InstallmentRow {
                loan_id: Text::from(loan_id.clone()),
                seq: Text::from(s.to_string()),
                due_date: Text::from(due.to_string()),
                amount_due: Text::from(money(amount)),
                amount_paid: Text::from(if paid == 0 { String::new() } else { money(paid) }),
                paid_at: paid_at.into(),
            })?;
            counts.installments += 1;
        }
    }

    let signed = rfc3339(first_disbursed, 2, 0);
    let mut consent = |purpose: &str, channel: &str, state: &str, at: String, source: &str| {
        counts.consents += 1;
        w.consents.serialize(ConsentRow {
            borrower_id: Text::from(id.clone()),
            purpose: purpose.into(),
            channel: channel.into(),
            state: state.into(),
            at: at.into(),
            source: source.into(),
            text_version: "2025-01".into(),
        })
    };
    consent("service", "", "granted", signed.clone(), "contract")?;
    consent("verification", "", "granted", signed.clone(), "contract")?;
    if r.gen_bool(0.9) {
        consent("collection", "", "granted", signed.clone(), "contract")?;
    }
    if r.gen_bool(0.6) {
        consent("third_party", "", "granted", signed, "contract")?;
    }
    if r.gen_bool(0.03) {
        let day = opts.as_of - Days::new(r.gen_range(1..30));
        consent("service", "sms", "withdrawn", rfc3339(day, 12, 0), "reply")?;
    }
    Ok(())
}

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rev: u32) -> GenOptions {
        GenOptions {
            borrowers: 300,
            seed: 7,
            as_of: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            revision: rev,
            format: Format::Csv,
        }
    }

    #[test]
    fn same_inputs_same_bytes_and_revisions_change_few_numbers() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let ca = generate(a.path(), &opts(0), &|_| {}).unwrap();
        generate(b.path(), &opts(0), &|_| {}).unwrap();
        let cc = generate(c.path(), &opts(1), &|_| {}).unwrap();
        for f in ["borrowers", "contacts", "loans", "installments", "consents"] {
            let x = std::fs::read(a.path().join(format!("{f}.csv"))).unwrap();
            assert_eq!(x, std::fs::read(b.path().join(format!("{f}.csv"))).unwrap(), "{f}");
            if f != "contacts" {
                assert_eq!(
                    x,
                    std::fs::read(c.path().join(format!("{f}.csv"))).unwrap(),
                    "{f} must not change with a revision"
                );
            }
        }
        assert_eq!(ca.contacts, cc.contacts);
        let lines = |d: &Path| {
            std::fs::read_to_string(d.join("contacts.csv"))
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let changed = lines(a.path())
            .iter()
            .zip(lines(c.path()))
            .filter(|(x, y)| *x != y)
            .count();
        assert!((1..=30).contains(&changed), "{changed} of 300 borrowers changed number");
        assert!(ca.borrowers == 300 && ca.loans >= 300 && ca.installments > ca.loans * 3);
    }
}
