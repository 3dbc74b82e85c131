//! Delivery receipts as SMSCs send them: the optional parameters first
//! (`receipted_message_id`, `message_state`, `network_error_code`), then a tolerant reader of
//! the non-normative text body (`id:… sub:… dlvrd:… submit date:… done date:… stat:… err:…
//! text:…`) in any case, with missing fields and 10- or 12-digit dates.

use reachline_domain::DeliveryClass;

use crate::classify::smpp::{receipt_class, ErrTable, MessageState};

/// A date in a receipt body: `YYMMDDhhmm`, or `YYMMDDhhmmss` from vendors that add seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl ReceiptDate {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if !(s.len() == 10 || s.len() == 12) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |i: usize| -> u8 { (s.as_bytes()[i] - b'0') * 10 + (s.as_bytes()[i + 1] - b'0') };
        let d = ReceiptDate {
            year: 2000 + n(0) as u16,
            month: n(2),
            day: n(4),
            hour: n(6),
            minute: n(8),
            second: if s.len() == 12 { n(10) } else { 0 },
        };
        let ok =
            (1..=12).contains(&d.month) && (1..=31).contains(&d.day) && d.hour < 24 && d.minute < 60 && d.second < 60;
        ok.then_some(d)
    }
}

/// The fields of a text body; every one may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptText {
    pub id: Option<String>,
    pub sub: Option<String>,
    pub dlvrd: Option<String>,
    pub submit_date: Option<ReceiptDate>,
    pub done_date: Option<ReceiptDate>,
    pub stat: Option<String>,
    pub err: Option<String>,
    pub text: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
}

/// Key spellings seen in the wild, lower case; a space, underscore or nothing may join words.
const KEYS: &[(&str, Key)] = &[
    ("submit date", Key::SubmitDate),
    ("submit_date", Key::SubmitDate),
    ("submitdate", Key::SubmitDate),
    ("done date", Key::DoneDate),
    ("done_date", Key::DoneDate),
    ("donedate", Key::DoneDate),
    ("dlvrd", Key::Dlvrd),
    ("stat", Key::Stat),
    ("text", Key::Text),
    ("sub", Key::Sub),
    ("err", Key::Err),
    ("id", Key::Id),
];

/// Reads a receipt body. Keys are found at word starts in any case, each followed by `:`; a
/// value runs to the next key; `text:` takes the rest of the body, whatever it holds.
pub fn parse_receipt_text(body: &str) -> ReceiptText {
    let lower = body.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut found: Vec<(usize, usize, Key)> = Vec::new(); // (key start, value start, key)
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || bytes[i - 1].is_ascii_whitespace() || bytes[i - 1] == b';' || bytes[i - 1] == b',';
        if at_word_start {
            if let Some((len, key)) = KEYS
                .iter()
                .find_map(|(k, key)| lower[i..].starts_with(k).then_some((k.len(), *key)))
            {
                let mut j = i + len;
                while j < bytes.len() && bytes[j] == b' ' {
                    j += 1;
                }
                if j < bytes.len() && (bytes[j] == b':' || bytes[j] == b'=') {
                    found.push((i, j + 1, key));
                    if key == Key::Text {
                        break;
                    }
                    i = j + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    let mut out = ReceiptText::default();
    for (n, &(_, start, key)) in found.iter().enumerate() {
        let end = found.get(n + 1).map_or(body.len(), |f| f.0);
        // ASCII lower-casing keeps byte offsets, so the original text slices at the same places.
        let raw = body.get(start..end).unwrap_or("");
        // Only `text` holds spaces; any other value is its first word, so an unknown key
        // (`substat:x`) does not leak into the value before it.
        let value = if key == Key::Text {
            raw.trim_start().trim_end_matches('\0')
        } else {
            raw.split_whitespace().next().unwrap_or("").trim_end_matches([',', ';'])
        };
        let value = value.to_string();
        let slot = match key {
            Key::Id => &mut out.id,
            Key::Sub => &mut out.sub,
            Key::Dlvrd => &mut out.dlvrd,
            Key::Stat => &mut out.stat,
            Key::Err => &mut out.err,
            Key::Text => &mut out.text,
            Key::SubmitDate => {
                out.submit_date = out.submit_date.or(ReceiptDate::parse(&value));
                continue;
            }
            Key::DoneDate => {
                out.done_date = out.done_date.or(ReceiptDate::parse(&value));
                continue;
            }
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value);
        }
    }
    out
}

/// Parses an `err` value: decimal as most SMSCs write it, hex when it has hex letters or `0x`.
pub fn parse_err(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    if s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(s, 16).ok();
    }
    None
}

/// What a `deliver_sm` receipt says, before it is matched to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReceipt {
    /// The SMSC's id of the message this receipt answers, as sent.
    pub message_id: String,
    pub state: Option<MessageState>,
    /// The error code: the GSM MAP code from `network_error_code`, or the body's `err`.
    pub err: Option<u32>,
    pub class: DeliveryClass,
}

/// The optional parameters of a receipt that matter here, already decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptTlvs {
    pub receipted_message_id: Option<String>,
    pub message_state: Option<u8>,
    /// `network_error_code`: the network type (3 = GSM) and the error.
    pub network_error: Option<(u8, u16)>,
}

/// Combines the TLVs (preferred) with the text body (fallback) and classifies through the
/// upstream's table. `None` when no message id can be found at all.
pub fn read_receipt(tlvs: &ReceiptTlvs, body: &[u8], table: &ErrTable) -> Option<ParsedReceipt> {
    let text = parse_receipt_text(&String::from_utf8_lossy(body));
    let message_id = tlvs
        .receipted_message_id
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or(text.id.clone())?;
    let state = tlvs
        .message_state
        .and_then(MessageState::from_tlv)
        .or_else(|| text.stat.as_deref().and_then(MessageState::from_stat));
    let err = tlvs
        .network_error
        .filter(|(_, code)| *code != 0)
        .map(|(_, code)| u32::from(code))
        .or_else(|| text.err.as_deref().and_then(parse_err));
    Some(ParsedReceipt {
        message_id,
        state,
        err,
        class: receipt_class(state, err, table),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_body() {
        let r = parse_receipt_text(
            "id:0123456789 sub:001 dlvrd:001 submit date:2601291230 done date:2601291231 stat:DELIVRD err:000 text:Your repayment",
        );
        assert_eq!(r.id.as_deref(), Some("0123456789"));
        assert_eq!(r.sub.as_deref(), Some("001"));
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.err.as_deref(), Some("000"));
        assert_eq!(r.text.as_deref(), Some("Your repayment"));
        assert_eq!(r.submit_date.unwrap().minute, 30);
        assert_eq!(r.done_date.unwrap().second, 0);
    }

    #[test]
    fn any_case_missing_fields_seconds_and_hex_ids() {
        let r = parse_receipt_text("ID:7A3F0B Stat:undeliv ERR:001 Done Date:260129123159");
        assert_eq!(r.id.as_deref(), Some("7A3F0B"));
        assert_eq!(r.stat.as_deref(), Some("undeliv"));
        assert_eq!(r.err.as_deref(), Some("001"));
        assert_eq!(r.done_date, ReceiptDate::parse("260129123159"));
        assert_eq!(r.done_date.unwrap().second, 59);
        assert_eq!(r.sub, None);
        assert_eq!(r.text, None);
    }

    #[test]
    fn text_keeps_words_that_look_like_keys() {
        let r = parse_receipt_text("id:42 stat:DELIVRD text:your id: is stat:fine");
        assert_eq!(r.id.as_deref(), Some("42"));
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.text.as_deref(), Some("your id: is stat:fine"));
    }

    #[test]
    fn keys_inside_words_are_not_keys() {
        let r = parse_receipt_text("msgid:9 id:10 substat:x stat:EXPIRED");
        assert_eq!(r.id.as_deref(), Some("10"));
        assert_eq!(r.stat.as_deref(), Some("EXPIRED"));
    }

    #[test]
    fn bad_dates_are_dropped_not_fatal() {
        assert_eq!(ReceiptDate::parse("2613291230"), None);
        assert_eq!(ReceiptDate::parse("26012912"), None);
        assert_eq!(ReceiptDate::parse("26012912300"), None);
        let r = parse_receipt_text("id:1 submit date:garbage stat:DELIVRD");
        assert_eq!(r.submit_date, None);
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
    }

    #[test]
    fn err_codes() {
        assert_eq!(parse_err("000"), Some(0));
        assert_eq!(parse_err("044"), Some(44));
        assert_eq!(parse_err("0x0b"), Some(11));
        assert_eq!(parse_err("00B"), Some(11));
        assert_eq!(parse_err("x"), None);
    }

    #[test]
    fn tlvs_win_over_the_body() {
        let t = ErrTable::default();
        let tlvs = ReceiptTlvs {
            receipted_message_id: Some("abc".into()),
            message_state: Some(5),
            network_error: Some((3, 1)),
        };
        let r = read_receipt(&tlvs, b"id:zzz stat:DELIVRD err:000", &t).unwrap();
        assert_eq!(r.message_id, "abc");
        assert_eq!(r.state, Some(MessageState::Undeliverable));
        assert_eq!(r.err, Some(1));
        assert_eq!(r.class, DeliveryClass::Dead);
        // Only the body.
        let r = read_receipt(&ReceiptTlvs::default(), b"id:zzz stat:UNDELIV err:013", &t).unwrap();
        assert_eq!((r.message_id.as_str(), r.class), ("zzz", DeliveryClass::Suspended));
        assert!(read_receipt(&ReceiptTlvs::default(), b"stat:DELIVRD", &t).is_none());
    }
}
