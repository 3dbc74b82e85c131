//! The demo's world: the truth the lender cannot see. Built from two exports of the generated
//! book, it knows which borrowers moved to a new number (and when the old one died), which of
//! the dead numbers were later given to strangers, and it answers for the sandbox SMSC (what
//! each message to each number does), for the sandbox mail server (which mailboxes still work)
//! and for the sandbox carrier lookup. It also decides when borrowers pay, more readily when a
//! notice reached them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use chrono::NaiveDate;
use reachline_channels::smpp::sandbox::DELIVERED_TLV;
use reachline_domain::{PhoneNumber, PhoneParser};
use reachline_intel::NumberIntel;
use reachline_policy::intel::ChangeSince;
use reachline_policy::{NumberStatus, RecycleAnswer};

/// What became of a number the book gave a borrower.
#[derive(Debug, Clone)]
pub struct Move {
    pub borrower: String,
    /// Digits of the E.164 form, as the SMSC sees them.
    pub old: String,
    /// The run day the old number stopped working.
    pub dies: u32,
    /// The run day it was given to someone else, if it was.
    pub recycled: Option<u32>,
}

#[derive(Default)]
struct Tally {
    /// Run day each borrower was last reached, by external id.
    reached: HashMap<String, u32>,
    to_stranger: u64,
    to_dead: u64,
    /// Emails to a borrower's working mailbox, and to one they abandoned (refused).
    emails_taken: u64,
    emails_bounced: u64,
}

/// The world, shared by the sandbox's script, the carrier sandbox and the demo loop.
pub struct World {
    start: NaiveDate,
    /// Borrower of each number (digits) in the first export.
    owner: HashMap<String, String>,
    /// Borrower of each email address (lower case) in either export.
    mailboxes: HashMap<String, String>,
    moves: HashMap<String, Move>,
    day: std::sync::atomic::AtomicU32,
    tally: Mutex<Tally>,
}

fn digits(n: &PhoneNumber) -> String {
    n.e164().trim_start_matches('+').to_string()
}

/// A stable hash of a text, for the world's deterministic choices.
pub fn stable(s: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl World {
    /// Reads the two exports' `contacts.csv`: a borrower whose mobile differs moved.
    pub fn from_exports(
        first: &Path,
        second: &Path,
        phones: &PhoneParser,
        start: NaiveDate,
        learn_day: u32,
    ) -> anyhow::Result<Arc<Self>> {
        let mut mailboxes = HashMap::new();
        let mut read = |dir: &Path| -> anyhow::Result<Vec<(String, String, String)>> {
            let path = dir.join("contacts.csv");
            let mut r = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut out = Vec::new();
            for row in r.records() {
                let row = row?;
                let (b, slot, kind, value) = (&row[0], &row[1], &row[2], &row[5]);
                match kind {
                    "mobile" => out.push((b.to_string(), slot.to_string(), value.to_string())),
                    "email" => {
                        mailboxes.insert(value.trim().to_lowercase(), b.to_string());
                    }
                    _ => {}
                }
            }
            Ok(out)
        };
        let parse = |v: &str| phones.parse(v).ok().map(|n| digits(&n));
        let before = read(first)?;
        let after: HashMap<(String, String), String> = read(second)?.into_iter().map(|(b, s, v)| ((b, s), v)).collect();
        let mut owner = HashMap::new();
        let mut moves = HashMap::new();
        for (b, slot, value) in before {
            let Some(d) = parse(&value) else { continue };
            owner.insert(d.clone(), b.clone());
            if slot != "mobile" {
                continue;
            }
            if after.get(&(b.clone(), slot)).is_some_and(|v| v != &value) {
                let h = stable(&b, 7);
                // The old number dies some days before the lender's next export says so; half
                // of the dead numbers go to a stranger three to five weeks later.
                let dies = 2 + (h % u64::from(learn_day.saturating_sub(6).max(1))) as u32;
                let recycled = (h >> 20) % 2 == 0;
                moves.insert(
                    d.clone(),
                    Move {
                        borrower: b,
                        old: d,
                        dies,
                        recycled: recycled.then_some(dies + 21 + ((h >> 30) % 14) as u32),
                    },
                );
            }
        }
        // The new numbers, once the lender learns them, are their borrowers' too.
        for ((b, _), v) in after {
            if let Some(d) = parse(&v) {
                owner.entry(d).or_insert(b);
            }
        }
        Ok(Arc::new(World {
            start,
            owner,
            mailboxes,
            moves,
            day: Default::default(),
            tally: Default::default(),
        }))
    }

    pub fn set_day(&self, day: u32) {
        self.day.store(day, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn day(&self) -> u32 {
        self.day.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn moves(&self) -> impl Iterator<Item = &Move> {
        self.moves.values()
    }

    /// Who holds a number today.
    fn holder(&self, number: &str, day: u32) -> Holder<'_> {
        match self.moves.get(number) {
            Some(m) if m.recycled.is_some_and(|r| day >= r) => Holder::Stranger,
            Some(m) if day >= m.dies => Holder::Nobody,
            _ => match self.owner.get(number) {
                Some(b) => Holder::Borrower(b),
                // A number the lender learnt later (the new one): its borrower's.
                None => Holder::New,
            },
        }
    }

    /// The sandbox SMSC's behaviour digit for a message to `number` now, and the tally of who
    /// it reached.
    pub fn script(&self, number: &str) -> u8 {
        let day = self.day();
        let holder = self.holder(number, day);
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        match holder {
            Holder::Nobody => {
                t.to_dead += 1;
                1
            }
            Holder::Stranger => {
                t.to_stranger += 1;
                DELIVERED_TLV
            }
            Holder::Borrower(b) => {
                t.reached.insert(b.to_string(), day);
                // Now and then a network hiccup.
                if stable(number, u64::from(day)) % 50 == 0 {
                    3
                } else {
                    DELIVERED_TLV
                }
            }
            Holder::New => DELIVERED_TLV,
        }
    }

    /// The sandbox mail server's answer to a message for `address` now: one borrower in ten has
    /// abandoned their mailbox (`550 5.1.1`, a bounce at once); the others take it, and six in
    /// ten of those read it within the day (reached), the rest leave it unread.
    pub fn script_email(&self, address: &str) -> Option<String> {
        let address = address.to_lowercase();
        let borrower = self.mailboxes.get(&address)?;
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if stable(&address, 13) % 10 == 0 {
            t.emails_bounced += 1;
            return Some("550 5.1.1 mailbox unavailable".into());
        }
        t.emails_taken += 1;
        let day = self.day();
        if stable(&address, 17 + u64::from(day)) % 10 < 6 {
            t.reached.insert(borrower.clone(), day);
        }
        None
    }

    /// Emails the borrowers' mail servers took, and refused (abandoned mailboxes).
    pub fn emails(&self) -> (u64, u64) {
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        (t.emails_taken, t.emails_bounced)
    }

    /// Whether the borrower was reached in the last `within` days.
    pub fn reached(&self, borrower: &str, within: u32) -> bool {
        let day = self.day();
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.reached
            .get(borrower)
            .is_some_and(|d| day.saturating_sub(*d) <= within)
    }

    /// Messages (parts) that reached a stranger, and that went to a dead number.
    pub fn misdirected(&self) -> (u64, u64) {
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        (t.to_stranger, t.to_dead)
    }

    pub fn date(&self, day: u32) -> NaiveDate {
        self.start + chrono::Duration::days(i64::from(day))
    }

    fn day_of(&self, date: NaiveDate) -> u32 {
        (date - self.start).num_days().max(0) as u32
    }
}

enum Holder<'a> {
    Borrower(&'a str),
    New,
    Nobody,
    Stranger,
}

/// The carrier lookup sandbox: answers from the world.
pub struct WorldIntel(pub Arc<World>);

#[async_trait]
impl NumberIntel for WorldIntel {
    fn name(&self) -> &str {
        "carrier-sandbox"
    }

    async fn status(&self, number: &PhoneNumber) -> reachline_intel::Result<NumberStatus> {
        let w = &self.0;
        Ok(match w.holder(&digits(number), w.day()) {
            Holder::Nobody => NumberStatus::Cancelled,
            _ => NumberStatus::Normal,
        })
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<RecycleAnswer> {
        let w = &self.0;
        let day = w.day();
        Ok(match w.moves.get(&digits(number)) {
            Some(m) if day >= m.dies && m.dies >= w.day_of(since) => RecycleAnswer::Yes,
            _ => RecycleAnswer::No,
        })
    }

    async fn sim_swap_since(&self, _: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        Ok(ChangeSince {
            since,
            changed: false,
            on: None,
        })
    }

    async fn ported_since(&self, _: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        Ok(ChangeSince {
            since,
            changed: false,
            on: None,
        })
    }
}
