//! An in-process SMSC for tests and the demo, on `rusmpp`'s codec. Each message's outcome is
//! scripted by the last digit of its destination number:
//!
//! | digit | what the sandbox does | class |
//! |---|---|---|
//! | 0 | accepts; receipt body only, `stat:DELIVRD`, the id in upper-case hex (when that has a letter) | Delivered |
//! | 1 | accepts; receipt TLVs `message_state` 5, `network_error_code` GSM 1 | Dead |
//! | 2 | accepts; receipt body `stat:UNDELIV err:013` | Suspended |
//! | 3 | accepts; receipt body `stat:UNDELIV err:027` | Transient |
//! | 4 | accepts; receipt body `stat:EXPIRED` | Transient |
//! | 5 | refuses: `ESME_RINVDSTADR` | Dead |
//! | 6 | throttles the first try (`ESME_RTHROTTLED`), then accepts; delivered | Delivered |
//! | 7 | refuses: `ESME_RINVSRCADR` | OurFault |
//! | 8 | sends the receipt *before* the `submit_sm_resp`; delivered | Delivered |
//! | 9 | accepts; receipt body `stat:UNDELIV err:255` (unmapped) | Unknown |
//!
//! It records every accepted part, so tests can check nothing was lost or sent twice, and can
//! drop every session on demand. A script ([`Sandbox::set_script`]) can replace the last digit
//! with any rule over the destination (the demo's world: a number that died answers `1`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiverResp, DeliverSm, SubmitSmResp};
use rusmpp::tlvs::MessageDeliveryRequestTlvValue as DTlv;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, MessageState, NetworkErrorCode, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

use crate::smpp::encoding;

/// An accepted part as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxMessage {
    pub destination: String,
    pub text: String,
    pub message_id: String,
    /// The concatenation header (reference, total, sequence), for a part of a longer message.
    pub concat: Option<(u8, u8, u8)>,
    /// Which session (1, 2, …) submitted it: a reference is unique only within one client's run.
    pub session: u32,
}

/// The 8-bit concatenation element (IEI 0) of a user data header, if the message has one.
fn concat_of(sm: &[u8]) -> Option<(u8, u8, u8)> {
    let len = usize::from(*sm.first()?);
    let udh = sm.get(1..1 + len)?;
    let mut i = 0;
    while i + 1 < udh.len() {
        let (iei, l) = (udh[i], usize::from(udh[i + 1]));
        if iei == 0 && l == 3 {
            let e = udh.get(i + 2..i + 5)?;
            return Some((e[0], e[1], e[2]));
        }
        i += 2 + l;
    }
    None
}

#[derive(Default)]
struct State {
    accepted: Mutex<Vec<SandboxMessage>>,
    throttled_once: Mutex<HashSet<(String, Vec<u8>)>>,
    next_id: AtomicU64,
    sessions: AtomicU32,
    /// Throttle every n-th submit (0: never), on top of the digit-6 script.
    throttle_every: AtomicU32,
    submits: AtomicU64,
    /// `deliver_sm_resp`s received: receipts the client has answered.
    answered: AtomicU64,
    script: Mutex<Option<Script>>,
    /// Down: every connection is closed as soon as it is accepted (a drill's "SMSC down").
    down: std::sync::atomic::AtomicBool,
}

/// The behaviour the sandbox gives a destination when no script is set: its last digit.
pub fn last_digit(dest: &str) -> u8 {
    dest.bytes().last().map_or(0, |b| b.wrapping_sub(b'0'))
}

/// A behaviour only a script can choose: accepts; the receipt carries the id verbatim in
/// `receipted_message_id` with `message_state` DELIVERED (as most SMSCs send it), and a
/// decimal text body. Delivered.
pub const DELIVERED_TLV: u8 = 10;

/// Another behaviour only a script can choose: accepts; the receipt names no message (no
/// `receipted_message_id`, no `id:` in its text), as a broken upstream sends them.
pub const NO_ID: u8 = 11;

/// Maps a destination number to the behaviour digit of the table above (or [`DELIVERED_TLV`]).
pub type Script = Arc<dyn Fn(&str) -> u8 + Send + Sync>;

/// The running sandbox; dropping it stops the listener (sessions end with it).
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<State>,
    drop_tx: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_tx.send_modify(|n| *n += 1);
    }
}

impl Sandbox {
    /// Listens on `addr` (use port 0 for any free port).
    pub async fn start(addr: &str) -> std::io::Result<Self> {
        Self::start_with(addr, None).await
    }

    /// Listens on `addr`, speaking SMPP over TLS with `tls` when given (a session starts once
    /// its handshake is done; one that fails is closed).
    pub async fn start_with(addr: &str, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (drop_tx, drop_rx) = watch::channel(0u64);
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                if s.down.load(Ordering::Relaxed) {
                    drop(sock);
                    continue;
                }
                let _ = sock.set_nodelay(true);
                match &tls {
                    None => {
                        tokio::spawn(session(sock, s.clone(), drop_rx.clone()));
                    }
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                        let (s, drop_rx) = (s.clone(), drop_rx.clone());
                        tokio::spawn(async move {
                            let handshake =
                                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(sock));
                            if let Ok(Ok(tls)) = handshake.await {
                                session(tls, s, drop_rx).await;
                            }
                        });
                    }
                }
            }
        });
        Ok(Sandbox {
            addr,
            state,
            drop_tx,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every part accepted so far, in order.
    pub fn accepted(&self) -> Vec<SandboxMessage> {
        self.accepted_since(0)
    }

    /// The parts accepted after the first `start`, in order (a log's tail, without copying
    /// what was logged already).
    pub fn accepted_since(&self, start: usize) -> Vec<SandboxMessage> {
        let all = self.state.accepted.lock().expect("sandbox lock poisoned");
        all.get(start..).map(<[SandboxMessage]>::to_vec).unwrap_or_default()
    }

    /// How many parts were accepted so far (without copying them).
    pub fn accepted_count(&self) -> usize {
        self.state.accepted.lock().expect("sandbox lock poisoned").len()
    }

    /// Every whole message accepted so far, as (destination, text): the parts of a concatenated
    /// message joined by their header's reference, in the order each message completed.
    pub fn messages(&self) -> Vec<(String, String)> {
        // (destination, session, reference, total) → the parts so far, by sequence.
        type Key = (String, u32, u8, u8);
        let mut open: std::collections::HashMap<Key, Vec<(u8, String)>> = Default::default();
        let mut out = Vec::new();
        for m in self.accepted() {
            match m.concat {
                None => out.push((m.destination, m.text)),
                Some((reference, total, seq)) => {
                    let key = (m.destination.clone(), m.session, reference, total);
                    let parts = open.entry(key.clone()).or_default();
                    parts.push((seq, m.text));
                    if parts.len() == usize::from(total) {
                        let mut parts = open.remove(&key).unwrap_or_default();
                        parts.sort_by_key(|(seq, _)| *seq);
                        out.push((m.destination, parts.into_iter().map(|(_, t)| t).collect()));
                    }
                }
            }
        }
        out
    }

    /// Receipts (`deliver_sm`) the clients have answered so far.
    pub fn answered(&self) -> u64 {
        self.state.answered.load(Ordering::Relaxed)
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> u32 {
        self.state.sessions.load(Ordering::Relaxed)
    }

    /// Closes every open session's TCP connection, as a crashing SMSC would.
    pub fn drop_sessions(&self) {
        self.drop_tx.send_modify(|n| *n += 1);
    }

    /// Chooses each message's behaviour by `script(destination)` instead of its last digit.
    pub fn set_script(&self, script: Script) {
        *self.state.script.lock().expect("sandbox lock poisoned") = Some(script);
    }

    /// Takes the SMSC down (every session dropped, every new connection closed at once) or
    /// brings it back up, as a drill's fault.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
        if down {
            self.drop_sessions();
        }
    }

    /// Throttles every n-th submit from now on (0 turns it off).
    pub fn throttle_every(&self, n: u32) {
        self.state.throttle_every.store(n, Ordering::Relaxed);
    }
}

fn cs<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    COctetString::from_str(s).unwrap_or_else(|_| COctetString::empty())
}

/// The id in upper-case hex, as some SMSCs report it — when the hex has a letter. An all-digit
/// hex form (16 → `10`) would name another message's decimal id, a real SMSC's ambiguity that
/// only configuring the upstream's id base resolves; the sandbox keeps such ids decimal.
fn hex_id(id: &str) -> String {
    let hex = format!("{:X}", id.parse::<u64>().unwrap_or(0));
    if hex.bytes().any(|b| b.is_ascii_alphabetic()) {
        hex
    } else {
        id.to_string()
    }
}

fn receipt(to_esme: &str, from: &str, id: &str, digit: u8, seq: u32) -> Command {
    let body = match digit {
        0 => format!(
            "id:{} sub:001 dlvrd:001 submit date:2601291200 done date:2601291200 stat:DELIVRD err:000 text:",
            hex_id(id)
        ),
        1 => String::new(),
        2 => format!(
            "id:{id} sub:001 dlvrd:000 submit date:2601291200 done date:260129120001 stat:UNDELIV err:013 text:"
        ),
        3 => format!("ID:{id} STAT:undeliv ERR:027"),
        4 => format!("id:{id} submit date:2601291200 done date:2601301200 stat:EXPIRED err:000"),
        9 => format!("id:{id} stat:UNDELIV err:255"),
        NO_ID => "sub:001 dlvrd:001 stat:DELIVRD err:000 text:".to_string(),
        _ => {
            format!("id:{id} sub:001 dlvrd:001 submit date:2601291200 done date:2601291200 stat:DELIVRD err:000 text:")
        }
    };
    let mut d = DeliverSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(cs(from))
        .destination_addr(cs(to_esme))
        .esm_class(EsmClass::from(0x04))
        .short_message(OctetString::from_vec(body.into_bytes()).unwrap_or_else(|_| OctetString::empty()))
        .build();
    if digit == DELIVERED_TLV {
        d.push_tlv(DTlv::ReceiptedMessageId(cs(id)));
        d.push_tlv(DTlv::MessageState(MessageState::from(2u8)));
    }
    if digit == 1 {
        d.push_tlv(DTlv::ReceiptedMessageId(cs(id)));
        d.push_tlv(DTlv::MessageState(MessageState::from(5u8)));
        d.push_tlv(DTlv::NetworkErrorCode(NetworkErrorCode::new(
            rusmpp::values::ErrorCodeNetworkType::Gsm,
            1,
        )));
    }
    Command::new(CommandStatus::EsmeRok, seq, d)
}

async fn session<S>(sock: S, state: Arc<State>, mut drop_rx: watch::Receiver<u64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let session_no = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    drop_rx.mark_unchanged();
    let (mut sink, mut stream) = Framed::new(sock, CommandCodec::new()).split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Command>();
    let writer = tokio::spawn(async move {
        while let Some(c) = out_rx.recv().await {
            if sink.send(c).await.is_err() {
                break;
            }
        }
    });
    let mut seq = 1u32;
    loop {
        let cmd = tokio::select! {
            _ = drop_rx.changed() => break,
            c = stream.next() => match c { Some(Ok(c)) => c, _ => break },
        };
        let n = cmd.sequence_number();
        let reply = |pdu: Pdu| Command::new(CommandStatus::EsmeRok, n, pdu);
        match cmd.pdu() {
            Some(Pdu::BindTransceiver(_)) => {
                let _ = out_tx.send(reply(
                    BindTransceiverResp::builder().system_id(cs("sandbox")).build().into(),
                ));
            }
            Some(Pdu::DeliverSmResp(_)) => {
                state.answered.fetch_add(1, Ordering::Relaxed);
            }
            Some(Pdu::EnquireLink) => {
                let _ = out_tx.send(reply(Pdu::EnquireLinkResp));
            }
            Some(Pdu::Unbind) => {
                let _ = out_tx.send(reply(Pdu::UnbindResp));
                break;
            }
            Some(Pdu::SubmitSm(s)) => {
                let dest = s.destination_addr.to_string();
                let from = s.source_addr.to_string();
                let sm: Vec<u8> = s.short_message().clone().into();
                let script = state.script.lock().expect("sandbox lock poisoned").clone();
                let digit = match script {
                    Some(f) => f(&dest),
                    None => last_digit(&dest),
                };
                let count = state.submits.fetch_add(1, Ordering::Relaxed) + 1;
                let every = u64::from(state.throttle_every.load(Ordering::Relaxed));
                let throttle_now = (every > 0 && count % every == 0)
                    || (digit == 6
                        && state
                            .throttled_once
                            .lock()
                            .expect("sandbox lock poisoned")
                            .insert((dest.clone(), sm.clone())));
                let status = match digit {
                    _ if throttle_now => Some(CommandStatus::EsmeRthrottled),
                    5 => Some(CommandStatus::EsmeRinvdstadr),
                    7 => Some(CommandStatus::EsmeRinvsrcadr),
                    _ => None,
                };
                if let Some(status) = status {
                    let _ = out_tx.send(Command::new(status, n, SubmitSmResp::builder().build()));
                    continue;
                }
                let id = format!("{:010}", state.next_id.fetch_add(1, Ordering::Relaxed) + 1);
                let udhi = u8::from(s.esm_class) & 0x40 != 0;
                let text = encoding::decode(u8::from(s.data_coding), &sm, udhi);
                state
                    .accepted
                    .lock()
                    .expect("sandbox lock poisoned")
                    .push(SandboxMessage {
                        destination: dest.clone(),
                        text,
                        message_id: id.clone(),
                        concat: if udhi { concat_of(&sm) } else { None },
                        session: session_no,
                    });
                let resp = reply(SubmitSmResp::builder().message_id(cs(&id)).build().into());
                let dr = receipt(&from, &dest, &id, digit, seq);
                seq = seq.wrapping_add(1);
                if digit == 8 {
                    let _ = out_tx.send(dr);
                    let _ = out_tx.send(resp);
                } else {
                    let _ = out_tx.send(resp);
                    let _ = out_tx.send(dr);
                }
            }
            _ => {}
        }
    }
    writer.abort();
}
