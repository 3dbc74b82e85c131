//! The drill's report: the faulty run read against the control (same seed, same book, same
//! clock). Notices are matched across runs by the lender's ids (borrower, loan, installment) and
//! the cadence step, never by database ids. Every figure is computed from what the engine
//! recorded (outbox, decisions, evidence) and what the gateways saw (the taps); nothing names a
//! person, a number or an address.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use reachline_domain::{BorrowerId, Purpose};
use reachline_policy::NoticeKind;
use reachline_store::engine::{EngineView, OutboxRow, SendState};
use serde::Serialize;

use super::runner::RunRecord;
use super::scenario::{Fault, FaultKind, Scenario};

/// A notice across runs: `borrower/loan#seq/step/kind` in the lender's ids.
type NoticeId = String;

fn notice_of(v: &EngineView, installment: reachline_domain::InstallmentId, step: usize, kind: &str) -> NoticeId {
    let (loan, seq) = v
        .installments
        .iter()
        .find(|i| i.id == installment)
        .map_or(("?", 0), |i| (i.loan_ref.as_str(), i.seq));
    format!("{}/{loan}#{seq}/{step}/{kind}", v.external_id)
}

fn row_notice(v: &EngineView, r: &OutboxRow) -> NoticeId {
    notice_of(v, r.installment, r.step, &r.kind)
}

/// The decision history's `installment/step/kind` as a notice id.
fn decision_notice(v: &EngineView, text: &str) -> Option<NoticeId> {
    let mut it = text.split('/');
    let inst: i64 = it.next()?.parse().ok()?;
    let step: usize = it.next()?.parse().ok()?;
    let kind = it.next()?;
    Some(notice_of(v, reachline_domain::InstallmentId(inst), step, kind))
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub kind: &'static str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Minutes from the fault's start to the first moment Reachline's records show it noticed.
    pub detect_minutes: Option<f64>,
    pub detected_by: String,
    /// Minutes from the fault's start to the first notice the fault hit that another provider
    /// or channel then took.
    pub failover_minutes: Option<f64>,
    /// Minutes from that notice's first refusal or failure to its taking by the other.
    pub failover_after_refusal_minutes: Option<f64>,
    pub failover_by: String,
    /// Minutes from the fault's end until the faulty provider showed up again, if it showed
    /// anything but up during the fault.
    pub recovered_minutes: Option<f64>,
    /// Notices the faulty providers or channel refused or failed during the fault.
    pub notices_hit: u64,
    /// Real milliseconds per engine pass while the fault held: this run, the control.
    pub pass_ms_p50: Option<f64>,
    pub pass_ms_max: Option<f64>,
    pub control_pass_ms_p50: Option<f64>,
    pub control_pass_ms_max: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub run: &'static str,
    pub notice: String,
    pub at: DateTime<Utc>,
    pub rule: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub borrowers: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The simulated time between the engine's passes.
    pub tick: String,
    pub faults: Vec<FaultReport>,
    /// Notices a provider took in the control run, and in the faulty run.
    pub notices_sent_control: u64,
    pub notices_sent_faulty: u64,
    /// Sent in both runs, later in the faulty one: count, median and max delay (minutes).
    pub delayed: u64,
    pub delay_median_minutes: Option<f64>,
    pub delay_max_minutes: Option<f64>,
    /// Sent by the control, not by the faulty run, but accounted for: still queued or in doubt
    /// at the end, or held back by a recorded decision (by reason).
    pub pending_at_end: u64,
    pub held_back: BTreeMap<String, u64>,
    /// Sent by the control; the faulty run neither sent them nor recorded why. Must be 0.
    pub lost: u64,
    pub lost_notices: Vec<String>,
    /// Attempts that break a contact rule when checked again afterwards. Must be 0.
    pub outside_rules: u64,
    pub violations: Vec<Violation>,
    /// Messages a provider took for a number after a stranger got it, and for a number that was
    /// dead (mass recycling).
    pub misdirected_to_stranger: u64,
    pub sent_to_dead_number: u64,
    /// Contact points the faulty run judged dead, suspended, suspect or reassigned at the end
    /// that the control did not.
    pub contacts_condemned: u64,
    pub contacts_condemned_by_state: BTreeMap<String, u64>,
    pub contacts_condemned_recycled: u64,
    /// Attempts the faulty run left in doubt (after a restart).
    pub in_doubt: u64,
    pub lookups_failed: u64,
    /// Lookups the engine gave up on (refused, or past its deadline), as its metrics count them.
    pub lookups_abandoned: u64,
    /// Engine passes that failed (logged; the next pass tried), and the database the runs used.
    pub passes_failed: u64,
    pub database: String,
    pub passed: bool,
}

fn minutes(d: Duration) -> f64 {
    d.num_seconds() as f64 / 60.0
}

fn first_sent(r: &RunRecord) -> HashMap<NoticeId, DateTime<Utc>> {
    let mut out: HashMap<NoticeId, DateTime<Utc>> = HashMap::new();
    for (v, row) in r.rows() {
        if row.state != SendState::Sent {
            continue;
        }
        if let Some(at) = row.sent_at {
            let e = out.entry(row_notice(v, row)).or_insert(at);
            *e = (*e).min(at);
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

/// The providers a fault acts on (their names in the engine's records).
fn providers_of(f: &Fault, s: &Scenario) -> HashSet<String> {
    match f.kind {
        FaultKind::SmscDown | FaultKind::SmscThrottle => f.provider.iter().cloned().collect(),
        FaultKind::SmtpBounceAll => ["smtp".to_string()].into(),
        FaultKind::Push5xx => ["fcm".to_string()].into(),
        FaultKind::MassRecycle => s.channels.sms.iter().cloned().collect(),
        _ => HashSet::new(),
    }
}

fn fault_report(s: &Scenario, f: &Fault, faulty: &RunRecord, control: &RunRecord) -> FaultReport {
    let (fs, fe) = (s.start + f.start.0, s.start + f.end.0);
    let affected = providers_of(f, s);
    let mut notice_by_id: HashMap<i64, NoticeId> = HashMap::new();
    let mut channel_by_id: HashMap<i64, reachline_domain::Channel> = HashMap::new();
    for (v, row) in faulty.rows() {
        notice_by_id.insert(row.id, row_notice(v, row));
        channel_by_id.insert(row.id, row.channel);
    }
    // What Reachline noticed, earliest first.
    let mut seen: Vec<(DateTime<Utc>, String)> = Vec::new();
    for (at, p, state) in &faulty.provider_changes {
        if *at >= fs && affected.contains(p) && *state != "up" {
            seen.push((*at, format!("provider {p} shown {state}")));
        }
    }
    for t in &faulty.taps {
        if let Some((class, provider_fault)) = t.refused {
            if t.at >= fs && affected.contains(&t.provider) {
                let whose = if provider_fault {
                    "provider's fault"
                } else {
                    "message refused"
                };
                seen.push((
                    t.at,
                    format!("{} refused a send ({}, {whose})", t.provider, class.as_str()),
                ));
            }
        }
    }
    for at in &faulty.lookup_failures {
        if *at >= fs {
            seen.push((*at, "a carrier lookup failed".into()));
        }
    }
    for (at, n) in &faulty.engine_lookup_failures {
        if *at >= fs && matches!(f.kind, FaultKind::IntelSlow | FaultKind::IntelDown) {
            seen.push((
                *at,
                format!(
                    "the engine gave up on {n} carrier lookup(s) (refused, or no answer within {} ms)",
                    super::runner::LOOKUP_TIMEOUT.as_millis()
                ),
            ));
        }
    }
    for (at, why) in &faulty.pass_failures {
        if *at >= fs {
            seen.push((*at, format!("a pass failed: {why}")));
        }
    }
    for at in &faulty.resumed {
        if *at >= fs {
            seen.push((*at, "the node's passes worked again".into()));
        }
    }
    for (at, in_doubt) in &faulty.restarts {
        if *at >= fs {
            seen.push((
                *at,
                format!("node restarted on the database and recovered ({in_doubt} attempts in doubt)"),
            ));
        }
    }
    if f.kind == FaultKind::MassRecycle {
        let hit: HashSet<BorrowerId> = faulty
            .views
            .iter()
            .filter(|v| v.contacts.iter().any(|c| faulty.recycled_contacts.contains(&c.id)))
            .map(|v| v.id)
            .collect();
        for b in &hit {
            for (at, d) in faulty.decisions.get(b).into_iter().flatten() {
                let noticed = matches!(
                    d.reason.as_str(),
                    "escalated_after_failure" | "health_needs_lookup" | "contact_check_needed" | "number_gone"
                ) || d.gate.as_deref() == Some("contact_health");
                if *at >= fs && noticed {
                    seen.push((
                        *at,
                        format!("a decision about a recycled number's borrower: {}", d.reason),
                    ));
                }
            }
        }
        for v in faulty.views.iter().filter(|v| hit.contains(&v.id)) {
            for e in &v.evidence {
                let failure = e.kind.contains("\"failed\"") || e.kind.contains("dead") || e.kind.contains("recycled");
                if e.at >= fs && failure && e.contact.is_some_and(|c| faulty.recycled_contacts.contains(&c)) {
                    seen.push((e.at, "evidence against a recycled number recorded".into()));
                }
            }
        }
    }
    seen.sort_by_key(|(at, _)| *at);
    let (detect_minutes, detected_by) = match seen.first() {
        Some((at, why)) => (Some(minutes(*at - fs)), why.clone()),
        None => (None, "nothing in the engine's records".into()),
    };
    // The notices the fault hit: a refusal by an affected provider, or a failed outcome on the
    // fault's channel, during the fault.
    let mut hit: HashMap<NoticeId, DateTime<Utc>> = HashMap::new();
    for t in &faulty.taps {
        if t.refused.is_some() && t.at >= fs && t.at < fe && affected.contains(&t.provider) {
            if let Some(n) = t.outbox_id.and_then(|id| notice_by_id.get(&id)) {
                hit.entry(n.clone()).or_insert(t.at);
            }
        }
    }
    if let Some(ch) = f.kind.channel() {
        for (v, row) in faulty.rows() {
            let failed = matches!(row.outcome, reachline_store::engine::SendOutcome::Failed(_));
            if row.channel == ch && failed && row.sent_at.is_some_and(|t| t >= fs && t < fe) {
                let at = row.sent_at.unwrap_or(fs);
                let e = hit.entry(row_notice(v, row)).or_insert(at);
                *e = (*e).min(at);
            }
        }
    }
    // Taken by another provider and not failed since (delivered, or no receipt on that channel).
    let outcome_by_id: HashMap<i64, reachline_store::engine::SendOutcome> =
        faulty.rows().map(|(_, r)| (r.id, r.outcome)).collect();
    let mut failover: Option<(DateTime<Utc>, String, DateTime<Utc>)> = None;
    for t in &faulty.taps {
        if t.refused.is_some() || t.at < fs || affected.contains(&t.provider) {
            continue;
        }
        let Some(id) = t.outbox_id else { continue };
        if matches!(
            outcome_by_id.get(&id),
            Some(reachline_store::engine::SendOutcome::Failed(_))
        ) {
            continue;
        }
        let Some(n) = notice_by_id.get(&id) else { continue };
        if let Some(h) = hit.get(n).filter(|h| **h <= t.at) {
            if failover.as_ref().is_none_or(|(at, _, _)| t.at < *at) {
                failover = Some((t.at, format!("{} ({})", t.provider, t.channel.as_str()), *h));
            }
        }
    }
    // The database: the node working again is the failover.
    if f.kind == FaultKind::DbRestart && failover.is_none() {
        let back = faulty
            .resumed
            .iter()
            .copied()
            .chain(faulty.restarts.iter().map(|(at, _)| *at))
            .filter(|at| *at >= fs)
            .min();
        if let Some(at) = back {
            failover = Some((at, "the node (working on the database again)".into(), fs));
        }
    }
    let recovered = faulty
        .provider_changes
        .iter()
        .find(|(at, p, state)| *at >= fe && affected.contains(p) && *state == "up")
        .map(|(at, _, _)| minutes(*at - fe));
    let during = |r: &RunRecord| {
        let mut ms: Vec<f64> = r
            .passes
            .iter()
            .filter(|(at, _)| *at >= fs && *at < fe)
            .map(|(_, m)| *m)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let (ours, theirs) = (during(faulty), during(control));
    FaultReport {
        kind: f.kind.as_str(),
        start: fs,
        end: fe,
        detect_minutes,
        detected_by,
        failover_minutes: failover.as_ref().map(|(at, _, _)| minutes(*at - fs)),
        failover_after_refusal_minutes: failover.as_ref().map(|(at, _, hit)| minutes(*at - *hit)),
        failover_by: failover.map_or_else(|| "-".into(), |(_, p, _)| p),
        recovered_minutes: recovered,
        notices_hit: hit.len() as u64,
        pass_ms_p50: percentile(&ours, 0.5),
        pass_ms_max: ours.last().copied(),
        control_pass_ms_p50: percentile(&theirs, 0.5),
        control_pass_ms_max: theirs.last().copied(),
    }
}

/// Every attempt checked again against the contact rules at the moment it was made: hours in
/// the borrower's zone, the daily, weekly and per-contact caps, consent for the purpose on the
/// channel, and the contact point's health (replayed from the evidence recorded before it).
pub fn check_rules(run: &'static str, r: &RunRecord) -> Vec<Violation> {
    let mut out = Vec::new();
    for v in &r.views {
        let profile = r.engine.profile(v.jurisdiction);
        let mut attempts: Vec<&OutboxRow> = v
            .sends
            .iter()
            .filter(|s| s.state.attempted() && s.sent_at.is_some())
            .collect();
        attempts.sort_by_key(|s| (s.sent_at, s.id));
        for (i, row) in attempts.iter().enumerate() {
            let Some(at) = row.sent_at else { continue };
            let mut flag = |rule: String| {
                out.push(Violation {
                    run,
                    notice: row_notice(v, row),
                    at,
                    rule,
                })
            };
            let Ok(kind) = row.kind.parse::<NoticeKind>() else {
                flag(format!("unknown notice kind {}", row.kind));
                continue;
            };
            let purpose = if row.third_party {
                Purpose::ThirdParty
            } else {
                kind.purpose()
            };
            let window = match purpose {
                Purpose::Collection => profile.collection_hours,
                Purpose::ThirdParty => profile.third_party_hours,
                _ => profile.service_hours,
            };
            let local = at.with_timezone(&v.zone);
            if !window.contains(local.time()) {
                flag(format!("hours: sent at {} local", local.format("%H:%M")));
            }
            let before = &attempts[..=i];
            let day = local.date_naive();
            let same_day = |s: &&&OutboxRow| s.sent_at.is_some_and(|t| t.with_timezone(&v.zone).date_naive() == day);
            if !row.third_party {
                let own: Vec<&OutboxRow> = before.iter().copied().filter(|s| !s.third_party).collect();
                let today = own.iter().filter(same_day).count() as u32;
                if today > profile.max_per_day {
                    flag(format!("daily cap: attempt {today} of at most {}", profile.max_per_day));
                }
                let week = own
                    .iter()
                    .filter(|s| s.sent_at.is_some_and(|t| at - t < Duration::days(7)))
                    .count() as u32;
                if week > profile.max_per_week {
                    flag(format!(
                        "weekly cap: attempt {week} of at most {}",
                        profile.max_per_week
                    ));
                }
            }
            let to_contact = before
                .iter()
                .filter(|s| s.contact == row.contact)
                .filter(same_day)
                .count() as u32;
            if to_contact > profile.max_per_contact_per_day {
                flag(format!(
                    "per-contact cap: attempt {to_contact} of at most {}",
                    profile.max_per_contact_per_day
                ));
            }
            let consents: Vec<_> = v.consents.iter().filter(|c| c.at <= at).cloned().collect();
            if !reachline_domain::consent::permits(&consents, purpose, row.channel) {
                flag(format!(
                    "consent: no {} consent on {}",
                    purpose.as_str(),
                    row.channel.as_str()
                ));
            }
            // Health as it stood just before the send.
            let mut then = v.clone();
            then.evidence.retain(|e| e.at < at);
            then.sends.retain(|s| s.sent_at.is_some_and(|t| t < at));
            match reachline_engine::plan::Owned::build(&then, &r.engine, at) {
                Ok(owned) => {
                    if let Some(a) = owned.health.contacts.iter().find(|a| a.contact == row.contact) {
                        if a.may_carry(purpose).is_err() {
                            flag(format!("contact health: {} ({})", a.state.as_str(), a.rule.as_str()));
                        }
                    }
                }
                Err(e) => flag(format!("the borrower's records do not read: {e}")),
            }
        }
    }
    out
}

const CONDEMNED: &[&str] = &["dead", "suspended", "suspect", "reassigned"];

fn condemned(r: &RunRecord) -> HashMap<(String, i64), &'static str> {
    let mut out = HashMap::new();
    for v in &r.views {
        if let Ok(owned) = reachline_engine::plan::Owned::build(v, &r.engine, r.end) {
            for a in &owned.health.contacts {
                if CONDEMNED.contains(&a.state.as_str()) {
                    out.insert((v.external_id.clone(), a.contact.0), a.state.as_str());
                }
            }
        }
    }
    out
}

pub fn compare(s: &Scenario, control: &RunRecord, faulty: &RunRecord) -> Report {
    let sent_c = first_sent(control);
    let sent_f = first_sent(faulty);
    let mut delays: Vec<f64> = Vec::new();
    let mut pending = 0u64;
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = Vec::new();
    // The faulty run's open rows and its latest decision per notice.
    let mut open: HashSet<NoticeId> = HashSet::new();
    for (v, row) in faulty.rows() {
        if matches!(
            row.state,
            SendState::Queued | SendState::Leased | SendState::Sending | SendState::InDoubt
        ) {
            open.insert(row_notice(v, row));
        }
    }
    let mut latest: HashMap<NoticeId, (String, String)> = HashMap::new();
    for v in &faulty.views {
        for (_, d) in faulty.decisions.get(&v.id).into_iter().flatten() {
            if let Some(n) = decision_notice(v, &d.notice) {
                let why = match &d.gate {
                    Some(g) => format!("{}: {g}", d.reason),
                    None => d.reason.clone(),
                };
                latest.insert(n, (d.action.clone(), why));
            }
        }
    }
    let mut control_notices: Vec<(&NoticeId, &DateTime<Utc>)> = sent_c.iter().collect();
    control_notices.sort();
    for (n, c_at) in control_notices {
        match sent_f.get(n) {
            Some(f_at) if f_at > c_at => delays.push(minutes(*f_at - *c_at)),
            Some(_) => {}
            None if open.contains(n) => pending += 1,
            None => match latest.get(n) {
                Some((action, why)) if action != "send" => {
                    *held.entry(format!("{action} ({why})")).or_default() += 1;
                }
                _ => lost.push(n.clone()),
            },
        }
    }
    delays.sort_by(f64::total_cmp);
    let mut violations = check_rules("faulty", faulty);
    violations.extend(check_rules("control", control));
    let (cond_c, cond_f) = (condemned(control), condemned(faulty));
    let newly: Vec<&(String, i64)> = cond_f.keys().filter(|k| !cond_c.contains_key(*k)).collect();
    let recycled_ids: HashSet<i64> = faulty.recycled_contacts.iter().map(|c| c.0).collect();
    let faults: Vec<FaultReport> = s.faults.iter().map(|f| fault_report(s, f, faulty, control)).collect();
    let outside = violations.len() as u64;
    Report {
        scenario: s.name.clone(),
        description: s.description.clone(),
        seed: s.seed,
        borrowers: s.borrowers,
        start: s.start,
        end: s.end(),
        tick: s.tick.to_string(),
        faults,
        notices_sent_control: sent_c.len() as u64,
        notices_sent_faulty: sent_f.len() as u64,
        delayed: delays.len() as u64,
        delay_median_minutes: percentile(&delays, 0.5),
        delay_max_minutes: delays.last().copied(),
        pending_at_end: pending,
        held_back: held,
        lost: lost.len() as u64,
        lost_notices: lost.into_iter().take(20).collect(),
        outside_rules: outside,
        violations: violations.into_iter().take(20).collect(),
        misdirected_to_stranger: faulty
            .taps
            .iter()
            .filter(|t| t.refused.is_none() && t.holder == super::gateways::Holder::Stranger)
            .count() as u64,
        sent_to_dead_number: faulty
            .taps
            .iter()
            .filter(|t| t.refused.is_none() && t.holder == super::gateways::Holder::Nobody)
            .count() as u64,
        contacts_condemned: newly.len() as u64,
        contacts_condemned_by_state: newly.iter().fold(BTreeMap::new(), |mut m, k| {
            *m.entry(cond_f[*k].to_string()).or_default() += 1;
            m
        }),
        contacts_condemned_recycled: newly.iter().filter(|(_, c)| recycled_ids.contains(c)).count() as u64,
        in_doubt: faulty.rows().filter(|(_, r)| r.state == SendState::InDoubt).count() as u64,
        lookups_failed: faulty.lookup_failures.len() as u64,
        lookups_abandoned: faulty.engine_lookup_failures.iter().map(|(_, n)| n).sum(),
        passes_failed: faulty.pass_failures.len() as u64,
        database: faulty.database.clone(),
        passed: false,
    }
    .finish()
}

impl Report {
    fn finish(mut self) -> Self {
        self.passed = self.lost == 0 && self.outside_rules == 0;
        self
    }

    pub fn markdown(&self) -> String {
        let opt = |m: Option<f64>| m.map_or_else(|| "—".to_string(), |m| format!("{m:.0} min"));
        let ms = |m: Option<f64>| m.map_or_else(|| "—".to_string(), |m| format!("{m:.0} ms"));
        let mut out = String::new();
        out.push_str(&format!("# Drill: {}\n\n", self.scenario));
        if !self.description.is_empty() {
            out.push_str(&format!("{}\n\n", self.description.trim()));
        }
        out.push_str(&format!(
            "{} borrowers, seed {}, on {}, simulated {} → {}; the same run without the fault is the control.\n\n",
            self.borrowers,
            self.seed,
            self.database,
            self.start.format("%Y-%m-%d %H:%M"),
            self.end.format("%Y-%m-%d %H:%M UTC")
        ));
        out.push_str(
            "| fault | from | to | time to detect | detected by | time to fail over (after the refusal) | over to | notices hit | provider back |\n",
        );
        out.push_str("|---|---|---|---:|---|---:|---|---:|---:|\n");
        for f in &self.faults {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |\n",
                f.kind,
                f.start.format("%m-%d %H:%M"),
                f.end.format("%m-%d %H:%M"),
                opt(f.detect_minutes),
                f.detected_by,
                opt(f.failover_minutes),
                opt(f.failover_after_refusal_minutes),
                f.failover_by,
                f.notices_hit,
                f.recovered_minutes
                    .map_or_else(|| "—".into(), |m| format!("{m:.0} min after")),
            ));
        }
        out.push_str(&format!(
            "\nTimes are simulated and measured to the engine's pass ({} apart).\n",
            self.tick
        ));
        out.push('\n');
        let held: u64 = self.held_back.values().sum();
        let rows: Vec<(&str, String)> = vec![
            (
                "notices sent (control / drill)",
                format!("{} / {}", self.notices_sent_control, self.notices_sent_faulty),
            ),
            (
                "notices delayed (median / max delay)",
                format!(
                    "{} ({} / {})",
                    self.delayed,
                    opt(self.delay_median_minutes),
                    opt(self.delay_max_minutes)
                ),
            ),
            (
                "not sent by the end, still queued or in doubt",
                self.pending_at_end.to_string(),
            ),
            ("not sent, held back by a recorded decision", held.to_string()),
            ("**notices lost** (must be 0)", format!("**{}**", self.lost)),
            (
                "**sends outside the rules** (must be 0)",
                format!("**{}**", self.outside_rules),
            ),
            (
                "messages to a number after a stranger got it",
                self.misdirected_to_stranger.to_string(),
            ),
            (
                "messages to a number while it was dead",
                self.sent_to_dead_number.to_string(),
            ),
            (
                "contact points condemned at the end, not in the control (by state; of them recycled)",
                format!(
                    "{}{} ({} recycled)",
                    self.contacts_condemned,
                    if self.contacts_condemned_by_state.is_empty() {
                        String::new()
                    } else {
                        let by: Vec<String> = self
                            .contacts_condemned_by_state
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect();
                        format!(": {}", by.join(", "))
                    },
                    self.contacts_condemned_recycled
                ),
            ),
            ("attempts left in doubt", self.in_doubt.to_string()),
            (
                "engine passes that failed (logged, the next one tried)",
                self.passes_failed.to_string(),
            ),
            (
                "carrier lookups the engine gave up on (refused, or past its deadline)",
                self.lookups_abandoned.to_string(),
            ),
            ("carrier lookups that failed", self.lookups_failed.to_string()),
        ];
        out.push_str("| measure | value |\n|---|---:|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        for f in &self.faults {
            if f.pass_ms_p50.is_some() {
                out.push_str(&format!(
                    "\nEngine passes during {} (real time, p50 / max): {} / {}; control {} / {}.\n",
                    f.kind,
                    ms(f.pass_ms_p50),
                    ms(f.pass_ms_max),
                    ms(f.control_pass_ms_p50),
                    ms(f.control_pass_ms_max)
                ));
            }
        }
        if !self.held_back.is_empty() {
            out.push_str("\nHeld back, by the decision recorded:\n\n");
            for (why, n) in &self.held_back {
                out.push_str(&format!("- {why}: {n}\n"));
            }
        }
        if !self.lost_notices.is_empty() {
            out.push_str("\nLost notices (first 20):\n\n");
            for n in &self.lost_notices {
                out.push_str(&format!("- {n}\n"));
            }
        }
        if !self.violations.is_empty() {
            out.push_str("\nSends outside the rules (first 20):\n\n");
            for v in &self.violations {
                out.push_str(&format!("- {} run, {} at {}: {}\n", v.run, v.notice, v.at, v.rule));
            }
        }
        out.push_str(&format!(
            "\nResult: **{}**\n",
            if self.passed { "passed" } else { "FAILED" }
        ));
        out
    }
}
