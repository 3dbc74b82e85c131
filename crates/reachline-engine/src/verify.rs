//! Confirming a number: contact checks (a borrower whose number is in doubt is asked on their
//! other channels, with a signed, expiring, single-use link), verification messages (one-time
//! codes, links to a new number, news of a change to the old channels), and the record of every
//! step — a row in `contact_change_steps` and a `contact_change_step` ledger leaf.
//!
//! Verification messages pass gates like notices: one to a contact point needs a `Permit` from
//! [`reachline_policy::check`] (health, consent for verification); one to a number that is not
//! a contact point yet needs a `NumberPermit` from [`reachline_policy::check_new_number`]. A
//! check the engine starts (the borrower did not ask) also waits for the service hours.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use reachline_channels::{MessageRef, Outbound, SendError};
use reachline_domain::{BorrowerId, Channel, ContactAddress, ContactId, Purpose};
use reachline_ledger::leaf::{content_hash, Leaf, LeafKind, TemplateRef};
use reachline_policy::codes::{sign_link, LinkClaims};
use reachline_policy::gates::{self, Gate};
use reachline_store::engine::EngineView;
use reachline_store::selfservice::{CheckRecord, Filter, StepRecord};
use serde::Serialize;

use crate::ledger::{code, provider_id};
use crate::plan::Owned;
use crate::{Engine, EngineError};

/// Where a verification message goes.
#[derive(Debug, Clone)]
pub enum VerifyTarget {
    /// One of the borrower's contact points.
    Contact(ContactId),
    /// An address that is not a contact point yet (the new number or email of a change): a
    /// number by SMS, an email address by email.
    Address(ContactAddress),
}

/// One verification message to send, and the step it records.
#[derive(Debug, Clone)]
pub struct VerifySend {
    pub borrower: BorrowerId,
    pub target: VerifyTarget,
    /// A verification template: `contact_check_other`, `verification_code`,
    /// `confirm_new_number`, `number_changed`.
    pub template: &'static str,
    pub code: Option<String>,
    pub link: Option<String>,
    pub change: Option<i64>,
    pub check: Option<i64>,
    /// The step recorded when a provider takes it: `link_sent`, `code_sent`, `old_channel_told`.
    pub step: &'static str,
    pub actor: String,
    /// The borrower asked for it (a code): it goes at any hour. Otherwise (a check the engine
    /// starts) it waits for the service hours.
    pub asked_by_borrower: bool,
}

/// Why a verification message did not go.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the gates refused it: {0}")]
    Refused(&'static str),
    #[error("outside the service hours; it goes from {0}")]
    NotNow(DateTime<Utc>),
    #[error("no provider is configured for {0} messages")]
    NoChannel(Channel),
    #[error("the provider did not take it: {0}")]
    NotSent(SendError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<reachline_store::StoreError> for VerifyError {
    fn from(e: reachline_store::StoreError) -> Self {
        VerifyError::Engine(e.into())
    }
}

/// What went, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySent {
    pub channel: Channel,
    pub contact: Option<ContactId>,
    pub provider: String,
}

/// The variables of a verification template (`templates::VERIFICATION_FIELDS`).
#[derive(Serialize)]
struct VerifyContext<'a> {
    lender_name: &'a str,
    service_phone: &'a str,
    link: &'a str,
    code: &'a str,
}

/// What a step's leaf says of a message, when the step is a message.
struct Sent<'a> {
    channel: Channel,
    contact: Option<ContactId>,
    provider_id: Option<&'a str>,
    template: (&'a str, u32),
    text: &'a str,
    address: &'a ContactAddress,
}

/// How long a contact check waits for the borrower before it becomes an operator's task.
const CHECK_PATIENCE: Duration = Duration::hours(72);
/// How long after a check before the engine starts another for the same borrower.
const CHECK_REPEAT: Duration = Duration::days(30);

impl Engine {
    /// Records one step of a check or a change: a row, and a ledger leaf (when the engine keeps
    /// a ledger) that returns once it is under a signed checkpoint.
    pub async fn record_step(&self, step: &StepRecord) -> Result<(), EngineError> {
        self.record_step_with(step, None).await
    }

    async fn record_step_with(&self, step: &StepRecord, sent: Option<Sent<'_>>) -> Result<(), EngineError> {
        if let Some(l) = &self.ledger {
            let mut leaf = Leaf {
                kind: LeafKind::ContactChangeStep {
                    step: code(&step.step)?,
                },
                time_micros: step.at.timestamp_micros(),
                borrower: step.borrower,
                notice: None,
                contact: None,
                channel: None,
                provider_message_id: None,
                template: None,
                content_hash: None,
                address_commitment: None,
            };
            if let Some(s) = sent {
                let key = l
                    .store
                    .commitment_key(step.borrower)
                    .await
                    .map_err(|e| EngineError::Ledger(e.to_string()))?;
                leaf.contact = s.contact;
                leaf.channel = Some(s.channel);
                leaf.provider_message_id = s.provider_id.and_then(provider_id);
                leaf.template = Some(TemplateRef {
                    id: code(s.template.0)?,
                    version: s.template.1,
                });
                leaf.content_hash = Some(content_hash(s.text));
                leaf.address_commitment = Some(key.commit(s.address));
            }
            l.sequencer
                .append_all(&[leaf])
                .await
                .map_err(|e| EngineError::Ledger(e.to_string()))?;
        }
        self.store.add_step(step).await?;
        Ok(())
    }

    /// Sends one verification message through the gates, and records its step.
    pub async fn send_verification(&self, v: &VerifySend, now: DateTime<Utc>) -> Result<VerifySent, VerifyError> {
        let today = now.date_naive();
        let view = self
            .store
            .views(&[v.borrower], today - Duration::days(1), today + Duration::days(1))
            .await?
            .into_iter()
            .next()
            .ok_or(VerifyError::Refused("no_such_borrower"))?;
        self.send_verification_in(v, &view, now).await
    }

    /// `send_verification` on a view of the borrower already read (from one day before `now`
    /// to one day after): a contact check sending links to several contacts reads it once.
    async fn send_verification_in(
        &self,
        v: &VerifySend,
        view: &EngineView,
        now: DateTime<Utc>,
    ) -> Result<VerifySent, VerifyError> {
        let (address, channel, contact) = match &v.target {
            VerifyTarget::Contact(cid) => {
                let c = view
                    .contacts
                    .iter()
                    .find(|c| c.id == *cid && !c.retired && !c.role.is_third_party())
                    .ok_or(VerifyError::Refused("no_such_contact"))?;
                let channel = reachline_policy::channels_of(c.kind)
                    .iter()
                    .copied()
                    .find(|ch| self.channels.contains_key(ch) && *ch != Channel::Voice)
                    .ok_or(VerifyError::NoChannel(reachline_policy::channels_of(c.kind)[0]))?;
                let owned = Owned::build(view, &self.cfg, now)?;
                let assessment = owned
                    .health
                    .contacts
                    .iter()
                    .find(|a| a.contact == *cid)
                    .ok_or(VerifyError::Refused("no_such_contact"))?;
                let profile = self.cfg.profile(view.jurisdiction);
                let req = gates::Request {
                    zones: &owned.zones,
                    purpose: Purpose::Verification,
                    channel,
                    contact: assessment,
                    third_party: None,
                    mentions_debt: false,
                    consents: &view.consents,
                    quiet: None,
                };
                match gates::check(&req, &[], profile, now) {
                    Gate::Allow(_) => {}
                    Gate::Defer { reason, .. } | Gate::Suppress { reason, .. } => {
                        return Err(VerifyError::Refused(reason.as_str()))
                    }
                }
                if !v.asked_by_borrower {
                    if let Some(w) = profile.window(Purpose::Service) {
                        let local = now.with_timezone(&view.zone);
                        if !w.contains(local.time()) {
                            let start = if local.time() < w.start {
                                local.date_naive()
                            } else {
                                local.date_naive() + Duration::days(1)
                            };
                            let at = start
                                .and_time(w.start)
                                .and_local_timezone(view.zone)
                                .earliest()
                                .map_or(now + Duration::hours(1), |t| t.with_timezone(&Utc));
                            return Err(VerifyError::NotNow(at));
                        }
                    }
                }
                let target = self.store.send_target(v.borrower, *cid).await?;
                (target.address, channel, Some(*cid))
            }
            VerifyTarget::Address(a) => {
                let channel = match a {
                    ContactAddress::Phone(_) => Channel::Sms,
                    ContactAddress::Email(_) => Channel::Email,
                    _ => return Err(VerifyError::Refused("address_kind")),
                };
                reachline_policy::check_new_number(&view.consents, channel, now)
                    .map_err(|r| VerifyError::Refused(r.as_str()))?;
                (a.clone(), channel, None)
            }
        };
        let Some(provider) = self.channels.get(&channel) else {
            return Err(VerifyError::NoChannel(channel));
        };
        let ctx = VerifyContext {
            lender_name: &self.cfg.lender_name,
            service_phone: &self.cfg.service_phone,
            link: v.link.as_deref().unwrap_or(""),
            code: v.code.as_deref().unwrap_or(""),
        };
        let rendered = self
            .templates
            .render(v.template, view.locale, &ctx)
            .map_err(EngineError::Template)?;
        let msg = Outbound {
            reference: MessageRef(format!(
                "verify-{}-{}",
                v.change.or(v.check).unwrap_or(0),
                rand::rngs::OsRng.next_u32()
            )),
            to: address.clone(),
            text: rendered.text.clone(),
        };
        let accepted = self
            .hand_over(channel, provider.as_ref(), &msg)
            .await
            .map_err(VerifyError::NotSent)?;
        // Kept before the step, so a receipt that comes at once finds it.
        self.store
            .record_verification_sent(
                &reachline_store::engine::VerificationSent {
                    borrower: v.borrower,
                    contact,
                    channel,
                    at: now,
                    provider: accepted.provider.clone(),
                    provider_ids: accepted.provider_ids.clone(),
                },
                &|class| crate::plan::delivery_evidence(channel, class),
            )
            .await?;
        let step = StepRecord {
            borrower: v.borrower,
            change: v.change,
            check: v.check,
            at: now,
            step: v.step.to_string(),
            actor: v.actor.clone(),
            detail: Some(
                serde_json::json!({
                    "channel": channel.as_str(),
                    "contact": contact.map(|c| c.0),
                    "provider": accepted.provider,
                    "provider_ids": accepted.provider_ids,
                    "template": rendered.template_id,
                })
                .to_string(),
            ),
        };
        self.record_step_with(
            &step,
            Some(Sent {
                channel,
                contact,
                provider_id: accepted.provider_ids.first().map(String::as_str),
                template: (&rendered.template_id, rendered.version),
                text: &rendered.text,
                address: &address,
            }),
        )
        .await?;
        Ok(VerifySent {
            channel,
            contact,
            provider: accepted.provider,
        })
    }

    /// A signed, expiring, single-use link to the self-service pages.
    pub fn check_link(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        action: String,
        expires: DateTime<Utc>,
    ) -> String {
        let claims = LinkClaims {
            borrower: borrower.0,
            contact: contact.map(|c| c.0),
            action,
            expires_at: expires,
            // Only the server's record of it matters (single use); random so that two links
            // never share one.
            nonce: rand::rngs::OsRng.next_u64() >> 1,
        };
        format!(
            "{}c/{}",
            self.cfg.self_service_base,
            sign_link(&self.cfg.link_key, &claims)
        )
    }

    /// A borrower whose contact `doubt` (or who as a whole) health says must be re-verified:
    /// opens a check, sends a link on every other working channel, and makes it an operator's
    /// task when no channel can carry one or the borrower has not answered in 72 hours.
    pub async fn contact_check(
        &self,
        borrower: BorrowerId,
        doubt: Option<ContactId>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let reason = if doubt.is_some() {
            "contact_in_doubt"
        } else {
            "unreachable"
        };
        // Read before writing: most passes find the borrower's check already under way (or a
        // recent one answered), and need no write at all.
        let latest = self
            .store
            .checks(&Filter {
                state: None,
                borrower: Some(borrower),
                limit: 1,
            })
            .await?
            .into_iter()
            .next();
        match &latest {
            Some(c) if c.state == "operator_task" => return Ok(()),
            // A check answered or closed recently: not another one so soon.
            Some(c) if c.state != "open" && now - c.opened_at < CHECK_REPEAT => return Ok(()),
            _ => {}
        }
        self.run_check(borrower, doubt, reason, "engine", false, now)
            .await
            .map(|_| ())
    }

    /// A check someone asked for on the borrower's behalf (an operator after the borrower
    /// called, the lender's system): opened even if one was answered lately, and its links go
    /// at once, at any hour (the borrower is waiting for them). An open check is reused.
    /// Returns the check.
    pub async fn request_check(
        &self,
        borrower: BorrowerId,
        doubt: Option<ContactId>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<CheckRecord, EngineError> {
        let id = self.run_check(borrower, doubt, "requested", actor, true, now).await?;
        let checks = self
            .store
            .checks(&Filter {
                state: None,
                borrower: Some(borrower),
                limit: 20,
            })
            .await?;
        checks
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| EngineError::Corrupt(format!("check {id} vanished")))
    }

    /// Opens (or continues) the borrower's check and sends its links; the check's id.
    async fn run_check(
        &self,
        borrower: BorrowerId,
        doubt: Option<ContactId>,
        reason: &str,
        actor: &str,
        asked: bool,
        now: DateTime<Utc>,
    ) -> Result<i64, EngineError> {
        let (check, created) = self.store.open_check(borrower, doubt, reason, now).await?;
        let step = |s: &str, detail: Option<String>| StepRecord {
            borrower,
            change: None,
            check: Some(check.id),
            at: now,
            step: s.to_string(),
            actor: actor.to_string(),
            detail,
        };
        if created {
            let detail = serde_json::json!({"contact": doubt.map(|c| c.0), "reason": reason}).to_string();
            self.record_step(&step("check_started", Some(detail))).await?;
        }
        if check.state != "open" {
            return Ok(check.id);
        }
        // `links_sending` is recorded before the first link goes: a crash mid-send leaves the
        // links in doubt, and they are not sent again (as the outbox never resubmits). A check
        // opened just now has no steps but its first.
        let sending = !created
            && self
                .store
                .steps(borrower, None, Some(check.id))
                .await?
                .iter()
                .any(|s| s.step == "links_sending");
        if sending {
            if now - check.opened_at >= CHECK_PATIENCE {
                self.store.set_check_state(check.id, "operator_task", now).await?;
                self.record_step(&step("operator_task", Some(r#"{"why":"no_answer"}"#.into())))
                    .await?;
            }
            return Ok(check.id);
        }
        let today = now.date_naive();
        let view = self
            .store
            .views(&[borrower], today - Duration::days(1), today + Duration::days(1))
            .await?;
        let Some(view) = view.first() else { return Ok(check.id) };
        // A check the borrower did not ask for waits for the service hours.
        if let Some(w) = self.cfg.profile(view.jurisdiction).window(Purpose::Service) {
            if !asked && !w.contains(now.with_timezone(&view.zone).time()) {
                return Ok(check.id);
            }
        }
        let others: Vec<ContactId> = view
            .contacts
            .iter()
            .filter(|c| !c.retired && !c.role.is_third_party() && Some(c.id) != doubt)
            .map(|c| c.id)
            .collect();
        self.record_step(&step(
            "links_sending",
            Some(format!(r#"{{"contacts":{}}}"#, others.len())),
        ))
        .await?;
        let (mut sent, mut later) = (0, false);
        for contact in others {
            let link = self.check_link(
                borrower,
                Some(contact),
                format!("check:{}", check.id),
                now + CHECK_PATIENCE,
            );
            let v = VerifySend {
                borrower,
                target: VerifyTarget::Contact(contact),
                template: "contact_check_other",
                code: None,
                link: Some(link),
                change: None,
                check: Some(check.id),
                step: "link_sent",
                actor: actor.to_string(),
                asked_by_borrower: asked,
            };
            match self.send_verification_in(&v, view, now).await {
                Ok(_) => sent += 1,
                Err(VerifyError::NotNow(_)) => later = true,
                Err(VerifyError::Engine(e)) => return Err(e),
                Err(VerifyError::NoChannel(channel)) => {
                    let first = self
                        .unconfigured
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(channel);
                    if first {
                        tracing::warn!(?channel, "contact checks want this channel but no gateway is configured for it; such contacts get no check link");
                    }
                    tracing::debug!(
                        check = check.id,
                        contact = contact.0,
                        ?channel,
                        "no gateway for this contact's channel"
                    )
                }
                Err(e) => {
                    tracing::info!(check = check.id, contact = contact.0, error = %e, "no check link on this contact")
                }
            }
        }
        if sent == 0 && !later {
            self.store.set_check_state(check.id, "operator_task", now).await?;
            self.record_step(&step("operator_task", Some(r#"{"why":"no_other_channel"}"#.into())))
                .await?;
        }
        Ok(check.id)
    }
}
