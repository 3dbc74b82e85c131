//! Identity checks through a provider: does this name and national ID belong to the person
//! who holds this phone number (China's 三要素 check, offered by carriers and identity
//! vendors)? Is the face in this photo the face registered with this name and ID (a face
//! match against the national ID photo, offered by the same vendors)? A change may be
//! authorised by one instead of a code to an old channel.
//!
//! The photo is handed to the provider and dropped: Reachline keeps no biometric data, only
//! the verdict (a step of the change).
//!
//! [`SandboxIdentity`] is the built-in sandbox: it answers "match" for every number except
//! those it was told belong to someone else, and for every JPEG or PNG photo except those it
//! was told show someone else; the server first compares the name and ID with the lender's
//! own record, so the sandbox stands in only for the provider's side.

use std::collections::HashSet;

use async_trait::async_trait;
use reachline_domain::{NationalId, PersonName, PhoneNumber};

/// A provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    /// The provider could not say (down, no data): the change is not authorised by it.
    Unknown,
}

#[async_trait]
pub trait IdentityCheck: Send + Sync {
    fn name(&self) -> &str;
    /// Whether `number` is registered to the person with `name` and `id`.
    async fn three_factor(&self, name: &PersonName, id: &NationalId, number: &PhoneNumber) -> Verdict;
    /// Whether the face in `photo` (JPEG or PNG) is that of the person with `name` and `id`.
    async fn face_match(&self, name: &PersonName, id: &NationalId, photo: &[u8]) -> Verdict;
}

/// Whether bytes start like a JPEG or a PNG image.
pub fn is_photo(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF]) || bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// The sandbox provider (see the module docs).
#[derive(Debug, Default)]
pub struct SandboxIdentity {
    /// Numbers (E.164) registered to someone else.
    pub others: HashSet<String>,
    /// Photos (SHA-256, hex) of someone else's face.
    pub other_faces: HashSet<String>,
}

#[async_trait]
impl IdentityCheck for SandboxIdentity {
    fn name(&self) -> &str {
        "identity-sandbox"
    }

    async fn three_factor(&self, _: &PersonName, _: &NationalId, number: &PhoneNumber) -> Verdict {
        if self.others.contains(number.e164()) {
            Verdict::Mismatch
        } else {
            Verdict::Match
        }
    }

    async fn face_match(&self, _: &PersonName, _: &NationalId, photo: &[u8]) -> Verdict {
        use sha2::{Digest, Sha256};
        if !is_photo(photo) {
            return Verdict::Unknown;
        }
        if self.other_faces.contains(&hex::encode(Sha256::digest(photo))) {
            Verdict::Mismatch
        } else {
            Verdict::Match
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sandbox_matches_photos_unless_told_otherwise() {
        use sha2::{Digest, Sha256};
        let name = PersonName::parse("张伟").unwrap();
        let id = NationalId::parse(
            reachline_domain::national_id::IdScheme::CnResident,
            "11010519491231002X",
        )
        .unwrap();
        let mine = b"\xFF\xD8\xFF\xE0 a face".to_vec();
        let theirs = b"\x89PNG\r\n\x1a\n another face".to_vec();
        let sandbox = SandboxIdentity {
            other_faces: [hex::encode(Sha256::digest(&theirs))].into(),
            ..SandboxIdentity::default()
        };
        assert_eq!(sandbox.face_match(&name, &id, &mine).await, Verdict::Match);
        assert_eq!(sandbox.face_match(&name, &id, &theirs).await, Verdict::Mismatch);
        assert_eq!(sandbox.face_match(&name, &id, b"GIF89a").await, Verdict::Unknown);
        assert_eq!(sandbox.face_match(&name, &id, b"").await, Verdict::Unknown);
    }
}
