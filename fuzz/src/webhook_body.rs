//! Provider webhooks as `POST /v1/webhooks/{provider}` receives them (`reachline-server`'s
//! `webhooks.rs`): the `X-Timestamp` / `X-Signature` check, then the body by the provider's
//! kind — SMS aggregator receipts and voice outcomes (`parse_webhook`), push outcomes
//! (`parse_push_outcome`), and inbound SMS replies (`{"from", "text"}`: the number parsed, the
//! text classified).
//!
//! An input is the request's headers, a blank line, and the body; an input without a blank line
//! is all body. The headers' signature is checked as given, and the body is also checked with a
//! signature made here, which must verify.

use reachline_channels::http::{parse_push_outcome, parse_webhook, HttpApi};
use reachline_channels::webhook::{sign, verify, WebhookError, DEFAULT_WINDOW_SECS};
use reachline_domain::PhoneParser;
use serde::Deserialize;

const SECRET: &[u8] = b"fuzz-webhook-secret";
/// "Now" for the signature check: 2026-01-29 12:00:00 UTC.
const NOW: i64 = 1_769_688_000;

/// The body of an inbound SMS, as the server's handler reads it.
#[derive(Deserialize)]
struct ReplyBody {
    from: String,
    text: String,
}

fn split(data: &[u8]) -> (Option<&str>, Option<&str>, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        return (None, None, data);
    };
    let (head, body) = (&data[..at], &data[at + 2..]);
    let (mut ts, mut sig) = (None, None);
    for line in head.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let Some((k, v)) = line.split_once(':') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "x-timestamp" => ts = Some(v.trim()),
            "x-signature" => sig = Some(v.trim()),
            _ => {}
        }
    }
    (ts, sig, body)
}

fn phones() -> &'static PhoneParser {
    static P: std::sync::OnceLock<PhoneParser> = std::sync::OnceLock::new();
    P.get_or_init(PhoneParser::default)
}

pub fn check(data: &[u8]) {
    let (ts, sig, body) = split(data);

    // The signature as the request gives it: any answer but a panic.
    match verify(SECRET, ts, sig, body, NOW, DEFAULT_WINDOW_SECS) {
        Ok(()) => assert!(ts.is_some() && sig.is_some()),
        Err(WebhookError::Missing) => assert!(ts.is_none() || sig.is_none()),
        Err(_) => {}
    }
    // A signature made with the secret verifies, in the header forms providers send.
    let stamp = ts.and_then(|t| t.parse::<i64>().ok()).unwrap_or(NOW);
    let good = sign(SECRET, stamp, body);
    let fresh = NOW
        .checked_sub(stamp)
        .is_some_and(|s| s.unsigned_abs() <= DEFAULT_WINDOW_SECS as u64);
    for form in [good.clone(), good.to_ascii_uppercase(), format!("sha256={good}")] {
        let r = verify(
            SECRET,
            Some(&stamp.to_string()),
            Some(&form),
            body,
            NOW,
            DEFAULT_WINDOW_SECS,
        );
        if fresh {
            assert_eq!(r, Ok(()), "our own signature does not verify");
        } else {
            assert!(
                matches!(r, Err(WebhookError::Stale(..))),
                "a stale timestamp passed: {r:?}"
            );
        }
    }

    for api in [HttpApi::SmsAggregator, HttpApi::Voice] {
        if let Ok(r) = parse_webhook(api, "fuzz", body) {
            assert_eq!(r.raw, body);
            assert_eq!(r.provider, "fuzz");
            assert!(r.is_final);
        }
    }
    if let Ok(r) = parse_push_outcome("fuzz", body) {
        assert!(r.reference.is_some() || !r.provider_id.is_empty());
        assert!(r.code.starts_with("push:"));
    }
    if let Ok(reply) = serde_json::from_slice::<ReplyBody>(body) {
        let _ = phones().parse(&reply.from);
        let c = crate::reply_classify::classifier().classify(&reply.text);
        assert_eq!(
            c.class,
            c.signals
                .first()
                .copied()
                .unwrap_or(reachline_policy::ReplyClass::Other)
        );
    }
}
