//! The offline proof file of one notice: the leaves that tell its story (the send, its receipts,
//! a reply), each with its index and inclusion proof, and the signed checkpoint they prove
//! against. It verifies with the log's public key and nothing else.
//!
//! # Format
//!
//! The file is one or more C2SP `tlog-proof@v1` blocks (`c2sp.org/tlog-proof`), one per leaf,
//! written one after the other, each a standard proof that any tlog-proof verifier accepts:
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the leaf's version-1 encoding (see `leaf`)>
//! index <decimal leaf index>
//! <base64 inclusion proof hash, leaf's sibling first, one per line>
//!
//! <the signed checkpoint, verbatim: origin, size, root, blank line, signature lines>
//! ```
//!
//! In the spec the extra data is whatever is needed to rebuild the entry; here it is the whole
//! entry, so the file is self-contained (the entry hash is `SHA-256(0x00 ‖ extra)`). Every block
//! of a file carries the same checkpoint, byte for byte. A block ends after its last signature
//! line; the next starts with the header line.
//!
//! Only on request (a dispute), an address reveal may follow the last block, to let a court check
//! which address the leaves' commitments bind to. It holds personal data of one borrower:
//!
//! ```text
//! reachline/address-reveal@v1
//! borrower <id>
//! key <base64 of the borrower's 32-byte commitment key>
//! contact <contact id> <canonical address>
//! ```
//!
//! with one `contact` line per contact point revealed. A verifier checks that every leaf of that
//! borrower and a revealed contact commits to `HMAC-SHA256(key, canonical address)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reachline_domain::{BorrowerId, ContactId};

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::hash::{leaf_hash, Hash, LeafIndex};
use crate::leaf::{CommitmentKey, Leaf, LeafError};
use crate::note::VerifierKey;
use crate::proof::{self, HashReader, ProofError};

/// The first line of every block.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// The first line of the optional address reveal.
pub const REVEAL_HEADER: &str = "reachline/address-reveal@v1";

/// What is wrong with a proof file; each names the part that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFileError {
    #[error("line {line}: {why}")]
    Format { line: usize, why: String },
    #[error("the file proves no entry")]
    Empty,
    #[error("entry {entry} carries a different checkpoint from the first entry")]
    DifferentCheckpoints { entry: usize },
    #[error("the checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("entry {entry} (index {index}): the leaf does not decode: {source}")]
    Leaf {
        entry: usize,
        index: LeafIndex,
        source: LeafError,
    },
    #[error("entry {entry} (index {index}): its address commitment does not match the revealed address and key")]
    Reveal { entry: usize, index: LeafIndex },
    #[error("entry {entry} (index {index}) is not proved in the checkpointed tree: {source}")]
    Inclusion {
        entry: usize,
        index: LeafIndex,
        source: ProofError,
    },
}

/// One leaf and its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofEntry {
    pub index: LeafIndex,
    /// The leaf's encoded bytes (the log entry).
    pub leaf: Vec<u8>,
    pub proof: Vec<Hash>,
}

/// One borrower's commitment key and the addresses of some of their contact points.
#[derive(Clone, PartialEq, Eq)]
pub struct Reveal {
    pub borrower: BorrowerId,
    pub key: CommitmentKey,
    /// Contact id and canonical address.
    pub contacts: Vec<(ContactId, String)>,
}

impl std::fmt::Debug for Reveal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reveal(borrower {}, {} contacts, redacted)",
            self.borrower.0,
            self.contacts.len()
        )
    }
}

/// A parsed, not yet verified, proof file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    pub entries: Vec<ProofEntry>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
    pub reveal: Option<Reveal>,
}

/// A proof file that verified: the checkpoint (signed by the given key) and every leaf in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    pub checkpoint: Checkpoint,
    pub leaves: Vec<(LeafIndex, Leaf)>,
    /// The indices of the leaves whose address commitment was checked against a revealed address.
    pub revealed: Vec<LeafIndex>,
}

impl ProofFile {
    /// Builds the file for `leaves` (index and encoded bytes) against `signed_checkpoint`, with
    /// proofs read from `reader`. The checkpoint is not verified here; `verify` does that.
    pub fn build(
        reader: &(impl HashReader + ?Sized),
        signed_checkpoint: &str,
        leaves: &[(LeafIndex, Vec<u8>)],
    ) -> Result<ProofFile, ProofFileError> {
        let note = crate::note::Note::parse(signed_checkpoint.as_bytes())
            .map_err(|e| ProofFileError::Checkpoint(CheckpointError::Note(e)))?;
        let cp = Checkpoint::parse_text(&note.text)?;
        let mut entries = Vec::with_capacity(leaves.len());
        for (n, (index, leaf)) in leaves.iter().enumerate() {
            let proof =
                proof::inclusion_proof(reader, *index, cp.size).map_err(|source| ProofFileError::Inclusion {
                    entry: n,
                    index: *index,
                    source,
                })?;
            entries.push(ProofEntry {
                index: *index,
                leaf: leaf.clone(),
                proof,
            });
        }
        Ok(ProofFile {
            entries,
            checkpoint: signed_checkpoint.to_string(),
            reveal: None,
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s.push_str(HEADER);
            s.push('\n');
            s.push_str(&format!("extra {}\nindex {}\n", STANDARD.encode(&e.leaf), e.index.0));
            for h in &e.proof {
                s.push_str(&h.to_base64());
                s.push('\n');
            }
            s.push('\n');
            s.push_str(&self.checkpoint);
        }
        if let Some(r) = &self.reveal {
            s.push_str(&format!(
                "{REVEAL_HEADER}\nborrower {}\nkey {}\n",
                r.borrower.0,
                STANDARD.encode(r.key.as_bytes())
            ));
            for (id, address) in &r.contacts {
                s.push_str(&format!("contact {} {address}\n", id.0));
            }
        }
        s
    }

    /// Parses the blocks (syntax only).
    pub fn parse(text: &str) -> Result<ProofFile, ProofFileError> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let err = |line: usize, why: &str| ProofFileError::Format {
            line: line + 1,
            why: why.to_string(),
        };
        let mut at = 0;
        let mut entries = Vec::new();
        let mut first_checkpoint: Option<String> = None;
        let line = |i: usize| lines.get(i).and_then(|l| l.strip_suffix('\n'));
        let mut reveal = None;
        while at < lines.len() {
            if line(at) == Some(REVEAL_HEADER) && !entries.is_empty() {
                reveal = Some(parse_reveal(&lines[at + 1..], at + 1)?);
                break;
            }
            if line(at) != Some(HEADER) {
                return Err(err(at, "expected the line c2sp.org/tlog-proof@v1"));
            }
            at += 1;
            let extra = line(at).and_then(|l| l.strip_prefix("extra ")).ok_or_else(|| {
                err(
                    at,
                    "expected `extra <base64 leaf>` (Reachline's files always carry the leaf)",
                )
            })?;
            let leaf = STANDARD
                .decode(extra)
                .map_err(|_| err(at, "the extra data is not base64"))?;
            at += 1;
            let index = line(at)
                .and_then(|l| l.strip_prefix("index "))
                .ok_or_else(|| err(at, "expected `index <n>`"))?;
            if index.is_empty()
                || !index.bytes().all(|b| b.is_ascii_digit())
                || (index.len() > 1 && index.starts_with('0'))
            {
                return Err(err(at, "the index is not a decimal number without leading zeros"));
            }
            let index = LeafIndex(
                index
                    .parse()
                    .map_err(|_| err(at, "the index does not fit in 64 bits"))?,
            );
            at += 1;
            let mut proof = Vec::new();
            loop {
                match line(at) {
                    None => return Err(err(at, "the file ends inside the proof")),
                    Some("") => break,
                    Some(h) => proof.push(Hash::from_base64(h).map_err(|e| err(at, &format!("proof hash: {e}")))?),
                }
                at += 1;
            }
            at += 1;
            // The checkpoint: text lines up to its blank line, then signature lines.
            let start = at;
            while line(at).is_some_and(|l| !l.is_empty()) {
                at += 1;
            }
            if line(at).is_none() {
                return Err(err(at, "the file ends inside the checkpoint"));
            }
            at += 1;
            while line(at).is_some_and(|l| l.starts_with('\u{2014}')) {
                at += 1;
            }
            let cp: String = lines[start..at].concat();
            match &first_checkpoint {
                None => first_checkpoint = Some(cp),
                Some(first) if *first == cp => {}
                Some(_) => return Err(ProofFileError::DifferentCheckpoints { entry: entries.len() }),
            }
            entries.push(ProofEntry { index, leaf, proof });
        }
        let checkpoint = first_checkpoint.ok_or(ProofFileError::Empty)?;
        Ok(ProofFile {
            entries,
            checkpoint,
            reveal,
        })
    }
}

/// The lines after the reveal header (`first` is the 0-based line number of the first).
fn parse_reveal(lines: &[&str], first: usize) -> Result<Reveal, ProofFileError> {
    let err = |i: usize, why: &str| ProofFileError::Format {
        line: first + i + 1,
        why: why.to_string(),
    };
    let text = |i: usize| lines.get(i).and_then(|l| l.strip_suffix('\n'));
    let borrower = text(0)
        .and_then(|l| l.strip_prefix("borrower "))
        .and_then(|b| b.parse::<i64>().ok())
        .ok_or_else(|| err(0, "expected `borrower <id>`"))?;
    let key = text(1)
        .and_then(|l| l.strip_prefix("key "))
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| err(1, "expected `key <base64 of 32 bytes>`"))?;
    let mut contacts = Vec::new();
    for i in 2..lines.len() {
        let (id, address) = text(i)
            .and_then(|l| l.strip_prefix("contact "))
            .and_then(|l| l.split_once(' '))
            .ok_or_else(|| err(i, "expected `contact <id> <canonical address>`"))?;
        let id = id
            .parse::<i64>()
            .map_err(|_| err(i, "the contact id is not a number"))?;
        contacts.push((ContactId(id), address.to_string()));
    }
    Ok(Reveal {
        borrower: BorrowerId(borrower),
        key: CommitmentKey::from_bytes(key),
        contacts,
    })
}

/// Verifies a proof file with the log's key alone: the checkpoint's signature, then each leaf's
/// inclusion under the checkpoint's root, then each leaf's encoding.
pub fn verify(file: &str, key: &VerifierKey) -> Result<VerifiedProof, ProofFileError> {
    let parsed = ProofFile::parse(file)?;
    let cp = checkpoint::open(parsed.checkpoint.as_bytes(), std::slice::from_ref(key))?.checkpoint;
    let mut leaves = Vec::with_capacity(parsed.entries.len());
    for (n, e) in parsed.entries.iter().enumerate() {
        proof::verify_inclusion(e.index, cp.size, &leaf_hash(&e.leaf), &e.proof, &cp.root).map_err(|source| {
            ProofFileError::Inclusion {
                entry: n,
                index: e.index,
                source,
            }
        })?;
        let leaf = Leaf::decode(&e.leaf).map_err(|source| ProofFileError::Leaf {
            entry: n,
            index: e.index,
            source,
        })?;
        leaves.push((e.index, leaf));
    }
    let mut revealed = Vec::new();
    if let Some(r) = &parsed.reveal {
        for (n, (index, leaf)) in leaves.iter().enumerate() {
            let address = leaf
                .contact
                .filter(|_| leaf.borrower == r.borrower)
                .and_then(|c| r.contacts.iter().find(|(id, _)| *id == c));
            if let (Some((_, address)), Some(commitment)) = (address, &leaf.address_commitment) {
                if !r.key.verify_canonical(address, commitment) {
                    return Err(ProofFileError::Reveal {
                        entry: n,
                        index: *index,
                    });
                }
                revealed.push(*index);
            }
        }
    }
    Ok(VerifiedProof {
        checkpoint: cp,
        leaves,
        revealed,
    })
}
