//! The SMPP delivery-receipt text body (`id:… sub:… dlvrd:… submit date:… done date:… stat:…
//! err:… text:…`), its `err` and date fields, and the receipt read with and without TLVs.

use reachline_channels::classify::smpp::{receipt_class, ErrTable, MessageState};
use reachline_channels::smpp::receipt::{
    parse_err, parse_receipt_text, read_receipt, ReceiptDate, ReceiptText, ReceiptTlvs,
};

fn valid_date(d: &ReceiptDate) -> bool {
    (2000..=2099).contains(&d.year)
        && (1..=12).contains(&d.month)
        && (1..=31).contains(&d.day)
        && d.hour < 24
        && d.minute < 60
        && d.second < 60
}

fn date_text(d: &ReceiptDate) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}",
        d.year - 2000,
        d.month,
        d.day,
        d.hour,
        d.minute,
        d.second
    )
}

/// The body written back from the fields the reader found (without `text`, which takes the rest).
fn written(r: &ReceiptText) -> String {
    let mut out = Vec::new();
    for (key, value) in [
        ("id", &r.id),
        ("sub", &r.sub),
        ("dlvrd", &r.dlvrd),
        ("stat", &r.stat),
        ("err", &r.err),
    ] {
        if let Some(v) = value {
            out.push(format!("{key}:{v}"));
        }
    }
    if let Some(d) = &r.submit_date {
        out.push(format!("submit date:{}", date_text(d)));
    }
    if let Some(d) = &r.done_date {
        out.push(format!("done date:{}", date_text(d)));
    }
    out.join(" ")
}

pub fn check(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    let r = parse_receipt_text(&body);

    // A one-word field is one word: never empty, never with whitespace in it.
    for v in [&r.id, &r.sub, &r.dlvrd, &r.stat, &r.err].into_iter().flatten() {
        assert!(!v.is_empty(), "an empty value was kept: {r:?}");
        assert!(!v.chars().any(char::is_whitespace), "a value holds whitespace: {v:?}");
    }
    if let Some(t) = &r.text {
        assert!(!t.is_empty());
    }
    for d in [&r.submit_date, &r.done_date].into_iter().flatten() {
        assert!(valid_date(d), "an impossible date was kept: {d:?}");
        assert_eq!(ReceiptDate::parse(&date_text(d)).as_ref(), Some(d));
    }

    // Written back and read again, the fields are the same.
    let again = parse_receipt_text(&written(&r));
    assert_eq!(
        ReceiptText {
            text: None,
            ..r.clone()
        },
        again,
        "the fields read from {body:?} do not survive a round trip"
    );

    if let Some(stat) = r.stat.as_deref() {
        if let Some(state) = MessageState::from_stat(stat) {
            assert_eq!(MessageState::from_stat(state.stat_word()), Some(state));
        }
    }
    let _ = parse_err(&body);
    if let Some(err) = r.err.as_deref() {
        let _ = parse_err(err);
    }
    let _ = ReceiptDate::parse(&body);

    // The receipt from the body alone: found exactly when the body names an id.
    let table = ErrTable::default();
    let from_body = read_receipt(&ReceiptTlvs::default(), data, &table);
    assert_eq!(from_body.is_some(), r.id.is_some());
    if let Some(p) = &from_body {
        assert_eq!(Some(&p.message_id), r.id.as_ref());
        let state = r.stat.as_deref().and_then(MessageState::from_stat);
        assert_eq!(p.state, state);
        assert_eq!(p.err, r.err.as_deref().and_then(parse_err));
        assert_eq!(p.class, receipt_class(p.state, p.err, &table));
    }

    // With TLVs drawn from the first bytes: an id from the TLV always gives a receipt.
    if let [state, net, e1, e2, ..] = *data {
        let tlvs = ReceiptTlvs {
            receipted_message_id: Some(format!("{state:02x}{net:02x}")),
            message_state: Some(state),
            network_error: Some((net, u16::from_be_bytes([e1, e2]))),
        };
        let p = read_receipt(&tlvs, data, &table).expect("a TLV id always gives a receipt");
        if (1..=8).contains(&state) {
            assert_eq!(p.state, MessageState::from_tlv(state));
        }
        if u16::from_be_bytes([e1, e2]) != 0 {
            assert_eq!(p.err, Some(u32::from(u16::from_be_bytes([e1, e2]))));
        }
    }
}
