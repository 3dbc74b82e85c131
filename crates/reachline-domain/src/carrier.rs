//! The original carrier of a Chinese mobile number, from libphonenumber's prefix tables.
//!
//! Numbers are portable in China since 2019-11-27, so this is the carrier a range was allocated
//! to, never the number's current carrier: Reachline shows it to operators and uses it to pick
//! which carrier's recycled-number service to ask first, and never routes or judges by it.
//! The `phonenumber` crate ships the tables but does not read them, so they are embedded here
//! (`data/carrier/`, unchanged) and searched by longest prefix.

use std::sync::OnceLock;

use serde::Serialize;

use crate::PhoneNumber;

/// The carrier a number's range was originally allocated to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginalCarrier {
    /// English name, e.g. "China Mobile".
    pub name: &'static str,
    /// Chinese name, e.g. "中国移动".
    pub name_zh: &'static str,
    /// The range belongs to the virtual-operator (MVNO) blocks 162, 165, 167, 170 and 171: the
    /// host network is named, the reseller is not known from the number.
    pub virtual_operator: bool,
}

struct Table {
    /// (digits after the country code's '+', English, Chinese), longest prefixes first.
    rows: Vec<(&'static str, &'static str, &'static str)>,
}

fn parse(text: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('|'))
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let zh: Vec<(&str, &str)> = parse(include_str!("../data/carrier/zh-86.txt")).collect();
        let mut rows: Vec<_> = parse(include_str!("../data/carrier/en-86.txt"))
            .map(|(prefix, en)| {
                let zh = zh.iter().find(|(p, _)| *p == prefix).map_or(en, |(_, z)| *z);
                (prefix, en, zh)
            })
            .collect();
        rows.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        Table { rows }
    })
}

const VIRTUAL_BLOCKS: [&str; 5] = ["86162", "86165", "86167", "86170", "86171"];

/// The original carrier of a Chinese number, or `None` for other countries and unknown ranges.
pub fn original_carrier(number: &PhoneNumber) -> Option<OriginalCarrier> {
    let digits = number.e164().strip_prefix('+')?;
    if !digits.starts_with("86") {
        return None;
    }
    let (_, name, name_zh) = table().rows.iter().find(|(p, _, _)| digits.starts_with(p))?;
    Some(OriginalCarrier {
        name,
        name_zh,
        virtual_operator: VIRTUAL_BLOCKS.iter().any(|b| digits.starts_with(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LineType;

    fn carrier(e164: &str) -> Option<OriginalCarrier> {
        original_carrier(&PhoneNumber::from_trusted_e164(e164, LineType::Mobile).unwrap())
    }

    #[test]
    fn longest_prefix_wins() {
        // 8615x is China Mobile except 153 (Telecom) and 155/156 (Unicom).
        assert_eq!(carrier("+8615012345678").unwrap().name, "China Mobile");
        assert_eq!(carrier("+8615312345678").unwrap().name, "China Telecom");
        assert_eq!(carrier("+8615512345678").unwrap().name_zh, "中国联通");
        // 1340–1348 are China Mobile; 1349 was a satellite range and is not in the table.
        assert_eq!(carrier("+8613481234567").unwrap().name, "China Mobile");
        assert_eq!(carrier("+8613491234567"), None);
        assert_eq!(carrier("+8619212345678").unwrap().name, "China Broadnet");
    }

    #[test]
    fn virtual_operator_blocks_are_flagged() {
        let c = carrier("+8617031234567").unwrap();
        assert!(c.virtual_operator);
        assert_eq!(c.name, "China Mobile");
        assert!(!carrier("+8613812345678").unwrap().virtual_operator);
    }

    #[test]
    fn other_countries_have_none() {
        assert_eq!(carrier("+12025550123"), None);
    }
}
