//! The SMPP client (ESME) adapter on `rusmppc`: binds as transceiver, keeps a window of
//! unacknowledged `submit_sm`, lets `rusmppc` send `enquire_link`, reconnects with back-off,
//! backs off and resubmits on `ESME_RTHROTTLED` / `ESME_RMSGQFUL`, asks for a receipt on every
//! part, and matches receipts to messages (holding early ones).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reachline_domain::{ContactAddress, DeliveryClass};
use rusmpp::pdus::{BindTransceiver, DeliverSmResp, SubmitSm};
use rusmpp::tlvs::TlvValue;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, ServiceType, Ton};
use rusmpp::{CommandId, Pdu};
use rusmppc::{ConnectionBuilder, Event};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::classify::smpp::{command_status_class, is_throttle, ErrTable, MessageState};
use crate::matching::{Matched, Matcher};
use crate::smpp::driven::{self, Session};
use crate::smpp::encoding;
use crate::smpp::receipt::{read_receipt, ReceiptTlvs};
use crate::{Accepted, Channel, MessageRef, Outbound, Receipt, ReceiptStream, SendError, Unanswered};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One SMSC account. Durations are in milliseconds in configuration. `Debug` leaves the
/// password out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppConfig {
    /// The provider's name in logs, receipts and the failover order.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// SMPP over TLS (the SMSC's TLS port, often 3550 or 8775).
    pub tls: bool,
    /// Certificates to trust for the SMSC (PEM), e.g. its private CA; the public web roots
    /// when unset.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The name the SMSC's certificate must carry, when it is not `host`.
    pub tls_server_name: Option<String>,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// The sender id (short code or alphanumeric).
    pub source_addr: String,
    /// Unacknowledged `submit_sm` allowed at once.
    pub window: usize,
    pub enquire_link_ms: u64,
    pub response_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// First back-off after a throttling response; doubles up to a second.
    pub throttle_backoff_ms: u64,
    /// Resubmits of one part after throttling before giving up. A part whose connection
    /// dropped (or whose answer did not come in time) after it went out is never resubmitted:
    /// the SMSC may have taken it, so the send is reported in doubt.
    pub max_resubmits: u32,
    /// How long a send waits for a bound session before it says the provider is unavailable.
    pub bind_wait_ms: u64,
    /// How long a receipt waits for the `submit_sm_resp` that carries its id.
    pub hold_receipts_ms: u64,
    /// How this upstream writes ids in receipts (`auto`, `same`, `hex_to_decimal`,
    /// `decimal_to_hex`).
    pub receipt_ids: crate::matching::IdForm,
    /// This upstream's `err` codes.
    pub err_table: ErrTable,
}

impl std::fmt::Debug for SmppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmppConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("system_id", &self.system_id)
            .field("password", &"<redacted>")
            .field("source_addr", &self.source_addr)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            name: "smsc".into(),
            host: "127.0.0.1".into(),
            port: 2775,
            tls: false,
            tls_ca_file: None,
            tls_server_name: None,
            system_id: "reachline".into(),
            password: "secret".into(),
            system_type: String::new(),
            source_addr: "Reachline".into(),
            window: 32,
            enquire_link_ms: 30_000,
            response_timeout_ms: 10_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000,
            throttle_backoff_ms: 50,
            max_resubmits: 20,
            bind_wait_ms: 5_000,
            hold_receipts_ms: 60_000,
            receipt_ids: crate::matching::IdForm::Auto,
            err_table: ErrTable::default(),
        }
    }
}

/// Counters for the bench and tests.
#[derive(Debug, Default)]
pub struct SmppStats {
    pub submitted: AtomicU64,
    pub throttled: AtomicU64,
    /// Parts that went out and drew no answer (connection lost, or too late): reported in
    /// doubt, never resubmitted.
    pub in_doubt: AtomicU64,
    pub binds: AtomicU64,
    pub receipts: AtomicU64,
    pub receipts_unmatched: AtomicU64,
}

#[derive(Clone)]
struct PartRef {
    reference: MessageRef,
    part: u8,
}

struct Pending {
    class: DeliveryClass,
    code: String,
    is_final: bool,
    raw: Vec<u8>,
    unanswered: Unanswered,
}

/// A `deliver_sm` not answered yet: its `deliver_sm_resp` goes out when this is dropped, that
/// is once every copy of its receipt is gone (recorded, by the engine: see [`Unanswered`]).
struct DeliverSmAnswer {
    session: Session,
    sequence_number: u32,
    runtime: tokio::runtime::Handle,
}

impl Drop for DeliverSmAnswer {
    fn drop(&mut self) {
        let (session, n) = (self.session.clone(), self.sequence_number);
        self.runtime.spawn(async move {
            let _ = session
                .call(session.client.deliver_sm_resp(n, DeliverSmResp::default()))
                .await;
        });
    }
}

struct Inner {
    config: SmppConfig,
    session: watch::Receiver<Option<Session>>,
    window: Semaphore,
    matcher: Mutex<Matcher<PartRef, Pending>>,
    receipts_tx: mpsc::UnboundedSender<Receipt>,
    receipts_rx: Mutex<Option<mpsc::UnboundedReceiver<Receipt>>>,
    next_ref: AtomicU8,
    stats: SmppStats,
}

/// An SMPP provider. Dropping it stops its session.
pub struct SmppChannel {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SmppChannel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.inner.session.borrow().clone() {
            tokio::spawn(async move {
                let _ = s.call(s.client.unbind()).await;
                let _ = s.call(s.client.close()).await;
            });
        }
    }
}

impl SmppChannel {
    /// Starts the session task (it binds, and rebinds after any drop) and returns at once.
    pub fn start(config: SmppConfig) -> Self {
        let (session_tx, session) = watch::channel(None);
        let (receipts_tx, receipts_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            window: Semaphore::new(config.window.max(1)),
            matcher: Mutex::new(
                Matcher::new(Duration::from_millis(config.hold_receipts_ms), secs(72 * 3600))
                    .with_form(config.receipt_ids),
            ),
            config,
            session,
            receipts_tx,
            receipts_rx: Mutex::new(Some(receipts_rx)),
            next_ref: AtomicU8::new(0),
            stats: SmppStats::default(),
        });
        let supervisor = tokio::spawn(supervise(inner.clone(), session_tx));
        let expirer = tokio::spawn(expire_held(inner.clone()));
        SmppChannel {
            inner,
            tasks: vec![supervisor, expirer],
        }
    }

    pub fn stats(&self) -> &SmppStats {
        &self.inner.stats
    }

    /// Waits until a session is bound, or the time runs out.
    pub async fn wait_bound(&self, within: Duration) -> bool {
        let mut rx = self.inner.session.clone();
        tokio::time::timeout(within, rx.wait_for(|s| s.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn supervise(inner: Arc<Inner>, session_tx: watch::Sender<Option<Session>>) {
    let c = &inner.config;
    let mut backoff = Duration::from_millis(c.reconnect_min_ms);
    loop {
        match bind(c).await {
            Ok((session, mut events)) => {
                inner.stats.binds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(provider = %c.name, "bound as transceiver");
                backoff = Duration::from_millis(c.reconnect_min_ms);
                session_tx.send_replace(Some(session.clone()));
                while let Some(event) = events.next().await {
                    match event {
                        Event::Incoming(cmd) => {
                            if cmd.id() == CommandId::DeliverSm {
                                let answer = DeliverSmAnswer {
                                    session: session.clone(),
                                    sequence_number: cmd.sequence_number(),
                                    runtime: tokio::runtime::Handle::current(),
                                };
                                // Answered when the receipt has been recorded (or at once, when
                                // it is not one).
                                if let Some(Pdu::DeliverSm(d)) = cmd.pdu() {
                                    on_deliver_sm(&inner, d, answer);
                                }
                            } else if cmd.id() == CommandId::Unbind {
                                let _ = session.call(session.client.unbind_resp(cmd.sequence_number())).await;
                                break;
                            }
                        }
                        Event::Error(e) => {
                            tracing::warn!(provider = %c.name, error = %e, "session error");
                            if matches!(
                                e,
                                rusmppc::error::Error::ConnectionClosedByPeer
                                    | rusmppc::error::Error::Io(_)
                                    | rusmppc::error::Error::EnquireLinkTimeout { .. }
                            ) {
                                break;
                            }
                        }
                    }
                }
                session_tx.send_replace(None);
                let _ = session.call(session.client.close()).await;
                tracing::warn!(provider = %c.name, "session ended; reconnecting");
            }
            Err(e) => tracing::warn!(provider = %c.name, error = %e, "bind failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(c.reconnect_max_ms));
    }
}

fn cs<const MIN: usize, const MAX: usize>(s: &str) -> Result<COctetString<MIN, MAX>, String> {
    COctetString::from_str(s).map_err(|e| format!("{e:?}"))
}

/// A bind's events: what the SMSC sent that was not an answer to one of our requests.
type Events = futures::stream::BoxStream<'static, Event>;

pub(super) async fn bind(c: &SmppConfig) -> Result<(Session, Events), String> {
    // Our own socket, so Nagle's algorithm can be turned off: with it on, a lone submit waits
    // for the SMSC's delayed ACK (~40 ms on Linux) and a trickle of notices crawls.
    let within = Duration::from_millis(c.response_timeout_ms);
    let stream = tokio::time::timeout(within, tokio::net::TcpStream::connect((c.host.as_str(), c.port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let builder = ConnectionBuilder::new()
        .enquire_link_interval(Duration::from_millis(c.enquire_link_ms))
        .enquire_link_response_timeout(within)
        .response_timeout(within)
        .disable_interface_version_check();
    let (session, events) = if c.tls {
        let config = crate::tls::client_config(c.tls_ca_file.as_deref())?;
        let name = c.tls_server_name.clone().unwrap_or_else(|| c.host.clone());
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} is not a name a certificate can carry: {e}"))?;
        let tls = tokio::time::timeout(within, tokio_rustls::TlsConnector::from(config).connect(name, stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        driven::start(builder, tls)
    } else {
        driven::start(builder, stream)
    };
    let bind = session.client.bind_transceiver(
        BindTransceiver::builder()
            .system_id(cs(&c.system_id)?)
            .password(cs(&c.password)?)
            .system_type(cs(&c.system_type)?)
            .interface_version(InterfaceVersion::Smpp3_4)
            .addr_ton(Ton::Unknown)
            .addr_npi(Npi::Unknown)
            .address_range(COctetString::empty())
            .build(),
    );
    session.call(bind).await.map_err(|e| e.to_string())?;
    Ok((session, events))
}

fn receipt_tlvs(d: &rusmpp::pdus::DeliverSm) -> ReceiptTlvs {
    let mut t = ReceiptTlvs::default();
    for tlv in d.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => t.receipted_message_id = Some(id.to_string()),
            Some(TlvValue::MessageState(s)) => t.message_state = Some(u8::from(*s)),
            Some(TlvValue::NetworkErrorCode(n)) => t.network_error = Some((u8::from(n.network_type), n.error_code)),
            _ => {}
        }
    }
    t
}

fn on_deliver_sm(inner: &Inner, d: &rusmpp::pdus::DeliverSm, answer: DeliverSmAnswer) {
    if u8::from(d.esm_class) & 0x3C != 0x04 {
        // A mobile-originated message, not a receipt: replies are the intake's business.
        return;
    }
    inner.stats.receipts.fetch_add(1, Ordering::Relaxed);
    let body: Vec<u8> = d.short_message().clone().into();
    let Some(r) = read_receipt(&receipt_tlvs(d), &body, &inner.config.err_table) else {
        tracing::warn!(provider = %inner.config.name, "receipt without a message id; kept as malformed");
        inner.stats.receipts_unmatched.fetch_add(1, Ordering::Relaxed);
        let receipt = Receipt::malformed(&inner.config.name, body, Unanswered::until_dropped(answer));
        let _ = inner.receipts_tx.send(receipt);
        return;
    };
    let state = r.state.map_or("no state", MessageState::stat_word);
    let code = match r.err {
        Some(e) => format!("{state} err:{e:03}"),
        None => state.to_string(),
    };
    let pending = Pending {
        class: r.class,
        code,
        is_final: r.state.is_none_or(|s| s.is_final()),
        raw: body,
        unanswered: Unanswered::until_dropped(answer),
    };
    let is_final = pending.is_final;
    let matched =
        inner
            .matcher
            .lock()
            .expect("matcher lock poisoned")
            .receipt(&r.message_id, pending, is_final, Instant::now());
    if let Matched::Now { meta, raw_id, receipt } = matched {
        emit(inner, Some(meta), raw_id, receipt);
    }
}

fn emit(inner: &Inner, meta: Option<PartRef>, provider_id: String, p: Pending) {
    let (reference, part) = match meta {
        Some(m) => (Some(m.reference), Some(m.part)),
        None => (None, None),
    };
    let _ = inner.receipts_tx.send(Receipt {
        provider: inner.config.name.clone(),
        reference,
        provider_id,
        part,
        class: p.class,
        code: p.code,
        is_final: p.is_final,
        raw: p.raw,
        unanswered: p.unanswered,
    });
}

async fn expire_held(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let settled = inner
            .matcher
            .lock()
            .expect("matcher lock poisoned")
            .expire(Instant::now());
        for (meta, raw_id, p) in settled.matched {
            emit(&inner, Some(meta), raw_id, p);
        }
        for (id, p) in settled.unmatched {
            inner.stats.receipts_unmatched.fetch_add(1, Ordering::Relaxed);
            emit(&inner, None, id, p);
        }
    }
}

impl Inner {
    async fn session(&self) -> Option<Session> {
        let mut rx = self.session.clone();
        let wait = Duration::from_millis(self.config.bind_wait_ms);
        let ready = tokio::time::timeout(wait, async {
            rx.wait_for(|s| s.as_ref().is_some_and(Session::is_open))
                .await
                .map(|c| c.clone())
        });
        match ready.await {
            Ok(Ok(c)) => c,
            _ => None,
        }
    }

    /// Submits one part; returns the SMSC's message id. Throttled parts are submitted again
    /// after a back-off; a part that went out on a session that then failed is in doubt.
    async fn submit_part(&self, pdu: SubmitSm) -> Result<String, SendError> {
        let name = &self.config.name;
        // `expect`: the semaphore is never closed.
        let _permit = self.window.acquire().await.expect("window semaphore closed");
        let mut backoff = Duration::from_millis(self.config.throttle_backoff_ms.max(1));
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > self.config.max_resubmits + 1 {
                return Err(SendError::unavailable(name, "gave up after repeated throttling"));
            }
            // Waiting for a bound session sends nothing: a provider down here is safe to retry.
            let Some(session) = self.session().await else {
                return Err(SendError::unavailable(name, "no bound session"));
            };
            match session.call(session.client.submit_sm(pdu.clone())).await {
                Ok(resp) => {
                    self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                    return Ok(resp.message_id().to_string());
                }
                Err(rusmppc::error::Error::UnexpectedResponse { response }) => {
                    let status = u32::from(response.status());
                    if is_throttle(status) {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(secs(1));
                        continue;
                    }
                    let class = command_status_class(status);
                    return Err(SendError::rejected(
                        name,
                        class,
                        format!("{status:#010x}"),
                        "submit_sm refused",
                    ));
                }
                Err(e) => {
                    // The session failed (the connection dropped, or the SMSC stopped
                    // answering) with this part handed to it. The client library does not say
                    // whether the PDU was written, and the SMSC may have taken it before it
                    // went: submitting it again could deliver it twice.
                    tracing::warn!(provider = %name, error = %e, "submit unanswered when its session failed; in doubt");
                    self.stats.in_doubt.fetch_add(1, Ordering::Relaxed);
                    session.call(session.client.close()).await.ok();
                    return Err(SendError::in_doubt(name, format!("submit_sm unanswered: {e}")));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Channel for SmppChannel {
    fn kind(&self) -> reachline_domain::Channel {
        reachline_domain::Channel::Sms
    }

    fn status(&self) -> Vec<crate::ProviderStatus> {
        let bound = self.inner.session.borrow().is_some();
        vec![crate::ProviderStatus {
            provider: self.inner.config.name.clone(),
            state: if bound {
                crate::ProviderState::Up
            } else {
                crate::ProviderState::Down
            },
        }]
    }

    fn provider(&self) -> &str {
        &self.inner.config.name
    }

    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let name = &self.inner.config.name;
        let ContactAddress::Phone(phone) = &msg.to else {
            return Err(SendError::rejected(
                name,
                DeliveryClass::OurFault,
                "address",
                "SMS needs a phone number",
            ));
        };
        let dest = phone.e164().trim_start_matches('+').to_string();
        let bad = |what: &str| SendError::rejected(name, DeliveryClass::OurFault, "encode", what.to_string());
        let reference = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        let parts = encoding::encode(&msg.text, reference);
        let n = parts.len();
        let mut ids = Vec::with_capacity(n);
        for (i, part) in parts.into_iter().enumerate() {
            let pdu = SubmitSm::builder()
                .service_type(ServiceType::default())
                .source_addr_ton(Ton::Alphanumeric)
                .source_addr_npi(Npi::Unknown)
                .source_addr(COctetString::from_str(&self.inner.config.source_addr).map_err(|_| bad("source address"))?)
                .dest_addr_ton(Ton::International)
                .dest_addr_npi(Npi::Isdn)
                .destination_addr(COctetString::from_str(&dest).map_err(|_| bad("destination"))?)
                .esm_class(EsmClass::from(if part.udhi { 0x40 } else { 0x00 }))
                // A receipt for every part, on success and on failure.
                .registered_delivery(RegisteredDelivery::from(0x01))
                .data_coding(DataCoding::from(part.data_coding))
                .short_message(OctetString::from_vec(part.short_message).map_err(|_| bad("part too long"))?)
                .build();
            let id = match self.inner.submit_part(pdu).await {
                Ok(id) => id,
                // Earlier parts are out: trying the message again would send them twice.
                Err(e) if i > 0 && !e.is_permanent() => {
                    return Err(SendError::in_doubt(
                        name,
                        format!("part {} of {n} not taken after the first were: {}", i + 1, e.detail),
                    ));
                }
                Err(e) => return Err(e),
            };
            let held = self.inner.matcher.lock().expect("matcher lock poisoned").register(
                &id,
                PartRef {
                    reference: msg.reference.clone(),
                    part: i as u8,
                },
                Instant::now(),
            );
            for (meta, raw_id, p) in held {
                emit(&self.inner, Some(meta), raw_id, p);
            }
            ids.push(id);
        }
        Ok(Accepted {
            provider: name.clone(),
            provider_ids: ids,
        })
    }

    fn take_receipts(&self) -> Option<ReceiptStream> {
        let rx = self.inner.receipts_rx.lock().expect("receipts lock poisoned").take()?;
        Some(Box::pin(tokio_stream_from(rx)))
    }
}

fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<Receipt>) -> impl futures::Stream<Item = Receipt> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
