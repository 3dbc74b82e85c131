//! Email over SMTP with `lettre`. The synchronous reply is classed by its RFC 3463 enhanced
//! code; asynchronous bounces (RFC 3464 reports, read from an mbox file or handed in by an
//! inbound endpoint) are matched by the per-message return path `prefix+REF@domain` (VERP).

use std::sync::Mutex;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reachline_domain::{ContactAddress, DeliveryClass};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::classify::email::{parse_dsn, smtp_reply_class, verp_token, DsnError, EnhancedCode};
use crate::{Accepted, Channel, MessageRef, Outbound, Receipt, ReceiptStream, Scope, SendError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The visible sender.
    pub from: String,
    /// Return paths are `bounce_prefix+REF@bounce_domain`.
    pub bounce_prefix: String,
    pub bounce_domain: String,
    pub subject: String,
    pub timeout_ms: u64,
    /// When the peer is the recipient's own server (not a relay), its 250 means the mailbox
    /// took the message, and a `Delivered` receipt is reported at once.
    pub accepted_is_delivered: bool,
    /// A Maildir the mail system delivers the bounces (`bounce_prefix+…@bounce_domain`) to:
    /// each message in `new/` is read as an RFC 3464 report and moved to `cur/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_maildir: Option<std::path::PathBuf>,
    /// How often the Maildir is read.
    pub bounce_poll_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            name: "smtp".into(),
            host: "127.0.0.1".into(),
            port: 25,
            from: "notices@reachline.example".into(),
            bounce_prefix: "bounce".into(),
            bounce_domain: "reachline.example".into(),
            subject: "Repayment notice".into(),
            timeout_ms: 10_000,
            accepted_is_delivered: false,
            bounce_maildir: None,
            bounce_poll_ms: 5_000,
        }
    }
}

pub struct SmtpChannel {
    config: SmtpConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    receipts_tx: mpsc::UnboundedSender<Receipt>,
    receipts_rx: Mutex<Option<mpsc::UnboundedReceiver<Receipt>>>,
}

/// A message reference as it may appear in a local part: anything else becomes `_`.
fn token(reference: &MessageRef) -> String {
    reference
        .0
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl SmtpChannel {
    pub fn new(config: SmtpConfig) -> Self {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(Duration::from_millis(config.timeout_ms)))
            .build();
        let (receipts_tx, rx) = mpsc::unbounded_channel();
        SmtpChannel {
            config,
            transport,
            receipts_tx,
            receipts_rx: Mutex::new(Some(rx)),
        }
    }

    fn return_path(&self, reference: &MessageRef) -> String {
        format!(
            "{}+{}@{}",
            self.config.bounce_prefix,
            token(reference),
            self.config.bounce_domain
        )
    }

    /// Reads one bounce (an RFC 3464 report) and reports a receipt per recipient in it.
    pub fn ingest_bounce(&self, raw: &str) -> Result<usize, DsnError> {
        let report = parse_dsn(raw)?;
        let reference = report
            .return_path
            .as_deref()
            .and_then(|rp| verp_token(rp, &self.config.bounce_prefix))
            .map(str::to_string)
            .or(report.envelope_id.clone())
            .map(MessageRef);
        for r in &report.recipients {
            let _ = self.receipts_tx.send(Receipt {
                provider: self.config.name.clone(),
                reference: reference.clone(),
                provider_id: reference.as_ref().map_or_else(String::new, |m| m.0.clone()),
                part: None,
                class: r.class,
                code: format!(
                    "{} {}",
                    r.action,
                    r.status.map_or_else(|| "-".into(), |s| s.to_string())
                ),
                is_final: r.action != "delayed",
                raw: raw.as_bytes().to_vec(),
                unanswered: crate::Unanswered::none(),
            });
        }
        Ok(report.recipients.len())
    }

    /// Reads every message in a Maildir's `new/` as a bounce and moves it to `cur/` (a
    /// message that is not a report is moved too, and counted); returns how many receipts
    /// were reported and how many messages were not reports. The mail system writes each
    /// message whole into `tmp/` and renames it into `new/`, so a message seen is complete.
    pub fn ingest_maildir(&self, dir: &std::path::Path) -> std::io::Result<(usize, usize)> {
        let (mut receipts, mut skipped) = (0, 0);
        let cur = dir.join("cur");
        let new = match std::fs::read_dir(dir.join("new")) {
            Ok(d) => d,
            // Not made yet: the mail system makes it with the first bounce.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        let mut names: Vec<_> = new
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let from = dir.join("new").join(&name);
            let bytes = std::fs::read(&from)?;
            match self.ingest_bounce(&String::from_utf8_lossy(&bytes)) {
                Ok(n) => receipts += n,
                Err(_) => skipped += 1,
            }
            let mut seen = name.clone();
            seen.push(":2,S");
            std::fs::create_dir_all(&cur)?;
            std::fs::rename(&from, cur.join(seen))?;
        }
        Ok((receipts, skipped))
    }

    /// Reads the configured bounce Maildir every `bounce_poll_ms` for as long as the channel
    /// lives (nothing when none is configured). Needs a Tokio runtime.
    pub fn spawn_bounce_reader(self: &std::sync::Arc<Self>) {
        let Some(dir) = self.config.bounce_maildir.clone() else {
            return;
        };
        let me = std::sync::Arc::downgrade(self);
        let every = Duration::from_millis(self.config.bounce_poll_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(ch) = me.upgrade() else { return };
                let dir = dir.clone();
                let res = tokio::task::spawn_blocking(move || ch.ingest_maildir(&dir)).await;
                match res {
                    Ok(Ok((0, 0))) => {}
                    Ok(Ok((receipts, skipped))) => {
                        tracing::info!(receipts, skipped, "bounces read from the Maildir")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "the bounce Maildir could not be read"),
                    Err(e) => tracing::warn!(error = %e, "the bounce reader stopped"),
                }
            }
        });
    }

    /// Reads every bounce in an mbox file (messages separated by `From ` lines); returns how
    /// many receipts were reported and how many messages were not reports.
    pub fn ingest_mbox(&self, text: &str) -> (usize, usize) {
        let (mut receipts, mut skipped) = (0, 0);
        for mail in split_mbox(text) {
            match self.ingest_bounce(mail) {
                Ok(n) => receipts += n,
                Err(_) => skipped += 1,
            }
        }
        (receipts, skipped)
    }
}

/// Splits an mbox into messages, dropping each `From ` separator line.
pub fn split_mbox(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") {
            if let Some(s) = start {
                out.push(&text[s..pos]);
            }
            start = Some(pos + line.len());
        }
        pos += line.len();
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    } else if !text.trim().is_empty() {
        out.push(text);
    }
    out
}

#[async_trait::async_trait]
impl Channel for SmtpChannel {
    fn kind(&self) -> reachline_domain::Channel {
        reachline_domain::Channel::Email
    }

    fn provider(&self) -> &str {
        &self.config.name
    }

    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let name = &self.config.name;
        let ContactAddress::Email(to) = &msg.to else {
            return Err(SendError::rejected(
                name,
                DeliveryClass::OurFault,
                "address",
                "email needs an email address",
            ));
        };
        let ours = |what: &str| SendError::rejected(name, DeliveryClass::OurFault, "build", what.to_string());
        let to_addr: Address = to
            .as_str()
            .parse()
            .map_err(|_| ours("recipient is not an SMTP address"))?;
        let rp: Address = self
            .return_path(&msg.reference)
            .parse()
            .map_err(|_| ours("return path"))?;
        let message = Message::builder()
            .from(self.config.from.parse().map_err(|_| ours("from address"))?)
            .to(to_addr.clone().into())
            .subject(&self.config.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(msg.text.clone())
            .map_err(|_| ours("message"))?;
        let envelope = Envelope::new(Some(rp), vec![to_addr]).map_err(|_| ours("envelope"))?;
        match self.transport.send_raw(&envelope, &message.formatted()).await {
            Ok(resp) => {
                let id = token(&msg.reference);
                if self.config.accepted_is_delivered {
                    let _ = self.receipts_tx.send(Receipt {
                        provider: name.clone(),
                        reference: Some(msg.reference.clone()),
                        provider_id: id.clone(),
                        part: None,
                        class: DeliveryClass::Delivered,
                        code: u16::from(resp.code()).to_string(),
                        is_final: true,
                        raw: resp.message().collect::<Vec<_>>().join("\n").into_bytes(),
                        unanswered: crate::Unanswered::none(),
                    });
                }
                Ok(Accepted {
                    provider: name.clone(),
                    provider_ids: vec![id],
                })
            }
            Err(e) => match e.status() {
                Some(code) => {
                    // The reply text may echo the address: keep only the codes.
                    let text = e.to_string();
                    let basic = u16::from(code);
                    let enhanced = EnhancedCode::find(&text);
                    let class = smtp_reply_class(basic, &text);
                    let code = enhanced.map_or_else(|| basic.to_string(), |x| format!("{basic} {x}"));
                    let mut err = SendError::rejected(name, class, code, "SMTP reply");
                    if e.is_transient() && class != DeliveryClass::Transient {
                        err.permanence = crate::Permanence::Transient;
                    }
                    Err(err)
                }
                None => {
                    let mut err =
                        SendError::unavailable(name, if e.is_timeout() { "timeout" } else { "connection failed" });
                    err.scope = Scope::Provider;
                    Err(err)
                }
            },
        }
    }

    fn take_receipts(&self) -> Option<ReceiptStream> {
        let mut rx = self.receipts_rx.lock().expect("receipts lock poisoned").take()?;
        Some(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_splitting() {
        let m = "From a@b Thu Jan 29 12:00:00 2026\nSubject: one\n\nx\nFrom b@c Thu Jan 29 12:00:01 2026\nSubject: two\n\ny\n";
        let parts = split_mbox(m);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("Subject: one") && parts[1].starts_with("Subject: two"));
        assert_eq!(split_mbox("Subject: bare\n\nz").len(), 1);
        assert_eq!(token(&MessageRef("n/1 2".into())), "n_1_2");
    }
}
