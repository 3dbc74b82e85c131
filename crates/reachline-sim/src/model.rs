//! The population model, the three strategies and the metrics.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reachline_domain::{
    Channel, Consent, ConsentSource, ContactId, ContactKind, ContactRole, DeliveryClass, InstallmentId, Jurisdiction,
    Relation,
};
use reachline_policy::{
    decide, Action, Cadence, ChannelChoice, ChannelModel, ContactFacts, DueInstallment, Evidence, EvidenceId,
    EvidenceKind, GateProfile, HealthConfig, HealthReplay, HealthState, HourOfWeek, LadderConfig, Need, NoticeKey,
    NoticeKind, NumberStatus, Outcome, RecycleAnswer, ReplyClass, SegmentPrior, SelfReport, SendRecord, SendTimeModel,
    Snapshot, Source, ThirdPartyRecord, Timing, TimingConfig,
};
use serde::Serialize;

use crate::Scenario;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Baseline,
    Multichannel,
    Reachline,
}

reachline_domain::named_enum!(Strategy, "strategy", {
    Baseline => "baseline",
    Multichannel => "multichannel",
    Reachline => "reachline",
});

/// The metrics of the simulator design, for one strategy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub installments_due: u64,
    pub paid_late_or_not: u64,
    pub missed_number_change: u64,
    pub notices_sent: u64,
    pub misdirected: u64,
    pub number_changes: u64,
    pub detect_days: Vec<u32>,
    pub borrowers: u64,
    pub covered_at_end: u64,
    pub unreachable_exposure_minor: i64,
    pub violations: u64,
    /// SMS delivered to a number the borrower holds, and of those, read by the borrower.
    pub delivered_own: u64,
    pub read_own: u64,
    /// The same counts week by week of the run (installments by their due date, notices by
    /// the day they went): the metrics over time.
    pub weekly: Vec<Period>,
}

/// One week's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Period {
    pub installments_due: u64,
    pub paid_late_or_not: u64,
    pub missed_number_change: u64,
    pub notices_sent: u64,
    pub misdirected: u64,
    pub delivered_own: u64,
    pub read_own: u64,
}

impl Period {
    pub fn overdue_rate(&self) -> f64 {
        ratio(self.paid_late_or_not, self.installments_due)
    }
    pub fn missed_rate(&self) -> f64 {
        ratio(self.missed_number_change, self.installments_due)
    }
    pub fn misdirected_per_10k(&self) -> f64 {
        ratio(self.misdirected, self.notices_sent) * 10_000.0
    }
    pub fn read_share(&self) -> f64 {
        ratio(self.read_own, self.delivered_own)
    }
}

impl Period {
    fn add(&mut self, o: &Period) {
        self.installments_due += o.installments_due;
        self.paid_late_or_not += o.paid_late_or_not;
        self.missed_number_change += o.missed_number_change;
        self.notices_sent += o.notices_sent;
        self.misdirected += o.misdirected;
        self.delivered_own += o.delivered_own;
        self.read_own += o.read_own;
    }
}

impl Metrics {
    /// Adds the counts of another part of the same run (`borrowers` is the run's, set once).
    fn add(&mut self, o: Metrics) {
        self.installments_due += o.installments_due;
        self.paid_late_or_not += o.paid_late_or_not;
        self.missed_number_change += o.missed_number_change;
        self.notices_sent += o.notices_sent;
        self.misdirected += o.misdirected;
        self.number_changes += o.number_changes;
        self.detect_days.extend(o.detect_days);
        self.covered_at_end += o.covered_at_end;
        self.unreachable_exposure_minor += o.unreachable_exposure_minor;
        self.violations += o.violations;
        self.delivered_own += o.delivered_own;
        self.read_own += o.read_own;
        if self.weekly.len() < o.weekly.len() {
            self.weekly.resize(o.weekly.len(), Period::default());
        }
        for (a, b) in self.weekly.iter_mut().zip(&o.weekly) {
            a.add(b);
        }
    }

    /// The week of the run `day` falls in.
    fn week(&mut self, day: u32) -> &mut Period {
        let w = (day / 7) as usize;
        if self.weekly.len() <= w {
            self.weekly.resize(w + 1, Period::default());
        }
        &mut self.weekly[w]
    }

    /// Of the SMS delivered to a number the borrower holds, the share they read (the hour of
    /// sending moves it: each borrower reads likelier at their active hours).
    pub fn read_share(&self) -> f64 {
        ratio(self.read_own, self.delivered_own)
    }
    pub fn overdue_rate(&self) -> f64 {
        ratio(self.paid_late_or_not, self.installments_due)
    }
    pub fn missed_rate(&self) -> f64 {
        ratio(self.missed_number_change, self.installments_due)
    }
    pub fn misdirected_per_10k(&self) -> f64 {
        ratio(self.misdirected * 10_000, self.notices_sent)
    }
    pub fn coverage(&self) -> f64 {
        ratio(self.covered_at_end, self.borrowers)
    }
    pub fn notices_per_installment(&self) -> f64 {
        ratio(self.notices_sent, self.installments_due)
    }
    /// Median days from a number's abandonment to the lender knowing (dead, reassigned or the
    /// new number), over the changes it came to know of; `None` if it never did.
    pub fn median_detect_days(&self) -> Option<f64> {
        let mut d = self.detect_days.clone();
        if d.is_empty() {
            return None;
        }
        d.sort();
        Some(f64::from(d[d.len() / 2]))
    }
    /// Share of number changes the lender came to know of.
    pub fn detected_share(&self) -> f64 {
        ratio(self.detect_days.len() as u64, self.number_changes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One run's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub borrowers: u64,
    pub days: u32,
    pub seed: u64,
    pub results: Vec<(Strategy, Metrics)>,
}

// ---------------------------------------------------------------- hidden truth

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Borrower,
    Nobody,
    Stranger,
}

#[derive(Debug, Clone)]
struct Number {
    holder: Holder,
    abandoned_on: Option<u32>,
    reassign_on: Option<u32>,
}

/// What only the simulator knows.
struct Truth {
    numbers: Vec<Number>,
    current: usize,
    email_alive: bool,
    push_opted: bool,
    on_time: f64,
    /// How likely a message is read, relative to the borrower's average, by local hour.
    activity: [f64; 24],
}

// ---------------------------------------------------------------- the lender's view

struct Inst {
    id: InstallmentId,
    due_day: u32,
    paid_day: Option<u32>,
    pre_due_reads: u32,
    pre_due_to_stale: bool,
    settled_on_time: Option<bool>,
}

/// What the lender knows: contacts, evidence, sends, consents.
struct View {
    contacts: Vec<ContactFacts>,
    /// For each contact: the number it names (mobiles), else `None`.
    number_of: Vec<Option<usize>>,
    evidence: Vec<Evidence>,
    sends: Vec<SendRecord>,
    third: Vec<ThirdPartyRecord>,
    pending: Vec<(u32, ContactId, Need)>,
    asked: Vec<(ContactId, u8, u32)>,
    last_check: Option<u32>,
    next_id: u64,
    /// The lender's send-time estimate for this borrower, from the engagement it saw.
    timing: SendTimeModel,
    timing_seed: u64,
    /// The lender's engagement counts per channel for this borrower.
    channels: ChannelModel,
    /// The borrower's contact health, kept between assessments (the days already past are
    /// replayed once).
    health: HealthReplay,
    /// When the lender looks at this borrower next (the reachline strategy): the earliest
    /// moment a decision named, the cadence's next step, a lookup's answer — as the engine
    /// wakes a borrower. Quiet days in between are not looked at.
    wake: DateTime<Utc>,
}

struct Borrower {
    truth: Truth,
    view: View,
    insts: Vec<Inst>,
    /// (abandonment day, known day) per number change.
    changes: Vec<(u32, Option<u32>)>,
}

struct World<'a> {
    sc: &'a Scenario,
    zone: Tz,
    start: NaiveDate,
    profile: GateProfile,
    cadence: Cadence,
    ladder: LadderConfig,
    health: HealthConfig,
    consents: Vec<Consent>,
    /// The send-time prior of the first borrowers, before the lender has a history.
    prior: SegmentPrior,
    /// The engine's defaults: whether the channel model opens notices, each message channel's
    /// prior and cost.
    channel_priors: TimingConfig,
    /// Each whole hour of the run's days (and two after) as an instant, worked out once: the
    /// run asks for the same few local hours of each day millions of times, and a time-zone
    /// conversion is a search through the zone's transitions.
    hours: Vec<DateTime<Utc>>,
}

impl World<'_> {
    /// The calendar date of day `day` of the run.
    fn date(&self, day: u32) -> NaiveDate {
        self.start + Duration::days(i64::from(day))
    }

    fn at(&self, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        let i = day as usize * 24 + hour as usize;
        if minute == 0 && hour < 24 && i < self.hours.len() {
            return self.hours[i];
        }
        self.convert(day, hour, minute)
    }

    /// The instant of a local day, hour and minute of the run (the first, if it occurs twice;
    /// the day's UTC midnight, if the zone skips it).
    fn convert(&self, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        let d = self.start + Duration::days(i64::from(day));
        self.zone
            .from_local_datetime(&d.and_hms_opt(hour, minute, 0).unwrap_or_default())
            .earliest()
            .map_or_else(
                || Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()),
                |t| t.with_timezone(&Utc),
            )
    }
}

fn contact(
    id: i64,
    kind: ContactKind,
    role: ContactRole,
    since: NaiveDate,
    verified: Option<DateTime<Utc>>,
) -> ContactFacts {
    ContactFacts {
        id: ContactId(id),
        kind,
        role,
        bound_since: since,
        verified_at: verified,
        retired: false,
    }
}

/// A borrower's hour-by-hour reading, relative to their average over the waking day (08:00 to
/// 22:00): a bump around a peak hour (evenings likeliest, then midday, then mornings), `ratio`
/// times the trough at its top, scaled so the waking day averages 1.
fn activity(ratio: f64, rng: &mut ChaCha8Rng) -> [f64; 24] {
    let peak: f64 = match rng.gen_range(0..10) {
        0..=3 => rng.gen_range(18..22),
        4..=6 => rng.gen_range(11..15),
        _ => rng.gen_range(8..11),
    } as f64;
    let ratio = ratio.max(1.0);
    let mut a = [0.0; 24];
    for (h, v) in a.iter_mut().enumerate() {
        let d = (h as f64 - peak).abs().min(24.0 - (h as f64 - peak).abs());
        *v = 1.0 + (ratio - 1.0) * (-(d * d) / 8.0).exp();
    }
    let mean = a[8..22].iter().sum::<f64>() / 14.0;
    a.map(|v| v / mean)
}

fn new_borrower(w: &World, rng: &mut ChaCha8Rng, days: u32) -> Borrower {
    let sc = w.sc;
    let since = w.start - Duration::days(rng.gen_range(30..720));
    let verified = Some(w.at(0, 0, 0) - Duration::days(rng.gen_range(30..400)));
    let mut contacts = vec![contact(1, ContactKind::Mobile, ContactRole::Primary, since, verified)];
    let mut number_of = vec![Some(0)];
    let email = rng.gen_bool(sc.has_email);
    if email {
        contacts.push(contact(2, ContactKind::Email, ContactRole::Primary, since, None));
        number_of.push(None);
    }
    let push = rng.gen_bool(sc.push_opted_in);
    if push {
        contacts.push(contact(3, ContactKind::PushToken, ContactRole::Primary, since, None));
        number_of.push(None);
    }
    contacts.push(contact(
        9,
        ContactKind::Mobile,
        ContactRole::Emergency(Relation::Parent),
        since,
        None,
    ));
    number_of.push(None);
    let first_due = rng.gen_range(5..35);
    let insts = (0..)
        .map(|k| first_due + 30 * k)
        .take_while(|d| *d < days)
        .enumerate()
        .map(|(k, d)| Inst {
            id: InstallmentId(k as i64 + 1),
            due_day: d,
            paid_day: None,
            pre_due_reads: 0,
            pre_due_to_stale: false,
            settled_on_time: None,
        })
        .collect();
    Borrower {
        truth: Truth {
            numbers: vec![Number {
                holder: Holder::Borrower,
                abandoned_on: None,
                reassign_on: None,
            }],
            current: 0,
            email_alive: email,
            push_opted: push,
            on_time: (sc.on_time_rate + rng.gen_range(-0.05..0.05)).clamp(0.3, 0.995),
            activity: activity(sc.activity_peak_to_trough, rng),
        },
        view: View {
            health: HealthReplay::new(&contacts, w.zone, &w.health).without_history(),
            wake: w.at(0, 8, 0),
            contacts,
            number_of,
            evidence: Vec::new(),
            sends: Vec::new(),
            third: Vec::new(),
            pending: Vec::new(),
            asked: Vec::new(),
            last_check: None,
            next_id: 1,
            timing: SendTimeModel::default(),
            timing_seed: 0,
            channels: ChannelModel::default(),
        },
        insts,
        changes: Vec::new(),
    }
}

impl View {
    fn add(&mut self, contact: Option<ContactId>, at: DateTime<Utc>, source: Source, kind: EvidenceKind) {
        self.evidence.push(Evidence {
            id: EvidenceId(self.next_id),
            contact,
            at,
            source,
            kind,
        });
        self.next_id += 1;
    }

    fn add_number(&mut self, number: usize, since: NaiveDate, verified: Option<DateTime<Utc>>) -> ContactId {
        let id = ContactId(10 + self.contacts.len() as i64);
        let role = if self
            .contacts
            .iter()
            .any(|c| c.role == ContactRole::Primary && c.kind == ContactKind::Mobile && !c.retired)
        {
            ContactRole::Backup
        } else {
            ContactRole::Primary
        };
        self.contacts
            .push(contact(id.0, ContactKind::Mobile, role, since, verified));
        self.number_of.push(Some(number));
        id
    }

    /// The newest mobile contact the lender has (the "contract number" a simple lender uses).
    fn contract_mobile(&self) -> Option<(ContactId, usize)> {
        self.contacts
            .iter()
            .zip(&self.number_of)
            .rfind(|(c, n)| c.kind == ContactKind::Mobile && !c.role.is_third_party() && n.is_some())
            .map(|(c, n)| (c.id, n.unwrap_or(0)))
    }
}

/// The result of one delivery attempt, in truth and as observed.
struct Delivery {
    class: DeliveryClass,
    reached_borrower: bool,
    misdirected: bool,
    engaged: bool,
    wrong_number_reply: bool,
}

fn deliver(
    sc: &Scenario,
    b: &Borrower,
    rng: &mut ChaCha8Rng,
    contact: ContactId,
    channel: Channel,
    debt: bool,
    hour: u32,
) -> Delivery {
    let (truth, view) = (&b.truth, &b.view);
    let activity = truth.activity[hour as usize % 24];
    let idx = view.contacts.iter().position(|c| c.id == contact).unwrap_or(0);
    let fail = |class| Delivery {
        class,
        reached_borrower: false,
        misdirected: false,
        engaged: false,
        wrong_number_reply: false,
    };
    // Delivered: read with `read_p` (on the borrower's own points, times their activity at
    // that hour), acted on when read.
    let delivered = |rng: &mut ChaCha8Rng, read_p: f64| {
        let read = rng.gen_bool(read_p.clamp(0.0, 1.0));
        Delivery {
            class: DeliveryClass::Delivered,
            reached_borrower: read,
            misdirected: false,
            engaged: read && rng.gen_bool(sc.engage_given_read),
            wrong_number_reply: false,
        }
    };
    let read_and_engage = |rng: &mut ChaCha8Rng, delivered_p: f64, read_p: f64| {
        if !rng.gen_bool(delivered_p.clamp(0.0, 1.0)) {
            return fail(DeliveryClass::Transient);
        }
        delivered(rng, read_p)
    };
    match view.contacts[idx].kind {
        ContactKind::Email => {
            if truth.email_alive {
                read_and_engage(rng, sc.email_delivered, sc.email_opened * activity)
            } else {
                fail(DeliveryClass::Dead)
            }
        }
        ContactKind::PushToken => {
            if truth.push_opted {
                read_and_engage(rng, 1.0, sc.push_opened * activity)
            } else {
                fail(DeliveryClass::Dead)
            }
        }
        ContactKind::Mobile if view.contacts[idx].role.is_third_party() => {
            // The emergency contact: a relative who passes the message on now and then.
            read_and_engage(rng, sc.sms_delivered, 0.3)
        }
        _ => {
            let Some(n) = view.number_of[idx] else {
                return fail(DeliveryClass::Unknown);
            };
            match truth.numbers[n].holder {
                Holder::Nobody => fail(DeliveryClass::Dead),
                Holder::Stranger => {
                    let reply = debt && rng.gen_bool(sc.wrong_number_reply);
                    Delivery {
                        class: DeliveryClass::Delivered,
                        reached_borrower: false,
                        misdirected: debt,
                        engaged: false,
                        wrong_number_reply: reply,
                    }
                }
                Holder::Borrower => {
                    let r: f64 = rng.gen();
                    if r < sc.sms_delivered {
                        delivered(
                            rng,
                            activity * if channel == Channel::Voice { 0.55 } else { sc.sms_read },
                        )
                    } else if r < sc.sms_delivered + sc.sms_transient {
                        fail(DeliveryClass::Transient)
                    } else {
                        fail(DeliveryClass::Unknown)
                    }
                }
            }
        }
    }
}

/// Runs one scenario for each strategy over the same population (same seeds), on every core.
pub fn run(sc: &Scenario, borrowers: u64, days: u32, seed: u64, strategies: &[Strategy]) -> RunReport {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    run_on(sc, borrowers, days, seed, strategies, threads)
}

/// [`run`] on `threads` threads; the result is the same for any number.
pub fn run_on(
    sc: &Scenario,
    borrowers: u64,
    days: u32,
    seed: u64,
    strategies: &[Strategy],
    threads: usize,
) -> RunReport {
    let mut w = world(sc);
    w.hours = (0..(days + 2) * 24).map(|i| w.convert(i / 24, i % 24, 0)).collect();
    let results = strategies
        .iter()
        .map(|s| (*s, run_strategy(&w, *s, borrowers, days, seed, threads.max(1) as u64)))
        .collect();
    RunReport {
        scenario: sc.name.clone(),
        borrowers,
        days,
        seed,
        results,
    }
}

/// The lender's configuration and the calendar of a run.
fn world(sc: &Scenario) -> World<'_> {
    let zone: Tz = sc.zone.parse().unwrap_or(Tz::UTC);
    let jurisdiction = if sc.jurisdiction == "us" {
        Jurisdiction::Us
    } else {
        Jurisdiction::Cn
    };
    let consents = Consent::grant_all(
        DateTime::from_timestamp(1_577_836_800, 0).unwrap_or_default(),
        ConsentSource::Contract,
        "v1",
    );
    World {
        sc,
        zone,
        start: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default(),
        profile: GateProfile::for_jurisdiction(jurisdiction),
        cadence: Cadence::standard("sim"),
        ladder: LadderConfig::default(),
        health: HealthConfig::default(),
        consents,
        prior: SegmentPrior::flat(0.25, 20.0),
        channel_priors: TimingConfig::default(),
        hours: Vec::new(),
    }
}

/// Borrowers simulated between refreshes of the segment prior.
const PRIOR_BLOCK: u64 = 500;

fn run_strategy(w: &World, strategy: Strategy, n: u64, days: u32, seed: u64, threads: u64) -> Metrics {
    let mut m = Metrics {
        borrowers: n,
        ..Metrics::default()
    };
    // The lender's history: what its other borrowers' engagement by hour says, the prior of
    // the next borrower's send-time model (refreshed every `PRIOR_BLOCK` borrowers). The
    // borrowers of one block are independent of each other, so a block is shared out among
    // the cores; the parts are added up in borrower order, so the result is the same on any
    // number of cores.
    let mut segment = SendTimeModel::default();
    let mut start = 0;
    while start < n {
        let prior = if start == 0 {
            w.prior.clone()
        } else {
            SegmentPrior::from_counts(&segment, w.prior.rates[0], w.prior.strength)
        };
        let end = (start + PRIOR_BLOCK).min(n);
        let per = (end - start).div_ceil(threads);
        let parts: Vec<(Metrics, SendTimeModel)> = std::thread::scope(|scope| {
            let prior = &prior;
            let handles: Vec<_> = (start..end)
                .step_by(per as usize)
                .map(|from| {
                    let to = (from + per).min(end);
                    scope.spawn(move || run_borrowers(w, strategy, from..to, days, seed, prior))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (part, timing) in parts {
            m.add(part);
            segment.add(&timing);
        }
        start = end;
    }
    m
}

/// Simulates borrowers `range` under one prior: their metrics and their send-time counts.
fn run_borrowers(
    w: &World,
    strategy: Strategy,
    range: std::ops::Range<u64>,
    days: u32,
    seed: u64,
    prior: &SegmentPrior,
) -> (Metrics, SendTimeModel) {
    let mut m = Metrics::default();
    let mut segment = SendTimeModel::default();
    for i in range {
        // The same truth draws for every strategy (common random numbers), and the strategy's
        // own stream for what its actions cause.
        let mut truth_rng = ChaCha8Rng::seed_from_u64(seed ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut act_rng = ChaCha8Rng::seed_from_u64(seed ^ (i.wrapping_mul(0xD1B5_4A32_D192_ED03)) ^ strategy as u64);
        let mut b = new_borrower(w, &mut truth_rng, days);
        b.view.timing_seed = act_rng.gen();
        for day in 0..days {
            step_day(
                w,
                Lender { strategy, prior },
                &mut b,
                day,
                &mut truth_rng,
                &mut act_rng,
                &mut m,
            );
        }
        segment.add(&b.view.timing);
        finish(w, strategy, &mut b, days, &mut m);
    }
    (m, segment)
}

fn days_past_due(b: &Borrower, day: u32) -> u32 {
    b.insts
        .iter()
        .filter(|i| i.paid_day.is_none() && i.due_day < day)
        .map(|i| day - i.due_day)
        .max()
        .unwrap_or(0)
}

/// The strategy under test, with what the lender has learned from its earlier borrowers.
#[derive(Clone, Copy)]
struct Lender<'p> {
    strategy: Strategy,
    prior: &'p SegmentPrior,
}

fn step_day(
    w: &World,
    lender: Lender,
    b: &mut Borrower,
    day: u32,
    truth_rng: &mut ChaCha8Rng,
    rng: &mut ChaCha8Rng,
    m: &mut Metrics,
) {
    let (sc, strategy) = (w.sc, lender.strategy);
    // 1. The truth moves: numbers abandoned, frozen numbers given to strangers, emails decay.
    for num in b.truth.numbers.iter_mut() {
        // On its day, or the day after for a scenario with no freeze (given up today).
        if num.holder == Holder::Nobody && num.reassign_on.is_some_and(|r| r <= day) {
            num.holder = Holder::Stranger;
        }
    }
    let mut hazard = sc.yearly_abandon_hazard / 365.0;
    if days_past_due(b, day) >= 30 {
        hazard *= sc.abandon_multiplier_30dpd;
    }
    if truth_rng.gen_bool(hazard.min(1.0)) {
        let old = b.truth.current;
        b.truth.numbers[old].holder = Holder::Nobody;
        b.truth.numbers[old].abandoned_on = Some(day);
        b.truth.numbers[old].reassign_on = Some(day + sc.freeze_days);
        b.truth.numbers.push(Number {
            holder: Holder::Borrower,
            abandoned_on: None,
            reassign_on: None,
        });
        b.truth.current = b.truth.numbers.len() - 1;
        m.number_changes += 1;
        let mut known = None;
        if truth_rng.gen_bool(sc.tells_new_number) {
            // The borrower tells the lender (through a verified session).
            let at = w.at(day, 15, 0);
            let old_contact = b
                .view
                .number_of
                .iter()
                .position(|n| *n == Some(old))
                .map(|i| b.view.contacts[i].id);
            let new = b
                .view
                .add_number(b.truth.current, w.start + Duration::days(i64::from(day)), Some(at));
            if let Some(c) = old_contact {
                b.view.add(
                    Some(c),
                    at,
                    Source::Borrower,
                    EvidenceKind::SelfReport {
                        report: SelfReport::ChangedNumber,
                    },
                );
            }
            b.view.add(Some(new), at, Source::Borrower, EvidenceKind::CodeConfirmed);
            b.view.wake = b.view.wake.min(w.at(day, 8, 0));
            known = Some(day);
        }
        b.changes.push((day, known));
    }
    if b.truth.email_alive && truth_rng.gen_bool(sc.yearly_email_decay / 365.0) {
        b.truth.email_alive = false;
    }

    // 2. The lender acts.
    match strategy {
        Strategy::Baseline | Strategy::Multichannel => simple(w, strategy, b, day, rng, m),
        Strategy::Reachline => reachline(w, b, day, lender.prior, rng, m),
    }

    // 3. The borrower pays, or not.
    for k in 0..b.insts.len() {
        let inst = &b.insts[k];
        if inst.paid_day.is_some() || inst.due_day > day {
            continue;
        }
        let pays = if inst.due_day == day {
            let mut late = 1.0 - b.truth.on_time;
            let mut cut = sc.first_reminder_cut;
            for _ in 0..inst.pre_due_reads {
                late *= 1.0 - cut;
                cut *= sc.repeat_factor;
            }
            let on_time = !truth_rng.gen_bool(late.clamp(0.0, 1.0));
            b.insts[k].settled_on_time = Some(on_time);
            on_time
        } else {
            truth_rng.gen_bool(sc.daily_cure.clamp(0.0, 1.0))
        };
        if pays {
            b.insts[k].paid_day = Some(day);
            if strategy == Strategy::Reachline {
                b.view.add(
                    None,
                    w.at(day, 18, 0),
                    Source::CoreBanking,
                    EvidenceKind::Payment { via_contact: false },
                );
                // A payment by other means can start the silence rule's shorter clock.
                let from = b.view.health.review().payment_from;
                if from.is_some_and(|f| f <= w.date(day)) {
                    b.view.wake = b.view.wake.min(w.at(day + 1, 8, 0));
                }
            }
        }
    }
    // 4. Lookups the lender asked for come back.
    let due: Vec<(u32, ContactId, Need)> = b.view.pending.iter().filter(|p| p.0 == day).copied().collect();
    b.view.pending.retain(|p| p.0 != day);
    for (_, c, need) in due {
        answer_lookup(w, b, day, c, need, truth_rng);
        b.view.wake = b.view.wake.min(w.at(day + 1, 8, 0));
    }
}

fn stale(truth: &Truth, view: &View, c: ContactId) -> bool {
    view.contacts
        .iter()
        .position(|x| x.id == c)
        .and_then(|i| view.number_of[i])
        .is_some_and(|n| truth.numbers[n].holder != Holder::Borrower)
}

/// Counts one notice sent on `day`.
fn record(
    b: &mut Borrower,
    day: u32,
    key: NoticeKey,
    contact: ContactId,
    channel: Channel,
    d: &Delivery,
    m: &mut Metrics,
) {
    m.notices_sent += 1;
    m.week(day).notices_sent += 1;
    if d.misdirected {
        m.misdirected += 1;
        m.week(day).misdirected += 1;
    }
    let third_party = b
        .view
        .contacts
        .iter()
        .any(|c| c.id == contact && c.role.is_third_party());
    if channel == Channel::Sms
        && d.class == DeliveryClass::Delivered
        && !d.misdirected
        && !third_party
        && !stale(&b.truth, &b.view, contact)
    {
        m.delivered_own += 1;
        m.read_own += u64::from(d.reached_borrower);
        let p = m.week(day);
        p.delivered_own += 1;
        p.read_own += u64::from(d.reached_borrower);
    }
    if let Some(inst) = b.insts.iter_mut().find(|i| i.id == key.installment) {
        if key.kind == NoticeKind::PreDue || key.kind == NoticeKind::DueToday {
            if d.reached_borrower {
                inst.pre_due_reads += 1;
            }
            if stale(&b.truth, &b.view, contact) {
                inst.pre_due_to_stale = true;
            }
        }
    }
}

/// The local hour today's practice sends at.
const SIMPLE_HOUR: u32 = 10;

fn simple(w: &World, strategy: Strategy, b: &mut Borrower, day: u32, rng: &mut ChaCha8Rng, m: &mut Metrics) {
    let targets: Vec<InstallmentId> = b
        .insts
        .iter()
        .filter(|i| i.paid_day.is_none() && i.due_day == day + 3)
        .map(|i| i.id)
        .collect();
    for id in targets {
        let key = NoticeKey {
            installment: id,
            step: 1,
            kind: NoticeKind::PreDue,
        };
        let mut sends: Vec<(ContactId, Channel)> = Vec::new();
        if let Some((c, _)) = b.view.contract_mobile() {
            sends.push((c, Channel::Sms));
        }
        if strategy == Strategy::Multichannel {
            for c in &b.view.contacts {
                match c.kind {
                    ContactKind::Email => sends.push((c.id, Channel::Email)),
                    ContactKind::PushToken => sends.push((c.id, Channel::Push)),
                    _ => {}
                }
            }
        }
        for (c, ch) in sends {
            let d = deliver(w.sc, b, rng, c, ch, true, SIMPLE_HOUR);
            record(b, day, key, c, ch, &d, m);
        }
    }
}

/// Whether an unpaid installment is near its due date or recently overdue on `day` (a borrower
/// in trouble is looked at daily then, weekly otherwise).
fn active(b: &Borrower, day: u32) -> bool {
    b.insts
        .iter()
        .any(|i| i.paid_day.is_none() && day + 10 >= i.due_day && day <= i.due_day + 30)
}

fn reachline(w: &World, b: &mut Borrower, day: u32, prior: &SegmentPrior, rng: &mut ChaCha8Rng, m: &mut Metrics) {
    // Event-driven: the lender looks at the borrower when a decision, the cadence or an
    // answer named this day; quiet days are skipped.
    let tomorrow = w.at(day + 1, 0, 0);
    if b.view.wake >= tomorrow {
        return;
    }
    // From the start of the contact window (or the moment named, if later): a failure climbs
    // the ladder ten minutes later, a notice deferred to an hour of today goes at that hour; at
    // most six rounds a day.
    let mut now = w.at(day, 8, 0).max(b.view.wake);
    let mut next: Option<DateTime<Utc>> = None;
    let mut trouble = false;
    // Payments come after the lender's turn: the installments are the same in every round.
    let installments: Vec<DueInstallment> = b
        .insts
        .iter()
        .map(|i| DueInstallment {
            id: i.id,
            due_date: w.date(i.due_day),
            paid: i.paid_day.is_some(),
        })
        .collect();
    for _round in 0..6u32 {
        let health = b.view.health.assess(&b.view.contacts, &b.view.evidence, now, &w.health);
        let s = Snapshot {
            zones: &[w.zone],
            profile: &w.profile,
            cadence: &w.cadence,
            ladder: &w.ladder,
            contacts: &b.view.contacts,
            health: &health,
            consents: &w.consents,
            installments: &installments,
            sends: &b.view.sends,
            third_parties: &b.view.third,
            // Simulated borrowers state no preferences: the lender's order and hours.
            preferences: &Default::default(),
            timing: Some(Timing {
                model: &b.view.timing,
                prior,
                seed: b.view.timing_seed,
            }),
            channels: w.channel_priors.choose_channel.then_some(ChannelChoice {
                model: &b.view.channels,
                channels: &w.channel_priors.channels,
                prior_strength: w.channel_priors.prior_strength,
                cost_weight: w.channel_priors.cost_weight,
                seed: b.view.timing_seed,
            }),
        };
        let decisions = decide(&s, now);
        // The earliest moment a decision names (a wait for an outcome, a deferral to an allowed
        // or a chosen hour), and whether the borrower needs looking after (a lookup, a contact
        // check, no working contact point).
        next = decisions
            .iter()
            .filter_map(|d| match d.action {
                Action::Wait { until } | Action::Defer { until } if until > now => Some(until),
                _ => None,
            })
            .min();
        trouble = !health.reachable
            || decisions
                .iter()
                .any(|d| matches!(d.action, Action::Lookup { .. } | Action::ContactCheck { .. }));
        // Learning of dead or reassigned numbers: the first day health says so.
        for a in &health.contacts {
            if matches!(a.state, HealthState::Dead | HealthState::Reassigned) {
                let idx = b.view.contacts.iter().position(|c| c.id == a.contact);
                if let Some(n) = idx.and_then(|i| b.view.number_of[i]) {
                    if let Some(ch) = b
                        .changes
                        .iter_mut()
                        .find(|(d, k)| k.is_none() && b.truth.numbers[n].abandoned_on == Some(*d))
                    {
                        ch.1 = Some(day);
                    }
                }
            }
        }
        let mut sent = false;
        for d in decisions {
            match d.action {
                Action::Send {
                    rung,
                    third_party,
                    permit,
                } => {
                    let Some(key) = d.key else { continue };
                    let local = permit.at.with_timezone(&w.zone).time();
                    if w.profile.window(permit.purpose).is_some_and(|win| !win.contains(local)) {
                        m.violations += 1;
                    }
                    let dv = deliver(w.sc, b, rng, permit.contact, permit.channel, !third_party, local.hour());
                    // What the lender sees of its timing: delivered to the borrower's own
                    // point, engaged or not, at this hour of the week.
                    if !third_party && dv.class == DeliveryClass::Delivered {
                        b.view.timing.observe(HourOfWeek::of(permit.at, w.zone), dv.engaged);
                    }
                    if !third_party && dv.class != DeliveryClass::OurFault {
                        b.view.channels.observe(permit.channel, dv.engaged);
                    }
                    record(b, day, key, permit.contact, permit.channel, &dv, m);
                    let at = permit.at;
                    let outcome = if dv.engaged {
                        Outcome::Engaged
                    } else if dv.class == DeliveryClass::Delivered {
                        Outcome::Delivered
                    } else {
                        Outcome::Failed(dv.class)
                    };
                    b.view.sends.push(SendRecord {
                        key,
                        rung,
                        contact: permit.contact,
                        channel: permit.channel,
                        at,
                        outcome,
                        conversation: permit.channel == Channel::Voice && dv.reached_borrower,
                    });
                    if third_party {
                        b.view.third.push(ThirdPartyRecord {
                            contact: permit.contact,
                            contacted: true,
                            refused: false,
                        });
                        // A relative passes it on: the borrower gets in touch with the new number.
                        if dv.reached_borrower {
                            learn_new_number(w, b, day);
                        }
                    }
                    let src = Source::Provider("sim".into());
                    b.view.add(
                        Some(permit.contact),
                        at + Duration::minutes(2),
                        src,
                        EvidenceKind::Delivery {
                            channel: permit.channel,
                            class: dv.class,
                        },
                    );
                    if dv.engaged {
                        b.view.add(
                            Some(permit.contact),
                            at + Duration::minutes(20),
                            Source::Holder,
                            EvidenceKind::Reply {
                                channel: permit.channel,
                                class: ReplyClass::Acknowledged,
                            },
                        );
                    }
                    if dv.wrong_number_reply {
                        b.view.add(
                            Some(permit.contact),
                            at + Duration::minutes(30),
                            Source::Holder,
                            EvidenceKind::Reply {
                                channel: permit.channel,
                                class: ReplyClass::WrongNumber,
                            },
                        );
                    }
                    sent = true;
                }
                Action::Lookup { contact, need } => {
                    let kind = match need {
                        Need::CarrierCheck => 0u8,
                        _ => 1,
                    };
                    if !b
                        .view
                        .asked
                        .iter()
                        .any(|(c, k, d)| *c == contact && *k == kind && day < d + 7)
                    {
                        b.view.asked.push((contact, kind, day));
                        let lag = if kind == 0 { 1 } else { w.sc.recycle_check_lag_days };
                        b.view.pending.push((day + lag, contact, need));
                    }
                }
                Action::ContactCheck { .. } => {
                    if b.view.last_check.is_none_or(|d| day >= d + 7) {
                        b.view.last_check = Some(day);
                        contact_check(w, b, day, rng);
                    }
                }
                Action::Wait { .. } | Action::Defer { .. } | Action::Suppress => {}
            }
        }
        now = if sent {
            now + Duration::minutes(10)
        } else if let Some(t) = next.filter(|t| *t < tomorrow) {
            t
        } else {
            break;
        };
        // Out of rounds for today: go on from here next time.
        next = Some(now);
    }
    b.view.wake = next_wake(w, b, day, next, trouble);
}

/// When the lender looks at the borrower again after `day`: the moment the last decisions
/// named, the cadence's next step of each unpaid installment, the day a time rule of contact
/// health fires, and — while the borrower needs looking after — the next day near an
/// installment (else the next week), as the old daily scan did.
fn next_wake(w: &World, b: &Borrower, day: u32, named: Option<DateTime<Utc>>, trouble: bool) -> DateTime<Utc> {
    // 08:00 on a calendar date of the run.
    let morning = |date: NaiveDate| w.at((date - w.start).num_days().max(0) as u32, 8, 0);
    let mut wake = named.unwrap_or(DateTime::<Utc>::MAX_UTC);
    // A time rule of contact health (the silence and dormancy rules, engagement ageing).
    if let Some(d) = b.view.health.review().day {
        wake = wake.min(morning(d));
    }
    // The cadence's next step of each unpaid installment, counted in days of the run.
    for i in b.insts.iter().filter(|i| i.paid_day.is_none()) {
        let from_due = i64::from(day) - i64::from(i.due_day);
        // After `day`, so never before the run's start.
        let next = w.cadence.next_step_offset(from_due).map(|o| i64::from(i.due_day) + o);
        if let Some(next) = next.and_then(|d| u32::try_from(d).ok()) {
            wake = wake.min(w.at(next, 8, 0));
        }
    }
    if trouble {
        let d = if active(b, day + 1) { day + 1 } else { (day / 7 + 1) * 7 };
        wake = wake.min(w.at(d, 8, 0));
    }
    wake
}

/// The contact-check flow: a link on every other working channel; the borrower who opens it
/// confirms their current number with a code.
fn contact_check(w: &World, b: &mut Borrower, day: u32, rng: &mut ChaCha8Rng) {
    let open = (b.truth.email_alive
        && b.view.contacts.iter().any(|c| c.kind == ContactKind::Email)
        && rng.gen_bool(w.sc.email_opened))
        || (b.truth.push_opted
            && b.view.contacts.iter().any(|c| c.kind == ContactKind::PushToken)
            && rng.gen_bool(w.sc.push_opened));
    if open {
        learn_new_number(w, b, day);
    }
}

fn learn_new_number(w: &World, b: &mut Borrower, day: u32) {
    let current = b.truth.current;
    if b.view.number_of.contains(&Some(current)) {
        return;
    }
    let at = w.at(day, 16, 0);
    let c = b
        .view
        .add_number(current, w.start + Duration::days(i64::from(day)), Some(at));
    b.view.add(Some(c), at, Source::Borrower, EvidenceKind::CodeConfirmed);
    for ch in b.changes.iter_mut().filter(|(_, k)| k.is_none()) {
        ch.1 = Some(day);
    }
}

fn answer_lookup(w: &World, b: &mut Borrower, day: u32, contact: ContactId, need: Need, rng: &mut ChaCha8Rng) {
    let Some(idx) = b.view.contacts.iter().position(|c| c.id == contact) else {
        return;
    };
    let Some(n) = b.view.number_of[idx] else {
        return;
    };
    if !rng.gen_bool(w.sc.recycle_check_coverage) {
        return;
    }
    let num = &b.truth.numbers[n];
    let at = w.at(day, 9, 0);
    let src = Source::Lookup("sim".into());
    match need {
        Need::CarrierCheck => {
            let status = match num.holder {
                Holder::Nobody => NumberStatus::Cancelled,
                _ => NumberStatus::Normal,
            };
            b.view
                .add(Some(contact), at, src, EvidenceKind::CarrierStatus { status });
        }
        Need::RecycledCheck { since } => {
            let abandoned = num.abandoned_on.map(|d| w.start + Duration::days(i64::from(d)));
            let answer = if abandoned.is_some_and(|a| a >= since) {
                RecycleAnswer::Yes
            } else {
                RecycleAnswer::No
            };
            b.view
                .add(Some(contact), at, src, EvidenceKind::Recycled { since, answer });
        }
        Need::Reverify => {}
    }
}

fn finish(w: &World, strategy: Strategy, b: &mut Borrower, days: u32, m: &mut Metrics) {
    // The lender's last view of its contact points: the kept replay answers as one from the
    // start would, folding only the days since it last looked.
    let last = (strategy == Strategy::Reachline).then(|| {
        let v = &mut b.view;
        v.health
            .assess(&v.contacts, &v.evidence, w.at(days.saturating_sub(1), 23, 0), &w.health)
    });
    let b = &*b;
    for i in b.insts.iter().filter(|i| i.due_day < days) {
        let late = i.settled_on_time != Some(true);
        let missed = i.pre_due_reads == 0 && i.pre_due_to_stale;
        m.installments_due += 1;
        m.paid_late_or_not += u64::from(late);
        m.missed_number_change += u64::from(missed);
        let p = m.week(i.due_day);
        p.installments_due += 1;
        p.paid_late_or_not += u64::from(late);
        p.missed_number_change += u64::from(missed);
    }
    for (start, known) in &b.changes {
        if let Some(k) = known {
            m.detect_days.push(k.saturating_sub(*start));
        }
    }
    // Coverage: a way the lender would use that truly reaches the borrower.
    let reaches = |c: &ContactFacts, n: Option<usize>| match c.kind {
        ContactKind::Mobile => n.is_some_and(|n| b.truth.numbers[n].holder == Holder::Borrower),
        ContactKind::Email => b.truth.email_alive,
        ContactKind::PushToken => b.truth.push_opted,
        _ => false,
    };
    let covered = match strategy {
        Strategy::Baseline => b
            .view
            .contract_mobile()
            .is_some_and(|(_, n)| b.truth.numbers[n].holder == Holder::Borrower),
        Strategy::Multichannel => b
            .view
            .contacts
            .iter()
            .zip(&b.view.number_of)
            .filter(|(c, _)| !c.role.is_third_party())
            .filter(|(c, _)| c.kind != ContactKind::Mobile || b.view.contract_mobile().map(|x| x.0) == Some(c.id))
            .any(|(c, n)| reaches(c, *n)),
        Strategy::Reachline => last
            .iter()
            .flat_map(|h| &h.contacts)
            .filter(|a| !a.role.is_third_party() && a.state.is_working())
            .any(|a| {
                let i = b.view.contacts.iter().position(|c| c.id == a.contact).unwrap_or(0);
                reaches(&b.view.contacts[i], b.view.number_of[i])
            }),
    };
    if covered {
        m.covered_at_end += 1;
    } else {
        let outstanding = b.insts.iter().filter(|i| i.paid_day.is_none()).count() as i64;
        m.unreachable_exposure_minor += outstanding * w.sc.installment_minor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` borrowers of a built-in scenario day by day under a strategy, calling `check`
    /// with each borrower after each day.
    fn walk(name: &str, strategy: Strategy, n: u64, days: u32, mut check: impl FnMut(&Borrower, u32)) {
        let sc = Scenario::builtin(name).expect("a built-in scenario");
        let w = world(&sc);
        let prior = w.prior.clone();
        let mut m = Metrics::default();
        for i in 0..n {
            let mut truth_rng = ChaCha8Rng::seed_from_u64(i);
            let mut act_rng = ChaCha8Rng::seed_from_u64(!i);
            let mut b = new_borrower(&w, &mut truth_rng, days);
            for day in 0..days {
                let lender = Lender {
                    strategy,
                    prior: &prior,
                };
                step_day(&w, lender, &mut b, day, &mut truth_rng, &mut act_rng, &mut m);
                check(&b, day);
            }
        }
    }

    #[test]
    fn a_number_is_held_by_one_person_at_a_time() {
        // em-prepaid has the most number changes; every strategy moves the same truth.
        let mut changes = 0;
        for strategy in [Strategy::Baseline, Strategy::Reachline] {
            walk("em-prepaid", strategy, 150, 365, |b, day| {
                let mine = b.truth.numbers.iter().filter(|n| n.holder == Holder::Borrower).count();
                assert_eq!(mine, 1, "day {day}: the borrower holds exactly one number");
                assert_eq!(b.truth.numbers[b.truth.current].holder, Holder::Borrower);
                for n in &b.truth.numbers {
                    match n.holder {
                        // Never back to the borrower once given up.
                        Holder::Borrower => assert_eq!(n.abandoned_on, None),
                        // Frozen: nobody's between giving up and reassignment.
                        Holder::Nobody => {
                            assert!(n.abandoned_on.is_some_and(|a| a <= day));
                            assert!(n.reassign_on.is_some_and(|r| r > day));
                        }
                        // The stranger's from the day it was reassigned, and only then.
                        Holder::Stranger => assert!(n.reassign_on.is_some_and(|r| r <= day)),
                    }
                }
                changes += b.truth.numbers.len() - 1;
            });
        }
        assert!(changes > 0, "the walk saw number changes");
    }

    #[test]
    fn receipts_follow_the_truth() {
        // What a provider reports for each true state of a contact point, as the channel
        // design classes it: a number nobody holds is dead; a stranger's number delivers (and
        // a debt notice to it is misdirected); only the borrower reads and engages.
        let sc = Scenario::builtin("cn-subprime").expect("a built-in scenario");
        let w = world(&sc);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400u64 {
            let mut b = new_borrower(&w, &mut ChaCha8Rng::seed_from_u64(i), 365);
            let holder = [Holder::Borrower, Holder::Nobody, Holder::Stranger][(i % 3) as usize];
            b.truth.numbers[0].holder = holder;
            b.truth.email_alive = i % 2 == 0;
            b.truth.push_opted = i % 4 < 2;
            for c in b.view.contacts.clone() {
                for channel in [Channel::Sms, Channel::Voice, Channel::Email, Channel::Push] {
                    let debt = !c.role.is_third_party();
                    let d = deliver(&sc, &b, &mut rng, c.id, channel, debt, 20);
                    seen.insert(format!("{:?} {:?} {:?}", c.kind, holder, d.class));
                    assert!(!d.engaged || d.reached_borrower, "engaged means read");
                    assert!(!d.reached_borrower || d.class == DeliveryClass::Delivered);
                    match c.kind {
                        ContactKind::Mobile if c.role.is_third_party() => {
                            assert!(!d.misdirected, "the third-party template carries no debt");
                            assert!(matches!(d.class, DeliveryClass::Delivered | DeliveryClass::Transient));
                        }
                        ContactKind::Mobile => match holder {
                            Holder::Nobody => {
                                assert_eq!(d.class, DeliveryClass::Dead);
                                assert!(!d.misdirected);
                            }
                            Holder::Stranger => {
                                assert_eq!(d.class, DeliveryClass::Delivered);
                                assert!(d.misdirected && !d.reached_borrower && !d.engaged);
                            }
                            Holder::Borrower => {
                                assert!(!d.misdirected && !d.wrong_number_reply);
                                assert!(matches!(
                                    d.class,
                                    DeliveryClass::Delivered | DeliveryClass::Transient | DeliveryClass::Unknown
                                ));
                            }
                        },
                        ContactKind::Email if !b.truth.email_alive => assert_eq!(d.class, DeliveryClass::Dead),
                        ContactKind::PushToken if !b.truth.push_opted => assert_eq!(d.class, DeliveryClass::Dead),
                        _ => assert!(!d.misdirected),
                    }
                }
            }
        }
        for class in [
            "Mobile Nobody Dead",
            "Mobile Stranger Delivered",
            "Mobile Borrower Delivered",
        ] {
            assert!(seen.contains(class), "{class} seen");
        }
    }
}
