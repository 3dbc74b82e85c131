//! C2SP checkpoints (`c2sp.org/tlog-checkpoint`): the note text `origin\nsize\nbase64 root\n`,
//! signed as a signed note.
//!
//! Decision: Reachline writes exactly these three lines. The spec lets a log add extension lines
//! after the third; when parsing another log's checkpoint they are kept (so the text round
//! trips and its signature still verifies) but carry no meaning here.

use crate::hash::{Hash, TreeSize};
use crate::note::{self, NoteError, SignerKey, VerifiedNote, VerifierKey};

/// What is wrong with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint's signature: {0}")]
    Note(#[from] NoteError),
}

/// A log's claim that its tree of `size` leaves has root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: TreeSize,
    pub root: Hash,
    /// Lines after the third, as another log wrote them (each without its newline).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: &str, size: TreeSize, root: Hash) -> Result<Checkpoint, CheckpointError> {
        if origin.is_empty() || origin.contains('\n') || origin.chars().any(char::is_control) {
            return Err(CheckpointError::Malformed("the origin must be one non-empty line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The note text: three lines (and any extension lines it was parsed with).
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size.0, self.root.to_base64());
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint's note text (not the signatures).
    pub fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("the text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("no origin line"))?;
        let size = lines.next().ok_or(CheckpointError::Malformed("no size line"))?;
        let canonical =
            !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) && (size == "0" || !size.starts_with('0'));
        if !canonical {
            return Err(CheckpointError::Malformed(
                "the size is not a decimal number without leading zeros",
            ));
        }
        let size = size
            .parse::<u64>()
            .map_err(|_| CheckpointError::Malformed("the size does not fit in 64 bits"))?;
        let root = lines.next().ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root =
            Hash::from_base64(root).map_err(|_| CheckpointError::Malformed("the root is not a base64 32-byte hash"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size: TreeSize(size),
            root,
            extensions,
        })
    }

    /// Signs the checkpoint, giving the signed note's bytes.
    pub fn sign(&self, signer: &SignerKey) -> Result<String, CheckpointError> {
        Ok(note::sign(&self.to_text(), &[signer])?)
    }
}

/// A checkpoint whose note verified against a known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: VerifiedNote,
}

/// Verifies a signed checkpoint against `keys` and parses it.
pub fn open(msg: &[u8], keys: &[VerifierKey]) -> Result<VerifiedCheckpoint, CheckpointError> {
    let note = note::open(msg, keys)?;
    Ok(VerifiedCheckpoint {
        checkpoint: Checkpoint::parse_text(&note.text)?,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::empty_root;

    #[test]
    fn three_lines_exactly() {
        let c = Checkpoint::new("reachline.test/log", TreeSize(0), empty_root()).unwrap();
        assert_eq!(
            c.to_text(),
            "reachline.test/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse_text(&c.to_text()).unwrap(), c);
    }

    #[test]
    fn extension_lines_are_kept_but_do_not_matter() {
        let text = "o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nextra one\n";
        let c = Checkpoint::parse_text(text).unwrap();
        assert_eq!(c.extensions, vec!["extra one".to_string()]);
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let r = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        for bad in [
            format!("o\n05\n{r}\n"),
            format!("o\n+5\n{r}\n"),
            format!("o\n-1\n{r}\n"),
            format!("o\n18446744073709551616\n{r}\n"),
            format!("\n5\n{r}\n"),
            "o\n5\nZG9uJ3QgY2FyZSAy\n".to_string(),
            format!("o\n5\n{r}"),
            "o\n5\n".to_string(),
        ] {
            assert!(Checkpoint::parse_text(&bad).is_err(), "{bad:?}");
        }
    }
}
