//! Envelope encryption of personal data and the keyed blind index.
//!
//! Each borrower has a random 256-bit data key; every personal field of that borrower (name,
//! national id, contact addresses, emergency contacts' names) is sealed with it under
//! AES-256-GCM, with the field's name as associated data so a ciphertext cannot be moved to
//! another column. The data key is stored wrapped by the master key. Destroying the wrapped key
//! (crypto-shredding) makes all of the borrower's ciphertexts unreadable at once.
//!
//! Lookups by number or id go through a blind index: HMAC-SHA256 under a separate key, over a
//! domain-separated canonical form, so equal values match without the database holding them.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Format byte in front of every ciphertext, so the scheme can change without guessing.
const SEAL_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_CHECK_AAD: &[u8] = b"reachline/key-check";
const KEY_CHECK_TEXT: &[u8] = b"reachline key check v1";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key material is not valid base64 of 32 bytes ({0})")]
    BadKey(&'static str),
    #[error("a sealed value is damaged or was sealed under another key ({0})")]
    Open(&'static str),
    #[error("the borrower's data key has been destroyed (erased borrower)")]
    Shredded,
}

/// 32 bytes of key material, wiped from memory on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    pub fn from_base64(s: &str, what: &'static str) -> Result<Self, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| CryptoError::BadKey(what))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey(what))?;
        Ok(Self(arr))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32([redacted])")
    }
}

/// The two long-lived keys: the master key that wraps data keys, and the blind-index key.
/// `key_id` names the master key so a rotation can tell old wrappings from new.
///
/// During a master-key rotation the keyring also holds the keys being retired: data keys are
/// wrapped under the current one, and unwrapped under whichever key opens them, so every
/// borrower stays readable while the rotation re-wraps them (and if it is interrupted).
#[derive(Clone)]
pub struct Keyring {
    key_id: String,
    master: Aes256Gcm,
    previous: Vec<(String, Aes256Gcm)>,
    blind: Hmac<Sha256>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    pub fn new(key_id: &str, master: &Secret32, blind_index: &Secret32) -> Self {
        Self {
            key_id: key_id.to_string(),
            master: Aes256Gcm::new((&master.0).into()),
            previous: Vec::new(),
            // HMAC takes keys of any length; 32 bytes cannot fail.
            blind: <Hmac<Sha256> as Mac>::new_from_slice(&blind_index.0).expect("HMAC accepts any key length"),
        }
    }

    /// A keyring with fresh random keys, for tests and `keys init`.
    pub fn random(key_id: &str) -> Self {
        Self::new(key_id, &Secret32::random(), &Secret32::random())
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Adds a retired master key (named `key_id`) that still opens data keys wrapped before a
    /// rotation. Refuses the current key's name.
    pub fn with_previous(mut self, key_id: &str, master: &Secret32) -> Result<Self, CryptoError> {
        if key_id == self.key_id || self.previous.iter().any(|(id, _)| id == key_id) {
            return Err(CryptoError::BadKey("a previous master key repeats a key id"));
        }
        self.previous
            .push((key_id.to_string(), Aes256Gcm::new((&master.0).into())));
        Ok(self)
    }

    /// The names of the retired master keys this keyring still holds.
    pub fn previous_key_ids(&self) -> Vec<&str> {
        self.previous.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Whether this keyring holds the master key named `key_id` (current or retired).
    pub fn has_master(&self, key_id: &str) -> bool {
        key_id == self.key_id || self.previous.iter().any(|(id, _)| id == key_id)
    }

    /// The master key's check value: a fixed text sealed under it. Stored beside the data, it
    /// lets a store tell a wrong master key before it writes anything.
    pub fn master_check(&self) -> Vec<u8> {
        seal_with(&self.master, KEY_CHECK_AAD, KEY_CHECK_TEXT)
    }

    /// Whether `check` (from [`Keyring::master_check`]) was sealed under the master key named
    /// `key_id`; `None` when this keyring does not hold that key.
    pub fn verify_master_check(&self, key_id: &str, check: &[u8]) -> Option<bool> {
        let cipher = if key_id == self.key_id {
            &self.master
        } else {
            &self.previous.iter().find(|(id, _)| id == key_id)?.1
        };
        Some(open_with(cipher, KEY_CHECK_AAD, check).is_ok_and(|t| t == KEY_CHECK_TEXT))
    }

    /// The blind-index key's check value (the index of a fixed text in its own domain).
    pub fn blind_check(&self) -> [u8; 32] {
        self.blind_index("reachline/key-check", "reachline")
    }

    /// Wraps a data key under the master key.
    pub fn wrap(&self, key: &DataKey) -> Vec<u8> {
        seal_with(&self.master, b"reachline/data-key", &key.0 .0)
    }

    /// Unwraps a data key under the current master key or, during a rotation, a retired one.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let mut opened = open_with(&self.master, b"reachline/data-key", wrapped);
        for (_, old) in &self.previous {
            if opened.is_ok() {
                break;
            }
            opened = open_with(old, b"reachline/data-key", wrapped);
        }
        let mut bytes = opened?;
        let arr: Result<[u8; 32], _> = bytes.as_slice().try_into();
        let out = arr
            .map(|a| DataKey(Secret32(a)))
            .map_err(|_| CryptoError::Open("data key length"));
        bytes.zeroize();
        out
    }

    /// The blind index of `value` in lookup domain `domain` (e.g. `phone`, `email`, `national_id`).
    pub fn blind_index(&self, domain: &str, value: &str) -> [u8; 32] {
        let mut mac = self.blind.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A borrower's data key. Generated once per borrower, stored only wrapped.
#[derive(Clone)]
pub struct DataKey(Secret32);

impl DataKey {
    pub fn generate() -> Self {
        Self(Secret32::random())
    }

    pub fn sealer(&self) -> Sealer {
        Sealer(Aes256Gcm::new((&self.0 .0).into()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Seals and opens one borrower's fields.
#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

impl Sealer {
    /// Seals `plaintext` for column `field`: `version ‖ nonce ‖ ciphertext+tag`.
    pub fn seal(&self, field: &str, plaintext: &str) -> Vec<u8> {
        seal_with(&self.0, field.as_bytes(), plaintext.as_bytes())
    }

    pub fn open(&self, field: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        let bytes = open_with(&self.0, field.as_bytes(), sealed)?;
        String::from_utf8(bytes).map_err(|_| CryptoError::Open("not UTF-8"))
    }
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // A random 96-bit nonce per message: each data key seals a handful of fields and the master
    // key at most one wrapping per borrower, far below the 2^32 messages random nonces allow.
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        // AES-GCM encryption fails only for messages over 64 GiB.
        .expect("AES-GCM seals any message under 64 GiB");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(SEAL_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 1 + NONCE_LEN + 16 {
        return Err(CryptoError::Open("too short"));
    }
    if sealed[0] != SEAL_V1 {
        return Err(CryptoError::Open("unknown format version"));
    }
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Open("authentication failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let ring = Keyring::random("k1");
        let dk = DataKey::generate();
        let wrapped = ring.wrap(&dk);
        let dk2 = ring.unwrap_key(&wrapped).unwrap();
        let sealed = dk.sealer().seal("contact.address", "+8613812345678");
        assert!(!sealed.windows(5).any(|w| w == b"13812"));
        assert_eq!(dk2.sealer().open("contact.address", &sealed).unwrap(), "+8613812345678");
        // Another column's associated data refuses it.
        assert!(dk2.sealer().open("borrower.name", &sealed).is_err());
        // Another borrower's key refuses it.
        assert!(DataKey::generate().sealer().open("contact.address", &sealed).is_err());
        // Another master key cannot unwrap.
        assert!(Keyring::random("k2").unwrap_key(&wrapped).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(dk.sealer().open("contact.address", &bad).is_err());
    }

    #[test]
    fn rotation_keeps_old_wrappings_readable_and_checks_tell_keys_apart() {
        let old = Secret32::random();
        let new = Secret32::random();
        let blind = Secret32::random();
        let before = Keyring::new("k1", &old, &blind);
        let dk = DataKey::generate();
        let wrapped = before.wrap(&dk);
        let check = before.master_check();
        let during = Keyring::new("k2", &new, &blind).with_previous("k1", &old).unwrap();
        let sealed = dk.sealer().seal("f", "x");
        assert_eq!(
            during
                .unwrap_key(&wrapped)
                .unwrap()
                .sealer()
                .open("f", &sealed)
                .unwrap(),
            "x"
        );
        let rewrapped = during.wrap(&during.unwrap_key(&wrapped).unwrap());
        // Only the new key opens the new wrapping; without the old key the old one fails.
        assert!(before.unwrap_key(&rewrapped).is_err());
        assert!(Keyring::new("k2", &new, &blind).unwrap_key(&wrapped).is_err());
        assert_eq!(during.verify_master_check("k1", &check), Some(true));
        assert_eq!(during.verify_master_check("k2", &check), Some(false));
        assert_eq!(during.verify_master_check("k3", &check), None);
        assert!(during.has_master("k1") && during.has_master("k2") && !during.has_master("k3"));
        assert!(Keyring::new("k2", &new, &blind).with_previous("k2", &old).is_err());
        assert_eq!(before.blind_check(), during.blind_check());
        assert_ne!(before.blind_check(), Keyring::random("k1").blind_check());
    }

    #[test]
    fn blind_index_is_keyed_and_domain_separated() {
        let a = Keyring::random("k");
        let b = Keyring::random("k");
        assert_eq!(
            a.blind_index("phone", "+8613812345678"),
            a.blind_index("phone", "+8613812345678")
        );
        assert_ne!(
            a.blind_index("phone", "+8613812345678"),
            b.blind_index("phone", "+8613812345678")
        );
        assert_ne!(a.blind_index("phone", "x"), a.blind_index("email", "x"));
    }

    #[test]
    fn key_text_round_trip() {
        let k = Secret32::random();
        let back = Secret32::from_base64(&k.to_base64(), "master").unwrap();
        assert_eq!(k.0, back.0);
        assert!(Secret32::from_base64("c2hvcnQ=", "master").is_err());
        assert_eq!(format!("{k:?}"), "Secret32([redacted])");
    }
}
