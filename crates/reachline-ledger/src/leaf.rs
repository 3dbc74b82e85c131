//! The ledger's leaves: what happened to a notice or a contact point, with ids, codes, hashes
//! and a keyed commitment of the address, never the address, a name or any other personal data.
//!
//! # Encoding, version 1
//!
//! A leaf is a byte string; its tree hash is RFC 6962's `SHA-256(0x00 ‖ bytes)`. Anyone holding
//! the bytes can re-hash them; anyone can re-encode a leaf from its fields with this table.
//! Integers are big-endian; `str` is a u16 length then that many bytes of UTF-8; `opt T` is
//! `0x00` (absent) or `0x01` followed by `T`; there is exactly one encoding of each leaf, and
//! decoding refuses anything else (other presence bytes, trailing bytes, bad UTF-8, codes out of
//! their alphabet).
//!
//! | field | encoding |
//! |---|---|
//! | version | u8 = `0x01` |
//! | kind | u8 tag, then the kind's fields (below) |
//! | time | i64, microseconds since 1970-01-01T00:00:00Z (UTC) |
//! | borrower | i64 (Reachline's `BorrowerId`) |
//! | notice | opt i64 |
//! | contact | opt i64 (`ContactId`) |
//! | channel | opt str (`sms`, `voice`, `email`, `push`, `im`) |
//! | provider message id | opt str (the gateway's id for the message) |
//! | template | opt (str template id, u32 version) |
//! | content hash | opt 32 bytes: SHA-256 of the rendered text as sent (UTF-8) |
//! | address commitment | opt 32 bytes: HMAC-SHA256(borrower's commitment key, canonical address) |
//!
//! Kinds: `1` notice sent; `2` receipt (str status); `3` reply (str class); `4` contact added;
//! `5` contact verified; `6` contact retired (str reason); `7` suppressed (str reason); `8`
//! consent changed (str purpose, u8 granted 0/1); `9` contact-change step (str step); `10`
//! borrower erased (str basis: `borrower_request` or `retention`). Every str
//! of a kind, and the template id, is a [`Code`].
//!
//! The canonical address is `ContactAddress::canonical` (E.164 for numbers, the normalised
//! email, `provider:account` for IM). Erasing a borrower destroys the commitment key: the leaf
//! still hashes and verifies, but no one can tie it to an address any more; revealing the key
//! of one borrower lets a court check "this notice went to this number".

use hmac::{Hmac, Mac};
use reachline_domain::{BorrowerId, Channel, ContactAddress, ContactId};
use sha2::{Digest, Sha256};

use crate::hash::{leaf_hash, Hash};

/// The version byte this code writes and reads.
pub const LEAF_VERSION: u8 = 1;

/// What is wrong with a leaf's bytes or fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("unsupported leaf version {0}")]
    Version(u8),
    #[error("unknown leaf kind {0}")]
    Kind(u8),
    #[error("the leaf ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} bytes follow the last field")]
    Trailing(usize),
    #[error("{field}: presence byte {byte} is neither 0 nor 1")]
    Presence { field: &'static str, byte: u8 },
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

/// A short machine code (a status, reason, step, purpose or template id): 1–64 characters of
/// `a-z 0-9 _ . : -`, with no run of six or more digits, so a phone number or an email cannot be
/// written into a leaf by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(String);

impl Code {
    pub fn parse(s: &str) -> Result<Code, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("a code is 1 to 64 characters, this is {}", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | ':' | '-'))
        {
            return Err(format!("a code holds only a-z 0-9 _ . : -, not {c:?}"));
        }
        let mut run = 0;
        for c in s.chars() {
            run = if c.is_ascii_digit() { run + 1 } else { 0 };
            if run >= 6 {
                return Err("a code may not hold six digits in a row (it could be a number)".into());
            }
        }
        Ok(Code(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the leaf records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafKind {
    NoticeSent,
    /// A delivery receipt; `status` as the channel classified it (e.g. `delivered`, `expired`).
    Receipt {
        status: Code,
    },
    /// A reply from the contact; `class` as the reply classifier named it (e.g. `stop`).
    Reply {
        class: Code,
    },
    ContactAdded,
    ContactVerified,
    ContactRetired {
        reason: Code,
    },
    /// A notice not sent, and why (the gate that stopped it).
    Suppressed {
        reason: Code,
    },
    ConsentChanged {
        purpose: Code,
        granted: bool,
    },
    /// One step of the contact-change workflow (e.g. `check_started`, `old_number_confirmed`).
    ContactChangeStep {
        step: Code,
    },
    /// The borrower's personal data was erased (their keys destroyed); `basis` says why
    /// (`borrower_request`, `retention`). The leaves before it stay verifiable, no longer
    /// linkable to any address.
    Erased {
        basis: Code,
    },
}

impl LeafKind {
    /// In words, for people reading a verified bundle.
    pub fn describe(&self) -> String {
        match self {
            LeafKind::NoticeSent => "notice sent".into(),
            LeafKind::Receipt { status } => format!("receipt {}", status.as_str()),
            LeafKind::Reply { class } => format!("reply {}", class.as_str()),
            LeafKind::ContactAdded => "contact added".into(),
            LeafKind::ContactVerified => "contact verified".into(),
            LeafKind::ContactRetired { reason } => format!("contact retired {}", reason.as_str()),
            LeafKind::Suppressed { reason } => format!("suppressed {}", reason.as_str()),
            LeafKind::ConsentChanged { purpose, granted } => format!("consent {} {granted}", purpose.as_str()),
            LeafKind::ContactChangeStep { step } => format!("contact change {}", step.as_str()),
            LeafKind::Erased { basis } => format!("borrower erased {}", basis.as_str()),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            LeafKind::NoticeSent => 1,
            LeafKind::Receipt { .. } => 2,
            LeafKind::Reply { .. } => 3,
            LeafKind::ContactAdded => 4,
            LeafKind::ContactVerified => 5,
            LeafKind::ContactRetired { .. } => 6,
            LeafKind::Suppressed { .. } => 7,
            LeafKind::ConsentChanged { .. } => 8,
            LeafKind::ContactChangeStep { .. } => 9,
            LeafKind::Erased { .. } => 10,
        }
    }
}

/// The template a notice was rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub id: Code,
    pub version: u32,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub kind: LeafKind,
    /// Microseconds since the Unix epoch, UTC.
    pub time_micros: i64,
    pub borrower: BorrowerId,
    pub notice: Option<i64>,
    pub contact: Option<ContactId>,
    pub channel: Option<Channel>,
    pub provider_message_id: Option<String>,
    pub template: Option<TemplateRef>,
    pub content_hash: Option<Hash>,
    pub address_commitment: Option<Hash>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Codes are at most 64 bytes and provider ids at most 255 (checked by `encode`).
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, v: &Option<T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

/// Checks a provider's message id: 1–255 bytes of printable ASCII without spaces.
fn check_provider_id(s: &str) -> Result<(), LeafError> {
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LeafError::Field {
            field: "provider message id",
            why: "1 to 255 printable ASCII characters without spaces".into(),
        });
    }
    Ok(())
}

impl Leaf {
    /// The version-1 bytes of this leaf.
    pub fn encode(&self) -> Result<Vec<u8>, LeafError> {
        if let Some(p) = &self.provider_message_id {
            check_provider_id(p)?;
        }
        let mut out = vec![LEAF_VERSION, self.kind.tag()];
        match &self.kind {
            LeafKind::NoticeSent | LeafKind::ContactAdded | LeafKind::ContactVerified => {}
            LeafKind::Receipt { status: c }
            | LeafKind::Reply { class: c }
            | LeafKind::ContactRetired { reason: c }
            | LeafKind::Suppressed { reason: c }
            | LeafKind::ContactChangeStep { step: c }
            | LeafKind::Erased { basis: c } => put_str(&mut out, c.as_str()),
            LeafKind::ConsentChanged { purpose, granted } => {
                put_str(&mut out, purpose.as_str());
                out.push(u8::from(*granted));
            }
        }
        out.extend_from_slice(&self.time_micros.to_be_bytes());
        out.extend_from_slice(&self.borrower.0.to_be_bytes());
        put_opt(&mut out, &self.notice, |o, n| o.extend_from_slice(&n.to_be_bytes()));
        put_opt(&mut out, &self.contact, |o, c| o.extend_from_slice(&c.0.to_be_bytes()));
        put_opt(&mut out, &self.channel, |o, c| put_str(o, c.as_str()));
        put_opt(&mut out, &self.provider_message_id, |o, p| put_str(o, p));
        put_opt(&mut out, &self.template, |o, t| {
            put_str(o, t.id.as_str());
            o.extend_from_slice(&t.version.to_be_bytes());
        });
        put_opt(&mut out, &self.content_hash, |o, h| o.extend_from_slice(&h.0));
        put_opt(&mut out, &self.address_commitment, |o, h| o.extend_from_slice(&h.0));
        Ok(out)
    }

    /// The leaf's tree hash.
    pub fn hash(&self) -> Result<Hash, LeafError> {
        Ok(leaf_hash(&self.encode()?))
    }

    /// Reads version-1 bytes back, refusing any other encoding of the same leaf.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafError> {
        let mut r = Reader { b: bytes };
        let version = r.u8("the version")?;
        if version != LEAF_VERSION {
            return Err(LeafError::Version(version));
        }
        let kind = match r.u8("the kind")? {
            1 => LeafKind::NoticeSent,
            2 => LeafKind::Receipt {
                status: r.code("receipt status")?,
            },
            3 => LeafKind::Reply {
                class: r.code("reply class")?,
            },
            4 => LeafKind::ContactAdded,
            5 => LeafKind::ContactVerified,
            6 => LeafKind::ContactRetired {
                reason: r.code("retirement reason")?,
            },
            7 => LeafKind::Suppressed {
                reason: r.code("suppression reason")?,
            },
            8 => LeafKind::ConsentChanged {
                purpose: r.code("consent purpose")?,
                granted: match r.u8("consent granted")? {
                    0 => false,
                    1 => true,
                    byte => {
                        return Err(LeafError::Presence {
                            field: "consent granted",
                            byte,
                        })
                    }
                },
            },
            9 => LeafKind::ContactChangeStep {
                step: r.code("contact-change step")?,
            },
            10 => LeafKind::Erased {
                basis: r.code("erasure basis")?,
            },
            other => return Err(LeafError::Kind(other)),
        };
        let time_micros = r.i64("the time")?;
        let borrower = BorrowerId(r.i64("the borrower")?);
        let notice = r.opt("the notice", |r| r.i64("the notice"))?;
        let contact = r.opt("the contact", |r| r.i64("the contact").map(ContactId))?;
        let channel = r.opt("the channel", |r| {
            let s = r.str("the channel")?;
            s.parse::<Channel>().map_err(|e| LeafError::Field {
                field: "channel",
                why: e.to_string(),
            })
        })?;
        let provider_message_id = r.opt("the provider message id", |r| {
            let s = r.str("the provider message id")?;
            check_provider_id(&s)?;
            Ok(s)
        })?;
        let template = r.opt("the template", |r| {
            Ok(TemplateRef {
                id: r.code("template id")?,
                version: u32::from_be_bytes(r.array("the template version")?),
            })
        })?;
        let content_hash = r.opt("the content hash", |r| Ok(Hash(r.array("the content hash")?)))?;
        let address_commitment = r.opt("the address commitment", |r| {
            Ok(Hash(r.array("the address commitment")?))
        })?;
        if !r.b.is_empty() {
            return Err(LeafError::Trailing(r.b.len()));
        }
        Ok(Leaf {
            kind,
            time_micros,
            borrower,
            notice,
            contact,
            channel,
            provider_message_id,
            template,
            content_hash,
            address_commitment,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], LeafError> {
        let Some((head, rest)) = self.b.split_first_chunk::<N>() else {
            return Err(LeafError::Truncated(what));
        };
        self.b = rest;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, LeafError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, LeafError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn str(&mut self, what: &'static str) -> Result<String, LeafError> {
        let len = usize::from(u16::from_be_bytes(self.array(what)?));
        if self.b.len() < len {
            return Err(LeafError::Truncated(what));
        }
        let (s, rest) = self.b.split_at(len);
        self.b = rest;
        String::from_utf8(s.to_vec()).map_err(|_| LeafError::Utf8(what))
    }

    fn code(&mut self, field: &'static str) -> Result<Code, LeafError> {
        let s = self.str(field)?;
        Code::parse(&s).map_err(|why| LeafError::Field { field, why })
    }

    fn opt<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, LeafError>,
    ) -> Result<Option<T>, LeafError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            byte => Err(LeafError::Presence { field, byte }),
        }
    }
}

/// SHA-256 of a notice's rendered text, for [`Leaf::content_hash`].
pub fn content_hash(rendered: &str) -> Hash {
    Hash(Sha256::digest(rendered.as_bytes()).into())
}

/// A borrower's key for address commitments. Erasing the borrower destroys it. `Debug` is
/// redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitmentKey([u8; 32]);

impl CommitmentKey {
    pub fn from_bytes(key: [u8; 32]) -> CommitmentKey {
        CommitmentKey(key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// HMAC-SHA256(key, canonical address).
    pub fn commit_canonical(&self, canonical_address: &str) -> Hash {
        let mut m = self.mac();
        m.update(canonical_address.as_bytes());
        Hash(m.finalize().into_bytes().into())
    }

    pub fn commit(&self, address: &ContactAddress) -> Hash {
        self.commit_canonical(&address.canonical())
    }

    /// Whether `commitment` commits to `canonical_address` under this key (constant time).
    pub fn verify_canonical(&self, canonical_address: &str, commitment: &Hash) -> bool {
        let mut m = self.mac();
        m.update(canonical_address.as_bytes());
        m.verify_slice(&commitment.0).is_ok()
    }
}

impl std::fmt::Debug for CommitmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitmentKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hex;

    fn code(s: &str) -> Code {
        Code::parse(s).unwrap()
    }

    pub(crate) fn sent() -> Leaf {
        let key = CommitmentKey::from_bytes([9; 32]);
        Leaf {
            kind: LeafKind::NoticeSent,
            time_micros: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            borrower: BorrowerId(42),
            notice: Some(7),
            contact: Some(ContactId(3)),
            channel: Some(Channel::Sms),
            provider_message_id: Some("smsc-0001".into()),
            template: Some(TemplateRef {
                id: code("due_reminder.zh-cn"),
                version: 2,
            }),
            content_hash: Some(content_hash("您的还款将于1月5日到期。")),
            address_commitment: Some(key.commit_canonical("+8613800138000")),
        }
    }

    /// The golden vector: an outside party re-encoding these fields by the module's table must
    /// get these bytes and this hash.
    #[test]
    fn golden_vector() {
        let bytes = sent().encode().unwrap();
        assert_eq!(hex(&bytes), GOLDEN_HEX);
        assert_eq!(sent().hash().unwrap().to_hex(), GOLDEN_HASH);
        assert_eq!(Leaf::decode(&bytes).unwrap(), sent());
    }

    /// Checked outside Rust too (Python's hashlib and hmac give the same content hash,
    /// commitment and leaf hash).
    const GOLDEN_HEX: &str = concat!(
        "0101",                                                               // version 1, notice sent
        "0006474846204000",                                                   // 2026-01-01T00:00:00Z in microseconds
        "000000000000002a",                                                   // borrower 42
        "010000000000000007",                                                 // notice 7
        "010000000000000003",                                                 // contact 3
        "010003736d73",                                                       // channel "sms"
        "010009736d73632d30303031",                                           // provider message id "smsc-0001"
        "0100126475655f72656d696e6465722e7a682d636e00000002",                 // template "due_reminder.zh-cn" v2
        "0101c2c0f6b05fae56eff0cf203292481487b4a661f4c3e23e6111170b41880238", // content hash
        "01b5a655a18948ae28b9955e1ea6d01c898b2e6f5ce9fdb65b7572449f9259e640", // address commitment
    );
    const GOLDEN_HASH: &str = "e47c9a6c9192f0c7572e07c87f3a99353a90f668298d4cf42b86cc8d345563db";

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            LeafKind::NoticeSent,
            LeafKind::Receipt {
                status: code("delivered"),
            },
            LeafKind::Reply { class: code("stop") },
            LeafKind::ContactAdded,
            LeafKind::ContactVerified,
            LeafKind::ContactRetired {
                reason: code("replaced_by_book"),
            },
            LeafKind::Suppressed {
                reason: code("quiet_hours"),
            },
            LeafKind::ConsentChanged {
                purpose: code("collections"),
                granted: false,
            },
            LeafKind::ContactChangeStep {
                step: code("check_started"),
            },
            LeafKind::Erased {
                basis: code("borrower_request"),
            },
        ];
        for kind in kinds {
            let mut leaf = sent();
            leaf.kind = kind;
            let b = leaf.encode().unwrap();
            assert_eq!(Leaf::decode(&b).unwrap(), leaf);
            let mut bare = Leaf {
                channel: None,
                template: None,
                content_hash: None,
                ..leaf
            };
            bare.address_commitment = None;
            assert_eq!(Leaf::decode(&bare.encode().unwrap()).unwrap(), bare);
        }
    }

    #[test]
    fn other_encodings_are_refused() {
        let b = sent().encode().unwrap();
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(Leaf::decode(&longer), Err(LeafError::Trailing(1)));
        assert!(matches!(Leaf::decode(&b[..b.len() - 1]), Err(LeafError::Truncated(_))));
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(Leaf::decode(&v2), Err(LeafError::Version(2)));
        let mut presence = b.clone();
        presence[2 + 16] = 2; // the notice's presence byte
        assert!(matches!(Leaf::decode(&presence), Err(LeafError::Presence { .. })));
        for n in 0..b.len() {
            let _ = Leaf::decode(&b[..n]); // never panics
        }
    }

    #[test]
    fn codes_keep_personal_data_out() {
        for bad in ["13800138000", "wei@example.com", "Wei", "", "a b", "王"] {
            assert!(Code::parse(bad).is_err(), "{bad}");
        }
        assert!(Code::parse("rule_12:v2").is_ok());
        let mut leaf = sent();
        leaf.provider_message_id = Some("has space".into());
        assert!(leaf.encode().is_err());
    }

    #[test]
    fn commitments_bind_key_and_address() {
        let k = CommitmentKey::from_bytes([9; 32]);
        let c = k.commit_canonical("+8613800138000");
        assert!(k.verify_canonical("+8613800138000", &c));
        assert!(!k.verify_canonical("+8613800138001", &c));
        assert!(!CommitmentKey::from_bytes([8; 32]).verify_canonical("+8613800138000", &c));
        assert_eq!(format!("{k:?}"), "CommitmentKey(redacted)");
    }
}
