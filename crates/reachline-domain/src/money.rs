//! `Money`: an amount in integer minor units of an ISO 4217 currency. Never a float; decimal
//! text is parsed digit by digit and refused if it has more decimals than the currency allows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The currencies a loan book may use. A closed set of the ones lenders we serve book in; each
/// knows its number of minor-unit digits (ISO 4217).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    CNY,
    HKD,
    USD,
    EUR,
    JPY,
}

crate::named_enum!(Currency, "currency", {
    CNY => "CNY",
    HKD => "HKD",
    USD => "USD",
    EUR => "EUR",
    JPY => "JPY",
});

impl Currency {
    /// Digits after the decimal point (ISO 4217 minor unit).
    pub fn exponent(self) -> u32 {
        match self {
            Currency::JPY => 0,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a decimal number (digits, one optional '.', optional leading '-')")]
    NotDecimal(String),
    #[error("amount {given:?} has {decimals} decimals; {currency} allows {allowed}")]
    TooPrecise {
        given: String,
        decimals: usize,
        currency: Currency,
        allowed: u32,
    },
    #[error("amount {0:?} is too large")]
    Overflow(String),
    #[error("amount {0:?} is negative")]
    Negative(String),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
}

impl Money {
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    /// Parses `"1234.5"` as 123450 minor units of CNY. Written by hand because it is twenty
    /// lines and exact: a decimal crate would add a dependency to round-trip through.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || (body.contains('.') && frac.is_empty()) {
            return Err(MoneyError::NotDecimal(t.into()));
        }
        let exp = currency.exponent();
        if frac.len() > exp as usize {
            return Err(MoneyError::TooPrecise {
                given: t.into(),
                decimals: frac.len(),
                currency,
                allowed: exp,
            });
        }
        let overflow = || MoneyError::Overflow(t.into());
        let mut minor: i64 = whole.parse().map_err(|_| overflow())?;
        minor = minor.checked_mul(10i64.pow(exp)).ok_or_else(overflow)?;
        if !frac.is_empty() {
            let f: i64 = frac.parse().map_err(|_| overflow())?;
            let scale = 10i64.pow(exp - frac.len() as u32);
            minor = minor.checked_add(f * scale).ok_or_else(overflow)?;
        }
        Ok(Self::from_minor(if negative { -minor } else { minor }, currency))
    }

    /// Like [`Money::parse`], refusing negative amounts.
    pub fn parse_non_negative(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let m = Self::parse(text, currency)?;
        if m.minor < 0 {
            return Err(MoneyError::Negative(text.trim().into()));
        }
        Ok(m)
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(Money::from_minor(self.minor - other.minor, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent();
        if exp == 0 {
            return write!(f, "{} {}", self.minor, self.currency);
        }
        let scale = 10i64.pow(exp);
        let sign = if self.minor < 0 { "-" } else { "" };
        let a = self.minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            a / scale as u64,
            a % scale as u64,
            self.currency,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        let cny = Currency::CNY;
        assert_eq!(Money::parse("1234.5", cny).unwrap().minor(), 123450);
        assert_eq!(Money::parse("0.01", cny).unwrap().minor(), 1);
        assert_eq!(Money::parse("-3", cny).unwrap().minor(), -300);
        assert_eq!(Money::parse("100", Currency::JPY).unwrap().minor(), 100);
        assert!(matches!(
            Money::parse("1.234", cny),
            Err(MoneyError::TooPrecise { decimals: 3, .. })
        ));
        assert!(matches!(
            Money::parse("1.5", Currency::JPY),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(Money::parse("1e3", cny), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(Money::parse("1.", cny), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(Money::parse(".5", cny), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(
            Money::parse("99999999999999999999", cny),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            Money::parse_non_negative("-1", cny),
            Err(MoneyError::Negative(_))
        ));
    }

    #[test]
    fn displays() {
        assert_eq!(Money::from_minor(123405, Currency::CNY).to_string(), "1234.05 CNY");
        assert_eq!(Money::from_minor(-5, Currency::USD).to_string(), "-0.05 USD");
        assert_eq!(Money::from_minor(500, Currency::JPY).to_string(), "500 JPY");
    }
}
