//! WeChat's event pushes as `POST /v1/webhooks/{provider}` gets them for a `wechat_event`
//! provider (`reachline-channels/src/wechat.rs`): the XML body through `parse_event` and
//! `parse_job_receipt`, and the query signature (`verify`) over a timestamp and nonce taken
//! from the input.
//!
//! The first line of an input, when there is a newline, is `timestamp nonce`; the rest is the
//! body. An input without a newline is all body.

use reachline_channels::wechat::{parse_event, parse_job_receipt, signature, verify, SignatureError, WechatEvent};

const TOKEN: &str = "fuzz-wechat-token";
/// "Now" for the signature check: 2026-01-29 12:00:00 UTC.
const NOW: i64 = 1_769_688_000;
const WINDOW: i64 = 300;

pub fn check(data: &[u8]) {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (std::str::from_utf8(&data[..at]).ok(), &data[at + 1..]),
        None => (None, data),
    };
    match parse_event(body) {
        Ok(WechatEvent::TemplateJobFinished { msg_id, status }) => {
            let r = parse_job_receipt("wx", body).expect("a job event is a receipt");
            assert_eq!(r.provider_id, msg_id);
            assert!(r.code.starts_with("wechat:"));
            assert_eq!(r.raw, body, "the receipt keeps the body as it came");
            assert!(r.is_final);
            let _ = status;
        }
        Ok(_) => assert!(parse_job_receipt("wx", body).is_err(), "only a job event is a receipt"),
        Err(_) => assert!(parse_job_receipt("wx", body).is_err()),
    }
    if let Some((ts, nonce)) = query.and_then(|q| q.split_once(' ')) {
        let good = signature(TOKEN, ts, nonce);
        let in_window = ts
            .trim()
            .parse::<i64>()
            .is_ok_and(|t| NOW.checked_sub(t).and_then(i64::checked_abs).is_some_and(|s| s <= WINDOW));
        let got = verify(TOKEN, Some(ts), Some(nonce), Some(&good), NOW, WINDOW);
        if in_window {
            assert_eq!(got, Ok(()), "our own signature over ({ts:?}, {nonce:?}) verifies");
            let upper = good.to_ascii_uppercase();
            assert_eq!(verify(TOKEN, Some(ts), Some(nonce), Some(&upper), NOW, WINDOW), Ok(()));
            let wrong = verify("another token", Some(ts), Some(nonce), Some(&good), NOW, WINDOW);
            assert_eq!(wrong, Err(SignatureError::Mismatch));
        } else {
            assert!(got.is_err());
        }
    }
}
