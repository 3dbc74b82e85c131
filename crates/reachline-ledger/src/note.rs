//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 keys, in the text forms of Go's
//! `golang.org/x/mod/sumdb/note`: verifier keys `name+hexkeyid+base64(0x01 ‖ public key)`,
//! signer keys `PRIVATE+KEY+name+hexkeyid+base64(0x01 ‖ seed)`, signature lines
//! `— name base64(keyid ‖ signature)`.
//!
//! Rules kept here: the key ID is the first four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public
//! key); names are non-empty and hold no whitespace and no `+`; a note is UTF-8 without control
//! characters other than newline, its text ends in a newline, the last blank line separates it
//! from one or more signature lines. Signatures from keys the verifier does not know are
//! ignored (kept as unverified); a signature from a known key that fails rejects the note; a
//! note with no verified signature is rejected.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};

use crate::hash::unhex;

/// The signature type byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;

/// The most signatures a note may carry (as Go's implementation; the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// What is wrong with a key, a note or one of its signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    KeyName(String),
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("the key ID in the key ({given:08x}) is not the one its name and public key give ({computed:08x})")]
    KeyIdMismatch { given: u32, computed: u32 },
    #[error("unsupported signature type 0x{0:02x}; only Ed25519 (0x01) is supported")]
    UnsupportedAlgorithm(u8),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("the signature of key {0} does not verify")]
    BadSignature(String),
    #[error("no signature of a known key: the note is signed only by {0}")]
    NoKnownSignature(String),
}

fn malformed(why: impl Into<String>) -> NoteError {
    NoteError::Malformed(why.into())
}

/// Whether `name` may name a key: non-empty, no Unicode whitespace, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::KeyName(name.to_string()))
    }
}

/// The key ID of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4], big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Splits `name+hexid+base64` (the base64 may itself hold `+`: split on the first two only).
fn split_key(s: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey("expected name+keyid+key"));
    };
    check_name(name)?;
    if id.len() != 8 {
        return Err(NoteError::MalformedKey("the key ID is not 8 hex digits"));
    }
    let id = unhex(id).ok_or(NoteError::MalformedKey("the key ID is not 8 hex digits"))?;
    let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let key = STANDARD
        .decode(key)
        .map_err(|_| NoteError::MalformedKey("the key is not valid base64"))?;
    match key.first() {
        None => Err(NoteError::MalformedKey("the key is empty")),
        Some(&ALG_ED25519) if key.len() == 33 => Ok((name, id, key[1..].to_vec())),
        Some(&ALG_ED25519) => Err(NoteError::MalformedKey("an Ed25519 key is 32 bytes")),
        Some(&alg) => Err(NoteError::UnsupportedAlgorithm(alg)),
    }
}

/// A public key that verifies note signatures, with its name and key ID.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses `name+hexkeyid+base64(0x01 ‖ public key)`, checking the key ID.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        let (name, id, key) = split_key(s)?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 key is 32 bytes"))?;
        let computed = key_id(name, &key);
        if computed != id {
            return Err(NoteError::KeyIdMismatch { given: id, computed });
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// A verifier key from a name and a raw Ed25519 public key.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<VerifierKey, NoteError> {
        check_name(name)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_string(),
            id: key_id(name, public_key),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        self.key
            .verify(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(key))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// A private key that signs notes. `Debug` shows only the name and key ID.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
}

impl SignerKey {
    /// Parses `PRIVATE+KEY+name+hexkeyid+base64(0x01 ‖ 32-byte seed)`, checking the key ID.
    pub fn parse(s: &str) -> Result<SignerKey, NoteError> {
        let rest = s
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("a signer key starts with PRIVATE+KEY+"))?;
        let (name, id, seed) = split_key(rest)?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 seed is 32 bytes"))?;
        let key = SignerKey::from_seed(name, &seed)?;
        if key.id != id {
            return Err(NoteError::KeyIdMismatch {
                given: id,
                computed: key.id,
            });
        }
        Ok(key)
    }

    /// A signer from a name and a 32-byte Ed25519 seed (the caller draws the seed; this crate
    /// draws no randomness).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<SignerKey, NoteError> {
        check_name(name)?;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The private key in Go's `PRIVATE+KEY+…` text form. A secret: store it as one.
    pub fn to_private_string(&self) -> String {
        let mut seed = vec![ALG_ED25519];
        seed.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.id, STANDARD.encode(seed))
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        Signature {
            name: self.name.clone(),
            key_id: self.id,
            bytes: self.key.sign(msg).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{:08x}, private part redacted)", self.name, self.id)
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub key_id: u32,
    /// The signature proper, without the key ID.
    pub bytes: Vec<u8>,
}

impl Signature {
    /// The line without its newline: `— name base64(keyid ‖ signature)`.
    pub fn line(&self) -> String {
        let mut b = self.key_id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.bytes);
        format!("\u{2014} {} {}", self.name, STANDARD.encode(b))
    }

    fn parse_line(line: &str) -> Result<Signature, NoteError> {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            malformed(format!(
                "a signature line must start with an em dash and a space: {line:?}"
            ))
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed(format!("a signature line needs a name and a signature: {line:?}")))?;
        if !is_valid_key_name(name) {
            return Err(malformed(format!("invalid key name in signature line {line:?}")));
        }
        let b = STANDARD
            .decode(b64)
            .map_err(|_| malformed(format!("the signature of {name} is not valid base64")))?;
        if b.len() < 5 {
            return Err(malformed(format!("the signature of {name} is too short")));
        }
        Ok(Signature {
            name: name.to_string(),
            key_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            bytes: b[4..].to_vec(),
        })
    }
}

/// A note: its text and its signature lines, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    pub signatures: Vec<Signature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(malformed("the text must end with a newline"));
    }
    if let Some(c) = text.chars().find(|&c| c != '\n' && c.is_control()) {
        return Err(malformed(format!(
            "the note holds control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

impl Note {
    /// Splits a note into text and signatures, checking its syntax (not the signatures).
    pub fn parse(msg: &[u8]) -> Result<Note, NoteError> {
        let msg = std::str::from_utf8(msg).map_err(|_| malformed("the note is not UTF-8"))?;
        let split = msg
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&msg[..=split], &msg[split + 2..]);
        check_text(text)?;
        if sigs.is_empty() {
            return Err(malformed("no signature lines"));
        }
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(malformed("the last signature line does not end with a newline"));
        };
        if let Some(c) = sigs.chars().find(|&c| c != '\n' && c.is_control()) {
            return Err(malformed(format!(
                "the note holds control character U+{:04X}",
                u32::from(c)
            )));
        }
        let signatures = sigs
            .split('\n')
            .map(Signature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.len() > MAX_SIGNATURES {
            return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The note's bytes: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut s = self.text.clone();
        s.push('\n');
        for sig in &self.signatures {
            s.push_str(&sig.line());
            s.push('\n');
        }
        s
    }

    /// Adds (or replaces) the signature of `signer` over the text.
    pub fn sign(&mut self, signer: &SignerKey) -> Result<(), NoteError> {
        check_text(&self.text)?;
        self.signatures
            .retain(|s| !(s.name == signer.name && s.key_id == signer.id));
        self.signatures.push(signer.sign(self.text.as_bytes()));
        Ok(())
    }
}

/// Signs `text` (which must end in a newline) with each signer, giving the note's bytes.
pub fn sign(text: &str, signers: &[&SignerKey]) -> Result<String, NoteError> {
    let mut note = Note {
        text: text.to_string(),
        signatures: Vec::new(),
    };
    for s in signers {
        note.sign(s)?;
    }
    if note.signatures.is_empty() {
        return Err(malformed("a note needs at least one signature"));
    }
    Ok(note.to_text())
}

/// A note with at least one signature of a known key that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    pub text: String,
    /// Signatures of known keys, each verified.
    pub verified: Vec<Signature>,
    /// Signatures of keys the verifier does not know, ignored.
    pub unverified: Vec<Signature>,
}

/// Parses `msg` and verifies it against `keys`.
pub fn open(msg: &[u8], keys: &[VerifierKey]) -> Result<VerifiedNote, NoteError> {
    let note = Note::parse(msg)?;
    let mut verified: Vec<Signature> = Vec::new();
    let mut unverified = Vec::new();
    for sig in note.signatures {
        let known = keys.iter().find(|k| k.name == sig.name && k.id == sig.key_id);
        match known {
            None => unverified.push(sig),
            Some(k) if k.verify(note.text.as_bytes(), &sig.bytes) => {
                if !verified.contains(&sig) {
                    verified.push(sig);
                }
            }
            Some(k) => return Err(NoteError::BadSignature(format!("{}+{:08x}", k.name, k.id))),
        }
    }
    if verified.is_empty() {
        let names: Vec<String> = unverified
            .iter()
            .map(|s| format!("{}+{:08x}", s.name, s.key_id))
            .collect();
        return Err(NoteError::NoKnownSignature(names.join(", ")));
    }
    Ok(VerifiedNote {
        text: note.text,
        verified,
        unverified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        assert!(is_valid_key_name("example.com/log"));
        for bad in ["", "a b", "a+b", "a\u{3000}b", "a\tb"] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_round_trip_and_the_secret_stays_out_of_debug() {
        let k = SignerKey::from_seed("reachline.test/log", &[7; 32]).unwrap();
        let again = SignerKey::parse(&k.to_private_string()).unwrap();
        assert_eq!(again.verifier(), k.verifier());
        assert_eq!(VerifierKey::parse(&k.verifier().to_string()).unwrap(), k.verifier());
        assert!(!format!("{k:?}").contains(&STANDARD.encode([7u8; 32])[..10]));
        assert!(matches!(
            SignerKey::from_seed("a+b", &[7; 32]),
            Err(NoteError::KeyName(_))
        ));
    }

    #[test]
    fn malformed_notes_say_why() {
        let k = SignerKey::from_seed("k", &[1; 32]).unwrap();
        let good = sign("hello\n", &[&k]).unwrap();
        let v = [k.verifier()];
        assert!(open(good.as_bytes(), &v).is_ok());
        let cases = [
            ("hello\n", "no blank line"),
            ("hello\n\n", "no signature lines"),
            (&good[..good.len() - 1], "does not end with a newline"),
            ("\x01hello\n\n\u{2014} k AAAAAAA=\n", "control character"),
            (&format!("{good}unexpected line\n"), "em dash"),
        ];
        for (msg, why) in cases {
            let e = open(msg.as_bytes(), &v).unwrap_err().to_string();
            assert!(e.contains(why), "{msg:?}: {e}");
        }
        assert!(sign("no newline", &[&k]).is_err());
    }
}
