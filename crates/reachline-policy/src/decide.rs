//! `decide(snapshot, now)`: for each notice due to a borrower, what to do now — send on which
//! contact and channel, wait, defer, suppress, look a number up, or start a contact check —
//! each with a reason code. Pure: the engine gathers the snapshot, applies the decisions and
//! records them.
//!
//! # The escalation ladder
//!
//! Each notice climbs a ladder of (contact, channel) rungs: the borrower's own contact points in
//! order (primary before backup; on each, the channels its kind allows in the configured order),
//! and last the emergency contacts. After a send the notice waits `wait_hours` for its outcome:
//!
//! - engaged (a reply, a click, a payment), or the installment paid: the ladder stops;
//! - delivered: a service notice is done; a collection notice waits for engagement and, on
//!   silence after the window, climbs;
//! - failed (any class but `our_fault`): climbs at once; `our_fault` retries the same rung after
//!   the window (never the borrower's fault);
//! - no outcome within the window: climbs.
//!
//! A rung whose contact health or gates refuse for good is passed over (the reason is kept); a
//! rung the gates defer makes the notice wait until then. The emergency contacts are reached
//! only when the borrower is formally unreachable — no working contact point of their own, or
//! from the day after 3 failed attempts, or 3 days unreachable — with the third-party template,
//! once per contact, never after a refusal (the gates check the last three). A ladder that runs
//! out ends in a contact check.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use reachline_domain::{
    Channel, Consent, ContactId, ContactKind, ContactRole, DeliveryClass, InstallmentId, Preferences, Purpose,
};
use serde::{Deserialize, Serialize};

use crate::cadence::{Cadence, NoticeKind};
use crate::gates::{self, Attempt, AttemptKind, Gate, GateProfile, History, Permit, Reason, ThirdParty};
use crate::health::{Assessment, BorrowerHealth, ContactFacts, HealthState, Need};
use crate::timing::{permille, ChannelChoice, HourChoice, HourOfWeek, Timing};

/// Which notice: an installment, a cadence step, its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NoticeKey {
    pub installment: InstallmentId,
    pub step: usize,
    pub kind: NoticeKind,
}

/// An unpaid installment as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueInstallment {
    pub id: InstallmentId,
    pub due_date: NaiveDate,
    pub paid: bool,
}

/// What became of an earlier send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "class")]
pub enum Outcome {
    /// Sent, no receipt yet.
    Pending,
    Delivered,
    /// Read, clicked, replied, confirmed, paid through it.
    Engaged,
    Failed(DeliveryClass),
}

/// An earlier send of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    pub key: NoticeKey,
    pub rung: usize,
    pub contact: ContactId,
    pub channel: Channel,
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
    /// A call connected to the borrower (for the call caps).
    pub conversation: bool,
}

/// What is known of an emergency contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThirdPartyRecord {
    pub contact: ContactId,
    pub contacted: bool,
    pub refused: bool,
}

/// How notices climb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderConfig {
    /// The channel order on a contact point whose kind allows several (a mobile: SMS, then voice).
    pub channels: Vec<Channel>,
    /// Hours to wait for an outcome before climbing.
    pub wait_hours: u32,
    /// Voice calls only for collection notices.
    pub voice_for_service: bool,
}

impl Default for LadderConfig {
    fn default() -> Self {
        Self {
            channels: vec![Channel::Sms, Channel::Push, Channel::Im, Channel::Email, Channel::Voice],
            wait_hours: 24,
            voice_for_service: false,
        }
    }
}

/// Everything the policy needs about one borrower.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub zones: &'a [Tz],
    pub profile: &'a GateProfile,
    pub cadence: &'a Cadence,
    pub ladder: &'a LadderConfig,
    pub contacts: &'a [ContactFacts],
    pub health: &'a BorrowerHealth,
    pub consents: &'a [Consent],
    pub installments: &'a [DueInstallment],
    pub sends: &'a [SendRecord],
    pub third_parties: &'a [ThirdPartyRecord],
    /// The borrower's preferred channels and quiet hours.
    pub preferences: &'a Preferences,
    /// The learned send-time model: when present, a notice's first send goes at the hour of
    /// the day it picks among those the gates allow (later sends of the ladder go at once).
    pub timing: Option<Timing<'a>>,
    /// The learned channel choice: when present (and the borrower stated no channel order of
    /// their own), a notice opens on the message channel it picks among those the gates allow
    /// on the borrower's primary points; the ladder follows in its order after it.
    pub channels: Option<ChannelChoice<'a>>,
}

/// Why a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    /// The cadence step's first rung.
    CadenceStep,
    EscalatedAfterFailure,
    EscalatedAfterSilence,
    /// Our side failed: the same rung again.
    RetryOurFault,
    AwaitingOutcome,
    /// The step is done (delivered, or engaged).
    Done,
    /// A gate defers or suppresses; the gate's reason is in `gate`.
    Gate,
    /// No rung left that can carry the notice.
    LadderExhausted,
    /// Health asks for a lookup.
    HealthNeedsLookup,
    /// Health asks the borrower to prove they hold a number, or no own contact works.
    ContactCheckNeeded,
    /// One of the borrower's own numbers is dead or reassigned: ask for the new one.
    NumberGone,
    /// The send-time model picked a later hour of the day; `timing` says why.
    BestHour,
}

reachline_domain::named_enum!(DecisionReason, "decision reason", {
    CadenceStep => "cadence_step",
    EscalatedAfterFailure => "escalated_after_failure",
    EscalatedAfterSilence => "escalated_after_silence",
    RetryOurFault => "retry_our_fault",
    AwaitingOutcome => "awaiting_outcome",
    Done => "done",
    Gate => "gate",
    LadderExhausted => "ladder_exhausted",
    HealthNeedsLookup => "health_needs_lookup",
    ContactCheckNeeded => "contact_check_needed",
    NumberGone => "number_gone",
    BestHour => "best_hour",
});

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        rung: usize,
        /// The third-party template must be used (an emergency contact).
        third_party: bool,
        permit: Permit,
    },
    Wait {
        until: DateTime<Utc>,
    },
    Defer {
        until: DateTime<Utc>,
    },
    Suppress,
    Lookup {
        contact: ContactId,
        need: Need,
    },
    ContactCheck {
        contact: Option<ContactId>,
    },
}

/// One decision, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: Option<NoticeKey>,
    pub action: Action,
    pub reason: DecisionReason,
    /// The gate's reason, when a gate decided.
    pub gate: Option<Reason>,
    /// Rungs passed over, with why.
    pub skipped: Vec<(usize, Reason)>,
    /// The send-time estimate that timed a first send, when the model did.
    pub timing: Option<HourChoice>,
    /// The channel estimate that opened the notice, when the channel model chose.
    pub channel: Option<ChannelPick>,
}

/// Why a notice opened on its channel (per mille, so decisions stay comparable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelPick {
    pub channel: Channel,
    pub mean_permille: u16,
    pub sampled_permille: u16,
    /// The borrower's own sends on that channel behind the estimate.
    pub observations: u32,
    /// How many channels were open to choose from.
    pub candidates: u8,
}

#[derive(Debug, Clone, Copy)]
struct Rung {
    contact: ContactId,
    channel: Channel,
    third_party: bool,
}

/// The channels a kind of contact point carries, the first preferred.
pub fn channels_of(kind: ContactKind) -> &'static [Channel] {
    match kind {
        ContactKind::Mobile => &[Channel::Sms, Channel::Voice],
        ContactKind::Landline => &[Channel::Voice],
        ContactKind::Email => &[Channel::Email],
        ContactKind::PushToken => &[Channel::Push],
        ContactKind::ImAccount => &[Channel::Im],
    }
}

/// The rungs of a notice's ladder, in order.
fn rungs(s: &Snapshot, purpose: Purpose) -> Vec<Rung> {
    // At most each contact point on each of its channels (a mobile has two).
    let mut out = Vec::with_capacity(2 * s.contacts.len());
    let live = |c: &&ContactFacts| !c.retired;
    let order = s.preferences.order(&s.ladder.channels);
    for role_rank in 0..2 {
        for ch in &order {
            if *ch == Channel::Voice && purpose == Purpose::Service && !s.ladder.voice_for_service {
                continue;
            }
            for c in s.contacts.iter().filter(live) {
                let rank = match c.role {
                    ContactRole::Primary => 0,
                    ContactRole::Backup => 1,
                    ContactRole::Emergency(_) => continue,
                };
                if rank == role_rank && channels_of(c.kind).contains(ch) {
                    out.push(Rung {
                        contact: c.id,
                        channel: *ch,
                        third_party: false,
                    });
                }
            }
        }
    }
    for c in s.contacts.iter().filter(live) {
        if c.role.is_third_party() && channels_of(c.kind).contains(&Channel::Sms) {
            out.push(Rung {
                contact: c.id,
                channel: Channel::Sms,
                third_party: true,
            });
        }
    }
    out
}

/// The borrower is formally unreachable: no working own contact point, or from the day after
/// 3 failed attempts, or unreachable for 3 days.
pub fn formally_unreachable(s: &Snapshot, now: DateTime<Utc>) -> bool {
    if !s.health.reachable {
        return true;
    }
    let zone = s.zones.first().copied().unwrap_or(Tz::UTC);
    let today = now.with_timezone(&zone).date_naive();
    if s.health.unreachable_since.is_some_and(|d| (today - d).num_days() >= 3) {
        return true;
    }
    // The third failure in time: the three earliest kept in order as the sends go by (asked
    // at every decision; no list to gather and sort).
    let mut earliest = [DateTime::<Utc>::MAX_UTC; 3];
    let mut failures = 0usize;
    for r in s.sends {
        if matches!(r.outcome, Outcome::Failed(c) if c != DeliveryClass::OurFault) {
            failures += 1;
            let mut at = r.at;
            for slot in &mut earliest {
                if at < *slot {
                    std::mem::swap(slot, &mut at);
                }
            }
        }
    }
    failures >= 3 && earliest[2].with_timezone(&zone).date_naive() < today
}

fn attempts(s: &Snapshot, now: DateTime<Utc>) -> History {
    let zone = s.zones.first().copied().unwrap_or(Tz::UTC);
    // The gates judge moments from `now` on, and look back no further than the profile's
    // lookback from there: older attempts cannot count (a borrower's year of sends would
    // otherwise be recounted by every check).
    let since = now - s.profile.lookback();
    History::new(
        zone,
        s.sends.iter().filter(|r| r.at > since).map(|r| Attempt {
            at: r.at,
            contact: r.contact,
            purpose: r.key.kind.purpose(),
            kind: match (r.channel, r.conversation) {
                (Channel::Voice, true) => AttemptKind::CallConnected,
                (Channel::Voice, false) => AttemptKind::CallUnanswered,
                _ => AttemptKind::Message,
            },
        }),
    )
}

/// Decides, for every notice due to this borrower at `now`, what to do.
pub fn decide(s: &Snapshot, now: DateTime<Utc>) -> Vec<Decision> {
    let mut out = Vec::new();
    let zone = s.zones.first().copied().unwrap_or(Tz::UTC);
    let today = now.with_timezone(&zone).date_naive();

    // Health first: lookups it asks for, and contact checks.
    for a in &s.health.contacts {
        for need in &a.needs {
            let action = match need {
                Need::Reverify => Action::ContactCheck {
                    contact: Some(a.contact),
                },
                other => Action::Lookup {
                    contact: a.contact,
                    need: *other,
                },
            };
            let reason = if matches!(need, Need::Reverify) {
                DecisionReason::ContactCheckNeeded
            } else {
                DecisionReason::HealthNeedsLookup
            };
            out.push(Decision {
                key: None,
                action,
                reason,
                gate: None,
                skipped: Vec::new(),
                timing: None,
                channel: None,
            });
        }
    }
    // A number of the borrower's own that is dead or went to someone else: the borrower has
    // most likely changed numbers; ask them on their other channels to confirm the new one.
    for a in &s.health.contacts {
        if matches!(a.state, HealthState::Dead | HealthState::Reassigned)
            && !a.role.is_third_party()
            && !a.needs.contains(&Need::Reverify)
        {
            out.push(Decision {
                key: None,
                action: Action::ContactCheck {
                    contact: Some(a.contact),
                },
                reason: DecisionReason::NumberGone,
                gate: None,
                skipped: Vec::new(),
                timing: None,
                channel: None,
            });
        }
    }
    if !s.health.reachable {
        out.push(Decision {
            key: None,
            action: Action::ContactCheck { contact: None },
            reason: DecisionReason::ContactCheckNeeded,
            gate: None,
            skipped: Vec::new(),
            timing: None,
            channel: None,
        });
    }

    // Each send decided here joins the history the next notice's gates count: two notices
    // due at once must not both take the day's last slot under the caps.
    let mut history = attempts(s, now);
    let unreachable = formally_unreachable(s, now);
    // An emergency contact is asked once, also when several notices are due at once.
    let mut asked: Vec<ContactId> = Vec::new();
    for inst in s.installments.iter().filter(|i| !i.paid) {
        let Some((step_index, step)) = s.cadence.due_step(inst.due_date, today, &[]) else {
            continue;
        };
        let key = NoticeKey {
            installment: inst.id,
            step: step_index,
            kind: step.kind,
        };
        let d = decide_notice(s, key, &history, unreachable, &asked, now);
        if let Action::Send {
            third_party, permit, ..
        } = &d.action
        {
            if *third_party {
                asked.push(permit.contact);
            }
            history.push_on(
                Attempt {
                    at: now,
                    contact: permit.contact,
                    purpose: key.kind.purpose(),
                    kind: if permit.channel == Channel::Voice {
                        AttemptKind::CallUnanswered
                    } else {
                        AttemptKind::Message
                    },
                },
                today,
            );
        }
        out.push(d);
    }
    out
}

fn decide_notice(
    s: &Snapshot,
    key: NoticeKey,
    history: &History,
    unreachable: bool,
    asked: &[ContactId],
    now: DateTime<Utc>,
) -> Decision {
    let purpose = key.kind.purpose();
    let mut ladder = rungs(s, purpose);
    let window = Duration::hours(i64::from(s.ladder.wait_hours));
    let mut sends: Vec<&SendRecord> = s.sends.iter().filter(|r| r.key == key).collect();
    sends.sort_by_key(|r| (r.at, r.rung));
    // The learned channel choice opens the notice: the rung it picks goes first, the ladder
    // follows in its order. Once the notice has gone out, its first send says which rung that
    // was, so the ladder keeps its shape (and its rung numbers) as the counts move.
    let mut opened: Option<ChannelPick> = None;
    if let Some(choice) = s.channels.filter(|_| s.preferences.channels.is_empty()) {
        let first = match sends.first() {
            Some(r) => ladder
                .iter()
                .position(|g| g.contact == r.contact && g.channel == r.channel),
            None => open_on(s, &choice, &ladder, purpose, history, key, now).map(|(i, pick)| {
                opened = Some(pick);
                i
            }),
        };
        if let Some(i) = first {
            let rung = ladder.remove(i);
            ladder.insert(0, rung);
        }
    }
    let decision = |action, reason| Decision {
        key: Some(key),
        action,
        reason,
        gate: None,
        skipped: Vec::new(),
        timing: None,
        channel: None,
    };

    // Where the ladder stands.
    let (start, reason) = match sends.last() {
        None => (0, DecisionReason::CadenceStep),
        Some(last) => {
            if sends.iter().any(|r| r.outcome == Outcome::Engaged) {
                return decision(Action::Suppress, DecisionReason::Done);
            }
            let waited = now - last.at >= window;
            match last.outcome {
                Outcome::Delivered if purpose != Purpose::Collection => {
                    return decision(Action::Suppress, DecisionReason::Done)
                }
                Outcome::Failed(DeliveryClass::OurFault) if waited => (last.rung, DecisionReason::RetryOurFault),
                Outcome::Failed(_) => (last.rung + 1, DecisionReason::EscalatedAfterFailure),
                Outcome::Pending | Outcome::Delivered if waited => {
                    (last.rung + 1, DecisionReason::EscalatedAfterSilence)
                }
                _ => {
                    return decision(
                        Action::Wait {
                            until: last.at + window,
                        },
                        DecisionReason::AwaitingOutcome,
                    )
                }
            }
        }
    };

    let mut skipped = Vec::new();
    for (i, rung) in ladder.iter().enumerate().skip(start) {
        let Some(health) = s.health.contacts.iter().find(|a| a.contact == rung.contact) else {
            continue;
        };
        let third_party = rung.third_party.then(|| {
            let rec = s.third_parties.iter().find(|t| t.contact == rung.contact);
            ThirdParty {
                borrower_unreachable: unreachable,
                contacted_before: rec.is_some_and(|r| r.contacted),
                refused: rec.is_some_and(|r| r.refused),
            }
        });
        // A third party's own health gates the send to them; the purpose is theirs.
        let purpose = if rung.third_party { Purpose::ThirdParty } else { purpose };
        if rung.third_party && health.state == HealthState::Reassigned {
            skipped.push((i, Reason::ContactHealth));
            continue;
        }
        if rung.third_party && asked.contains(&rung.contact) {
            skipped.push((i, Reason::ThirdPartyContacted));
            continue;
        }
        let req = request(s, rung, purpose, health, third_party);
        match gates::check_history(&req, history, s.profile, now) {
            Gate::Allow(permit) => {
                // A notice's first send goes at the hour the model picks, among the hours
                // left today that the gates allow; the rest of the ladder goes at once.
                let timed = match s.timing {
                    Some(t) if sends.is_empty() && !rung.third_party => best_hour(s, &t, &req, history, key, now),
                    _ => None,
                };
                if let Some((at, choice)) = timed {
                    if at > now {
                        return Decision {
                            key: Some(key),
                            action: Action::Defer { until: at },
                            reason: DecisionReason::BestHour,
                            gate: None,
                            skipped,
                            timing: Some(choice),
                            channel: opened,
                        };
                    }
                }
                return Decision {
                    key: Some(key),
                    action: Action::Send {
                        rung: i,
                        third_party: rung.third_party,
                        permit,
                    },
                    reason,
                    gate: None,
                    skipped,
                    timing: timed.map(|(_, c)| c),
                    channel: opened,
                };
            }
            Gate::Defer { until, reason: g } => {
                return Decision {
                    key: Some(key),
                    action: Action::Defer { until },
                    reason: DecisionReason::Gate,
                    gate: Some(g),
                    skipped,
                    timing: None,
                    channel: None,
                }
            }
            Gate::Suppress { reason: g, .. } => skipped.push((i, g)),
        }
    }
    Decision {
        key: Some(key),
        action: Action::ContactCheck { contact: None },
        reason: DecisionReason::LadderExhausted,
        gate: None,
        skipped,
        timing: None,
        channel: None,
    }
}

/// What the gates judge for one rung.
fn request<'a>(
    s: &Snapshot<'a>,
    rung: &Rung,
    purpose: Purpose,
    health: &'a Assessment,
    third_party: Option<ThirdParty>,
) -> gates::Request<'a> {
    gates::Request {
        zones: s.zones,
        purpose,
        channel: rung.channel,
        contact: health,
        third_party,
        // A borrower's notice speaks of the debt; the third-party template never does
        // (checked when templates load).
        mentions_debt: !rung.third_party,
        consents: s.consents,
        quiet: s.preferences.quiet,
    }
}

/// The rung a notice opens on, chosen by the channel model among the borrower's primary
/// points whose message channel has a prior and that the gates allow now (the first such rung
/// of the chosen channel). `None` leaves the ladder's own order.
fn open_on(
    s: &Snapshot,
    choice: &ChannelChoice,
    ladder: &[Rung],
    purpose: Purpose,
    history: &History,
    key: NoticeKey,
    now: DateTime<Utc>,
) -> Option<(usize, ChannelPick)> {
    let mut open: Vec<(usize, Channel)> = Vec::new();
    for (i, rung) in ladder.iter().enumerate() {
        if rung.third_party || !choice.channels.iter().any(|p| p.channel == rung.channel) {
            continue;
        }
        let Some(c) = s.contacts.iter().find(|c| c.id == rung.contact) else {
            continue;
        };
        if c.role != ContactRole::Primary || open.iter().any(|(_, ch)| *ch == rung.channel) {
            continue;
        }
        let Some(health) = s.health.contacts.iter().find(|a| a.contact == rung.contact) else {
            continue;
        };
        let req = request(s, rung, purpose, health, None);
        if matches!(gates::check_history(&req, history, s.profile, now), Gate::Allow(_)) {
            open.push((i, rung.channel));
        }
    }
    if open.len() < 2 {
        return None;
    }
    let offered: Vec<Channel> = open.iter().map(|(_, c)| *c).collect();
    let (channel, est) = choice.choose(&offered, [key.installment.0 as u64, key.step as u64])?;
    let i = open.iter().find(|(_, c)| *c == channel)?.0;
    Some((
        i,
        ChannelPick {
            channel,
            mean_permille: permille(est.mean),
            sampled_permille: permille(est.sampled),
            observations: est.observations,
            candidates: offered.len().min(255) as u8,
        },
    ))
}

/// The moment today, in the borrower's first zone, to send a notice's first message: one
/// candidate per hour from now to midnight that the gates allow (now itself for the current
/// hour), chosen by the send-time model. `None` when the gates allow no hour (not expected:
/// the caller has just been allowed now).
fn best_hour(
    s: &Snapshot,
    t: &Timing,
    req: &gates::Request,
    history: &History,
    key: NoticeKey,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, HourChoice)> {
    let zone = s.zones.first().copied().unwrap_or(Tz::UTC);
    let local = now.with_timezone(&zone);
    let today = local.date_naive();
    // Every candidate is today's `h`:00 local (or now): its hour of the week follows from
    // today's weekday, with no conversion back from UTC.
    let week_day = today.weekday().num_days_from_monday() * 24;
    let mut candidates = Vec::with_capacity(24 - local.hour() as usize);
    for (h, at, wall) in hours_left(local) {
        // The caller's full check allowed now; what can differ at a later hour is only what
        // depends on the moment. The gates' first zone is this one (UTC when none is named,
        // as here), so the wall time is the gates' own local time.
        if gates::allowed_later_today(req, history, s.profile, now, at, wall) {
            candidates.push((HourOfWeek((week_day + h) as u8), at));
        }
    }
    let day = u64::try_from(today.num_days_from_ce()).unwrap_or(0);
    t.choose(&candidates, [key.installment.0 as u64, key.step as u64, day])
}

/// Now, then the start of each later whole hour of the borrower-local day `now` falls in
/// (the earlier instant of an hour a fold repeats; none for an hour a gap skips), with its
/// local hour and its local wall time.
fn hours_left(local: DateTime<Tz>) -> impl Iterator<Item = (u32, DateTime<Utc>, NaiveDateTime)> {
    let (zone, now, today) = (local.timezone(), local.with_timezone(&Utc), local.date_naive());
    // `h`:00 less now's UTC offset is that hour unless the offset changes before then, which
    // one conversion back tells: cheaper than converting from local time, which must look for
    // a gap or a fold. Where the guess holds it is the same instant, the earlier of a fold's
    // two included, since now is before the fold.
    let offset = local.offset().fix();
    std::iter::once((local.hour(), now, local.naive_local())).chain((local.hour() + 1..24).filter_map(move |h| {
        let wall = today.and_time(NaiveTime::from_hms_opt(h, 0, 0)?);
        let guess = wall.checked_sub_offset(offset).map(|w| w.and_utc());
        // The guess's own local time is `wall` exactly when its offset is now's: compared as
        // offsets, without building the local time.
        match guess.filter(|g| zone.offset_from_utc_datetime(&g.naive_utc()).fix() == offset) {
            Some(at) => Some((h, at, wall)),
            None => Some((h, wall.and_local_timezone(zone).earliest()?.with_timezone(&Utc), wall)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The hours `best_hour` offers are those converted one by one from local time, every ten
    /// minutes across days with a gap, a fold, a half-hour shift and a skipped day; the wall
    /// time given with each is the instant's own local time (what the gates would convert).
    #[test]
    fn hours_left_are_the_converted_hours() {
        let days: [(Tz, (i32, u32, u32)); 7] = [
            (chrono_tz::America::New_York, (2024, 3, 10)),
            (chrono_tz::America::New_York, (2024, 11, 3)),
            (chrono_tz::Europe::London, (2024, 10, 27)),
            (chrono_tz::Australia::Lord_Howe, (2024, 4, 7)),
            (chrono_tz::Australia::Lord_Howe, (2024, 10, 6)),
            (chrono_tz::Pacific::Apia, (2011, 12, 29)),
            (chrono_tz::Asia::Shanghai, (2024, 6, 3)),
        ];
        for (zone, (y, m, d)) in days {
            let start = Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() - Duration::hours(14);
            for step in 0..(6 * 24 * 3) {
                let now = start + Duration::minutes(10 * step);
                let local = now.with_timezone(&zone);
                let expected: Vec<(u32, DateTime<Utc>, NaiveDateTime)> = (local.hour()..24)
                    .filter_map(|h| {
                        let at = if h == local.hour() {
                            now
                        } else {
                            let wall = local.date_naive().and_hms_opt(h, 0, 0)?;
                            wall.and_local_timezone(zone).earliest()?.with_timezone(&Utc)
                        };
                        Some((h, at, at.with_timezone(&zone).naive_local()))
                    })
                    .collect();
                assert_eq!(hours_left(local).collect::<Vec<_>>(), expected, "{zone} at {now}");
            }
        }
    }
}
