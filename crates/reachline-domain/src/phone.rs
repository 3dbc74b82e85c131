//! `PhoneNumber`: an E.164 number parsed with libphonenumber's metadata (the `phonenumber`
//! crate), after Unicode NFKC normalisation, with a dated list of newly allocated ranges the
//! metadata does not know yet.

use std::fmt;

use phonenumber::{country, metadata::DATABASE, Mode};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// What kind of line a number is, from the numbering plan (not from the carrier: after number
/// portability the plan still tells mobile from fixed, but never the current carrier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineType {
    Mobile,
    FixedLine,
    FixedLineOrMobile,
    Voip,
    Other,
}

crate::named_enum!(LineType, "line type", {
    Mobile => "mobile",
    FixedLine => "fixed_line",
    FixedLineOrMobile => "fixed_line_or_mobile",
    Voip => "voip",
    Other => "other",
});

/// A valid phone number in E.164 form (`+8613812345678`).
///
/// The `Debug` and `Display` forms are masked (`+86138****5678`) so a number cannot reach a log
/// by accident; [`PhoneNumber::e164`] gives the full form on purpose.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    line: LineType,
}

/// Why a text is not a usable phone number. The message never repeats the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number contains a character that is not a digit, '+', space, '-', '.', '(' or ')' (at position {position})")]
    BadCharacter { position: usize },
    #[error("phone number has {digits} digits, too few to be a number")]
    TooShort { digits: usize },
    #[error("phone number has {digits} digits, more than E.164 allows (15)")]
    TooLong { digits: usize },
    #[error("phone number has an unknown country calling code")]
    UnknownCountryCode,
    #[error("phone number does not match any allocated range of {region} (wrong length or unallocated prefix)")]
    NotAllocated { region: String },
}

/// A range the bundled numbering-plan metadata does not know yet, accepted by configuration.
///
/// Kept as a short, dated list: each entry says when the range was allocated and by whom, so it
/// can be dropped once the metadata catches up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeOverride {
    /// E.164 prefix including the country code, e.g. `+86161`.
    pub prefix: String,
    /// Total number of digits after the `+`, e.g. 13 for a Chinese mobile number.
    pub digits: usize,
    pub line: LineType,
    /// When the range came into use, for the record.
    pub since: chrono::NaiveDate,
    pub note: String,
}

impl RangeOverride {
    /// The ranges known to be missing from the bundled metadata (phonenumber 0.3.10, metadata
    /// 9.0.33), with the date they came into use.
    pub fn builtin() -> Vec<RangeOverride> {
        vec![RangeOverride {
            prefix: "+86161".into(),
            digits: 13,
            line: LineType::Mobile,
            since: chrono::NaiveDate::from_ymd_opt(2023, 1, 1).expect("a valid calendar date"),
            note: "China Broadnet 161 mobile range, missing from metadata 9.0.33".into(),
        }]
    }

    fn matches(&self, e164: &str) -> bool {
        e164.starts_with(&self.prefix) && e164.len() == self.digits + 1
    }
}

/// Parses numbers for one default region with a list of range overrides. Built once from
/// configuration; cheap to share.
#[derive(Debug, Clone)]
pub struct PhoneParser {
    default_region: country::Id,
    region_name: String,
    overrides: Vec<RangeOverride>,
}

/// phonenumber 0.3.10 keeps its compiled patterns in an LRU cache of 100 entries shared by every
/// country; the patterns one Chinese and one US number need already overflow it, so each parse
/// recompiled evicted patterns (half an import's CPU went to rebuilding regexes). The cache is
/// behind a shared handle, so it is swapped once for a larger one.
fn enlarge_regex_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cache = DATABASE.cache();
        let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
        *guard = regex_cache::RegexCache::new(REGEX_CACHE_ENTRIES);
    });
}

/// Compiled patterns kept; all of the metadata's patterns fit, so nothing is compiled twice.
const REGEX_CACHE_ENTRIES: usize = 20_000;

impl Default for PhoneParser {
    /// China as the default region, with the built-in overrides.
    fn default() -> Self {
        enlarge_regex_cache();
        Self {
            default_region: country::CN,
            region_name: "CN".into(),
            overrides: RangeOverride::builtin(),
        }
    }
}

impl PhoneParser {
    /// A parser for `region` (ISO 3166 alpha-2, e.g. `CN`, `US`).
    pub fn new(region: &str, overrides: Vec<RangeOverride>) -> Result<Self, crate::UnknownVariant> {
        enlarge_regex_cache();
        let upper = region.trim().to_ascii_uppercase();
        let id: country::Id = upper.parse().map_err(|_| {
            crate::UnknownVariant::new("region", region, &["an ISO 3166 alpha-2 code such as CN or US"])
        })?;
        Ok(Self {
            default_region: id,
            region_name: upper,
            overrides,
        })
    }

    /// Parses a number as a person would type it: full-width digits, spaces, dashes, dots and
    /// brackets are accepted; a leading `+` or `00` starts an international number.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        let cleaned = normalise(input)?;
        // An international number is parsed without a default region: phonenumber 0.3.10 applies
        // the default region's prefixes to it otherwise, and reads +1 202 500 1233 as "+1233"
        // under CN (the "00" inside is taken for an international call prefix).
        let region = if cleaned.starts_with('+') {
            None
        } else {
            Some(self.default_region)
        };
        let parsed = phonenumber::parse(region, &cleaned).map_err(|e| match e {
            phonenumber::ParseError::InvalidCountryCode => PhoneError::UnknownCountryCode,
            phonenumber::ParseError::TooLong => PhoneError::TooLong {
                digits: digit_count(&cleaned),
            },
            _ => PhoneError::TooShort {
                digits: digit_count(&cleaned),
            },
        })?;
        let e164 = parsed.format().mode(Mode::E164).to_string();
        if let Some(o) = self.overrides.iter().find(|o| o.matches(&e164)) {
            return Ok(PhoneNumber { e164, line: o.line });
        }
        // `is_valid` is exactly "the number type is known" (phonenumber 0.3.10 validator.rs), and
        // finding the type is the dearest step: ask once.
        let line = match parsed.number_type(&DATABASE) {
            phonenumber::Type::Mobile => LineType::Mobile,
            phonenumber::Type::FixedLine => LineType::FixedLine,
            phonenumber::Type::FixedLineOrMobile => LineType::FixedLineOrMobile,
            phonenumber::Type::Voip => LineType::Voip,
            phonenumber::Type::Unknown => {
                let region = parsed
                    .country()
                    .id()
                    .map(|id| id.as_ref().to_string())
                    .unwrap_or_else(|| self.region_name.clone());
                return Err(PhoneError::NotAllocated { region });
            }
            _ => LineType::Other,
        };
        Ok(PhoneNumber { e164, line })
    }
}

/// NFKC-normalises (full-width `１３８` becomes `138`), drops separators and rejects anything
/// else, so the metadata parser only ever sees `+` and ASCII digits.
fn normalise(input: &str) -> Result<String, PhoneError> {
    let mut out = String::with_capacity(input.len());
    for (position, c) in input.nfkc().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            '+' if out.is_empty() => out.push(c),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' | '\t' => {}
            _ => return Err(PhoneError::BadCharacter { position }),
        }
    }
    if let Some(rest) = out.strip_prefix("00") {
        out = format!("+{rest}");
    }
    let digits = digit_count(&out);
    if digits == 0 {
        return Err(PhoneError::Empty);
    }
    if digits < 5 {
        return Err(PhoneError::TooShort { digits });
    }
    if digits > 15 {
        return Err(PhoneError::TooLong { digits });
    }
    Ok(out)
}

fn digit_count(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

impl PhoneNumber {
    /// Parses with the default parser (region CN, built-in overrides).
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        PhoneParser::default().parse(input)
    }

    /// The full E.164 form. Personal data: do not log it.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    pub fn line_type(&self) -> LineType {
        self.line
    }

    /// Rebuilds a number from its stored E.164 form without re-validating its range (the
    /// metadata may have changed since it was accepted; a stored number stays what it was).
    pub fn from_trusted_e164(e164: &str, line: LineType) -> Result<Self, PhoneError> {
        let n = normalise(e164)?;
        if !n.starts_with('+') {
            return Err(PhoneError::UnknownCountryCode);
        }
        Ok(Self { e164: n, line })
    }

    /// `+86138****5678`: enough to tell two numbers apart in an operator's view.
    pub fn masked(&self) -> String {
        crate::mask::mask_digits(&self.e164)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<(&str, LineType), PhoneError>) {
        let got = PhoneNumber::parse(input).map(|n| (n.e164().to_string(), n.line_type()));
        assert_eq!(got, expect.map(|(e, l)| (e.to_string(), l)), "input {input:?}");
    }

    #[test]
    fn parses_chinese_mobile_numbers_in_the_forms_people_type() {
        check("13812345678", Ok(("+8613812345678", LineType::Mobile)));
        check("+86 138 1234 5678", Ok(("+8613812345678", LineType::Mobile)));
        check("0086-138-1234-5678", Ok(("+8613812345678", LineType::Mobile)));
        check("１３８１２３４５６７８", Ok(("+8613812345678", LineType::Mobile)));
        check("(010) 1234 5678", Ok(("+861012345678", LineType::FixedLine)));
        check("+1 202-555-0123", Ok(("+12025550123", LineType::FixedLineOrMobile)));
    }

    #[test]
    fn accepts_ranges_newer_than_the_metadata_through_overrides() {
        check("16112345678", Ok(("+8616112345678", LineType::Mobile)));
        let strict = PhoneParser::new("CN", vec![]).unwrap();
        assert!(matches!(
            strict.parse("16112345678"),
            Err(PhoneError::NotAllocated { .. })
        ));
    }

    #[test]
    fn says_why_a_number_is_refused_without_repeating_it() {
        check("", Err(PhoneError::Empty));
        check("138-1234-567x", Err(PhoneError::BadCharacter { position: 12 }));
        check("1381234567", Err(PhoneError::NotAllocated { region: "CN".into() }));
        check("+999 1234 5678", Err(PhoneError::UnknownCountryCode));
        check("1234567890123456", Err(PhoneError::TooLong { digits: 16 }));
        let msg = PhoneNumber::parse("1381234567").unwrap_err().to_string();
        assert!(!msg.contains("1381234567"), "{msg}");
    }

    #[test]
    fn debug_and_display_are_masked() {
        let n = PhoneNumber::parse("13812345678").unwrap();
        assert_eq!(format!("{n}"), "+86138****5678");
        assert!(!format!("{n:?}").contains("13812345678"));
    }

    #[test]
    fn international_numbers_do_not_take_the_default_region_prefixes() {
        // Regression: phonenumber 0.3.10 turned these into other numbers under a foreign region.
        check("+1 202 500 1233", Ok(("+12025001233", LineType::FixedLineOrMobile)));
        check("+12124008334", Ok(("+12124008334", LineType::FixedLineOrMobile)));
        let us = PhoneParser::new("US", vec![]).unwrap();
        assert_eq!(us.parse("+86 138 1001 2345").unwrap().e164(), "+8613810012345");
        assert_eq!(us.parse("+86 10 1234 5678").unwrap().e164(), "+861012345678");
    }

    #[test]
    fn other_default_regions() {
        let us = PhoneParser::new("us", vec![]).unwrap();
        assert_eq!(us.parse("(202) 555-0123").unwrap().e164(), "+12025550123");
        assert!(PhoneParser::new("XX", vec![]).is_err());
    }
}
