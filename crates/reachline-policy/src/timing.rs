//! Smart timing and channel choice: per-borrower bandits that learn from engagement, and a
//! cadence adapted to how the borrower repays. Pure and seeded: the caller passes the random
//! generator (seeded per decision in the engine and the simulator), so every choice can be
//! replayed, and every choice says which estimate drove it.
//!
//! **Send time.** Each borrower has a Beta–Bernoulli estimate of "engaged when sent at this
//! hour of the week" for each of the 168 hours, with a prior from their segment (the segment's
//! rate at that hour, worth `prior_strength` observations). Thompson sampling over the hours the
//! gates allow picks the hour: an hour never tried keeps a wide posterior and wins now and then,
//! so the model can leave the schedule it was started on — the trap of a histogram that only
//! ever sees the hours it sent at.
//!
//! **Channel.** The same per channel, with a cost: the sampled engagement rate minus
//! `cost_weight × cost`, over the channels that consent and health allow.
//!
//! **Cadence by repayment history.** Reliable payers get fewer reminders (one before the due
//! date, the one nearest T−3, then the overdue ladder); borrowers who pay late get an earlier
//! one (T−10) as well.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use reachline_domain::Channel;
use serde::{Deserialize, Serialize};

use crate::cadence::{Cadence, NoticeKind, Step};

/// An hour of the week, 0 = Monday 00:00–01:00 local, 167 = Sunday 23:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HourOfWeek(pub u8);

impl HourOfWeek {
    pub fn of(t: DateTime<Utc>, zone: Tz) -> Self {
        let l = t.with_timezone(&zone);
        Self((l.weekday().num_days_from_monday() * 24 + l.hour()) as u8)
    }
}

/// Engagement counts in one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub sent: u32,
    pub engaged: u32,
}

impl Counts {
    pub fn rate(&self) -> Option<f64> {
        (self.sent > 0).then(|| f64::from(self.engaged) / f64::from(self.sent))
    }
}

/// A borrower's send-time estimate, persisted by the store and updated from evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendTimeModel {
    pub hours: Vec<Counts>,
}

impl Default for SendTimeModel {
    fn default() -> Self {
        Self {
            hours: vec![Counts::default(); 168],
        }
    }
}

/// A segment's rates per hour of week: the prior of each borrower in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentPrior {
    pub rates: Vec<f64>,
    /// How many observations the prior is worth.
    pub strength: f64,
}

impl SegmentPrior {
    /// A flat prior at `rate`.
    pub fn flat(rate: f64, strength: f64) -> Self {
        Self {
            rates: vec![rate.clamp(0.001, 0.999); 168],
            strength,
        }
    }

    /// The segment's own rates from its members' counts (pooled), shrunk toward `base`.
    pub fn pooled(models: &[&SendTimeModel], base: f64, strength: f64) -> Self {
        let mut sum = SendTimeModel::default();
        for m in models {
            sum.add(m);
        }
        Self::from_counts(&sum, base, strength)
    }

    /// The rates of a segment's summed counts, shrunk toward `base` (worth 10 sends an hour).
    pub fn from_counts(sum: &SendTimeModel, base: f64, strength: f64) -> Self {
        let rates = sum
            .hours
            .iter()
            .map(|c| ((f64::from(c.engaged) + base * 10.0) / (f64::from(c.sent) + 10.0)).clamp(0.001, 0.999))
            .collect();
        Self { rates, strength }
    }
}

/// Why an hour or a channel was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The posterior mean.
    pub mean: f64,
    /// The sampled value that won.
    pub sampled: f64,
    /// The borrower's own observations behind it.
    pub observations: u32,
}

impl SendTimeModel {
    /// Adds another model's counts to this one (a segment's sum).
    pub fn add(&mut self, other: &SendTimeModel) {
        for (a, b) in self.hours.iter_mut().zip(&other.hours) {
            a.sent = a.sent.saturating_add(b.sent);
            a.engaged = a.engaged.saturating_add(b.engaged);
        }
    }

    /// What the borrower's sends say of one hour of the week: that hour of the day on every
    /// day of the week, and half-weight the hours either side. A borrower gets a few dozen
    /// notices a year, too few to learn 168 cells apart; people keep their hours from day to
    /// day, so the days share what is seen. Returns (sent, engaged, observations).
    ///
    /// The definition, hour by hour; the code draws from [`pooled_day`](Self::pooled_day),
    /// which the tests check against this.
    #[cfg(test)]
    fn pooled(&self, hour: HourOfWeek) -> (f64, f64, u32) {
        let hod = i32::from(hour.0 % 24);
        let (mut sent, mut engaged, mut n) = (0.0, 0.0, 0u32);
        for day in 0..7i32 {
            for (d, w) in [(-1i32, 0.5), (0, 1.0), (1, 0.5)] {
                let h = hod + d;
                if !(0..24).contains(&h) {
                    continue;
                }
                let c = self.hours[(day * 24 + h) as usize];
                sent += w * f64::from(c.sent);
                engaged += w * f64::from(c.engaged.min(c.sent));
                if d == 0 {
                    n = n.saturating_add(c.sent);
                }
            }
        }
        (sent, engaged, n)
    }

    /// A Thompson draw for one hour, from its pooled counts and the segment's rate there.
    fn draw_pooled(
        (sent, engaged, n): (f64, f64, u32),
        prior: &SegmentPrior,
        hour: HourOfWeek,
        rng: &mut impl Rng,
    ) -> Estimate {
        thompson_weighted(
            sent,
            engaged,
            n,
            prior.rates[usize::from(hour.0) % 168],
            prior.strength,
            rng,
        )
    }

    /// [`pooled`](Self::pooled) for every hour of the day at once: each hour's column summed
    /// over the week first, then its neighbours half-weighted. The same numbers as asking hour
    /// by hour (the sums are of whole and half counts, exact in any order), from 168 reads
    /// instead of 21 per hour.
    pub fn pooled_day(&self) -> [(f64, f64, u32); 24] {
        // Summed as integers, day by day in rows: a column of seven counts is far below 2^53,
        // so its sum converted once is the float sum added count by count, to the bit, and
        // below 2^32 unless a saturating sum would have stopped there too.
        let (mut sent, mut engaged) = ([0u64; 24], [0u64; 24]);
        for day in self.hours[..168].chunks_exact(24) {
            for (h, c) in day.iter().enumerate() {
                sent[h] += u64::from(c.sent);
                engaged[h] += u64::from(c.engaged.min(c.sent));
            }
        }
        let column: [(f64, f64, u32); 24] = std::array::from_fn(|h| {
            (
                sent[h] as f64,
                engaged[h] as f64,
                u32::try_from(sent[h]).unwrap_or(u32::MAX),
            )
        });
        std::array::from_fn(|h| {
            let mut p = (column[h].0, column[h].1, column[h].2);
            for n in [h.wrapping_sub(1), h + 1] {
                if let Some(c) = column.get(n) {
                    p.0 += 0.5 * c.0;
                    p.1 += 0.5 * c.1;
                }
            }
            p
        })
    }

    pub fn observe(&mut self, hour: HourOfWeek, engaged: bool) {
        let c = &mut self.hours[usize::from(hour.0) % 168];
        c.sent = c.sent.saturating_add(1);
        if engaged {
            c.engaged = c.engaged.saturating_add(1);
        }
    }

    /// Thompson sampling over the allowed hours; `None` when none is allowed.
    pub fn choose(
        &self,
        prior: &SegmentPrior,
        allowed: &[HourOfWeek],
        rng: &mut impl Rng,
    ) -> Option<(HourOfWeek, Estimate)> {
        let pooled = self.pooled_day();
        let mut best: Option<(HourOfWeek, Estimate)> = None;
        for h in allowed {
            let est = Self::draw_pooled(pooled[usize::from(h.0 % 24)], prior, *h, rng);
            if best.is_none_or(|(_, e)| est.sampled > e.sampled) {
                best = Some((*h, est));
            }
        }
        best
    }
}

/// One Thompson draw: the Beta posterior of `counts` under a prior of `prior_rate` worth
/// `prior_strength` observations, its mean, and a sample from it.
fn thompson(counts: Counts, prior_rate: f64, prior_strength: f64, rng: &mut impl Rng) -> Estimate {
    let sent = f64::from(counts.sent);
    let engaged = f64::from(counts.engaged.min(counts.sent));
    thompson_weighted(sent, engaged, counts.sent, prior_rate, prior_strength, rng)
}

fn thompson_weighted(
    sent: f64,
    engaged: f64,
    observations: u32,
    prior_rate: f64,
    prior_strength: f64,
    rng: &mut impl Rng,
) -> Estimate {
    let a = 1.0 + prior_strength * prior_rate + engaged;
    let b = 1.0 + prior_strength * (1.0 - prior_rate) + (sent - engaged).max(0.0);
    Estimate {
        mean: a / (a + b),
        sampled: Beta::new(a, b).map_or(a / (a + b), |d| d.sample(rng)),
        observations,
    }
}

/// A channel's cost, in the lender's unit (e.g. fen per message).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelCost {
    pub channel: Channel,
    pub cost: f64,
}

/// A borrower's per-channel engagement estimate.
/// A channel's prior engagement rate (the segment's) and its cost per message, in the unit
/// `cost_weight` turns into engagement (0.05 at weight 1: worth five points of engagement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPrior {
    pub channel: Channel,
    pub prior_rate: f64,
    pub cost: f64,
}

/// What `decide` needs to choose a notice's first channel: the borrower's counts per channel,
/// each message channel's prior and cost, and a seed (with the notice, the same draw on
/// every pass).
#[derive(Debug, Clone, Copy)]
pub struct ChannelChoice<'a> {
    pub model: &'a ChannelModel,
    pub channels: &'a [ChannelPrior],
    pub prior_strength: f64,
    pub cost_weight: f64,
    pub seed: u64,
}

impl ChannelChoice<'_> {
    /// The channel to open a notice on, among `offered` (the message channels the gates allow
    /// now on the borrower's own points); `None` when none of them has a prior here.
    pub fn choose(&self, offered: &[Channel], key: [u64; 2]) -> Option<(Channel, Estimate)> {
        use rand::SeedableRng;
        let seed = key
            .iter()
            .fold(splitmix(self.seed ^ 0xC4A7), |acc, k| splitmix(acc ^ k));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let allowed: Vec<ChannelPrior> = self
            .channels
            .iter()
            .filter(|p| offered.contains(&p.channel))
            .copied()
            .collect();
        self.model
            .choose_among(&allowed, self.prior_strength, self.cost_weight, &mut rng)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelModel {
    pub channels: Vec<(Channel, Counts)>,
}

impl ChannelModel {
    pub fn observe(&mut self, channel: Channel, engaged: bool) {
        let i = match self.channels.iter().position(|(c, _)| *c == channel) {
            Some(i) => i,
            None => {
                self.channels.push((channel, Counts::default()));
                self.channels.len() - 1
            }
        };
        let c = &mut self.channels[i].1;
        c.sent = c.sent.saturating_add(1);
        if engaged {
            c.engaged = c.engaged.saturating_add(1);
        }
    }

    /// Thompson sampling over the allowed channels, net of cost: the channel whose sampled
    /// engagement rate minus `cost_weight × cost` is highest. `prior_rate` is what a channel
    /// with no history is believed to achieve, worth `prior_strength` observations.
    pub fn choose(
        &self,
        allowed: &[ChannelCost],
        prior_rate: f64,
        prior_strength: f64,
        cost_weight: f64,
        rng: &mut impl Rng,
    ) -> Option<(Channel, Estimate)> {
        let priced: Vec<ChannelPrior> = allowed
            .iter()
            .map(|cc| ChannelPrior {
                channel: cc.channel,
                prior_rate,
                cost: cc.cost,
            })
            .collect();
        self.choose_among(&priced, prior_strength, cost_weight, rng)
    }

    /// As [`choose`](Self::choose), each channel with its own prior rate (the segment's).
    pub fn choose_among(
        &self,
        allowed: &[ChannelPrior],
        prior_strength: f64,
        cost_weight: f64,
        rng: &mut impl Rng,
    ) -> Option<(Channel, Estimate)> {
        let mut best: Option<(Channel, Estimate, f64)> = None;
        for cc in allowed {
            let c = self.counts(cc.channel);
            let est = thompson(c, cc.prior_rate, prior_strength, rng);
            let score = est.sampled - cost_weight * cc.cost;
            if best.as_ref().is_none_or(|(_, _, s)| score > *s) {
                best = Some((cc.channel, est, score));
            }
        }
        best.map(|(c, e, _)| (c, e))
    }

    /// The borrower's counts on one channel.
    pub fn counts(&self, channel: Channel) -> Counts {
        self.channels
            .iter()
            .find(|(ch, _)| *ch == channel)
            .map_or_else(Counts::default, |(_, c)| *c)
    }
}

/// How a borrower has repaid so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RepaymentHistory {
    pub installments_due: u32,
    pub paid_on_time: u32,
    /// Mean days late over the late ones.
    pub mean_days_late: f64,
}

/// What the adaptation did, to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CadenceAdaptation {
    /// Too little history: the product's cadence as it is.
    Unchanged,
    /// Pays on time: fewer reminders.
    Reliable,
    /// Pays late: an earlier reminder.
    PaysLate,
}

/// Adapts a product's cadence to a borrower's repayment history.
pub fn adapt(cadence: &Cadence, h: &RepaymentHistory) -> (Cadence, CadenceAdaptation) {
    if h.installments_due < 3 {
        return (cadence.clone(), CadenceAdaptation::Unchanged);
    }
    let on_time = f64::from(h.paid_on_time) / f64::from(h.installments_due);
    let mut c = cadence.clone();
    if on_time >= 0.95 {
        // One reminder before the due date (the one nearest T−3) and the overdue ladder.
        let keep = cadence
            .steps
            .iter()
            .filter(|s| s.kind == NoticeKind::PreDue)
            .min_by_key(|s| (s.offset_days + 3).abs())
            .map(|s| s.offset_days);
        c.steps.retain(|s| match s.kind {
            NoticeKind::PreDue => Some(s.offset_days) == keep,
            NoticeKind::DueToday => false,
            _ => true,
        });
        (c, CadenceAdaptation::Reliable)
    } else if on_time < 0.8 || h.mean_days_late >= 3.0 {
        if !c.steps.iter().any(|s| s.offset_days <= -10) {
            c.steps.insert(
                0,
                Step {
                    kind: NoticeKind::PreDue,
                    offset_days: -10,
                },
            );
        }
        (c, CadenceAdaptation::PaysLate)
    } else {
        (c, CadenceAdaptation::Unchanged)
    }
}

/// How the engine times first sends: on or off, and the prior every borrower's model starts
/// from (the segment's engagement rate, worth `prior_strength` sends at each hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingConfig {
    pub enabled: bool,
    pub prior_rate: f64,
    pub prior_strength: f64,
    /// Choose each notice's first channel by the borrower's engagement per channel (a bandit
    /// over the message channels the gates allow; the ladder follows in its order after it).
    pub choose_channel: bool,
    /// Each message channel's prior engagement rate and cost; a channel not listed is never
    /// chosen first (it keeps its place on the ladder).
    pub channels: Vec<ChannelPrior>,
    /// How much a unit of cost weighs against engagement.
    pub cost_weight: f64,
}

impl Default for TimingConfig {
    fn default() -> Self {
        let p = |channel, prior_rate, cost| ChannelPrior {
            channel,
            prior_rate,
            cost,
        };
        Self {
            enabled: true,
            prior_rate: 0.25,
            prior_strength: 20.0,
            // Off until a lender's borrowers differ in the channel they answer: in the
            // simulated populations, where everyone reads SMS best, it gained nothing.
            choose_channel: false,
            channels: vec![
                p(Channel::Sms, 0.25, 0.05),
                p(Channel::Push, 0.05, 0.0),
                p(Channel::Im, 0.10, 0.0),
                p(Channel::Email, 0.06, 0.0),
            ],
            cost_weight: 1.0,
        }
    }
}

/// What `decide` needs to time one borrower's notices: the borrower's own counts, the segment
/// prior, and a seed. The draw for a notice is seeded by the seed, the notice and the local
/// day, so every planning pass of that day draws the same hour (a plan does not wander).
#[derive(Debug, Clone, Copy)]
pub struct Timing<'a> {
    pub model: &'a SendTimeModel,
    pub prior: &'a SegmentPrior,
    pub seed: u64,
}

/// Why a notice was timed as it was, kept with the decision. Integer fields (per mille), so
/// decisions stay comparable and print the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HourChoice {
    /// The hour of the week chosen, in the borrower's zone (0 = Monday 00:00).
    pub hour_of_week: u8,
    /// The posterior mean of engagement at that hour, per mille.
    pub mean_permille: u16,
    /// The Thompson draw that won, per mille.
    pub sampled_permille: u16,
    /// The borrower's own sends at that hour behind the estimate.
    pub observations: u32,
    /// How many hours the gates left to choose from.
    pub candidates: u8,
}

impl HourChoice {
    fn of(hour: HourOfWeek, e: &Estimate, candidates: usize) -> Self {
        Self {
            hour_of_week: hour.0,
            mean_permille: permille(e.mean),
            sampled_permille: permille(e.sampled),
            observations: e.observations,
            candidates: candidates.min(255) as u8,
        }
    }
}

impl Timing<'_> {
    /// Picks, among `candidates` (moments the gates allow, one per hour, earliest first), the
    /// one to send at; `key` names the notice and its day for the seed.
    pub fn choose<T: Copy>(&self, candidates: &[(HourOfWeek, T)], key: [u64; 3]) -> Option<(T, HourChoice)> {
        use rand::SeedableRng;
        let seed = key.iter().fold(splitmix(self.seed), |acc, k| splitmix(acc ^ k));
        // Each hour its own draw, seeded by the notice, the day and the hour: a pass later in
        // the day, with fewer hours left, draws the same values for the hours it still has and
        // so keeps the hour an earlier pass chose; hours the gates do not offer are not drawn.
        // A PCG generator per hour: seeding one costs a multiplication, where a ChaCha stream
        // would compute a block for a single draw.
        let pooled = self.model.pooled_day();
        let (i, hour, est) = candidates
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(splitmix(seed ^ u64::from(h.0)));
                let p = pooled[usize::from(h.0 % 24)];
                (i, *h, SendTimeModel::draw_pooled(p, self.prior, *h, &mut rng))
            })
            .max_by(|a, b| a.2.sampled.total_cmp(&b.2.sampled))?;
        Some((candidates[i].1, HourChoice::of(hour, &est, candidates.len())))
    }
}

/// A rate in [0, 1] as a whole number per mille (decisions carry estimates so, to stay
/// comparable).
pub(crate) fn permille(x: f64) -> u16 {
    (x.clamp(0.0, 1.0) * 1000.0).round() as u16
}

/// SplitMix64's finaliser: spreads the seed's parts over all 64 bits.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The whole day's pooled counts are the hour-by-hour ones, exactly, for every day.
    #[test]
    fn pooled_day_answers_as_pooled() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut m = SendTimeModel::default();
        for _ in 0..400 {
            m.observe(HourOfWeek(rng.gen_range(0..168)), rng.gen_bool(0.3));
        }
        // Counts at the top of their range: the hour's count of sends saturates as it did.
        for h in [5, 29, 53] {
            m.hours[h] = Counts {
                sent: u32::MAX - 1,
                engaged: u32::MAX - 9,
            };
        }
        let day = m.pooled_day();
        for h in 0..168u8 {
            assert_eq!(day[usize::from(h % 24)], m.pooled(HourOfWeek(h)), "hour {h}");
        }
    }

    #[test]
    fn hours_of_week_are_local() {
        // Monday 2024-06-03 01:30 UTC is Monday 09:30 in Shanghai: hour 9.
        let t = chrono::TimeZone::with_ymd_and_hms(&Utc, 2024, 6, 3, 1, 30, 0).unwrap();
        assert_eq!(HourOfWeek::of(t, chrono_tz::Asia::Shanghai), HourOfWeek(9));
        // Sunday 23:30 in New York is the last hour.
        let t = chrono::TimeZone::with_ymd_and_hms(&Utc, 2024, 6, 3, 3, 30, 0).unwrap();
        assert_eq!(HourOfWeek::of(t, chrono_tz::America::New_York), HourOfWeek(167));
    }

    /// The learner escapes the schedule it starts on: a borrower sent to at 09:00 for weeks,
    /// who in truth reads at 20:00, is found to prefer 20:00 because untried hours keep being
    /// explored; a naive histogram of the hours sent at would never leave 09:00.
    #[test]
    fn exploration_finds_the_hour_the_schedule_never_tried() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let truth = |h: u8| {
            if h % 24 == 20 {
                0.7
            } else if h % 24 == 9 {
                0.15
            } else {
                0.1
            }
        };
        let mut m = SendTimeModel::default();
        for _ in 0..20 {
            m.observe(HourOfWeek(9), rng.gen_bool(truth(9)));
        }
        let prior = SegmentPrior::flat(0.15, 4.0);
        let allowed: Vec<HourOfWeek> = (0..7u8)
            .flat_map(|d| (8..22u8).map(move |h| HourOfWeek(d * 24 + h)))
            .collect();
        for _ in 0..300 {
            let (h, _) = m.choose(&prior, &allowed, &mut rng).unwrap();
            m.observe(h, rng.gen_bool(truth(h.0)));
        }
        let best_mean = |h: u8| {
            (0..7u8)
                .map(|d| m.hours[usize::from(d * 24 + h)])
                .fold(Counts::default(), |a, c| Counts {
                    sent: a.sent + c.sent,
                    engaged: a.engaged + c.engaged,
                })
        };
        let at20 = best_mean(20);
        let at9 = best_mean(9);
        assert!(at20.sent > 40, "20:00 was tried {} times", at20.sent);
        assert!(at20.rate().unwrap() > at9.rate().unwrap());
        // The choices at the end favour the evening.
        let evening = (0..100)
            .filter(|_| m.choose(&prior, &allowed, &mut rng).unwrap().0 .0 % 24 == 20)
            .count();
        assert!(evening > 50, "evening chosen {evening} of 100");
    }

    #[test]
    fn the_same_seed_gives_the_same_choice() {
        let m = SendTimeModel::default();
        let prior = SegmentPrior::flat(0.2, 4.0);
        let allowed: Vec<HourOfWeek> = (8..22).map(HourOfWeek).collect();
        let a = m.choose(&prior, &allowed, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let b = m.choose(&prior, &allowed, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(a, b);
        assert!(m.choose(&prior, &[], &mut ChaCha8Rng::seed_from_u64(1)).is_none());
    }

    #[test]
    fn channels_trade_engagement_against_cost() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut m = ChannelModel::default();
        for i in 0..200 {
            m.observe(Channel::Sms, i % 10 < 6);
            m.observe(Channel::Email, i % 10 < 2);
            m.observe(Channel::Voice, i % 10 < 7);
        }
        let allowed = [
            ChannelCost {
                channel: Channel::Sms,
                cost: 0.05,
            },
            ChannelCost {
                channel: Channel::Email,
                cost: 0.0,
            },
            ChannelCost {
                channel: Channel::Voice,
                cost: 1.0,
            },
        ];
        let picks: Vec<Channel> = (0..50)
            .map(|_| m.choose(&allowed, 0.2, 2.0, 0.5, &mut rng).unwrap().0)
            .collect();
        // Voice engages most but costs too much; SMS wins.
        assert!(picks.iter().filter(|c| **c == Channel::Sms).count() > 45, "{picks:?}");
        // Free of cost, voice would win.
        let (c, e) = m.choose(&allowed, 0.2, 2.0, 0.0, &mut rng).unwrap();
        assert_eq!(c, Channel::Voice);
        assert!(e.observations == 200 && e.mean > 0.6);
    }

    #[test]
    fn cadence_follows_repayment_history() {
        let base = Cadence::standard("p");
        let (c, a) = adapt(
            &base,
            &RepaymentHistory {
                installments_due: 12,
                paid_on_time: 12,
                mean_days_late: 0.0,
            },
        );
        assert_eq!(a, CadenceAdaptation::Reliable);
        let pre: Vec<i32> = c
            .steps
            .iter()
            .filter(|s| s.offset_days <= 0)
            .map(|s| s.offset_days)
            .collect();
        assert_eq!(pre, vec![-3]);
        c.validate().unwrap();
        let (c, a) = adapt(
            &base,
            &RepaymentHistory {
                installments_due: 10,
                paid_on_time: 6,
                mean_days_late: 5.0,
            },
        );
        assert_eq!(a, CadenceAdaptation::PaysLate);
        assert_eq!(c.steps[0].offset_days, -10);
        c.validate().unwrap();
        let (c, a) = adapt(
            &base,
            &RepaymentHistory {
                installments_due: 2,
                paid_on_time: 0,
                mean_days_late: 9.0,
            },
        );
        assert_eq!((c, a), (base, CadenceAdaptation::Unchanged));
    }

    #[test]
    fn what_is_seen_on_one_day_counts_for_that_hour_on_the_others() {
        let mut m = SendTimeModel::default();
        // Mondays: 20:00 engages, 09:00 never.
        for _ in 0..12 {
            m.observe(HourOfWeek(20), true);
            m.observe(HourOfWeek(9), false);
        }
        let thursday = |h: u8| HourOfWeek(3 * 24 + h);
        let (sent, engaged, own) = m.pooled(thursday(20));
        assert_eq!((sent, engaged, own), (12.0, 12.0, 12));
        let (sent, engaged, _) = m.pooled(thursday(21));
        assert_eq!((sent, engaged), (6.0, 6.0), "half weight an hour away");
        assert_eq!(m.pooled(thursday(15)), (0.0, 0.0, 0));
        // So on a Thursday with no history of its own, 20:00 wins over 09:00 nearly always.
        let prior = SegmentPrior::flat(0.2, 4.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let wins = (0..200)
            .filter(|_| m.choose(&prior, &[thursday(9), thursday(20)], &mut rng).unwrap().0 == thursday(20))
            .count();
        assert!(wins > 190, "{wins} of 200");
    }
}
