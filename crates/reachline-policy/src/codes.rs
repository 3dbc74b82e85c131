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

/// The link token's format version (the first byte).
const LINK_VERSION: u8 = 1;
/// The MAC's length in the token: 96 bits, checked online and single use.
const LINK_MAC: usize = 12;
/// Actions of the form `<word>:<number>` that a token writes as a tag and a varint.
const LINK_ACTIONS: [&str; 2] = ["check", "change"];

/// Signs a link's claims as a compact token — base64url of a version byte, the borrower and
/// contact ids and the expiry (minutes since the epoch, rounded up) as LEB128 varints, the
/// action (a tag and a varint for `check:<id>` and `change:<id>`, else a length byte and its
/// text), the nonce (8 bytes), then the first 12 bytes of its HMAC-SHA256: under 55
/// characters, where the JSON form took about 190, so a contact check's SMS takes two parts
/// instead of four or five. Written by hand because the format is a few dozen lines and every
/// byte costs the lender SMS parts; serde formats (JSON, CBOR) spend bytes on field names and
/// framing.
pub fn sign_link(key: &[u8], claims: &LinkClaims) -> String {
    use base64::Engine as _;
    let mut raw = vec![LINK_VERSION];
    varint(&mut raw, claims.borrower.max(0) as u64);
    varint(&mut raw, claims.contact.map_or(0, |c| c.max(0) as u64 + 1));
    let minutes = (claims.expires_at.timestamp() + 59).div_euclid(60).max(0) as u64;
    varint(&mut raw, minutes);
    // The two actions links carry, `check:<id>` and `change:<id>`, take a tag and a varint;
    // any other is its text with a length byte.
    let numbered = LINK_ACTIONS.iter().enumerate().find_map(|(i, word)| {
        let n = claims.action.strip_prefix(word)?.strip_prefix(':')?;
        n.parse::<u64>()
            .ok()
            .filter(|v| v.to_string() == n)
            .map(|v| (i as u8 + 1, v))
    });
    match numbered {
        Some((tag, n)) => {
            raw.push(tag);
            varint(&mut raw, n);
        }
        None => {
            let action = claims.action.as_bytes();
            raw.push(0);
            raw.push(action.len().min(255) as u8);
            raw.extend_from_slice(&action[..action.len().min(255)]);
        }
    }
    raw.extend_from_slice(&claims.nonce.to_be_bytes());
    let mut mac = hmac_sha256(key);
    mac.update(b"link");
    mac.update(&raw);
    raw.extend_from_slice(&mac.finalize().into_bytes()[..LINK_MAC]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(raw: &[u8], at: &mut usize) -> Result<u64, LinkError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *raw.get(*at).ok_or(LinkError::Malformed)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(LinkError::Malformed)
}

/// Checks a token's signature (in constant time) and expiry; the caller then checks and
/// records the nonce.
pub fn verify_link(key: &[u8], token: &str, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| LinkError::Malformed)?;
    if raw.len() < 1 + 3 + 2 + 8 + LINK_MAC || raw[0] != LINK_VERSION {
        return Err(LinkError::Malformed);
    }
    let (body, sig) = raw.split_at(raw.len() - LINK_MAC);
    let mut mac = hmac_sha256(key);
    mac.update(b"link");
    mac.update(body);
    mac.verify_truncated_left(sig).map_err(|_| LinkError::BadSignature)?;
    let mut at = 1;
    let id = |v: u64| i64::try_from(v).map_err(|_| LinkError::Malformed);
    let borrower = id(read_varint(body, &mut at)?)?;
    let contact = match read_varint(body, &mut at)? {
        0 => None,
        c => Some(id(c - 1)?),
    };
    let minutes = id(read_varint(body, &mut at)?)?;
    let tag = usize::from(*body.get(at).ok_or(LinkError::Malformed)?);
    at += 1;
    let action = match tag {
        0 => {
            let len = usize::from(*body.get(at).ok_or(LinkError::Malformed)?);
            at += 1;
            let text = body.get(at..at + len).ok_or(LinkError::Malformed)?;
            at += len;
            std::str::from_utf8(text).map_err(|_| LinkError::Malformed)?.to_string()
        }
        t => {
            let word = LINK_ACTIONS.get(t - 1).ok_or(LinkError::Malformed)?;
            format!("{word}:{}", read_varint(body, &mut at)?)
        }
    };
    let nonce = u64::from_be_bytes(
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or(LinkError::Malformed)?,
    );
    if at + 8 != body.len() {
        return Err(LinkError::Malformed);
    }
    let expires_at = DateTime::from_timestamp(minutes.saturating_mul(60), 0).ok_or(LinkError::Malformed)?;
    if now >= expires_at {
        return Err(LinkError::Expired);
    }
    Ok(LinkClaims {
        borrower,
        contact,
        action,
        expires_at,
        nonce,
    })
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
        // On a whole minute: the token keeps minutes.
        let now = DateTime::from_timestamp(1_700_000_040, 0).unwrap();
        let claims = LinkClaims {
            borrower: 42,
            contact: Some(7),
            action: "confirm_number".into(),
            expires_at: now + Duration::hours(24),
            nonce: 991,
        };
        let token = sign_link(b"link key", &claims);
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "URL-safe: {token}"
        );
        assert_eq!(verify_link(b"link key", &token, now), Ok(claims.clone()));
        assert_eq!(verify_link(b"other key", &token, now), Err(LinkError::BadSignature));
        assert_eq!(
            verify_link(b"link key", &token, now + Duration::hours(24)),
            Err(LinkError::Expired)
        );
        // Changing the claims breaks the signature: the body of one with the MAC of another.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut forged = claims.clone();
        forged.borrower = 43;
        let mut raw = b64.decode(sign_link(b"link key", &forged)).unwrap();
        let mac = b64.decode(&token).unwrap();
        let n = raw.len();
        raw[n - LINK_MAC..].copy_from_slice(&mac[mac.len() - LINK_MAC..]);
        assert_eq!(
            verify_link(b"link key", &b64.encode(&raw), now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(verify_link(b"link key", "nonsense", now), Err(LinkError::Malformed));
        assert_eq!(verify_link(b"link key", "", now), Err(LinkError::Malformed));
    }

    #[test]
    fn a_check_link_is_short_and_keeps_every_claim() {
        let now = DateTime::from_timestamp(1_795_000_020, 0).unwrap();
        for (borrower, contact, action) in [
            (1, None, "check:1"),
            (9_876_543, Some(12_345_678), "check:123456"),
            (i64::from(u32::MAX), Some(0), "change:42"),
        ] {
            let claims = LinkClaims {
                borrower,
                contact,
                action: action.into(),
                // Whole minutes: the token keeps minutes (rounded up).
                expires_at: now + Duration::hours(72),
                nonce: u64::MAX >> 1,
            };
            let token = sign_link(b"k", &claims);
            assert!(token.len() <= 54, "{} characters: {token}", token.len());
            assert_eq!(verify_link(b"k", &token, now), Ok(claims));
        }
        // An expiry inside a minute is rounded up, never down.
        let claims = LinkClaims {
            borrower: 1,
            contact: None,
            action: "check:1".into(),
            expires_at: now + Duration::seconds(30),
            nonce: 1,
        };
        let back = verify_link(b"k", &sign_link(b"k", &claims), now).unwrap();
        assert!(back.expires_at >= claims.expires_at && back.expires_at - claims.expires_at < Duration::minutes(1));
        // Truncated or padded tokens are malformed, not panics.
        let token = sign_link(b"k", &claims);
        for cut in 1..token.len() {
            assert!(verify_link(b"k", &token[..cut], now).is_err());
        }
        assert!(verify_link(b"k", &format!("{token}AA"), now).is_err());
    }
}
