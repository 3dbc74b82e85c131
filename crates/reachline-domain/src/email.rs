//! `Email`: an address checked against RFC 5321/5322 syntax (the `email_address` crate), with
//! the domain lower-cased so that the same mailbox always gives the same blind index.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email address is empty")]
    Empty,
    #[error("email address is not valid: {0}")]
    Invalid(String),
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s: String = input.trim().nfkc().collect();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        // The crate's messages describe the syntax rule broken, never the address itself.
        let parsed = email_address::EmailAddress::parse_with_options(
            &s,
            email_address::Options::default().without_display_text(),
        )
        .map_err(|e| EmailError::Invalid(e.to_string()))?;
        let domain = parsed.domain();
        if !domain.contains('.') {
            return Err(EmailError::Invalid("domain has no dot".into()));
        }
        Ok(Email(format!(
            "{}@{}",
            parsed.local_part(),
            domain.to_ascii_lowercase()
        )))
    }

    /// The full address. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        crate::mask::mask_email(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            Email::parse(" Wei.Zhang@Example.COM ").unwrap().as_str(),
            "Wei.Zhang@example.com"
        );
        assert_eq!(Email::parse("").unwrap_err(), EmailError::Empty);
        assert!(matches!(Email::parse("no-at-sign"), Err(EmailError::Invalid(_))));
        assert!(matches!(Email::parse("a@localhost"), Err(EmailError::Invalid(_))));
        let msg = Email::parse("secret.person@").unwrap_err().to_string();
        assert!(!msg.contains("secret.person"), "{msg}");
        assert_eq!(
            format!("{:?}", Email::parse("wei@example.com").unwrap()),
            "Email(w***@example.com)"
        );
    }
}
