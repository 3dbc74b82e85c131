//! RFC 3464 bounces (`multipart/report; report-type=delivery-status`), one mail or an mbox of
//! them, with the VERP token of the return path and the enhanced status codes in them.

use reachline_channels::classify::email::{parse_dsn, smtp_reply_class, verp_token, EnhancedCode};
use reachline_channels::smtp::split_mbox;
use reachline_domain::DeliveryClass;

fn check_mail(mail: &str) {
    let Ok(report) = parse_dsn(mail) else { return };
    assert!(
        !report.recipients.is_empty(),
        "a report without recipients was accepted"
    );
    if let Some(rp) = report.return_path.as_deref() {
        if let Some(token) = verp_token(rp, "bounce") {
            assert!(!token.is_empty());
        }
    }
    for r in &report.recipients {
        assert_eq!(r.action, r.action.to_ascii_lowercase());
        match r.action.as_str() {
            "delivered" | "relayed" | "expanded" => assert_eq!(r.class, DeliveryClass::Delivered),
            "delayed" => assert_eq!(r.class, DeliveryClass::Transient),
            _ => {
                if let Some(s) = r.status {
                    assert_eq!(r.class, s.delivery_class());
                }
            }
        }
        if let Some(s) = r.status {
            assert!(matches!(s.class, 2 | 4 | 5));
            assert_eq!(EnhancedCode::parse(&s.to_string()), Some(s));
        }
    }
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_mail(&text);
    let mails = split_mbox(&text);
    if text.lines().any(|l| l.starts_with("From ")) {
        for m in mails.iter().take(16) {
            check_mail(m);
        }
    }
    if let Some(code) = EnhancedCode::find(&text) {
        assert_eq!(EnhancedCode::parse(&code.to_string()), Some(code));
    }
    let basic = data.first().map_or(0, |&b| 200 + u16::from(b) * 2);
    let _ = smtp_reply_class(basic, &text);
    let _ = verp_token(&text, "bounce");
}
