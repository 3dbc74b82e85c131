//! `Locale`: the languages Reachline has templates for. A closed set; a borrower's locale is
//! one of them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Locale {
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

crate::named_enum!(Locale, "locale", {
    ZhCn => "zh-CN",
    En => "en",
});

impl Locale {
    /// Accepts the common spellings of a tag (`zh_CN`, `zh-cn`, `en-US`) and maps them onto the
    /// supported set; `en-*` maps to `en`.
    pub fn parse_tag(s: &str) -> Result<Self, crate::UnknownVariant> {
        let t = s.trim().replace('_', "-").to_ascii_lowercase();
        match t.as_str() {
            "zh" | "zh-cn" | "zh-hans" | "zh-hans-cn" => Ok(Locale::ZhCn),
            "en" => Ok(Locale::En),
            _ if t.starts_with("en-") => Ok(Locale::En),
            _ => Err(crate::UnknownVariant::new("locale", s, &["zh-CN", "en"])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(Locale::parse_tag("zh_CN").unwrap(), Locale::ZhCn);
        assert_eq!(Locale::parse_tag("en-GB").unwrap(), Locale::En);
        assert!(Locale::parse_tag("fr").is_err());
        assert_eq!("zh-CN".parse::<Locale>().unwrap(), Locale::ZhCn);
    }
}
