//! Calendar dates written `YYYY-MM-DD`, as the loan book and the SQLite store hold them.

use chrono::NaiveDate;

/// Parses `YYYY-MM-DD`. The ten-character form is read directly; anything else goes through
/// chrono's `%Y-%m-%d`, whose format-item interpreter showed as several per cent of an import of
/// millions of rows when every date went through it.
pub fn parse_ymd(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let num = |r: std::ops::Range<usize>| {
            b[r].iter()
                .try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
        };
        if let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) {
            return NaiveDate::from_ymd_opt(y as i32, m, d);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_ymd("2026-02-28"), NaiveDate::from_ymd_opt(2026, 2, 28));
        assert_eq!(parse_ymd("2026-02-30"), None);
        assert_eq!(parse_ymd("2026-3-1"), NaiveDate::from_ymd_opt(2026, 3, 1));
        assert_eq!(parse_ymd("20260301"), None);
        assert_eq!(parse_ymd("yesterday"), None);
    }
}
