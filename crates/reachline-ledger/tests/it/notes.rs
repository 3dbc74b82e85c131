//! Signed notes and checkpoints against other implementations, byte for byte: the Go
//! `sumdb/note` test keys (golang.org/x/mod `sumdb/note/note_test.go`, BSD-3-Clause), the C2SP
//! signed-note example (`C2SP/C2SP signed-note.md`), a real Go checksum database head and every
//! checkpoint of the tessera test log.

use reachline_ledger::checkpoint::{self, Checkpoint};
use reachline_ledger::note::{self, Note, NoteError, SignerKey, VerifierKey};
use reachline_ledger::TreeSize;

use crate::read;

const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str =
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_NOTE: &str = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
pub const TESSERA_VKEY: &str = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";

#[test]
fn go_signer_signs_byte_for_byte() {
    let signer = SignerKey::parse(PETER_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);
    assert_eq!(signer.to_private_string(), PETER_SKEY);
    assert_eq!(note::sign(TEXT, &[&signer]).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
}

#[test]
fn go_keys_parse_and_manglings_do_not() {
    for k in [PETER_VKEY, ENOCH_VKEY, SPEC_VKEY, SUMDB_VKEY, TESSERA_VKEY] {
        assert_eq!(VerifierKey::parse(k).unwrap().to_string(), k);
    }
    // As Go's TestNewVerifier: every proper substring and every one-byte change is refused.
    let b = PETER_VKEY.as_bytes();
    for i in 0..b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(VerifierKey::parse(&s).is_err(), "{s}");
            }
        }
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(VerifierKey::parse(&s).is_err(), "{s}");
    }
    let e = VerifierKey::parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==");
    assert!(e.is_err());
    let e = VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
    assert_eq!(e, Err(NoteError::UnsupportedAlgorithm(0x65)));
    let b = PETER_SKEY.as_bytes();
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(SignerKey::parse(&s).is_err(), "{s}");
    }
}

#[test]
fn unknown_signatures_are_ignored_and_bad_ones_reject() {
    let peter = VerifierKey::parse(PETER_VKEY).unwrap();
    let enoch = VerifierKey::parse(ENOCH_VKEY).unwrap();
    let msg = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let n = note::open(msg.as_bytes(), std::slice::from_ref(&peter)).unwrap();
    assert_eq!(n.text, TEXT);
    assert_eq!((n.verified.len(), n.unverified.len()), (1, 1));
    assert_eq!(n.unverified[0].name, "EnochRoot");
    let n = note::open(msg.as_bytes(), &[peter.clone(), enoch]).unwrap();
    assert_eq!(n.verified.len(), 2);
    let e = note::open(msg.as_bytes(), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no signature of a known key: the note is signed only by PeterNeumann+c74f20a3, EnochRoot+af0cfe78"
    );
    // A known key whose signature fails rejects the note (Go's "ABCD" splice).
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let e = note::open(bad.as_bytes(), std::slice::from_ref(&peter)).unwrap_err();
    assert_eq!(e, NoteError::BadSignature("PeterNeumann+c74f20a3".into()));
    // Go's malformed messages.
    for m in [
        TEXT.to_string(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!("{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
    ] {
        let e = note::open(m.as_bytes(), std::slice::from_ref(&peter)).unwrap_err();
        assert!(matches!(e, NoteError::Malformed(_)), "{m:?}: {e}");
    }
    assert!(note::open(b"\xff bad\n\n", std::slice::from_ref(&peter)).is_err());
    // Re-signing replaces the signer's own earlier signature.
    let mut n = Note::parse(format!("{TEXT}\n{PETER_SIG}").as_bytes()).unwrap();
    n.sign(&SignerKey::parse(PETER_SKEY).unwrap()).unwrap();
    assert_eq!(n.to_text(), format!("{TEXT}\n{PETER_SIG}"));
}

#[test]
fn the_c2sp_example_note_verifies() {
    let k = VerifierKey::parse(SPEC_VKEY).unwrap();
    assert_eq!(k.key_id(), 0x530d903a);
    let n = note::open(SPEC_NOTE.as_bytes(), &[k]).unwrap();
    assert_eq!(n.text, "This is an example message.\n");
    let tampered = SPEC_NOTE.replace("example message", "example massage");
    assert!(note::open(tampered.as_bytes(), &[VerifierKey::parse(SPEC_VKEY).unwrap()]).is_err());
}

#[test]
fn a_real_go_checksum_database_head_verifies() {
    let key = VerifierKey::parse(SUMDB_VKEY).unwrap();
    let bytes = read("ledger-real/sumdb-checkpoint-65664258.note");
    let c = checkpoint::open(&bytes, &[key]).unwrap();
    assert_eq!(c.checkpoint.origin, "go.sum database tree");
    assert_eq!(c.checkpoint.size, TreeSize(65664258));
    assert_eq!(
        c.checkpoint.root.to_base64(),
        "WVVNVD2qx+fTq31zkj6UAqxT5X6HvGphGM+o8Thnbsg="
    );
    assert_eq!(c.note.verified[0].name, "sum.golang.org");
    // Byte-exact round trip of the text, so a re-serialised head still verifies.
    assert_eq!(Note::parse(&bytes).unwrap().to_text().as_bytes(), &bytes[..]);
}

#[test]
fn every_tessera_checkpoint_verifies() {
    let key = VerifierKey::parse(TESSERA_VKEY).unwrap();
    for n in 0..=15u64 {
        let bytes = read(&format!("ledger-real/tessera-log/checkpoint.{n}"));
        let c = checkpoint::open(&bytes, std::slice::from_ref(&key)).unwrap();
        assert_eq!(c.checkpoint.origin, "example.com/log/testdata");
        assert_eq!(c.checkpoint.size, TreeSize(n));
        assert!(c.checkpoint.extensions.is_empty());
        assert_eq!(Checkpoint::parse_text(&c.note.text).unwrap().to_text(), c.note.text);
    }
    let latest = checkpoint::open(&read("ledger-real/tessera-log/checkpoint"), &[key]).unwrap();
    assert_eq!(latest.checkpoint.size, TreeSize(15));
    // Another log's key is unknown here: its signature is ignored and the note refused.
    let other = VerifierKey::parse(SUMDB_VKEY).unwrap();
    let e = checkpoint::open(&read("ledger-real/tessera-log/checkpoint"), &[other]).unwrap_err();
    assert!(e.to_string().contains("no signature of a known key"), "{e}");
}

#[test]
fn our_checkpoints_sign_and_open() {
    let signer = SignerKey::from_seed("reachline.test/ledger", &[42; 32]).unwrap();
    let c = Checkpoint::new("reachline.test/ledger", TreeSize(3), reachline_ledger::leaf_hash(b"x")).unwrap();
    let signed = c.sign(&signer).unwrap();
    assert_eq!(signed.lines().count(), 5);
    let opened = checkpoint::open(signed.as_bytes(), &[signer.verifier()]).unwrap();
    assert_eq!(opened.checkpoint, c);
}
