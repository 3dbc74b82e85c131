//! One-time codes and signed links for confirming a number, with the limits of the contact
//! rules: at least 6 digits from a cryptographic generator (the caller passes one: the operating system's in
//! the shell, a seeded one in tests), valid at most 10 minutes, single use, at most 5 wrong
//! guesses and 5 sends per code, at most 100 consecutive failures per borrower, compared in
//! constant time, stored only as a keyed hash.
//!
//! Also HOTP (RFC 4226) and TOTP (RFC 6238), for lenders whose borrowers confirm with an
//! authenticator app; both pass the RFCs' vectors.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The limits, from the contact rules (NIST SP 800-63B; the same as common verify services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeRules {
    pub digits: u32,
    pub valid_minutes: i64,
    pub max_guesses: u32,
    pub max_sends: u32,
    pub max_consecutive_failures: u32,
}

impl Default for CodeRules {
    fn default() -> Self {
        Self {
            digits: 6,
            valid_minutes: 10,
            max_guesses: 5,
            max_sends: 5,
            max_consecutive_failures: 100,
        }
    }
}

/// A code as stored: never the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub sends: u32,
    pub guesses: u32,
    pub used: bool,
}

/// Why a code was not accepted, or could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeError {
    #[error("the code is wrong")]
    Wrong,
    #[error("the code has expired")]
    Expired,
    #[error("the code was already used")]
    Used,
    #[error("too many wrong guesses for this code; ask for a new one")]
    TooManyGuesses,
    #[error("this code was sent too many times; ask for a new one")]
    TooManySends,
    #[error("too many failed attempts; the borrower must confirm another way")]
    Locked,
}

/// HMAC-SHA256 under `key`. HMAC accepts keys of any length, so `new_from_slice` cannot fail.
fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn keyed_hash(pepper: &[u8], salt: &[u8; 16], code: &str) -> [u8; 32] {
    let mut mac = hmac_sha256(pepper);
    mac.update(salt);
    mac.update(code.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Issues a new code: the code to send (once) and the record to keep. `pepper` is a server
/// secret, so a stolen database does not give the codes away by brute force over 10^6.
pub fn issue(
    rules: &CodeRules,
    pepper: &[u8],
    rng: &mut (impl Rng + CryptoRng),
    now: DateTime<Utc>,
) -> (String, CodeRecord) {
    let digits = rules.digits.clamp(6, 9);
    let n = rng.gen_range(0..10u64.pow(digits));
    let code = format!("{n:0width$}", width = digits as usize);
    let mut salt = [0u8; 16];
    rng.fill(&mut salt);
    let rec = CodeRecord {
        hash: keyed_hash(pepper, &salt, &code),
        salt,
        issued_at: now,
        expires_at: now + Duration::minutes(rules.valid_minutes.min(10)),
        sends: 1,
        guesses: 0,
        used: false,
    };
    (code, rec)
}

/// Records one more send of the same code (a resend), within the limit.
pub fn resend(rules: &CodeRules, rec: &mut CodeRecord, now: DateTime<Utc>) -> Result<(), CodeError> {
    if rec.used {
        return Err(CodeError::Used);
    }
    if now >= rec.expires_at {
        return Err(CodeError::Expired);
    }
    if rec.sends >= rules.max_sends {
        return Err(CodeError::TooManySends);
    }
    rec.sends += 1;
    Ok(())
}

/// Checks a guess. `consecutive_failures` is the borrower's count across codes, kept by the
/// caller: reset to 0 on success, increased on every failure (returned as the new value).
pub fn verify(
    rules: &CodeRules,
    pepper: &[u8],
    rec: &mut CodeRecord,
    guess: &str,
    consecutive_failures: u32,
    now: DateTime<Utc>,
) -> (Result<(), CodeError>, u32) {
    if consecutive_failures >= rules.max_consecutive_failures {
        return (Err(CodeError::Locked), consecutive_failures);
    }
    let fail = |e| (Err(e), consecutive_failures + 1);
    if rec.used {
        return fail(CodeError::Used);
    }
    if now >= rec.expires_at {
        return fail(CodeError::Expired);
    }
    if rec.guesses >= rules.max_guesses {
        return fail(CodeError::TooManyGuesses);
    }
    rec.guesses += 1;
    let guess: String = guess.chars().filter(|c| !c.is_whitespace()).collect();
    let h = keyed_hash(pepper, &rec.salt, &guess);
    if bool::from(h.ct_eq(&rec.hash)) {
        rec.used = true;
        (Ok(()), 0)
    } else {
        fail(CodeError::Wrong)
    }
}

/// HOTP (RFC 4226) with HMAC-SHA-1.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    // Any key length is accepted, as above.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    format!("{:0width$}", bin % 10u32.pow(digits), width = digits as usize)
}

/// TOTP (RFC 6238) with HMAC-SHA-1, 30-second steps, a 64-bit counter.
pub fn totp(secret: &[u8], unix_seconds: u64, digits: u32) -> String {
    hotp(secret, unix_seconds / 30, digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const PEPPER: &[u8] = b"server pepper for tests";

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::minutes(min)
    }

    #[test]
    fn rfc_4226_and_6238_vectors() {
        let secret = b"12345678901234567890";
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(hotp(secret, i as u64, 6), *w, "counter {i}");
        }
        for (time, w) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(totp(secret, time, 8), w, "time {time}");
        }
    }

    #[test]
    fn a_code_works_once_within_ten_minutes() {
        let rules = CodeRules::default();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (code, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        assert_eq!(code.len(), 6);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        // Stored hashed: the code is nowhere in the record.
        assert!(!format!("{rec:?}").contains(&code));
        let (r, fails) = verify(&rules, PEPPER, &mut rec, &format!(" {code} "), 3, t(9));
        assert_eq!((r, fails), (Ok(()), 0));
        let (r, fails) = verify(&rules, PEPPER, &mut rec, &code, 0, t(9));
        assert_eq!((r, fails), (Err(CodeError::Used), 1));
        let (code, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        assert_eq!(
            verify(&rules, PEPPER, &mut rec, &code, 0, t(10)).0,
            Err(CodeError::Expired)
        );
        // Another pepper (another server's database) does not accept it.
        let (code, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        assert_eq!(
            verify(&rules, b"other", &mut rec, &code, 0, t(1)).0,
            Err(CodeError::Wrong)
        );
    }

    #[test]
    fn five_guesses_five_sends_and_a_hundred_failures() {
        let rules = CodeRules::default();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (code, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        let wrong = if code == "000000" { "000001" } else { "000000" };
        let mut fails = 0;
        for _ in 0..5 {
            let (r, f) = verify(&rules, PEPPER, &mut rec, wrong, fails, t(1));
            assert_eq!(r, Err(CodeError::Wrong));
            fails = f;
        }
        // The sixth guess is refused even when right.
        assert_eq!(
            verify(&rules, PEPPER, &mut rec, &code, fails, t(1)).0,
            Err(CodeError::TooManyGuesses)
        );
        let (_, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        for _ in 0..4 {
            resend(&rules, &mut rec, t(1)).unwrap();
        }
        assert_eq!(resend(&rules, &mut rec, t(1)), Err(CodeError::TooManySends));
        let (code, mut rec) = issue(&rules, PEPPER, &mut rng, t(0));
        assert_eq!(
            verify(&rules, PEPPER, &mut rec, &code, 100, t(1)).0,
            Err(CodeError::Locked)
        );
        assert_eq!(verify(&rules, PEPPER, &mut rec, &code, 99, t(1)).0, Ok(()));
    }

    #[test]
    fn codes_are_spread_over_the_whole_space() {
        let rules = CodeRules::default();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let codes: std::collections::HashSet<String> =
            (0..2000).map(|_| issue(&rules, PEPPER, &mut rng, t(0)).0).collect();
        assert!(codes.len() > 1990);
        assert!(codes.iter().any(|c| c.starts_with('0')), "leading zeros are kept");
    }
}

/// What a signed link carries: who it is for, what it may do, until when, and a nonce the
/// server records on first use (single use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    pub borrower: i64,
    pub contact: Option<i64>,
    /// What the link opens, e.g. `confirm_number`, `schedule`.
    pub action: String,
    pub expires_at: DateTime<Utc>,
    pub nonce: u64,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

/// A compact URL-safe token: base64url(JSON claims) "." base64url(HMAC-SHA256).
pub fn sign_link(key: &[u8], claims: &LinkClaims) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = b64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut mac = hmac_sha256(key);
    mac.update(body.as_bytes());
    format!("{body}.{}", b64.encode(mac.finalize().into_bytes()))
}

/// Checks a token's signature and expiry; the caller then checks and records the nonce.
pub fn verify_link(key: &[u8], token: &str, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (body, sig) = token.split_once('.').ok_or(LinkError::Malformed)?;
    let sig = b64.decode(sig).map_err(|_| LinkError::Malformed)?;
    let mut mac = hmac_sha256(key);
    mac.update(body.as_bytes());
    mac.verify_slice(&sig).map_err(|_| LinkError::BadSignature)?;
    let claims: LinkClaims = serde_json::from_slice(&b64.decode(body).map_err(|_| LinkError::Malformed)?)
        .map_err(|_| LinkError::Malformed)?;
    if now >= claims.expires_at {
        return Err(LinkError::Expired);
    }
    Ok(claims)
}

/// The short token an SMS carries to open one notice's page: base64url of the notice id (8
/// bytes, big-endian) and the first 9 bytes of its HMAC-SHA256 — 23 characters, so a notice
/// stays within one or two SMS parts. The page it opens shows the notice and nothing a stranger
/// could use; anything more asks for a code.
pub fn notice_token(key: &[u8], notice: u64) -> String {
    use base64::Engine as _;
    let mut mac = hmac_sha256(key);
    mac.update(b"notice");
    mac.update(&notice.to_be_bytes());
    let mut raw = notice.to_be_bytes().to_vec();
    raw.extend_from_slice(&mac.finalize().into_bytes()[..9]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The notice id a short token names, if its MAC matches (compared in constant time).
pub fn verify_notice_token(key: &[u8], token: &str) -> Result<u64, LinkError> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| LinkError::Malformed)?;
    if raw.len() != 17 {
        return Err(LinkError::Malformed);
    }
    let notice = u64::from_be_bytes(raw[..8].try_into().map_err(|_| LinkError::Malformed)?);
    let mut mac = hmac_sha256(key);
    mac.update(b"notice");
    mac.update(&notice.to_be_bytes());
    mac.verify_truncated_left(&raw[8..])
        .map_err(|_| LinkError::BadSignature)?;
    Ok(notice)
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn notice_tokens_are_short_and_checked() {
        let t = notice_token(b"k", 123_456);
        assert_eq!(t.len(), 23);
        assert_eq!(verify_notice_token(b"k", &t), Ok(123_456));
        assert_eq!(verify_notice_token(b"other key", &t), Err(LinkError::BadSignature));
        let mut forged = notice_token(b"k", 123_457).into_bytes();
        forged[..11].copy_from_slice(&t.as_bytes()[..11]);
        assert!(verify_notice_token(b"k", std::str::from_utf8(&forged).unwrap()).is_err());
        assert_eq!(verify_notice_token(b"k", "short"), Err(LinkError::Malformed));
    }

    #[test]
    fn links_are_signed_and_expire() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let claims = LinkClaims {
            borrower: 42,
            contact: Some(7),
            action: "confirm_number".into(),
            expires_at: now + Duration::hours(24),
            nonce: 991,
        };
        let token = sign_link(b"link key", &claims);
        assert!(!token.contains('+') && !token.contains('/'), "URL-safe: {token}");
        assert_eq!(verify_link(b"link key", &token, now), Ok(claims.clone()));
        assert_eq!(verify_link(b"other key", &token, now), Err(LinkError::BadSignature));
        assert_eq!(
            verify_link(b"link key", &token, now + Duration::hours(24)),
            Err(LinkError::Expired)
        );
        // Changing the claims breaks the signature.
        let (body, sig) = token.split_once('.').unwrap();
        let mut forged = claims;
        forged.borrower = 43;
        let other = sign_link(b"link key", &forged);
        let forged_token = format!("{}.{sig}", other.split_once('.').unwrap().0);
        assert_ne!(body, other.split_once('.').unwrap().0);
        assert_eq!(
            verify_link(b"link key", &forged_token, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(verify_link(b"link key", "nonsense", now), Err(LinkError::Malformed));
    }
}
