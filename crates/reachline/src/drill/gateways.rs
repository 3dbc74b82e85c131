//! The drill's gateways and world: sandbox SMSCs (SMPP on loopback), a sandbox SMTP server, the
//! HTTP sandbox for FCM push and a carrier lookup, each with the fault knobs the scenario turns
//! on and off; the world's truth about who holds each number (changed only by a mass
//! recycling); and a tap around each provider that records every hand-over with the simulated
//! time — the evidence the report reads besides the engine's own records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_channels::failover::{BreakerConfig, Failover, Provider};
use reachline_channels::smpp::sandbox::{Sandbox, DELIVERED_TLV};
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::{Accepted, Channel, Outbound, ReceiptStream, SendError};
use reachline_domain::{ContactAddress, PhoneNumber};
use reachline_intel::{IntelError, NumberIntel};
use reachline_policy::intel::ChangeSince;
use reachline_policy::{NumberStatus, RecycleAnswer};

use super::scenario::{FaultKind, Scenario};

/// The simulated clock, shared by the loop, the taps, the world and receipt intake.
#[derive(Clone)]
pub struct Clock(Arc<Mutex<DateTime<Utc>>>);

impl Clock {
    pub fn new(t: DateTime<Utc>) -> Self {
        Clock(Arc::new(Mutex::new(t)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

/// A number a mass recycling takes: dead from `dies`, a stranger's from `stranger`.
#[derive(Debug, Clone, Copy)]
pub struct Recycled {
    pub dies: DateTime<Utc>,
    pub stranger: DateTime<Utc>,
}

/// Who holds each number: the book's holder, except the numbers a mass recycling took.
pub struct World {
    clock: Clock,
    /// By the digits of the E.164 form.
    recycled: HashMap<String, Recycled>,
}

/// Who a message to a number reaches now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Book,
    Nobody,
    Stranger,
}

pub fn digits(n: &PhoneNumber) -> String {
    n.e164().trim_start_matches('+').to_string()
}

impl World {
    pub fn new(clock: Clock, recycled: HashMap<String, Recycled>) -> Arc<Self> {
        Arc::new(World { clock, recycled })
    }

    pub fn holder(&self, number: &str) -> Holder {
        let now = self.clock.now();
        match self.recycled.get(number) {
            Some(r) if now >= r.stranger => Holder::Stranger,
            Some(r) if now >= r.dies => Holder::Nobody,
            _ => Holder::Book,
        }
    }

    /// The SMSC's behaviour digit for a message to `number` now.
    fn script(&self, number: &str) -> u8 {
        match self.holder(number) {
            Holder::Nobody => 1,
            Holder::Book | Holder::Stranger => DELIVERED_TLV,
        }
    }
}

/// One hand-over as a provider answered it.
#[derive(Debug, Clone)]
pub struct TapEvent {
    pub at: DateTime<Utc>,
    pub outbox_id: Option<i64>,
    pub provider: String,
    pub channel: reachline_domain::Channel,
    /// `None`: taken; else the refusal's class and whether it was the provider's fault.
    pub refused: Option<(reachline_domain::DeliveryClass, bool)>,
    /// Who the message reached (SMS only): a stranger on a recycled number, or nobody.
    pub holder: Holder,
}

pub type Taps = Arc<Mutex<Vec<TapEvent>>>;

/// A provider with every hand-over recorded (the real channel does the work).
struct Tap {
    inner: Arc<dyn Channel>,
    taps: Taps,
    clock: Clock,
    world: Arc<World>,
}

#[async_trait]
impl Channel for Tap {
    fn kind(&self) -> reachline_domain::Channel {
        self.inner.kind()
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let mut pending = Abandoned {
            tap: Some(self.event(msg, Some((reachline_domain::DeliveryClass::Transient, true)))),
            taps: &self.taps,
        };
        let res = self.inner.send(msg).await;
        let mut event = pending.tap.take().expect("the pending hand-over is taken once");
        event.holder = match (&msg.to, &res) {
            (ContactAddress::Phone(p), Ok(_)) => self.world.holder(&digits(p)),
            _ => Holder::Book,
        };
        event.refused = res
            .as_ref()
            .err()
            .map(|e| (e.class, e.scope == reachline_channels::Scope::Provider));
        self.taps.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        res
    }

    fn take_receipts(&self) -> Option<ReceiptStream> {
        self.inner.take_receipts()
    }

    fn status(&self) -> Vec<reachline_channels::ProviderStatus> {
        self.inner.status()
    }
}

impl Tap {
    fn event(&self, msg: &Outbound, refused: Option<(reachline_domain::DeliveryClass, bool)>) -> TapEvent {
        TapEvent {
            at: self.clock.now(),
            outbox_id: msg.reference.0.parse().ok(),
            provider: self.inner.provider().to_string(),
            channel: self.inner.kind(),
            refused,
            holder: Holder::Book,
        }
    }
}

/// A hand-over the caller gave up on before the provider answered (the failover's deadline
/// drops the send): recorded as the provider's transient failure, as the failover counts it.
struct Abandoned<'a> {
    tap: Option<TapEvent>,
    taps: &'a Taps,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(event) = self.tap.take() {
            self.taps.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        }
    }
}

/// The carrier lookup sandbox: answers from the world; down or slow while a fault says so.
pub struct Carrier {
    world: Arc<World>,
    pub down: AtomicBool,
    pub delay_ms: AtomicU64,
    /// Lookups asked, and those that failed (the engine got an error back).
    pub asked: AtomicU64,
    pub failures: Mutex<Vec<DateTime<Utc>>>,
    clock: Clock,
}

impl Carrier {
    async fn gate(&self) -> reachline_intel::Result<()> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.clock.now());
            return Err(IntelError::Transport {
                source_name: "carrier-sandbox".into(),
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

/// Wraps the shared carrier so the engine can own an `Arc<dyn NumberIntel>`.
pub struct CarrierIntel(pub Arc<Carrier>);

#[async_trait]
impl NumberIntel for CarrierIntel {
    fn name(&self) -> &str {
        "carrier-sandbox"
    }

    async fn status(&self, number: &PhoneNumber) -> reachline_intel::Result<NumberStatus> {
        self.0.gate().await?;
        Ok(match self.0.world.holder(&digits(number)) {
            Holder::Nobody => NumberStatus::Cancelled,
            _ => NumberStatus::Normal,
        })
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<RecycleAnswer> {
        self.0.gate().await?;
        let now = self.0.clock.now();
        Ok(match self.0.world.recycled.get(&digits(number)) {
            Some(r) if now >= r.dies && r.dies.date_naive() >= since => RecycleAnswer::Yes,
            _ => RecycleAnswer::No,
        })
    }

    async fn sim_swap_since(&self, _: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        self.0.gate().await?;
        Ok(ChangeSince {
            since,
            changed: false,
            on: None,
        })
    }

    async fn ported_since(&self, _: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        self.0.gate().await?;
        Ok(ChangeSince {
            since,
            changed: false,
            on: None,
        })
    }
}

/// The sandboxes of one run; they outlive a node's restart (the engine's clients reconnect).
pub struct Gateways {
    pub smscs: Vec<(String, Sandbox)>,
    pub smtp: Option<reachline_channels::smtp_sandbox::SmtpSandbox>,
    pub http: Option<reachline_channels::http_sandbox::HttpSandbox>,
    pub carrier: Option<Arc<Carrier>>,
    pub world: Arc<World>,
    pub taps: Taps,
    pub clock: Clock,
}

/// The SMPP client's settings in a drill: real gateways, timeouts scaled to the loopback (a
/// drill's pass must not wait seconds of real time for an SMSC that is down).
fn smpp_config(name: &str, port: u16) -> SmppConfig {
    SmppConfig {
        name: name.into(),
        port,
        bind_wait_ms: 200,
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        response_timeout_ms: 1_000,
        throttle_backoff_ms: 2,
        max_resubmits: 4,
        hold_receipts_ms: 2_000,
        ..SmppConfig::default()
    }
}

impl Gateways {
    pub async fn start(s: &Scenario, clock: Clock, world: Arc<World>) -> anyhow::Result<Self> {
        let mut smscs = Vec::new();
        for name in &s.channels.sms {
            let sandbox = Sandbox::start("127.0.0.1:0").await?;
            let w = world.clone();
            sandbox.set_script(Arc::new(move |dest: &str| w.script(dest)));
            smscs.push((name.clone(), sandbox));
        }
        let smtp = if s.channels.email {
            Some(reachline_channels::smtp_sandbox::SmtpSandbox::start("127.0.0.1:0").await?)
        } else {
            None
        };
        let http = if s.channels.push {
            Some(reachline_channels::http_sandbox::HttpSandbox::start("127.0.0.1:0", None, "drill").await?)
        } else {
            None
        };
        let carrier = s.channels.carrier_lookup.then(|| {
            Arc::new(Carrier {
                world: world.clone(),
                down: AtomicBool::new(false),
                delay_ms: AtomicU64::new(0),
                asked: AtomicU64::new(0),
                failures: Mutex::new(Vec::new()),
                clock: clock.clone(),
            })
        });
        Ok(Gateways {
            smscs,
            smtp,
            http,
            carrier,
            world,
            taps: Arc::new(Mutex::new(Vec::new())),
            clock,
        })
    }

    /// The engine's channels over these gateways, new clients each time (a restarted node
    /// connects again): the SMSCs as one failover group in order, each behind its breaker.
    pub async fn channels(&self) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
        let tap = |ch: Arc<dyn Channel>| -> Arc<dyn Channel> {
            Arc::new(Tap {
                inner: ch,
                taps: self.taps.clone(),
                clock: self.clock.clone(),
                world: self.world.clone(),
            })
        };
        let mut out: Vec<Arc<dyn Channel>> = Vec::new();
        let mut group = Vec::new();
        for (name, sandbox) in &self.smscs {
            let sms = SmppChannel::start(smpp_config(name, sandbox.addr().port()));
            sms.wait_bound(std::time::Duration::from_millis(500)).await;
            group.push(Provider::new(
                tap(Arc::new(sms)),
                // The breakers run on the real clock, which a drill compresses: a breaker opens
                // after three failures as in production, and lets a trial through after 200 ms
                // of real time (a few simulated passes).
                BreakerConfig {
                    failures: 3,
                    open_for: std::time::Duration::from_millis(200),
                    slow: std::time::Duration::from_secs(5),
                },
                None,
                std::time::Duration::from_secs(3),
            ));
        }
        match group.len() {
            0 => {}
            1 => out.push(group.remove(0).channel),
            _ => out.push(Arc::new(Failover::new("sms", reachline_domain::Channel::Sms, group))),
        }
        if let Some(smtp) = &self.smtp {
            out.push(tap(Arc::new(reachline_channels::smtp::SmtpChannel::new(
                reachline_channels::smtp::SmtpConfig {
                    name: "smtp".into(),
                    port: smtp.addr().port(),
                    accepted_is_delivered: true,
                    timeout_ms: 2_000,
                    ..Default::default()
                },
            ))));
        }
        if let Some(http) = &self.http {
            out.push(tap(Arc::new(reachline_channels::http::HttpChannel::new(
                reachline_channels::http::HttpConfig {
                    name: "fcm".into(),
                    api: reachline_channels::http::HttpApi::Fcm,
                    base_url: http.base_url(),
                    token: "drill".into(),
                    template: "drill-project".into(),
                    webhook_secret: "drill".into(),
                    timeout_ms: 2_000,
                },
            ))));
        }
        Ok(out)
    }

    /// Parts or messages the gateways took that produce a receipt (SMSC parts; mail taken by
    /// the recipients' server). FCM sends none.
    pub fn receipts_due(&self) -> u64 {
        let smpp: u64 = self.smscs.iter().map(|(_, s)| s.accepted_count() as u64).sum();
        smpp + self.smtp.as_ref().map_or(0, |s| s.counts().0)
    }

    /// Turns a fault on or off in the gateway it concerns.
    pub fn apply(&self, f: &super::scenario::Fault, on: bool) {
        let smsc = |name: &Option<String>| {
            self.smscs
                .iter()
                .find(|(n, _)| Some(n) == name.as_ref())
                .map(|(_, s)| s)
        };
        match f.kind {
            FaultKind::SmscDown => {
                if let Some(s) = smsc(&f.provider) {
                    s.set_down(on);
                }
            }
            FaultKind::SmscThrottle => {
                if let Some(s) = smsc(&f.provider) {
                    s.throttle_every(u32::from(on));
                }
            }
            FaultKind::SmtpBounceAll => {
                if let Some(s) = &self.smtp {
                    s.set_rcpt_reply(on.then(|| f.smtp_reply()));
                }
            }
            FaultKind::Push5xx => {
                if let Some(h) = &self.http {
                    h.set_fcm_failure(on.then(|| f.http_status()));
                }
            }
            FaultKind::IntelDown => {
                if let Some(c) = &self.carrier {
                    c.down.store(on, Ordering::Relaxed);
                }
            }
            FaultKind::IntelSlow => {
                if let Some(c) = &self.carrier {
                    c.delay_ms
                        .store(if on { f.delay_ms.unwrap_or(0) } else { 0 }, Ordering::Relaxed);
                }
            }
            // The runner closes and reopens the store; the world's recycling is fixed up front.
            FaultKind::DbRestart | FaultKind::MassRecycle => {}
        }
    }
}
