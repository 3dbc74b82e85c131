//! Email outcomes: SMTP replies by their RFC 3463 enhanced status code, and asynchronous
//! bounces as RFC 3464 delivery status notifications, correlated by a per-message return path
//! (VERP) or the envelope id.

use reachline_domain::DeliveryClass;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl std::fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl EnhancedCode {
    /// Parses exactly `d.ddd.ddd` with class 2, 4 or 5.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        let (c, su, de) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || c.len() != 1 || su.is_empty() || su.len() > 3 || de.is_empty() || de.len() > 3 {
            return None;
        }
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(c) || !all_digits(su) || !all_digits(de) {
            return None;
        }
        let class: u8 = c.parse().ok()?;
        matches!(class, 2 | 4 | 5).then_some(EnhancedCode {
            class,
            subject: su.parse().ok()?,
            detail: de.parse().ok()?,
        })
    }

    /// Finds the first enhanced code in a reply or diagnostic text (`550 5.1.1 No such user`).
    pub fn find(text: &str) -> Option<Self> {
        text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '#' || c == ';' || c == ',')
            .find_map(EnhancedCode::parse)
    }

    /// The class of this code (the channels design's email rules).
    pub fn delivery_class(self) -> DeliveryClass {
        use DeliveryClass::*;
        match (self.class, self.subject, self.detail) {
            (2, _, _) => Delivered,
            (4, _, _) => Transient,
            // Bad destination mailbox, bad system, bad syntax, null MX; mailbox disabled.
            (5, 1, 1 | 2 | 3 | 10) | (5, 2, 1) => Dead,
            // A full mailbox is permanent on paper, temporary in practice.
            (5, 2, 2) => Transient,
            // Our sender (5.1.7, 5.1.8), our message (5.6.x), security or policy (5.7.x),
            // protocol (5.5.x), message too big for the system (5.3.4).
            (5, 1, 7 | 8) | (5, 5, _) | (5, 6, _) | (5, 7, _) | (5, 3, 4) | (5, 2, 3) => OurFault,
            _ => Unknown,
        }
    }
}

/// Classifies an SMTP reply: by its enhanced code when it has one, else by the basic code.
pub fn smtp_reply_class(code: u16, text: &str) -> DeliveryClass {
    if let Some(e) = EnhancedCode::find(text) {
        return e.delivery_class();
    }
    match code {
        200..=299 => DeliveryClass::Delivered,
        400..=499 => DeliveryClass::Transient,
        // 550/551/553 without an enhanced code say "mailbox unavailable" for many reasons.
        _ => DeliveryClass::Unknown,
    }
}

/// One recipient's part of a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient`, without its `rfc822;` type.
    pub final_recipient: String,
    pub original_recipient: Option<String>,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub action: String,
    pub status: Option<EnhancedCode>,
    pub diagnostic: Option<String>,
    pub class: DeliveryClass,
}

/// An RFC 3464 report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The envelope `To` of the bounce, which is our per-message return path (VERP).
    pub return_path: Option<String>,
    pub envelope_id: Option<String>,
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("not a multipart/report message")]
    NotAReport,
    #[error("the report has no message/delivery-status part")]
    NoStatusPart,
    #[error("the delivery-status part names no recipient")]
    NoRecipient,
}

/// Header fields of a block, unfolded, names lower-cased.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

fn get<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn split_head(s: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = s.find(sep) {
            return (&s[..i], &s[i + sep.len()..]);
        }
    }
    (s, "")
}

fn param(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn strip_type(v: &str) -> String {
    v.split_once(';')
        .map_or(v, |(_, a)| a)
        .trim()
        .trim_matches(['<', '>'])
        .to_string()
}

/// Parses a bounce mail. Only the structure RFC 3464 fixes is relied on; the human-readable
/// part is ignored.
pub fn parse_dsn(raw: &str) -> Result<DeliveryReport, DsnError> {
    let (head, body) = split_head(raw);
    let h = fields(head);
    let ct = get(&h, "content-type").ok_or(DsnError::NotAReport)?;
    if !ct.to_ascii_lowercase().starts_with("multipart/report") {
        return Err(DsnError::NotAReport);
    }
    let boundary = param(ct, "boundary").ok_or(DsnError::NotAReport)?;
    let delim = format!("--{boundary}");
    let status_part = body
        .split(delim.as_str())
        .map(split_head)
        .find(|(ph, _)| {
            get(&fields(ph), "content-type")
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("message/delivery-status"))
        })
        .map(|(_, pb)| pb)
        .ok_or(DsnError::NoStatusPart)?;
    let norm = status_part.replace("\r\n", "\n");
    let mut blocks = norm.split("\n\n").map(str::trim).filter(|b| !b.is_empty());
    let per_message = fields(blocks.next().unwrap_or(""));
    let mut recipients = Vec::new();
    for b in blocks {
        let f = fields(b);
        let Some(fr) = get(&f, "final-recipient") else { continue };
        let action = get(&f, "action").unwrap_or("").to_ascii_lowercase();
        let status = get(&f, "status").and_then(|s| EnhancedCode::parse(s.split_whitespace().next().unwrap_or("")));
        let diagnostic = get(&f, "diagnostic-code").map(strip_type);
        let class = match (action.as_str(), status) {
            ("delivered" | "relayed" | "expanded", _) => DeliveryClass::Delivered,
            ("delayed", _) => DeliveryClass::Transient,
            (_, Some(s)) => s.delivery_class(),
            _ => diagnostic
                .as_deref()
                .and_then(EnhancedCode::find)
                .map_or(DeliveryClass::Unknown, EnhancedCode::delivery_class),
        };
        recipients.push(RecipientStatus {
            final_recipient: strip_type(fr),
            original_recipient: get(&f, "original-recipient").map(strip_type),
            action,
            status,
            diagnostic,
            class,
        });
    }
    if recipients.is_empty() {
        return Err(DsnError::NoRecipient);
    }
    Ok(DeliveryReport {
        return_path: get(&h, "to").map(|t| t.trim_matches(['<', '>']).to_string()),
        envelope_id: get(&per_message, "original-envelope-id").map(str::to_string),
        reporting_mta: get(&per_message, "reporting-mta").map(strip_type),
        recipients,
    })
}

/// The message token in a VERP return path `prefix+TOKEN@domain`.
pub fn verp_token<'a>(return_path: &'a str, prefix: &str) -> Option<&'a str> {
    let local = return_path.trim_matches(['<', '>']).split('@').next()?;
    let (p, token) = local.split_once('+')?;
    (p.eq_ignore_ascii_case(prefix) && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryClass::*;

    #[test]
    fn enhanced_codes() {
        for (text, class) in [
            ("550 5.1.1 <x@y>: Recipient address rejected: User unknown", Dead),
            ("5.1.2 bad destination system", Dead),
            ("550 5.1.10 null MX", Dead),
            ("550 5.2.1 mailbox disabled", Dead),
            ("452 4.2.2 Mailbox full", Transient),
            ("552 5.2.2 Mailbox full", Transient),
            ("421 4.7.0 try again later", Transient),
            ("550 5.7.1 Message rejected as spam", OurFault),
            ("553 5.1.8 sender domain does not exist", OurFault),
            ("250 2.0.0 Ok: queued as 123", Delivered),
            ("554 5.4.4 unable to route", Unknown),
        ] {
            let code: u16 = text[..3].parse().unwrap_or(500);
            assert_eq!(smtp_reply_class(code, text), class, "{text}");
        }
        assert_eq!(smtp_reply_class(451, "local error"), Transient);
        assert_eq!(smtp_reply_class(550, "no such user here"), Unknown);
        assert_eq!(EnhancedCode::parse("5.1"), None);
        assert_eq!(EnhancedCode::parse("3.1.1"), None);
        assert_eq!(EnhancedCode::parse("5.1.1000"), None);
        assert_eq!(EnhancedCode::parse("5.1.10").unwrap().to_string(), "5.1.10");
    }

    const DSN: &str = "Return-Path: <>\r\nTo: <bounce+n-42@notices.example>\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"B0UND\"\r\n\r\n--B0UND\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\r\n--B0UND\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\nOriginal-Envelope-Id: n-42\r\nArrival-Date: Thu, 29 Jan 2026 12:00:00 +0000\r\n\r\nFinal-Recipient: rfc822; gone@example.net\r\nOriginal-Recipient: rfc822;gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\nFinal-Recipient: rfc822; full@example.net\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\nFinal-Recipient: rfc822; odd@example.net\r\nAction: failed\r\nDiagnostic-Code: smtp; 550 5.7.1 blocked\r\n\r\n--B0UND\r\nContent-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\n--B0UND--\r\n";

    #[test]
    fn parses_a_report() {
        let r = parse_dsn(DSN).unwrap();
        assert_eq!(r.envelope_id.as_deref(), Some("n-42"));
        assert_eq!(r.reporting_mta.as_deref(), Some("mx.example.net"));
        assert_eq!(verp_token(r.return_path.as_deref().unwrap(), "bounce"), Some("n-42"));
        let classes: Vec<_> = r
            .recipients
            .iter()
            .map(|x| (x.final_recipient.as_str(), x.class))
            .collect();
        assert_eq!(
            classes,
            vec![
                ("gone@example.net", Dead),
                ("full@example.net", Transient),
                ("odd@example.net", OurFault)
            ]
        );
        assert_eq!(r.recipients[0].diagnostic.as_deref(), Some("550 5.1.1 user unknown"));
    }

    #[test]
    fn refuses_what_is_not_a_report() {
        assert_eq!(
            parse_dsn("Content-Type: text/plain\n\nhello"),
            Err(DsnError::NotAReport)
        );
        assert_eq!(
            parse_dsn("Content-Type: multipart/report; boundary=x\n\n--x\nContent-Type: text/plain\n\nhi\n--x--"),
            Err(DsnError::NoStatusPart)
        );
        assert_eq!(verp_token("someone+x@example.com", "bounce"), None);
        assert_eq!(verp_token("bounce@example.com", "bounce"), None);
    }
}
