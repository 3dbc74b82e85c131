//! The ledger's text formats from outside: signed notes (C2SP `signed-note`), tlog checkpoints
//! (C2SP `tlog-checkpoint`), verifier and signer keys, and proof files, with their writers.

use std::sync::OnceLock;

use reachline_ledger::checkpoint::{self, Checkpoint};
use reachline_ledger::note::{self, Note, SignerKey, VerifierKey};
use reachline_ledger::proof_file::ProofFile;

/// A fixed key (the fuzz corpus's notes that verify are signed with it).
pub fn signer() -> &'static SignerKey {
    static K: OnceLock<SignerKey> = OnceLock::new();
    K.get_or_init(|| SignerKey::from_seed("reachline.test/log", &[7; 32]).expect("a valid key name"))
}

fn check_checkpoint_text(text: &str) {
    let Ok(c) = Checkpoint::parse_text(text) else { return };
    // parse → format → parse is the same checkpoint, and the text is the text read (the
    // signature over it must still verify).
    let written = c.to_text();
    assert_eq!(Checkpoint::parse_text(&written).as_ref(), Ok(&c));
    assert_eq!(written, text, "a checkpoint's text does not round-trip");
    // Signed with our key and opened again, it is the same checkpoint. A note holds no control
    // character but the newline, so a checkpoint text read bare (not from a note) that has one
    // is refused by the signer, not signed.
    let k = signer();
    let signable = !written.chars().any(|ch| ch != '\n' && ch.is_control());
    match c.sign(k) {
        Ok(signed) => {
            assert!(signable, "a note with a control character was signed");
            let opened = checkpoint::open(signed.as_bytes(), &[k.verifier()]).expect("our own signature verifies");
            assert_eq!(opened.checkpoint, c);
        }
        Err(e) => assert!(!signable, "a parsed checkpoint does not sign: {e}"),
    }
}

pub fn check(data: &[u8]) {
    // Notes: parse → write is the same bytes, and parses to the same note.
    if let Ok(n) = Note::parse(data) {
        let written = n.to_text();
        assert_eq!(written.as_bytes(), data, "a note does not round-trip");
        assert_eq!(Note::parse(written.as_bytes()).as_ref(), Ok(&n));
        assert!(!n.signatures.is_empty());
        check_checkpoint_text(&n.text);
    }
    let keys = [signer().verifier()];
    if let Ok(v) = note::open(data, &keys) {
        assert!(!v.verified.is_empty());
    }
    if let Ok(v) = checkpoint::open(data, &keys) {
        assert!(!v.note.verified.is_empty());
    }

    let Ok(text) = std::str::from_utf8(data) else { return };
    check_checkpoint_text(text);

    for line in text.lines().take(4) {
        if let Ok(k) = VerifierKey::parse(line) {
            assert_eq!(VerifierKey::parse(&k.to_string()).as_ref(), Ok(&k));
        }
        if let Ok(k) = SignerKey::parse(line) {
            let again = SignerKey::parse(&k.to_private_string()).expect("a signer key written reads back");
            assert_eq!(again.verifier(), k.verifier());
        }
    }

    if let Ok(p) = ProofFile::parse(text) {
        let written = p.to_text();
        assert_eq!(
            ProofFile::parse(&written).as_ref(),
            Ok(&p),
            "a proof file does not round-trip"
        );
        let _ = reachline_ledger::proof_file::verify(text, &keys[0]);
    }
}
