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

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::hash::{leaf_hash, Hash, LeafIndex};
use crate::leaf::{Leaf, LeafError};
use crate::note::VerifierKey;
use crate::proof::{self, HashReader, ProofError};

/// The first line of every block.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

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

/// A parsed, not yet verified, proof file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    pub entries: Vec<ProofEntry>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

/// A proof file that verified: the checkpoint (signed by the given key) and every leaf in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    pub checkpoint: Checkpoint,
    pub leaves: Vec<(LeafIndex, Leaf)>,
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
        while at < lines.len() {
            let line = |i: usize| lines.get(i).and_then(|l| l.strip_suffix('\n'));
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
        Ok(ProofFile { entries, checkpoint })
    }
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
    Ok(VerifiedProof { checkpoint: cp, leaves })
}
