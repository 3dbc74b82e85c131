//! Inbound webhook authentication: `HMAC-SHA256(secret, timestamp + "." + body)`, hex, with the
//! timestamp inside a replay window (5 minutes by default). Failures say what was wrong, never
//! what the right signature would have been.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The replay window.
pub const DEFAULT_WINDOW_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing signature or timestamp header")]
    Missing,
    #[error("timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("timestamp is {0} s away from now, outside the {1} s replay window")]
    Stale(i64, i64),
    #[error("signature is not hex of an HMAC-SHA256")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Signs a webhook (for the sandbox providers and tests).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a webhook's signature and timestamp against `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window: i64,
) -> Result<(), WebhookError> {
    let (ts, sig) = (
        timestamp.ok_or(WebhookError::Missing)?,
        signature.ok_or(WebhookError::Missing)?,
    );
    let ts: i64 = ts.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
    // Saturating, and a skew too large for `abs` is stale: the timestamp is the sender's, and
    // one near `i64::MIN` must neither overflow nor wrap into the window.
    let skew = now.saturating_sub(ts);
    if skew.checked_abs().is_none_or(|s| s > window) {
        return Err(WebhookError::Stale(skew, window));
    }
    let given = hex::decode(sig.trim().trim_start_matches("sha256=")).map_err(|_| WebhookError::Malformed)?;
    if given.len() != 32 {
        return Err(WebhookError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| WebhookError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_fresh_signed_body_and_rejects_everything_else() {
        let s = b"secret";
        let body = br#"{"id":"1","status":"delivered"}"#;
        let sig = sign(s, 1_000, body);
        assert_eq!(
            verify(s, Some("1000"), Some(&sig), body, 1_200, DEFAULT_WINDOW_SECS),
            Ok(())
        );
        assert_eq!(
            verify(s, Some("1000"), Some(&format!("sha256={sig}")), body, 1_000, 300),
            Ok(())
        );
        assert_eq!(
            verify(s, Some("1000"), Some(&sig), body, 1_301, 300),
            Err(WebhookError::Stale(301, 300))
        );
        assert_eq!(
            verify(s, Some("1000"), Some(&sig), b"{}", 1_000, 300),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), body, 1_000, 300),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify(s, Some("999"), Some(&sig), body, 1_000, 300),
            Err(WebhookError::Mismatch),
            "timestamp is signed"
        );
        assert_eq!(
            verify(s, None, Some(&sig), body, 1_000, 300),
            Err(WebhookError::Missing)
        );
        assert_eq!(
            verify(s, Some("x"), Some(&sig), body, 1_000, 300),
            Err(WebhookError::BadTimestamp)
        );
        assert_eq!(
            verify(s, Some("1000"), Some("zz"), body, 1_000, 300),
            Err(WebhookError::Malformed)
        );
        // A timestamp at the ends of i64 is stale, even when signed (fuzz/corpus/webhook_body keeps one).
        for ts in [i64::MIN, 1_000 + i64::MIN, i64::MAX] {
            let sig = sign(s, ts, body);
            assert!(matches!(
                verify(s, Some(&ts.to_string()), Some(&sig), body, 1_000, 300),
                Err(WebhookError::Stale(..))
            ));
        }
    }
}
