//! SMPP 3.4 codes: `submit_sm_resp` command statuses, receipt message states and the GSM MAP
//! error table (per upstream, overridable in configuration).

use std::collections::BTreeMap;

use reachline_domain::DeliveryClass;
use serde::{Deserialize, Serialize};

/// `ESME_RMSGQFUL`: the SMSC's queue is full; back off and resubmit.
pub const ESME_RMSGQFUL: u32 = 0x14;
/// `ESME_RTHROTTLED`: we exceeded the account's rate; back off and resubmit.
pub const ESME_RTHROTTLED: u32 = 0x58;

/// Whether a `submit_sm_resp` status asks us to slow down and submit the same part again.
pub fn is_throttle(status: u32) -> bool {
    matches!(status, ESME_RMSGQFUL | ESME_RTHROTTLED)
}

/// The class of a failed `submit_sm` by its `command_status` (the channels design's table).
pub fn command_status_class(status: u32) -> DeliveryClass {
    use DeliveryClass::*;
    match status {
        0x00 => Delivered,
        // ESME_RINVDSTADR: the destination address is not a subscriber.
        0x0B => Dead,
        // Queue full, throttled, system error, submit failed, temporary application error.
        0x08 | 0x14 | 0x45 | 0x58 | 0x64 => Transient,
        // Our PDU, bind, sender, TON/NPI, schedule or validity, or a vendor code for content.
        0x01..=0x07
        | 0x0A
        | 0x0C..=0x0F
        | 0x13
        | 0x33
        | 0x34
        | 0x40
        | 0x42..=0x44
        | 0x48..=0x4A
        | 0x50
        | 0x51
        | 0x53..=0x55
        | 0x61..=0x63
        | 0x65..=0x67 => OurFault,
        s if s >= 0x400 => OurFault,
        _ => Unknown,
    }
}

/// A receipt's message state, from the `message_state` TLV (0x0427) or the text body's `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Enroute,
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
}

impl MessageState {
    /// From the TLV's value (SMPP 3.4 §5.2.28).
    pub fn from_tlv(v: u8) -> Option<Self> {
        use MessageState::*;
        Some(match v {
            1 => Enroute,
            2 => Delivered,
            3 => Expired,
            4 => Deleted,
            5 => Undeliverable,
            6 => Accepted,
            7 => Unknown,
            8 => Rejected,
            _ => return None,
        })
    }

    /// From the text body's `stat` word, in any case; vendors spell a few differently.
    pub fn from_stat(word: &str) -> Option<Self> {
        use MessageState::*;
        Some(match word.trim().to_ascii_uppercase().as_str() {
            "DELIVRD" | "DELIVERED" => Delivered,
            "EXPIRED" => Expired,
            "DELETED" => Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "FAILED" => Undeliverable,
            "ACCEPTD" | "ACCEPTED" => Accepted,
            "UNKNOWN" => Unknown,
            "REJECTD" | "REJECTED" => Rejected,
            "ENROUTE" => Enroute,
            _ => return None,
        })
    }

    /// The text body's word for this state.
    pub fn stat_word(self) -> &'static str {
        use MessageState::*;
        match self {
            Enroute => "ENROUTE",
            Delivered => "DELIVRD",
            Expired => "EXPIRED",
            Deleted => "DELETED",
            Undeliverable => "UNDELIV",
            Accepted => "ACCEPTD",
            Unknown => "UNKNOWN",
            Rejected => "REJECTD",
        }
    }

    /// Whether the message will not change state again.
    pub fn is_final(self) -> bool {
        !matches!(self, MessageState::Enroute | MessageState::Accepted)
    }
}

/// Maps an upstream's `err` codes to classes. Starts from the GSM MAP defaults of the channels
/// design; configuration replaces or adds entries per upstream, because the `err` field is
/// route-specific.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrTable {
    /// Codes this upstream uses differently from GSM MAP, and codes it adds.
    #[serde(default)]
    pub overrides: BTreeMap<u32, DeliveryClass>,
    /// When true, the GSM MAP defaults are not consulted at all.
    #[serde(default)]
    pub replace_defaults: bool,
}

/// The GSM MAP error defaults (3GPP TS 29.002) from the channels design.
pub fn gsm_map_class(err: u32) -> Option<DeliveryClass> {
    use DeliveryClass::*;
    Some(match err {
        // Unknown subscriber, unidentified subscriber, illegal subscriber, number changed.
        1 | 5 | 9 | 44 => Dead,
        // Call barred, teleservice not provisioned.
        13 | 11 => Suspended,
        // Absent subscriber (SM), absent subscriber, busy, facility not supported, system
        // failure, data missing, unexpected data value, memory capacity exceeded.
        6 | 27 | 31..=36 => Transient,
        _ => return None,
    })
}

impl ErrTable {
    /// The class of an `err` code on this upstream, if it knows the code.
    pub fn class(&self, err: u32) -> Option<DeliveryClass> {
        if let Some(c) = self.overrides.get(&err) {
            return Some(*c);
        }
        if self.replace_defaults {
            None
        } else {
            gsm_map_class(err)
        }
    }
}

/// The class of a receipt: delivered is delivered; a failure is weighed by its error code
/// through the upstream's table; expiry is transient; anything not final or unmapped is
/// unknown.
pub fn receipt_class(state: Option<MessageState>, err: Option<u32>, table: &ErrTable) -> DeliveryClass {
    use DeliveryClass::*;
    match state {
        Some(MessageState::Delivered) => Delivered,
        Some(MessageState::Expired) => match err.and_then(|e| table.class(e)) {
            Some(c) => c,
            None => Transient,
        },
        Some(MessageState::Undeliverable | MessageState::Rejected | MessageState::Deleted) | None => {
            err.filter(|e| *e != 0).and_then(|e| table.class(e)).unwrap_or(Unknown)
        }
        Some(MessageState::Enroute | MessageState::Accepted | MessageState::Unknown) => Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryClass::*;

    #[test]
    fn command_statuses_follow_the_design_table() {
        for (status, class) in [
            (0x0B, Dead),
            (0x14, Transient),
            (0x58, Transient),
            (0x08, Transient),
            (0x45, Transient),
            (0x0A, OurFault),
            (0x50, OurFault),
            (0x51, OurFault),
            (0x61, OurFault),
            (0x62, OurFault),
            (0x400, OurFault),
            (0x4FF, OurFault),
            (0xFF, Unknown),
        ] {
            assert_eq!(command_status_class(status), class, "status {status:#x}");
        }
        assert!(is_throttle(0x58) && is_throttle(0x14) && !is_throttle(0x0B));
    }

    #[test]
    fn gsm_map_defaults() {
        for (err, class) in [
            (1, Dead),
            (5, Dead),
            (9, Dead),
            (44, Dead),
            (13, Suspended),
            (11, Suspended),
            (6, Transient),
            (27, Transient),
            (31, Transient),
            (32, Transient),
            (36, Transient),
        ] {
            assert_eq!(gsm_map_class(err), Some(class), "err {err}");
        }
        assert_eq!(gsm_map_class(37), None);
        assert_eq!(gsm_map_class(0), None);
    }

    #[test]
    fn per_upstream_overrides_win_and_can_replace_the_defaults() {
        let mut t = ErrTable::default();
        t.overrides.insert(1, Transient);
        t.overrides.insert(600, Dead);
        assert_eq!(t.class(1), Some(Transient));
        assert_eq!(t.class(600), Some(Dead));
        assert_eq!(t.class(13), Some(Suspended));
        t.replace_defaults = true;
        assert_eq!(t.class(13), None);
        assert_eq!(t.class(600), Some(Dead));
    }

    #[test]
    fn err_table_reads_from_config_json() {
        let t: ErrTable = serde_json::from_str(r#"{"overrides":{"600":"dead","13":"transient"}}"#).unwrap();
        assert_eq!(t.class(600), Some(Dead));
        assert_eq!(t.class(13), Some(Transient));
        assert!(serde_json::from_str::<ErrTable>(r#"{"overide":{}}"#).is_err());
    }

    #[test]
    fn receipt_classes() {
        let t = ErrTable::default();
        let s = MessageState::from_stat;
        assert_eq!(receipt_class(s("DELIVRD"), Some(0), &t), Delivered);
        assert_eq!(receipt_class(s("undeliv"), Some(1), &t), Dead);
        assert_eq!(receipt_class(s("UNDELIV"), Some(13), &t), Suspended);
        assert_eq!(receipt_class(s("UNDELIV"), Some(27), &t), Transient);
        assert_eq!(receipt_class(s("UNDELIV"), Some(999), &t), Unknown);
        assert_eq!(receipt_class(s("UNDELIV"), None, &t), Unknown);
        assert_eq!(receipt_class(s("EXPIRED"), None, &t), Transient);
        assert_eq!(receipt_class(s("ENROUTE"), None, &t), Unknown);
        assert_eq!(receipt_class(MessageState::from_tlv(5), Some(44), &t), Dead);
        assert_eq!(MessageState::from_tlv(9), None);
        assert!(!MessageState::Accepted.is_final() && MessageState::Rejected.is_final());
        for v in 1..=8 {
            let s = MessageState::from_tlv(v).unwrap();
            assert_eq!(MessageState::from_stat(s.stat_word()), Some(s));
        }
    }
}
