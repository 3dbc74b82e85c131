//! Masking of personal data for operator views and logs: enough to tell two values apart,
//! never enough to use them.

/// Keeps the first six and last four characters of a number-like string and stars the rest:
/// `+8613812345678` → `+86138****5678`. Short values are starred except their last two.
pub fn mask_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n <= 10 {
        let keep = n.min(2);
        return std::iter::repeat_n('*', n - keep)
            .chain(chars[n - keep..].iter().copied())
            .collect();
    }
    let mut out: String = chars[..6].iter().collect();
    out.push_str("****");
    out.extend(&chars[n - 4..]);
    out
}

/// `zhang.wei@example.com` → `z***@example.com`.
pub fn mask_email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// `张伟` → `张*`, `Wei Zhang` → `W********`: the first character only.
pub fn mask_name(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => std::iter::once(c).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_digits("+8613812345678"), "+86138****5678");
        assert_eq!(mask_digits("12345"), "***45");
        assert_eq!(mask_email("zhang.wei@example.com"), "z***@example.com");
        assert_eq!(mask_name("张伟"), "张*");
        assert_eq!(mask_name(""), "");
    }
}
