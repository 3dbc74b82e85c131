//! An in-process SMTP server for drills and tests: it speaks just enough SMTP for `lettre`
//! (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, no TLS), counts the messages it took, and
//! answers every `RCPT TO` with `250` — or, while a fault is set ([`SmtpSandbox::set_rcpt_reply`]),
//! with the reply given (`550 5.1.1 …`: every message bounces). A script
//! ([`SmtpSandbox::set_script`]) may instead answer each recipient by its address, as the demo's
//! world does for mailboxes its borrowers abandoned. It keeps no address and no text.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Answers one recipient's `RCPT TO` by its address: `None` takes it (`250`), `Some(reply)`
/// refuses it with that full reply line.
pub type RcptScript = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Default)]
struct State {
    rcpt_reply: Mutex<Option<String>>,
    script: Mutex<Option<RcptScript>>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// The running server; dropping it stops the listener.
pub struct SmtpSandbox {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSandbox {
    /// Listens on `addr` (port 0 for any free port).
    pub async fn start(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(session(sock, s.clone()));
            }
        });
        Ok(SmtpSandbox { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on every `RCPT TO` is answered with `reply` (a full reply line such as
    /// `550 5.1.1 mailbox unavailable`), or with `250` again for `None`.
    pub fn set_rcpt_reply(&self, reply: Option<String>) {
        *self.state.rcpt_reply.lock().expect("smtp sandbox lock poisoned") = reply;
    }

    /// From now on a recipient the fixed reply (if any) does not refuse is answered by
    /// `script`, given the address inside `RCPT TO:<…>`.
    pub fn set_script(&self, script: RcptScript) {
        *self.state.script.lock().expect("smtp sandbox lock poisoned") = Some(script);
    }

    /// Messages taken (`250` after DATA) and recipients refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.accepted.load(Ordering::Relaxed),
            self.state.refused.load(Ordering::Relaxed),
        )
    }
}

async fn session(sock: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r);
    // Clients write a message's body and its closing dot separately; with Nagle on their side
    // the dot waits for our ACK of the body, which Linux delays ~40 ms unless told not to.
    // Asked before each read, since the kernel drops quick-ACK mode on its own.
    let quick_ack = |lines: &BufReader<tokio::net::tcp::OwnedReadHalf>| {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(lines.get_ref().as_ref()).set_tcp_quickack(true);
        #[cfg(not(target_os = "linux"))]
        let _ = lines;
    };
    w.write_all(b"220 sandbox ESMTP ready\r\n").await?;
    let mut line = String::new();
    let mut recipients = 0usize;
    loop {
        line.clear();
        quick_ack(&lines);
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => "250-sandbox\r\n250 8BITMIME".into(),
            "HELO" | "NOOP" => "250 ok".into(),
            "MAIL" => {
                recipients = 0;
                "250 2.1.0 ok".into()
            }
            "RSET" => {
                recipients = 0;
                "250 2.0.0 ok".into()
            }
            "RCPT" => match rcpt_reply(&state, &line) {
                Some(r) => {
                    state.refused.fetch_add(1, Ordering::Relaxed);
                    r
                }
                None => {
                    recipients += 1;
                    "250 2.1.5 ok".into()
                }
            },
            "DATA" if recipients == 0 => "554 5.5.1 no valid recipients".into(),
            "DATA" => {
                w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                loop {
                    line.clear();
                    quick_ack(&lines);
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                state.accepted.fetch_add(1, Ordering::Relaxed);
                recipients = 0;
                "250 2.0.0 queued".into()
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 not implemented".into(),
        };
        // One write per reply: a reply split over two small writes waits out the client's
        // delayed ACK (Nagle), ~40 ms per command.
        w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The reply to one `RCPT TO` line: the fixed fault, else the script's answer for the address.
fn rcpt_reply(state: &State, line: &str) -> Option<String> {
    if let Some(r) = state.rcpt_reply.lock().expect("smtp sandbox lock poisoned").clone() {
        return Some(r);
    }
    let script = state.script.lock().expect("smtp sandbox lock poisoned").clone()?;
    let address = line
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or("", |(a, _)| a);
    script(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::{SmtpChannel, SmtpConfig};
    use crate::{Channel, MessageRef, Outbound};
    use reachline_domain::{ContactAddress, DeliveryClass, Email};

    #[tokio::test]
    async fn takes_mail_then_bounces_everything_while_the_fault_is_set() {
        let sandbox = SmtpSandbox::start("127.0.0.1:0").await.unwrap();
        let ch = SmtpChannel::new(SmtpConfig {
            port: sandbox.addr().port(),
            accepted_is_delivered: true,
            timeout_ms: 2_000,
            ..SmtpConfig::default()
        });
        let msg = |r: &str| Outbound {
            reference: MessageRef(r.into()),
            to: ContactAddress::Email(Email::parse("someone@example.com").unwrap()),
            text: "您好 hello".into(),
        };
        ch.send(&msg("1")).await.unwrap();
        sandbox.set_rcpt_reply(Some("550 5.1.1 mailbox unavailable".into()));
        let e = ch.send(&msg("2")).await.unwrap_err();
        assert_eq!(e.class, DeliveryClass::Dead);
        sandbox.set_rcpt_reply(None);
        ch.send(&msg("3")).await.unwrap();
        assert_eq!(sandbox.counts(), (2, 1));
    }

    #[tokio::test]
    async fn a_script_answers_each_recipient_by_address() {
        let sandbox = SmtpSandbox::start("127.0.0.1:0").await.unwrap();
        sandbox.set_script(Arc::new(|a: &str| {
            a.starts_with("gone@")
                .then(|| "550 5.1.1 mailbox unavailable".to_string())
        }));
        let ch = SmtpChannel::new(SmtpConfig {
            port: sandbox.addr().port(),
            accepted_is_delivered: true,
            timeout_ms: 2_000,
            ..SmtpConfig::default()
        });
        let msg = |to: &str| Outbound {
            reference: MessageRef(to.into()),
            to: ContactAddress::Email(Email::parse(to).unwrap()),
            text: "hello".into(),
        };
        ch.send(&msg("here@example.com")).await.unwrap();
        let e = ch.send(&msg("gone@example.com")).await.unwrap_err();
        assert_eq!(e.class, DeliveryClass::Dead);
        ch.send(&msg("Gone@example.com")).await.unwrap();
        assert_eq!(sandbox.counts(), (2, 1));
    }
}
