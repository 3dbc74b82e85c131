//! HTTP providers' documented error codes: FCM HTTP v1, APNs, WeChat official-account template
//! messages, JPush, and voice (SIP responses, Q.850 hang-up causes, IVR keypresses and
//! transcripts).

use reachline_domain::DeliveryClass;
use DeliveryClass::*;

/// FCM HTTP v1: the HTTP status, `error.status`, and the `@type`s of `error.details`.
pub fn fcm_class(http: u16, status: &str, detail_types: &[&str]) -> DeliveryClass {
    let has = |t: &str| detail_types.iter().any(|d| d.ends_with(t));
    match (http, status) {
        (200, _) => Delivered,
        (404, _) | (_, "UNREGISTERED") => Dead,
        // An invalid token comes back as INVALID_ARGUMENT with an FcmError detail; a bad
        // payload with a BadRequest detail.
        (400, "INVALID_ARGUMENT") if has("google.firebase.fcm.v1.FcmError") && !has("google.rpc.BadRequest") => Dead,
        (400, _) => OurFault,
        (401 | 403, _) | (_, "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR") => OurFault,
        (429 | 500 | 503, _) | (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") => Transient,
        _ => Unknown,
    }
}

/// APNs: the HTTP status and `reason`.
pub fn apns_class(http: u16, reason: &str) -> DeliveryClass {
    match (http, reason) {
        (200, _) => Delivered,
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Dead,
        (429, _) | (500..=599, _) => Transient,
        (400 | 403 | 405 | 413, _) => OurFault,
        _ => Unknown,
    }
}

/// WeChat official account, template message send: `errcode`.
/// What a lender's app backend reports about a push notification after FCM or APNs took it
/// (neither sends delivery receipts): shown on the device, opened, or the token gone.
pub fn push_event_class(event: &str) -> DeliveryClass {
    match event.trim().to_ascii_lowercase().as_str() {
        "delivered" | "displayed" | "received" => Delivered,
        "opened" | "clicked" => Engaged,
        // The app was uninstalled or the token rotated: this contact point no longer reaches.
        "unregistered" | "token_invalid" | "uninstalled" => Dead,
        "dismissed" => Delivered,
        _ => Unknown,
    }
}

pub fn wechat_class(errcode: i64) -> DeliveryClass {
    match errcode {
        0 => Delivered,
        // Not following the account, refused this template, openid not of this account.
        43004 | 43101 | 40003 => Dead,
        // Access token invalid or expired: refresh it; never the borrower's fault.
        40001 | 40014 | 42001 | 40037 | 47003 => OurFault,
        // System busy, API quota reached.
        -1 | 45009 | 45047 => Transient,
        _ => Unknown,
    }
}

/// WeChat official account, a template message's asynchronous outcome: the `Status` of its
/// `TEMPLATESENDJOBFINISH` event. Compared without case or spaces (WeChat writes
/// `failed:user block` and `failed: system failed`).
pub fn wechat_job_class(status: &str) -> DeliveryClass {
    let s: String = status
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match s.as_str() {
        "success" => Delivered,
        // The user refused this account's messages: this channel no longer reaches them, as
        // errcode 43101 (refused this template) says on a send.
        "failed:userblock" => Dead,
        // "Other reasons", named no further. Not Transient: that class weighs against the
        // contact point (and a run of it degrades it), while this status says nothing about the
        // follower — it covers WeChat's own failures as much as an unreachable client. Unknown
        // keeps the receipt at no weight; the send itself stands failed either way.
        "failed:systemfailed" => Unknown,
        _ => Unknown,
    }
}

/// JPush push API: `error.code`.
pub fn jpush_class(code: i64) -> DeliveryClass {
    match code {
        0 => Delivered,
        // No such user, or inactive for more than 255 days.
        1011 => Dead,
        1004 | 1008 | 1003 | 1002 | 1001 => OurFault,
        2002 | 2003 | 1030 => Transient,
        _ => Unknown,
    }
}

/// A final SIP response to an outbound call.
pub fn sip_class(status: u16) -> DeliveryClass {
    match status {
        200 => Delivered,
        404 | 604 | 410 | 484 => Dead,
        486 | 600 | 480 | 408 | 487 | 503 => Transient,
        401 | 403 | 407 | 488 | 606 => OurFault,
        _ => Unknown,
    }
}

/// A Q.850 hang-up cause.
pub fn q850_class(cause: u16) -> DeliveryClass {
    match cause {
        16 => Delivered,
        // Unallocated number, number changed, invalid number format.
        1 | 22 | 28 => Dead,
        // Busy, no user responding, no answer, call rejected, absent, network congestion,
        // temporary failure.
        17 | 18 | 19 | 20 | 21 | 34 | 38 | 41 | 42 => Transient,
        _ => Unknown,
    }
}

/// Phrases that say the person who answered is not the borrower.
const WRONG_PARTY: &[&str] = &[
    "wrong number",
    "not me",
    "don't know",
    "no one by that name",
    "打错了",
    "打错",
    "不是本人",
    "不是我",
    "我不是",
    "不认识",
    "没有这个人",
];
/// Phrases that confirm receipt.
const CONFIRMED: &[&str] = &["received", "confirm", "got it", "yes", "确认", "收到", "知道了", "好的"];

/// An IVR outcome: keypresses (the script's menu: 1 confirms, 9 says wrong person) and an
/// optional transcript. Wrong-party evidence wins over confirmation.
pub fn ivr_class(keys: &str, transcript: Option<&str>) -> Option<DeliveryClass> {
    let t = transcript.map(str::to_lowercase).unwrap_or_default();
    if keys.contains('9') || WRONG_PARTY.iter().any(|p| t.contains(p)) {
        return Some(WrongParty);
    }
    if keys.contains('1') || CONFIRMED.iter().any(|p| t.contains(p)) {
        return Some(Engaged);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_events_say_whether_the_token_still_reaches() {
        assert_eq!(push_event_class("opened"), Engaged);
        assert_eq!(push_event_class("Delivered"), Delivered);
        assert_eq!(push_event_class("unregistered"), Dead);
        assert_eq!(push_event_class("something new"), Unknown);
    }

    const FCM_ERR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
    const BAD_REQ: &str = "type.googleapis.com/google.rpc.BadRequest";

    #[test]
    fn fcm() {
        assert_eq!(fcm_class(404, "NOT_FOUND", &[FCM_ERR]), Dead);
        assert_eq!(fcm_class(404, "UNREGISTERED", &[]), Dead);
        assert_eq!(fcm_class(400, "INVALID_ARGUMENT", &[FCM_ERR]), Dead);
        assert_eq!(fcm_class(400, "INVALID_ARGUMENT", &[FCM_ERR, BAD_REQ]), OurFault);
        assert_eq!(fcm_class(400, "INVALID_ARGUMENT", &[BAD_REQ]), OurFault);
        for h in [429, 500, 503] {
            assert_eq!(fcm_class(h, "", &[]), Transient);
        }
        assert_eq!(fcm_class(403, "SENDER_ID_MISMATCH", &[]), OurFault);
        assert_eq!(fcm_class(200, "", &[]), Delivered);
    }

    #[test]
    fn apns() {
        assert_eq!(apns_class(410, "Unregistered"), Dead);
        assert_eq!(apns_class(400, "BadDeviceToken"), Dead);
        assert_eq!(apns_class(400, "DeviceTokenNotForTopic"), Dead);
        assert_eq!(apns_class(400, "PayloadEmpty"), OurFault);
        assert_eq!(apns_class(429, "TooManyRequests"), Transient);
        assert_eq!(apns_class(503, "ServiceUnavailable"), Transient);
        assert_eq!(apns_class(403, "InvalidProviderToken"), OurFault);
        assert_eq!(apns_class(413, "PayloadTooLarge"), OurFault);
    }

    #[test]
    fn wechat_and_jpush() {
        for c in [43004, 43101, 40003] {
            assert_eq!(wechat_class(c), Dead);
        }
        for c in [40001, 40014, 42001] {
            assert_eq!(wechat_class(c), OurFault);
        }
        assert_eq!(wechat_class(-1), Transient);
        assert_eq!(wechat_class(0), Delivered);
        assert_eq!(wechat_class(12345), Unknown);
        assert_eq!(wechat_job_class("success"), Delivered);
        assert_eq!(wechat_job_class("failed:user block"), Dead);
        assert_eq!(wechat_job_class("Failed: User Block"), Dead);
        assert_eq!(wechat_job_class("failed: system failed"), Unknown);
        assert_eq!(wechat_job_class("failed: something new"), Unknown);
        assert_eq!(jpush_class(1011), Dead);
        assert_eq!(jpush_class(2002), Transient);
        assert_eq!(jpush_class(1004), OurFault);
    }

    #[test]
    fn voice() {
        for s in [404, 604, 410, 484] {
            assert_eq!(sip_class(s), Dead, "{s}");
        }
        for s in [486, 480, 408] {
            assert_eq!(sip_class(s), Transient, "{s}");
        }
        for c in [1, 22, 28] {
            assert_eq!(q850_class(c), Dead, "{c}");
        }
        assert_eq!(q850_class(17), Transient);
        assert_eq!(q850_class(16), Delivered);
        assert_eq!(ivr_class("", Some("对不起，你打错了")), Some(WrongParty));
        assert_eq!(ivr_class("", Some("我不是张三")), Some(WrongParty));
        assert_eq!(ivr_class("", Some("Sorry, wrong number")), Some(WrongParty));
        assert_eq!(ivr_class("1", None), Some(Engaged));
        assert_eq!(ivr_class("", Some("好的，确认")), Some(Engaged));
        assert_eq!(ivr_class("19", Some("确认")), Some(WrongParty));
        assert_eq!(ivr_class("", Some("嗯")), None);
    }
}

/// The status word of a CMPP / SMGP status report as Chinese gateways and aggregators pass it
/// on (`DELIVRD`, `MK:0001`, `CU12` …), from the channels design's table; resellers' own words
/// are mapped per upstream.
pub fn cmpp_stat_class(stat: &str) -> DeliveryClass {
    let s = stat.trim().to_ascii_uppercase();
    match s.as_str() {
        "DELIVRD" | "DELIVERED" => Delivered,
        "MK:0001" | "DB:0100" | "DB:0101" | "ID:0101" | "CB:0001" | "CB:0053" | "CU12" | "CU104" | "CU29" => Dead,
        "MK:0004" | "MK:0005" | "DB:0102" | "DB:0103" | "ID:0102" | "ID:0103" | "CU56" | "CU168" | "CU102" => Suspended,
        "MK:0010" | "MK:0024" | "MK:0029" | "MK:0060" | "MK:0080" | "MK:0081" | "MK:0017" | "MK:0022" | "MK:0030"
        | "EXPIRED" => Transient,
        _ if s.starts_with("MI:") => Transient,
        _ => Unknown,
    }
}

/// An SMS aggregator's synchronous send codes (Alibaba Cloud SMS style `isv.*` codes).
pub fn aggregator_send_class(code: &str) -> DeliveryClass {
    match code {
        "OK" => Delivered,
        "isv.MOBILE_NUMBER_ILLEGAL" | "isv.MOBILE_COUNT_OVER_LIMIT" => Dead,
        "isv.BUSINESS_LIMIT_CONTROL" | "isv.DAY_LIMIT_CONTROL" | "isp.SYSTEM_ERROR" | "isv.SYSTEM_BUSY" => Transient,
        "isv.BLACK_KEY_CONTROL_LIMIT" => Suspended,
        c if c.starts_with("isv.SMS_TEMPLATE")
            || c.starts_with("isv.SMS_SIGNATURE")
            || c.starts_with("isv.TEMPLATE") =>
        {
            OurFault
        }
        "isv.AMOUNT_NOT_ENOUGH"
        | "isv.OUT_OF_SERVICE"
        | "isv.ACCOUNT_ABNORMAL"
        | "InvalidAccessKeyId.NotFound"
        | "SignatureDoesNotMatch" => OurFault,
        _ => Unknown,
    }
}

#[cfg(test)]
mod cmpp_tests {
    use super::*;

    #[test]
    fn cmpp_and_aggregator_codes() {
        for s in ["MK:0001", "db:0100", "CU12", "CB:0053"] {
            assert_eq!(cmpp_stat_class(s), Dead, "{s}");
        }
        for s in ["MK:0004", "ID:0103", "CU168"] {
            assert_eq!(cmpp_stat_class(s), Suspended, "{s}");
        }
        for s in ["MI:0011", "MK:0030", "MK:0022", "EXPIRED"] {
            assert_eq!(cmpp_stat_class(s), Transient, "{s}");
        }
        assert_eq!(cmpp_stat_class("DELIVRD"), Delivered);
        assert_eq!(cmpp_stat_class("MBBLACK"), Unknown);
        assert_eq!(aggregator_send_class("isv.MOBILE_NUMBER_ILLEGAL"), Dead);
        assert_eq!(aggregator_send_class("isv.BUSINESS_LIMIT_CONTROL"), Transient);
        assert_eq!(aggregator_send_class("isv.SMS_TEMPLATE_ILLEGAL"), OurFault);
        assert_eq!(aggregator_send_class("isv.NEW_THING"), Unknown);
    }
}
