//! The planner: reads a borrower's view from the store, builds the policy's snapshot, asks
//! `decide`, and turns the answers into outbox rows, recorded decisions and the borrower's next
//! wake time. The same snapshot is built again at dispatch, so a send goes out only if the
//! policy still says so at that moment.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use reachline_domain::{BorrowerId, DeliveryClass};
use reachline_policy::{
    assess_borrower, decide, Action, BorrowerHealth, ChannelChoice, ChannelModel, ContactFacts, Decision,
    DueInstallment, Evidence, EvidenceId, EvidenceKind, HourOfWeek, NoticeKey, NoticeKind, Outcome, ReplyClass,
    SegmentPrior, SendRecord, SendTimeModel, Snapshot, Source, ThirdPartyRecord, Timing,
};
use reachline_store::engine::{DecisionRow, EngineView, NewSend, OutboxRow, PlanWrite, SendOutcome};

use crate::{EngineConfig, EngineError};

/// The text key of a notice: `installment/step/kind`.
pub fn notice_text(k: &NoticeKey) -> String {
    format!("{}/{}/{}", k.installment.0, k.step, k.kind.as_str())
}

/// The idempotency key of one attempt of a notice on one contact and channel.
pub fn idem_key(k: &NoticeKey, contact: i64, channel: reachline_domain::Channel, try_no: usize) -> String {
    format!("{}/{}/{}/{}", notice_text(k), contact, channel.as_str(), try_no)
}

fn evidence_of(view: &EngineView) -> Result<Vec<Evidence>, EngineError> {
    view.evidence
        .iter()
        .map(|e| {
            Ok(Evidence {
                id: EvidenceId(e.id as u64),
                contact: e.contact,
                at: e.at,
                source: serde_json::from_str::<Source>(&e.source)
                    .map_err(|err| EngineError::Corrupt(format!("evidence {} source: {err}", e.id)))?,
                kind: serde_json::from_str::<EvidenceKind>(&e.kind)
                    .map_err(|err| EngineError::Corrupt(format!("evidence {} kind: {err}", e.id)))?,
            })
        })
        .collect()
}

fn outcome(o: SendOutcome) -> Outcome {
    match o {
        SendOutcome::Pending => Outcome::Pending,
        SendOutcome::Delivered => Outcome::Delivered,
        SendOutcome::Engaged => Outcome::Engaged,
        SendOutcome::Failed(c) => Outcome::Failed(c),
    }
}

/// A send record for the policy, if the row is an attempt.
fn send_record(r: &OutboxRow) -> Result<Option<SendRecord>, EngineError> {
    if !r.state.attempted() {
        return Ok(None);
    }
    let kind: NoticeKind = r
        .kind
        .parse()
        .map_err(|e| EngineError::Corrupt(format!("outbox row {} kind: {e}", r.id)))?;
    Ok(Some(SendRecord {
        key: NoticeKey {
            installment: r.installment,
            step: r.step,
            kind,
        },
        rung: r.rung,
        contact: r.contact,
        channel: r.channel,
        at: r.sent_at.unwrap_or(r.not_before),
        outcome: outcome(r.outcome),
        conversation: false,
    }))
}

/// Everything `decide` borrows, owned.
pub struct Owned {
    pub zones: Vec<chrono_tz::Tz>,
    pub contacts: Vec<ContactFacts>,
    pub health: BorrowerHealth,
    pub installments: Vec<DueInstallment>,
    pub sends: Vec<SendRecord>,
    pub third_parties: Vec<ThirdPartyRecord>,
    /// The borrower's send-time counts: every attempt delivered to a point of their own, at
    /// its hour of the week in their zone, engaged or not.
    pub send_times: SendTimeModel,
    /// The borrower's engagement per channel, from the same attempts.
    pub channel_model: ChannelModel,
}

impl Owned {
    pub fn build(view: &EngineView, cfg: &EngineConfig, now: DateTime<Utc>) -> Result<Self, EngineError> {
        let contacts: Vec<ContactFacts> = view
            .contacts
            .iter()
            .map(|c| ContactFacts {
                id: c.id,
                kind: c.kind,
                role: c.role,
                bound_since: c.bound_since,
                verified_at: c.verified_at,
                retired: c.retired,
            })
            .collect();
        let evidence = evidence_of(view)?;
        let health = assess_borrower(&contacts, &evidence, view.zone, now, &cfg.health);
        let mut sends = Vec::new();
        for r in &view.sends {
            if let Some(s) = send_record(r)? {
                sends.push(s);
            }
        }
        let third_parties = view
            .contacts
            .iter()
            .filter(|c| c.role.is_third_party())
            .map(|c| ThirdPartyRecord {
                contact: c.id,
                contacted: view
                    .sends
                    .iter()
                    .any(|s| s.contact == c.id && s.third_party && s.state.attempted()),
                refused: evidence.iter().any(|e| {
                    e.contact == Some(c.id)
                        && matches!(
                            e.kind,
                            EvidenceKind::Reply {
                                class: ReplyClass::OptOut | ReplyClass::Dispute,
                                ..
                            }
                        )
                }),
            })
            .collect();
        Ok(Owned {
            send_times: send_times(view),
            channel_model: channel_model(view),
            zones: vec![view.zone],
            contacts,
            health,
            installments: view
                .installments
                .iter()
                .map(|i| DueInstallment {
                    id: i.id,
                    due_date: i.due_date,
                    paid: i.paid,
                })
                .collect(),
            sends,
            third_parties,
        })
    }

    /// Decides for every product the borrower has installments of (health's own needs once).
    /// `timed`: first sends wait for the send-time model's hour (the planner); the dispatcher
    /// re-checks a queued send without it, at the hour the planner chose.
    pub fn decide(&self, view: &EngineView, cfg: &EngineConfig, now: DateTime<Utc>, timed: bool) -> Vec<Decision> {
        // The prior only when timing is asked for: the dispatcher's re-check needs none.
        let prior =
            (timed && cfg.timing.enabled).then(|| SegmentPrior::flat(cfg.timing.prior_rate, cfg.timing.prior_strength));
        let timing = prior.as_ref().map(|prior| Timing {
            model: &self.send_times,
            prior,
            seed: view.id.0 as u64,
        });
        // The dispatcher chooses the channel as the planner did (same counts, same draw), so
        // its re-check agrees with the row it holds.
        let channels = cfg.timing.choose_channel.then_some(ChannelChoice {
            model: &self.channel_model,
            channels: &cfg.timing.channels,
            prior_strength: cfg.timing.prior_strength,
            cost_weight: cfg.timing.cost_weight,
            seed: view.id.0 as u64,
        });
        let mut products: Vec<&str> = view.installments.iter().map(|i| i.product.as_str()).collect();
        products.sort_unstable();
        products.dedup();
        let profile = cfg.profile(view.jurisdiction);
        let consents = &view.consents;
        let mut out = Vec::new();
        // The sends decided for one product count under the caps when the next is decided.
        let mut sends = self.sends.clone();
        for (n, product) in products.iter().enumerate() {
            let cadence = reachline_policy::cadence::for_product(&cfg.cadences, product);
            let installments: Vec<DueInstallment> = view
                .installments
                .iter()
                .zip(&self.installments)
                .filter(|(i, _)| i.product == *product)
                .map(|(_, d)| d.clone())
                .collect();
            let s = Snapshot {
                zones: &self.zones,
                profile,
                cadence: &cadence,
                ladder: &cfg.ladder,
                contacts: &self.contacts,
                health: &self.health,
                consents,
                installments: &installments,
                sends: &sends,
                third_parties: &self.third_parties,
                preferences: &view.preferences,
                timing,
                channels,
            };
            let decided: Vec<Decision> = decide(&s, now)
                .into_iter()
                .filter(|d| n == 0 || d.key.is_some())
                .collect();
            for d in &decided {
                if let (Action::Send { rung, permit, .. }, Some(key)) = (&d.action, d.key) {
                    sends.push(SendRecord {
                        key,
                        rung: *rung,
                        contact: permit.contact,
                        channel: permit.channel,
                        at: now,
                        outcome: reachline_policy::Outcome::Pending,
                        conversation: false,
                    });
                }
            }
            out.extend(decided);
        }
        // An emergency contact is asked once, also across products: a second notice that would
        // ask the same one is suppressed by the third-party rule.
        let mut asked = Vec::new();
        for d in &mut out {
            if let Action::Send {
                third_party: true,
                permit,
                ..
            } = &d.action
            {
                if asked.contains(&permit.contact) {
                    d.action = Action::Suppress;
                    d.reason = reachline_policy::DecisionReason::Gate;
                    d.gate = Some(reachline_policy::Reason::ThirdPartyContacted);
                } else {
                    asked.push(permit.contact);
                }
            }
        }
        out
    }

    /// Earlier attempts of a notice on one contact and channel (for the attempt number).
    pub fn tries(&self, key: &NoticeKey, contact: reachline_domain::ContactId, ch: reachline_domain::Channel) -> usize {
        self.sends
            .iter()
            .filter(|s| s.key == *key && s.contact == contact && s.channel == ch)
            .count()
    }
}

/// What the borrower's attempts say of their hours: each delivered to a point of their own
/// (not an emergency contact) counts at its hour of the week, engaged or not. Derived from
/// the outbox on every read rather than kept apart: the attempts and their outcomes are the
/// durable record, so the model can never disagree with them and goes with them (retention,
/// erasure).
pub fn send_times(view: &EngineView) -> SendTimeModel {
    let mut m = SendTimeModel::default();
    for r in view.sends.iter().filter(|r| !r.third_party) {
        let engaged = match r.outcome {
            SendOutcome::Delivered => false,
            SendOutcome::Engaged => true,
            _ => continue,
        };
        if let Some(at) = r.sent_at {
            m.observe(HourOfWeek::of(at, view.zone), engaged);
        }
    }
    m
}

/// The borrower's engagement per channel: each attempt to a point of their own whose outcome
/// is known counts on its channel — engaged, or not (delivered without a reply or click, or
/// failed; a failure of our own side is not the channel's and does not count).
pub fn channel_model(view: &EngineView) -> ChannelModel {
    let mut m = ChannelModel::default();
    for r in view.sends.iter().filter(|r| !r.third_party && r.sent_at.is_some()) {
        match r.outcome {
            SendOutcome::Engaged => m.observe(r.channel, true),
            SendOutcome::Delivered => m.observe(r.channel, false),
            SendOutcome::Failed(c) if c != DeliveryClass::OurFault => m.observe(r.channel, false),
            _ => {}
        }
    }
    m
}

/// The start of the borrower's next local day.
fn next_local_day(zone: chrono_tz::Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let today: NaiveDate = now.with_timezone(&zone).date_naive();
    let next = today.succ_opt().unwrap_or(today).and_time(NaiveTime::MIN);
    next.and_local_timezone(zone)
        .earliest()
        .map_or(now + Duration::days(1), |t| t.with_timezone(&Utc))
}

/// What one borrower's decisions write.
#[derive(Debug, Default)]
pub struct Planned {
    pub sends: Vec<NewSend>,
    pub decisions: Vec<DecisionRow>,
    pub wake: Option<DateTime<Utc>>,
}

/// Turns decisions into rows; the borrower wakes at the earliest moment any decision names,
/// and at the latest at the start of their next day (the cadence moves by days).
pub fn plan_borrower(
    view: &EngineView,
    owned: &Owned,
    decisions: &[Decision],
    cfg: &EngineConfig,
    now: DateTime<Utc>,
) -> Planned {
    let mut p = Planned::default();
    let mut wake = next_local_day(view.zone, now);
    let window = Duration::hours(i64::from(cfg.ladder.wait_hours));
    for d in decisions {
        let notice = d.key.as_ref().map_or_else(|| "-".to_string(), notice_text);
        let mut row = DecisionRow {
            borrower: view.id,
            notice,
            action: String::new(),
            reason: d.reason.as_str().to_string(),
            gate: d.gate.map(|g| g.as_str().to_string()),
            until: None,
            detail: None,
        };
        let skipped: Vec<serde_json::Value> = d
            .skipped
            .iter()
            .map(|(rung, why)| serde_json::json!({"rung": rung, "why": why.as_str()}))
            .collect();
        match (&d.action, d.key) {
            (
                Action::Send {
                    rung,
                    third_party,
                    permit,
                },
                Some(key),
            ) => {
                let try_no = owned.tries(&key, permit.contact, permit.channel);
                row.action = "send".into();
                row.detail = Some(
                    serde_json::json!({"rung": rung, "contact": permit.contact.0, "channel": permit.channel.as_str(),
                        "third_party": third_party, "try": try_no, "skipped": skipped, "timing": d.timing,
                        "opened_by": d.channel})
                    .to_string(),
                );
                p.sends.push(NewSend {
                    idem_key: idem_key(&key, permit.contact.0, permit.channel, try_no),
                    borrower: view.id,
                    installment: key.installment,
                    step: key.step,
                    kind: key.kind.as_str().to_string(),
                    rung: *rung,
                    contact: permit.contact,
                    channel: permit.channel,
                    third_party: *third_party,
                    not_before: now,
                });
                wake = wake.min(now + window);
            }
            (Action::Wait { until }, _) => {
                row.action = "wait".into();
                row.until = Some(*until);
                wake = wake.min(*until);
            }
            (Action::Defer { until }, _) => {
                row.action = "defer".into();
                row.until = Some(*until);
                row.detail = match d.timing {
                    Some(t) => {
                        Some(serde_json::json!({"skipped": skipped, "timing": t, "opened_by": d.channel}).to_string())
                    }
                    None => (!skipped.is_empty()).then(|| serde_json::json!({"skipped": skipped}).to_string()),
                };
                wake = wake.min(*until);
            }
            (Action::Suppress, _) => {
                row.action = "suppress".into();
                row.detail = (!skipped.is_empty()).then(|| serde_json::json!({"skipped": skipped}).to_string());
            }
            (Action::Lookup { contact, need }, _) => {
                row.action = "lookup".into();
                row.detail = Some(serde_json::json!({"contact": contact.0, "need": need}).to_string());
            }
            (Action::ContactCheck { contact }, _) => {
                row.action = "contact_check".into();
                row.detail = Some(serde_json::json!({"contact": contact.map(|c| c.0), "skipped": skipped}).to_string());
            }
            (Action::Send { .. }, None) => continue,
        }
        p.decisions.push(row);
    }
    // Never wake in the past or in a busy loop.
    p.wake = Some(wake.max(now + Duration::minutes(1)));
    p
}

/// The evidence JSON of a delivery outcome on a channel.
pub fn delivery_evidence(channel: reachline_domain::Channel, class: DeliveryClass) -> String {
    serde_json::to_string(&EvidenceKind::Delivery { channel, class }).unwrap_or_default()
}

/// A lookup a decision asked for: (borrower, contact, what health needs).
pub type Lookup = (BorrowerId, reachline_domain::ContactId, reachline_policy::Need);

/// A contact check a decision asked for: (borrower, the contact in doubt — none when the
/// borrower as a whole is unreachable).
pub type Check = (BorrowerId, Option<reachline_domain::ContactId>);

/// A batch of borrowers planned: what to write, and the lookups and checks to run after.
#[derive(Debug, Default)]
pub struct PlannedBatch {
    pub borrowers: u64,
    pub decisions: u64,
    pub write: PlanWrite,
    pub lookups: Vec<Lookup>,
    pub checks: Vec<Check>,
}

/// Decides for every borrower of a batch of views (pure: no IO).
pub fn plan_views(views: &[EngineView], cfg: &EngineConfig, now: DateTime<Utc>) -> Result<PlannedBatch, EngineError> {
    let mut out = PlannedBatch {
        borrowers: views.len() as u64,
        write: PlanWrite {
            at: Some(now),
            ..PlanWrite::default()
        },
        ..PlannedBatch::default()
    };
    for view in views {
        let owned = Owned::build(view, cfg, now)?;
        let decisions = owned.decide(view, cfg, now, true);
        // One check per borrower: the first contact in doubt, else the borrower as a whole.
        let mut check: Option<Check> = None;
        for d in &decisions {
            match d.action {
                reachline_policy::Action::Lookup { contact, need } => out.lookups.push((view.id, contact, need)),
                reachline_policy::Action::ContactCheck { contact } if check.is_none_or(|(_, c)| c.is_none()) => {
                    check = Some((view.id, contact));
                }
                _ => {}
            }
        }
        out.checks.extend(check);
        out.decisions += decisions.len() as u64;
        let p = plan_borrower(view, &owned, &decisions, cfg, now);
        out.write.sends.extend(p.sends);
        out.write.decisions.extend(p.decisions);
        if let Some(w) = p.wake {
            out.write.wakes.push((view.id, w, view.wake_seq));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use reachline_domain::{
        Channel, Consent, ConsentSource, ContactId, ContactKind, ContactRole, Currency, InstallmentId, Jurisdiction,
        Locale,
    };
    use reachline_store::engine::{EngineContact, EngineInstallment, SendState};

    const SH: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

    fn local(s: &str) -> DateTime<Utc> {
        SH.from_local_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A borrower with one mobile and an installment due 2024-05-24, whose earlier notices
    /// (another installment) were delivered at 10:00 and never engaged, and engaged at 19:00.
    fn view() -> EngineView {
        let mut sends = Vec::new();
        for (i, (at, outcome)) in (0..8)
            .flat_map(|d| {
                [
                    (format!("2024-04-{:02} 10:00", d + 1), SendOutcome::Delivered),
                    (format!("2024-04-{:02} 19:00", d + 1), SendOutcome::Engaged),
                ]
            })
            .enumerate()
        {
            sends.push(OutboxRow {
                id: i as i64 + 1,
                idem_key: format!("k{i}"),
                borrower: BorrowerId(7),
                installment: InstallmentId(1),
                step: i,
                kind: "pre_due".into(),
                rung: 0,
                contact: ContactId(1),
                channel: Channel::Sms,
                third_party: false,
                not_before: local(&at),
                state: SendState::Sent,
                tries: 1,
                sent_at: Some(local(&at)),
                outcome,
            });
        }
        EngineView {
            id: BorrowerId(7),
            external_id: "B7".into(),
            locale: Locale::ZhCn,
            zone: SH,
            jurisdiction: Jurisdiction::Cn,
            contacts: vec![EngineContact {
                id: ContactId(1),
                kind: ContactKind::Mobile,
                role: ContactRole::Primary,
                bound_since: "2023-01-01".parse().unwrap(),
                verified_at: None,
                retired: false,
            }],
            consents: Consent::grant_all(local("2023-01-01 09:00"), ConsentSource::Contract, "v1"),
            installments: vec![
                EngineInstallment {
                    id: InstallmentId(1),
                    product: "p".into(),
                    loan_ref: "L1".into(),
                    seq: 1,
                    due_date: "2024-04-20".parse().unwrap(),
                    amount_due_minor: 100,
                    amount_paid_minor: 100,
                    currency: Currency::CNY,
                    paid: true,
                },
                EngineInstallment {
                    id: InstallmentId(2),
                    product: "p".into(),
                    loan_ref: "L1".into(),
                    seq: 2,
                    due_date: "2024-05-24".parse().unwrap(),
                    amount_due_minor: 100,
                    amount_paid_minor: 0,
                    currency: Currency::CNY,
                    paid: false,
                },
            ],
            evidence: Vec::new(),
            sends,
            wake_seq: 0,
            preferences: Default::default(),
        }
    }

    #[test]
    fn the_borrowers_attempts_make_their_send_time_counts() {
        let m = send_times(&view());
        let at = |t: &str| m.hours[usize::from(HourOfWeek::of(local(t), SH).0)];
        // 2024-04-01 and 04-08 were Mondays: the 10:00 sends, delivered and never engaged.
        assert_eq!((at("2024-04-01 10:00").sent, at("2024-04-01 10:00").engaged), (2, 0));
        assert_eq!((at("2024-04-01 19:00").sent, at("2024-04-01 19:00").engaged), (2, 2));
        assert_eq!((at("2024-04-02 19:00").sent, at("2024-04-02 19:00").engaged), (1, 1));
        let total: u32 = m.hours.iter().map(|c| c.sent).sum();
        assert_eq!(total, 16);
    }

    #[test]
    fn the_planner_waits_for_the_borrowers_hour_and_says_why() {
        let cfg = EngineConfig::default();
        // T−7 for the installment due 2024-05-24, at 10:00 local.
        let now = local("2024-05-17 10:00");
        let batch = plan_views(&[view()], &cfg, now).unwrap();
        let row = batch
            .write
            .decisions
            .iter()
            .find(|d| d.notice != "-")
            .expect("a notice decision");
        assert_eq!(
            (row.action.as_str(), row.reason.as_str()),
            ("defer", "best_hour"),
            "{row:?}"
        );
        assert_eq!(row.until, Some(local("2024-05-17 19:00")));
        let detail: serde_json::Value = serde_json::from_str(row.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["timing"]["observations"], 8, "{detail}");
        assert!(batch.write.sends.is_empty());
        // At 19:00 the planner queues it.
        let batch = plan_views(&[view()], &cfg, local("2024-05-17 19:00")).unwrap();
        assert_eq!(batch.write.sends.len(), 1);
        // With timing off, it goes at 10:00.
        let off = EngineConfig {
            timing: reachline_policy::TimingConfig {
                enabled: false,
                ..Default::default()
            },
            ..EngineConfig::default()
        };
        assert_eq!(plan_views(&[view()], &off, now).unwrap().write.sends.len(), 1);
    }

    #[test]
    fn with_channel_choice_on_a_notice_opens_where_the_borrower_answers() {
        // The same borrower with an email too, who answered every email and no SMS.
        let mut v = view();
        v.contacts.push(EngineContact {
            id: ContactId(2),
            kind: ContactKind::Email,
            role: ContactRole::Primary,
            bound_since: "2023-01-01".parse().unwrap(),
            verified_at: None,
            retired: false,
        });
        for (i, r) in v.sends.iter_mut().enumerate() {
            if r.outcome == SendOutcome::Engaged {
                (r.contact, r.channel) = (ContactId(2), Channel::Email);
            }
            r.step = i;
        }
        let m = channel_model(&v);
        assert_eq!(
            (m.counts(Channel::Email).sent, m.counts(Channel::Email).engaged),
            (8, 8)
        );
        assert_eq!((m.counts(Channel::Sms).sent, m.counts(Channel::Sms).engaged), (8, 0));
        let cfg = EngineConfig {
            timing: reachline_policy::TimingConfig {
                enabled: false,
                choose_channel: true,
                ..Default::default()
            },
            ..EngineConfig::default()
        };
        let batch = plan_views(&[v.clone()], &cfg, local("2024-05-17 10:00")).unwrap();
        assert_eq!(batch.write.sends.len(), 1);
        assert_eq!(batch.write.sends[0].channel, Channel::Email);
        let row = batch.write.decisions.iter().find(|d| d.action == "send").unwrap();
        let detail: serde_json::Value = serde_json::from_str(row.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["opened_by"]["channel"], "email", "{detail}");
        // Off (the default), the ladder's own order: SMS first.
        let batch = plan_views(&[v], &EngineConfig::default(), local("2024-05-17 19:00")).unwrap();
        assert_eq!(batch.write.sends[0].channel, Channel::Sms);
    }
}
