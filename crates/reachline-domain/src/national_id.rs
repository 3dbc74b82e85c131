//! `NationalId`: a national identity number. For China the 18-character resident identity
//! number is checked (GB 11643-1999: birth date and the ISO 7064 MOD 11-2 check character);
//! other schemes are kept as opaque, trimmed text.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NationalId {
    scheme: IdScheme,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdScheme {
    /// 居民身份证号码, GB 11643-1999.
    CnResident,
    /// Any other scheme; checked only for shape.
    Other,
}

crate::named_enum!(IdScheme, "id scheme", {
    CnResident => "cn_resident",
    Other => "other",
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("national id has {0} characters; a Chinese resident id has 18")]
    WrongLength(usize),
    #[error("national id must be 17 digits and a check character (0-9 or X)")]
    BadCharacter,
    #[error("national id holds an impossible birth date")]
    BadBirthDate,
    #[error("national id check character does not match (mistyped digit?)")]
    BadChecksum,
    #[error("national id is empty or longer than 64 characters")]
    BadLength,
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";

/// The ISO 7064 MOD 11-2 check character for the first 17 digits of a resident id.
pub fn cn_check_char(first17: &[u8]) -> char {
    let sum: u32 = first17.iter().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    CHECK[(sum % 11) as usize] as char
}

impl NationalId {
    pub fn parse(scheme: IdScheme, input: &str) -> Result<Self, NationalIdError> {
        let v = input.trim().to_ascii_uppercase();
        match scheme {
            IdScheme::CnResident => {
                let b = v.as_bytes();
                if b.len() != 18 {
                    return Err(NationalIdError::WrongLength(v.chars().count()));
                }
                if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
                    return Err(NationalIdError::BadCharacter);
                }
                // Digits were checked above; read YYYYMMDD directly (chrono's format-string parser
                // is slow enough to show in an import of millions of borrowers).
                let num = |r: std::ops::Range<usize>| v[r].parse::<u32>().map_err(|_| NationalIdError::BadBirthDate);
                let birth = chrono::NaiveDate::from_ymd_opt(num(6..10)? as i32, num(10..12)?, num(12..14)?)
                    .ok_or(NationalIdError::BadBirthDate)?;
                if birth < chrono::NaiveDate::from_ymd_opt(1900, 1, 1).expect("a valid date") {
                    return Err(NationalIdError::BadBirthDate);
                }
                if cn_check_char(&b[..17]) != b[17] as char {
                    return Err(NationalIdError::BadChecksum);
                }
            }
            IdScheme::Other => {
                if v.is_empty() || v.len() > 64 {
                    return Err(NationalIdError::BadLength);
                }
            }
        }
        Ok(Self { scheme, value: v })
    }

    pub fn scheme(&self) -> IdScheme {
        self.scheme
    }

    /// The full number. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn masked(&self) -> String {
        crate::mask::mask_digits(&self.value)
    }
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NationalId({}, {})", self.scheme, self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_ids() {
        // The worked example of GB 11643-1999.
        assert!(NationalId::parse(IdScheme::CnResident, "11010519491231002X").is_ok());
        assert_eq!(
            NationalId::parse(IdScheme::CnResident, "110105194912310021"),
            Err(NationalIdError::BadChecksum)
        );
        assert_eq!(
            NationalId::parse(IdScheme::CnResident, "110105194913310021"),
            Err(NationalIdError::BadBirthDate)
        );
        assert_eq!(
            NationalId::parse(IdScheme::CnResident, "123"),
            Err(NationalIdError::WrongLength(3))
        );
        let id = NationalId::parse(IdScheme::CnResident, "11010519491231002x").unwrap();
        assert!(!format!("{id:?}").contains("19491231"));
    }
}
