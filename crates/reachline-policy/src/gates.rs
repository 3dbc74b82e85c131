//! The contact-rule gates every send passes: hours in the borrower's own zone, frequency caps,
//! consent, contact health and the third-party rules, per jurisdiction profile.
//!
//! [`check`] answers one question — may this message go to this contact on this channel now?
//! — with [`Gate::Allow`] carrying a [`Permit`], [`Gate::Defer`] with the next moment every gate
//! allows and the reason, or [`Gate::Suppress`] with the reason. A `Permit` can only be built
//! here, and the send path takes only a `Permit`, so no code path can skip the gates. A notice
//! that is not allowed now is deferred to the next allowed moment, never dropped; only what no
//! later moment would cure (no consent, a reassigned number, a third party who refused) is
//! suppressed.
//!
//! | rule | `cn` | `us` | reason code |
//! |---|---|---|---|
//! | hours, borrower-local (all candidate zones when unsure) | collection 08:00–22:00 | 08:00–21:00 | `quiet_hours` |
//! | connected calls per debtor per day | ≤ 3 | — | `connected_call_cap` |
//! | unanswered dial attempts per number per day | ≤ 6 | — | `unanswered_call_cap` |
//! | call attempts per debt in a rolling 7 days | — | ≤ 7 | `call_frequency_7d` |
//! | calls within 7 days after a conversation | — | none | `after_conversation` |
//! | messages per borrower per day / week (all channels), per contact point per day | 3 / 10, 2 (configurable) | 3 / 10, 2 (configurable) | `daily_cap`, `weekly_cap` |
//! | consent for the purpose and channel | required | required | `no_consent` |
//! | contact health (dead, reassigned, held for a check …) | — | — | `contact_health` |
//! | third parties: only when the borrower is unreachable, never debt content, once each, never after a refusal | ✓ | ✓ | `borrower_reachable`, `third_party_debt_content`, `third_party_contacted`, `third_party_refused` |

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use reachline_domain::{Channel, ContactId, Jurisdiction, Purpose, QuietHours};
use serde::{Deserialize, Serialize};

use crate::health::{Assessment, HealthBlock};

/// Why a send is deferred or suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    QuietHours,
    /// The borrower's own quiet hours (set on their page).
    BorrowerQuietHours,
    ConnectedCallCap,
    UnansweredCallCap,
    CallFrequency7d,
    AfterConversation,
    DailyCap,
    WeeklyCap,
    NoConsent,
    ContactHealth,
    BorrowerReachable,
    ThirdPartyDebtContent,
    ThirdPartyContacted,
    ThirdPartyRefused,
    /// No allowed moment in the coming week (a misconfigured window).
    NoAllowedTime,
}

reachline_domain::named_enum!(Reason, "gate reason", {
    QuietHours => "quiet_hours",
    BorrowerQuietHours => "borrower_quiet_hours",
    ConnectedCallCap => "connected_call_cap",
    UnansweredCallCap => "unanswered_call_cap",
    CallFrequency7d => "call_frequency_7d",
    AfterConversation => "after_conversation",
    DailyCap => "daily_cap",
    WeeklyCap => "weekly_cap",
    NoConsent => "no_consent",
    ContactHealth => "contact_health",
    BorrowerReachable => "borrower_reachable",
    ThirdPartyDebtContent => "third_party_debt_content",
    ThirdPartyContacted => "third_party_contacted",
    ThirdPartyRefused => "third_party_refused",
    NoAllowedTime => "no_allowed_time",
});

/// A daily window of allowed local times, `[start, end)`; it wraps past midnight when
/// `end < start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    pub fn new(start: (u32, u32), end: (u32, u32)) -> Self {
        let t = |(h, m): (u32, u32)| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
        Self {
            start: t(start),
            end: t(end),
        }
    }

    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The times outside the borrower's quiet hours.
    pub fn outside(q: QuietHours) -> Self {
        Window {
            start: q.end,
            end: q.start,
        }
    }
}

/// The window the borrower's own quiet hours leave, if it leaves at least an hour inside the
/// law's `window` (otherwise it is not applied: a due notice must still find a time).
pub fn own_window(window: Option<Window>, quiet: Option<QuietHours>) -> Option<Window> {
    let own = Window::outside(quiet?);
    let both = (0..24 * 4)
        .filter_map(|i| NaiveTime::from_hms_opt(i / 4, (i % 4) * 15, 0))
        .filter(|t| own.contains(*t) && window.is_none_or(|w| w.contains(*t)))
        .count();
    (both >= 4).then_some(own)
}

/// The numbers of one jurisdiction profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateProfile {
    pub jurisdiction: Jurisdiction,
    pub service_hours: Window,
    pub collection_hours: Window,
    pub third_party_hours: Window,
    /// Messages and calls per borrower per local day, across channels (verification codes are
    /// not counted: the borrower asked for them).
    pub max_per_day: u32,
    pub max_per_week: u32,
    /// Messages and calls per contact point per local day.
    pub max_per_contact_per_day: u32,
    pub max_connected_calls_per_day: Option<u32>,
    pub max_unanswered_calls_per_number_per_day: Option<u32>,
    pub max_call_attempts_per_7_days: Option<u32>,
    pub no_calls_days_after_conversation: Option<u32>,
}

impl GateProfile {
    /// How far back from a check an earlier attempt can still count: the rolling week (caps,
    /// call attempts), the calls-after-a-conversation pause, and a day for local days that
    /// began before the check.
    pub fn lookback(&self) -> Duration {
        let days = self.no_calls_days_after_conversation.unwrap_or(0).max(7);
        Duration::days(i64::from(days) + 1)
    }

    /// China: GB/T 45251—2025 and the CBA collection guideline (see the contact rules).
    pub fn cn() -> Self {
        Self {
            jurisdiction: Jurisdiction::Cn,
            service_hours: Window::new((8, 0), (22, 0)),
            collection_hours: Window::new((8, 0), (22, 0)),
            third_party_hours: Window::new((8, 0), (22, 0)),
            max_per_day: 3,
            max_per_week: 10,
            max_per_contact_per_day: 2,
            max_connected_calls_per_day: Some(3),
            max_unanswered_calls_per_number_per_day: Some(6),
            max_call_attempts_per_7_days: None,
            no_calls_days_after_conversation: None,
        }
    }

    /// United States: Regulation F §1006.6(b)(1)(i) and §1006.14(b)(2).
    pub fn us() -> Self {
        Self {
            jurisdiction: Jurisdiction::Us,
            service_hours: Window::new((8, 0), (21, 0)),
            collection_hours: Window::new((8, 0), (21, 0)),
            third_party_hours: Window::new((8, 0), (21, 0)),
            max_per_day: 3,
            max_per_week: 10,
            max_per_contact_per_day: 2,
            max_connected_calls_per_day: None,
            max_unanswered_calls_per_number_per_day: None,
            max_call_attempts_per_7_days: Some(7),
            no_calls_days_after_conversation: Some(7),
        }
    }

    pub fn for_jurisdiction(j: Jurisdiction) -> Self {
        match j {
            Jurisdiction::Cn => Self::cn(),
            Jurisdiction::Us => Self::us(),
        }
    }

    /// The hours a purpose may be sent in; `None` for any hour (a code the borrower asked for).
    pub fn window(&self, purpose: Purpose) -> Option<Window> {
        match purpose {
            Purpose::Service => Some(self.service_hours),
            Purpose::Collection => Some(self.collection_hours),
            Purpose::ThirdParty => Some(self.third_party_hours),
            // A code the borrower just asked for goes at once.
            Purpose::Verification => None,
        }
    }
}

/// What became of an earlier attempt, as far as the caps care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    Message,
    /// A call answered by the borrower: a conversation.
    CallConnected,
    CallUnanswered,
}

/// An earlier attempt to this borrower (any channel, any contact point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub contact: ContactId,
    pub purpose: Purpose,
    pub kind: AttemptKind,
}

/// A borrower's earlier attempts as the caps count them: each with its day in the borrower's
/// first zone, worked out once when it joins rather than at every check (a notice's send-time
/// choice asks the gates once per hour left in the day).
#[derive(Debug, Clone)]
pub struct History {
    zone: Tz,
    items: Vec<(Attempt, NaiveDate)>,
}

impl History {
    /// `zone` is the borrower's first zone (the one the caps' days are counted in).
    pub fn new(zone: Tz, attempts: impl IntoIterator<Item = Attempt>) -> Self {
        let attempts = attempts.into_iter();
        let (least, most) = attempts.size_hint();
        let mut h = Self {
            zone,
            // Room for a usual lookback's attempts at once, rather than growing by pushes.
            items: Vec::with_capacity(most.unwrap_or(least).min(16)),
        };
        for a in attempts {
            h.push(a);
        }
        h
    }

    pub fn push(&mut self, a: Attempt) {
        self.items.push((a, a.at.with_timezone(&self.zone).date_naive()));
    }

    /// [`push`](Self::push) for an attempt whose day in the history's zone the caller knows.
    pub fn push_on(&mut self, a: Attempt, day: NaiveDate) {
        debug_assert_eq!(day, a.at.with_timezone(&self.zone).date_naive());
        self.items.push((a, day));
    }

    /// No attempt is later than `t`.
    pub fn none_after(&self, t: DateTime<Utc>) -> bool {
        self.items.iter().all(|(a, _)| a.at <= t)
    }
}

/// What the third-party rules need to know about an emergency contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThirdParty {
    /// The borrower is formally unreachable (see the contact rules).
    pub borrower_unreachable: bool,
    /// This third party was contacted before.
    pub contacted_before: bool,
    /// This third party refused further contact.
    pub refused: bool,
}

/// One send to be judged.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The borrower's candidate zones, the likeliest first; hours must be allowed in all.
    pub zones: &'a [Tz],
    pub purpose: Purpose,
    pub channel: Channel,
    /// The health of the contact point it would go to.
    pub contact: &'a Assessment,
    /// For an emergency contact: the third-party facts. `None` for the borrower's own.
    pub third_party: Option<ThirdParty>,
    /// Whether the template says anything of the debt (checked when templates load).
    pub mentions_debt: bool,
    /// The borrower's consent events.
    pub consents: &'a [reachline_domain::Consent],
    /// The borrower's own quiet hours (for their own contact points, on service and collection
    /// notices; within the law's hours, never beyond them).
    pub quiet: Option<QuietHours>,
}

/// Proof that a send passed every gate at `at`. Only [`check`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    pub contact: ContactId,
    pub channel: Channel,
    pub purpose: Purpose,
    pub at: DateTime<Utc>,
    _sealed: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sealed;

/// Proof that a verification message may go to a number that is not (yet) a contact point:
/// the new number of a change, which the borrower has just given. Only [`check_new_number`]
/// builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPermit {
    pub channel: Channel,
    pub at: DateTime<Utc>,
    _sealed: Sealed,
}

/// The gates for a verification message to a number the borrower just gave: the borrower
/// must hold consent for verification messages on that channel. Hours and caps do not apply
/// (the borrower is waiting for it); the code rules' limits on sends are the caller's.
pub fn check_new_number(
    consents: &[reachline_domain::Consent],
    channel: Channel,
    now: DateTime<Utc>,
) -> Result<NumberPermit, Reason> {
    if !reachline_domain::consent::permits(consents, Purpose::Verification, channel) {
        return Err(Reason::NoConsent);
    }
    Ok(NumberPermit {
        channel,
        at: now,
        _sealed: Sealed,
    })
}

/// The answer of the gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Allow(Permit),
    Defer {
        until: DateTime<Utc>,
        reason: Reason,
    },
    Suppress {
        reason: Reason,
        health: Option<HealthBlock>,
    },
}

/// Judges one send at `now` against the profile and the borrower's earlier attempts.
pub fn check(req: &Request, history: &[Attempt], profile: &GateProfile, now: DateTime<Utc>) -> Gate {
    let zone = req.zones.first().copied().unwrap_or(Tz::UTC);
    check_history(req, &History::new(zone, history.iter().copied()), profile, now)
}

/// [`check`] with the attempts already counted by day (the caller checks many sends against
/// the same attempts).
pub fn check_history(req: &Request, history: &History, profile: &GateProfile, now: DateTime<Utc>) -> Gate {
    let suppress = |reason| Gate::Suppress { reason, health: None };
    if let Err(block) = req.contact.may_carry(req.purpose) {
        return Gate::Suppress {
            reason: Reason::ContactHealth,
            health: Some(block),
        };
    }
    let consent_purpose = if req.third_party.is_some() {
        Purpose::ThirdParty
    } else {
        req.purpose
    };
    if !reachline_domain::consent::permits(req.consents, consent_purpose, req.channel) {
        return suppress(Reason::NoConsent);
    }
    if let Some(tp) = req.third_party {
        if req.mentions_debt {
            return suppress(Reason::ThirdPartyDebtContent);
        }
        if tp.refused {
            return suppress(Reason::ThirdPartyRefused);
        }
        if tp.contacted_before {
            return suppress(Reason::ThirdPartyContacted);
        }
        if !tp.borrower_unreachable {
            return suppress(Reason::BorrowerReachable);
        }
    }
    check_moment(req, history, profile, now)
}

/// The rules of [`check_history`] that depend on the moment — the contact hours in every
/// candidate zone, the borrower's quiet hours, the caps — for a request whose other rules
/// (health, consent, third party) have been checked already: they do not depend on the moment.
/// [`allowed_at`] answers only whether a moment is allowed.
pub fn check_moment(req: &Request, history: &History, profile: &GateProfile, now: DateTime<Utc>) -> Gate {
    let suppress = |reason| Gate::Suppress { reason, health: None };
    let zones = zones_of(req);
    let mut t = now;
    let mut first: Option<Reason> = None;
    // Each gate that blocks names the moment it would allow; move there and ask all again.
    let law = profile.window(req.purpose);
    let own = own_hours(req, law);
    for _ in 0..16 {
        let block = hours_block(zones, law, t)
            .or_else(|| hours_block(zones, own, t).map(|(until, _)| (until, Reason::BorrowerQuietHours)))
            .or_else(|| {
                caps_block(
                    req,
                    history,
                    profile,
                    zones[0],
                    t,
                    t.with_timezone(&zones[0]).date_naive(),
                )
            });
        match block {
            None if t == now => {
                return Gate::Allow(Permit {
                    contact: req.contact.contact,
                    channel: req.channel,
                    purpose: req.purpose,
                    at: now,
                    _sealed: Sealed,
                })
            }
            None => {
                return Gate::Defer {
                    until: t,
                    reason: first.unwrap_or(Reason::QuietHours),
                }
            }
            Some((until, reason)) => {
                first.get_or_insert(reason);
                if until <= t || until - now > Duration::days(8) {
                    return suppress(Reason::NoAllowedTime);
                }
                t = until;
            }
        }
    }
    suppress(Reason::NoAllowedTime)
}

/// Whether [`check_moment`] allows `t`, without working out when a blocked moment would be
/// allowed (the next window start in every zone, a cap's day rolling over): `decide` asks it
/// of every later hour of the day it could time a notice's first send at, and most refusals
/// there are the evening hours past the window, whose next start it does not need.
pub fn allowed_at(req: &Request, history: &History, profile: &GateProfile, t: DateTime<Utc>) -> bool {
    // The first zone's local time serves both windows and the caps' day: one conversion.
    let first = t.with_timezone(&zones_of(req)[0]).naive_local();
    allowed_at_local(req, history, profile, t, first)
}

/// [`allowed_at`], with `t`'s wall time in the request's first zone (UTC if it names none)
/// already known — as it is to `decide`, which builds its candidate moments from local hours.
pub fn allowed_at_local(
    req: &Request,
    history: &History,
    profile: &GateProfile,
    t: DateTime<Utc>,
    first: NaiveDateTime,
) -> bool {
    let zones = zones_of(req);
    let law = profile.window(req.purpose);
    inside_from(first.time(), zones, law, t)
        && inside_from(first.time(), zones, own_hours(req, law), t)
        && caps_block(req, history, profile, zones[0], t, first.date()).is_none()
}

/// [`allowed_at_local`] for a moment `t` later on the same day, in the request's first zone,
/// as a moment `now` that [`check_history`] allowed: with no attempt after `now` only the
/// contact hours are asked ([`hours_allow_later_today`]), else every rule of the moment.
pub fn allowed_later_today(
    req: &Request,
    history: &History,
    profile: &GateProfile,
    now: DateTime<Utc>,
    t: DateTime<Utc>,
    first: NaiveDateTime,
) -> bool {
    if !history.none_after(now) {
        return allowed_at_local(req, history, profile, t, first);
    }
    let hours = hours_allow_later_today(req, profile, t, first);
    debug_assert_eq!(
        hours,
        allowed_at_local(req, history, profile, t, first),
        "the caps refused {t} after allowing {now}"
    );
    hours
}

/// The contact hours alone, for a moment `t` later on the same day, in the request's first
/// zone, as a moment `now` that [`check_history`] allowed, when the history has no attempt
/// after `now`: the caps cannot refuse `t`. Every cap counts
/// attempts up to the moment judged, and all of them are at or before `now`: the day caps
/// count the same attempts of the same day at `t` as at `now`; the rolling-week caps count
/// those later than a week before, fewer or as many at the later moment; a call ban after a
/// conversation that has ended by `now` has ended by `t`. `decide` asks this of every later
/// hour of the day it could time a notice's first send at (through [`allowed_later_today`]).
pub fn hours_allow_later_today(req: &Request, profile: &GateProfile, t: DateTime<Utc>, first: NaiveDateTime) -> bool {
    let zones = zones_of(req);
    let law = profile.window(req.purpose);
    inside_from(first.time(), zones, law, t) && inside_from(first.time(), zones, own_hours(req, law), t)
}

/// The request's candidate zones; UTC when it names none.
fn zones_of<'a>(req: &Request<'a>) -> &'a [Tz] {
    if req.zones.is_empty() {
        &[Tz::UTC]
    } else {
        req.zones
    }
}

/// The borrower's own hours within the law's, for their own points on service and collection.
fn own_hours(req: &Request, law: Option<Window>) -> Option<Window> {
    match req.purpose {
        Purpose::Service | Purpose::Collection if req.third_party.is_none() => own_window(law, req.quiet),
        _ => None,
    }
}

/// `t` is inside the window in every zone (no window: always); `zones` is not empty.
fn inside(zones: &[Tz], window: Option<Window>, t: DateTime<Utc>) -> bool {
    window.is_none() || inside_from(t.with_timezone(&zones[0]).time(), zones, window, t)
}

/// [`inside`], with `t`'s local time in the first zone already known.
fn inside_from(first: NaiveTime, zones: &[Tz], window: Option<Window>, t: DateTime<Utc>) -> bool {
    window.is_none_or(|w| w.contains(first) && zones[1..].iter().all(|z| w.contains(t.with_timezone(z).time())))
}

/// If `t` is outside the window in any zone, the next moment inside it in all zones.
fn hours_block(zones: &[Tz], window: Option<Window>, t: DateTime<Utc>) -> Option<(DateTime<Utc>, Reason)> {
    if inside(zones, window, t) {
        return None;
    }
    let window = window?;
    let ok = |at: DateTime<Utc>| inside(zones, Some(window), at);
    // The next allowed moment is `t` or some zone's next window start: try them in order.
    let mut candidates: Vec<DateTime<Utc>> = Vec::new();
    for z in zones {
        let local = t.with_timezone(z).date_naive();
        for d in 0..3 {
            let day = local + Duration::days(d);
            if let Some(start) = z.from_local_datetime(&day.and_time(window.start)).earliest() {
                let start = start.with_timezone(&Utc);
                if start > t {
                    candidates.push(start);
                }
            }
        }
    }
    candidates.sort();
    let next = candidates.into_iter().find(|c| ok(*c)).unwrap_or(t + Duration::days(7));
    Some((next, Reason::QuietHours))
}

/// The start of the borrower-local day after the one `t` falls in.
fn next_local_day(zone: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    let day = t.with_timezone(&zone).date_naive() + Duration::days(1);
    zone.from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map_or(t + Duration::days(1), |d| d.with_timezone(&Utc))
}

/// The first cap `t` is over, and when it would allow again; `today` is `t`'s date in `zone`.
fn caps_block(
    req: &Request,
    history: &History,
    p: &GateProfile,
    zone: Tz,
    t: DateTime<Utc>,
    today: NaiveDate,
) -> Option<(DateTime<Utc>, Reason)> {
    if req.purpose == Purpose::Verification {
        return None;
    }
    // The days were counted in the history's zone: the same as `zone` unless a caller mixed them.
    let recount;
    let history = if history.zone == zone {
        history
    } else {
        recount = History::new(zone, history.items.iter().map(|(a, _)| *a));
        &recount
    };
    let counted = || {
        history
            .items
            .iter()
            .filter(move |(a, _)| a.at <= t && a.purpose != Purpose::Verification)
    };
    let same_day = |(_, day): &&(Attempt, NaiveDate)| *day == today;
    if counted().filter(same_day).count() as u32 >= p.max_per_day {
        return Some((next_local_day(zone, t), Reason::DailyCap));
    }
    let to_contact = counted()
        .filter(|(a, _)| a.contact == req.contact.contact)
        .filter(same_day)
        .count();
    if to_contact as u32 >= p.max_per_contact_per_day {
        return Some((next_local_day(zone, t), Reason::DailyCap));
    }
    // Within the rolling week: later than `t` less seven days (one subtraction, not one per
    // attempt).
    let week_ago = t - Duration::days(7);
    let week = counted().filter(|(a, _)| a.at > week_ago).count();
    if week as u32 >= p.max_per_week {
        // Allowed again when enough of them have left the rolling week.
        let mut week: Vec<DateTime<Utc>> = counted().map(|(a, _)| a.at).filter(|at| *at > week_ago).collect();
        week.sort();
        let k = week.len() - p.max_per_week as usize;
        return Some((week[k] + Duration::days(7), Reason::WeeklyCap));
    }
    if req.channel != Channel::Voice || req.purpose != Purpose::Collection {
        return None;
    }
    let calls: Vec<&(Attempt, NaiveDate)> = counted()
        .filter(|(a, _)| matches!(a.kind, AttemptKind::CallConnected | AttemptKind::CallUnanswered))
        .collect();
    if let Some(max) = p.max_connected_calls_per_day {
        let n = calls
            .iter()
            .filter(|x| x.0.kind == AttemptKind::CallConnected && same_day(x))
            .count();
        if n as u32 >= max {
            return Some((next_local_day(zone, t), Reason::ConnectedCallCap));
        }
    }
    if let Some(max) = p.max_unanswered_calls_per_number_per_day {
        let n = calls
            .iter()
            .filter(|x| x.0.kind == AttemptKind::CallUnanswered && x.0.contact == req.contact.contact && same_day(x))
            .count();
        if n as u32 >= max {
            return Some((next_local_day(zone, t), Reason::UnansweredCallCap));
        }
    }
    if let Some(days) = p.no_calls_days_after_conversation {
        if let Some(last) = calls
            .iter()
            .filter(|(a, _)| a.kind == AttemptKind::CallConnected)
            .map(|(a, _)| a.at)
            .max()
        {
            let until = last + Duration::days(i64::from(days));
            if until > t {
                return Some((until, Reason::AfterConversation));
            }
        }
    }
    if let Some(max) = p.max_call_attempts_per_7_days {
        let mut recent: Vec<DateTime<Utc>> = calls.iter().map(|(a, _)| a.at).filter(|at| *at > week_ago).collect();
        if recent.len() as u32 >= max {
            recent.sort();
            // Allowed again when the oldest of the last `max` leaves the rolling week.
            let k = recent.len() - max as usize;
            return Some((recent[k] + Duration::days(7), Reason::CallFrequency7d));
        }
    }
    None
}
