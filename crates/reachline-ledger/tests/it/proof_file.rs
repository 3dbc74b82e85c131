//! The offline proof file of a notice: built from a tree, verified with the key alone, and
//! refused, with the failing part named, after any tampering.

use reachline_domain::{BorrowerId, Channel, ContactId};
use reachline_ledger::checkpoint::Checkpoint;
use reachline_ledger::leaf::{content_hash, Code, CommitmentKey, Leaf, LeafKind, TemplateRef};
use reachline_ledger::note::SignerKey;
use reachline_ledger::proof::ProofError;
use reachline_ledger::proof_file::{verify, ProofFile, ProofFileError};
use reachline_ledger::{leaf_hash, LeafIndex, MemoryTree};

fn leaf(kind: LeafKind, t: i64) -> Leaf {
    Leaf {
        kind,
        time_micros: t,
        borrower: BorrowerId(42),
        notice: Some(7),
        contact: Some(ContactId(3)),
        channel: Some(Channel::Sms),
        provider_message_id: Some("smsc-0001".into()),
        template: Some(TemplateRef {
            id: Code::parse("due_reminder").unwrap(),
            version: 2,
        }),
        content_hash: Some(content_hash("Your installment is due on 5 January.")),
        address_commitment: Some(CommitmentKey::from_bytes([9; 32]).commit_canonical("+8613800138000")),
    }
}

struct Fixture {
    signer: SignerKey,
    text: String,
    sent: Leaf,
    receipt: Leaf,
}

/// A log of 13 leaves where leaf 3 is the send and leaf 9 its receipt; the file proves both.
fn fixture() -> Fixture {
    let signer = SignerKey::from_seed("reachline.test/ledger", &[5; 32]).unwrap();
    let sent = leaf(LeafKind::NoticeSent, 1_767_225_600_000_000);
    let receipt = leaf(
        LeafKind::Receipt {
            status: Code::parse("delivered").unwrap(),
        },
        1_767_225_603_000_000,
    );
    let mut tree = MemoryTree::new();
    for i in 0..13u64 {
        let bytes = match i {
            3 => sent.encode().unwrap(),
            9 => receipt.encode().unwrap(),
            _ => {
                let mut other = leaf(LeafKind::ContactAdded, i as i64);
                other.borrower = BorrowerId(i as i64);
                other.encode().unwrap()
            }
        };
        tree.append(leaf_hash(&bytes));
    }
    let cp = Checkpoint::new("reachline.test/ledger", tree.size(), tree.root()).unwrap();
    let signed = cp.sign(&signer).unwrap();
    let file = ProofFile::build(
        &tree,
        &signed,
        &[
            (LeafIndex(3), sent.encode().unwrap()),
            (LeafIndex(9), receipt.encode().unwrap()),
        ],
    )
    .unwrap();
    Fixture {
        signer,
        text: file.to_text(),
        sent,
        receipt,
    }
}

#[test]
fn a_proof_file_verifies_with_the_key_alone() {
    let f = fixture();
    let v = verify(&f.text, &f.signer.verifier()).unwrap();
    assert_eq!(v.checkpoint.size.0, 13);
    assert_eq!(v.leaves, vec![(LeafIndex(3), f.sent), (LeafIndex(9), f.receipt)]);
    assert_eq!(ProofFile::parse(&f.text).unwrap().to_text(), f.text);
    // Each block is a standard tlog-proof: header, extra, index, 4 proof hashes, blank line,
    // the 3-line checkpoint, blank line, one signature.
    assert_eq!(f.text.lines().count(), 2 * (1 + 1 + 1 + 4 + 1 + 3 + 1 + 1));
    assert!(f.text.starts_with("c2sp.org/tlog-proof@v1\nextra AQE"));
}

fn rejected(text: &str, f: &Fixture) -> ProofFileError {
    verify(text, &f.signer.verifier()).unwrap_err()
}

#[test]
fn a_changed_leaf_is_caught_and_named() {
    let f = fixture();
    let mut file = ProofFile::parse(&f.text).unwrap();
    file.entries[1].leaf[20] ^= 1;
    let e = rejected(&file.to_text(), &f);
    assert!(
        matches!(
            e,
            ProofFileError::Inclusion {
                entry: 1,
                index: LeafIndex(9),
                source: ProofError::RootMismatch { .. }
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("entry 1 (index 9) is not proved in the checkpointed tree"),
        "{e}"
    );
}

#[test]
fn a_changed_proof_hash_is_caught_and_named() {
    let f = fixture();
    let mut file = ProofFile::parse(&f.text).unwrap();
    file.entries[0].proof[2].0[31] ^= 1;
    let e = rejected(&file.to_text(), &f);
    assert!(
        matches!(
            e,
            ProofFileError::Inclusion {
                entry: 0,
                index: LeafIndex(3),
                ..
            }
        ),
        "{e}"
    );
    let mut file = ProofFile::parse(&f.text).unwrap();
    file.entries[0].proof.pop();
    let e = rejected(&file.to_text(), &f);
    assert_eq!(
        e.to_string(),
        "entry 0 (index 3) is not proved in the checkpointed tree: the proof has 3 hashes, but a inclusion proof has 4"
    );
    let mut file = ProofFile::parse(&f.text).unwrap();
    file.entries[0].index = LeafIndex(2);
    assert!(matches!(
        rejected(&file.to_text(), &f),
        ProofFileError::Inclusion {
            index: LeafIndex(2),
            ..
        }
    ));
}

#[test]
fn a_changed_checkpoint_or_a_wrong_key_is_caught() {
    let f = fixture();
    // Another size in both blocks' checkpoints: the signature no longer holds.
    let e = rejected(&f.text.replace("\n13\n", "\n14\n"), &f);
    assert!(matches!(e, ProofFileError::Checkpoint(_)), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");
    // Only one block's checkpoint changed.
    let first_cp = f.text.find("\n13\n").unwrap();
    let mut one = f.text.clone();
    one.replace_range(first_cp..first_cp + 4, "\n14\n");
    assert_eq!(rejected(&one, &f), ProofFileError::DifferentCheckpoints { entry: 1 });
    // A key of another name, and one of the same name but another secret.
    let other = SignerKey::from_seed("reachline.test/other", &[5; 32]).unwrap();
    let e = verify(&f.text, &other.verifier()).unwrap_err();
    assert!(e.to_string().contains("no signature of a known key"), "{e}");
    let impostor = SignerKey::from_seed("reachline.test/ledger", &[6; 32]).unwrap();
    assert!(verify(&f.text, &impostor.verifier()).is_err());
}

#[test]
fn malformed_files_say_where() {
    let f = fixture();
    assert_eq!(rejected("", &f), ProofFileError::Empty);
    let e = rejected(&f.text.replacen("index 3", "index 03", 1), &f);
    assert_eq!(
        e.to_string(),
        "line 3: the index is not a decimal number without leading zeros"
    );
    let e = rejected(&f.text[..f.text.len() / 3], &f);
    assert!(matches!(e, ProofFileError::Format { .. }), "{e}");
    let e = rejected(
        &f.text.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        &f,
    );
    assert_eq!(e.to_string(), "line 1: expected the line c2sp.org/tlog-proof@v1");
}

/// An address reveal after the blocks: the right key and address check every leaf of that
/// contact; another address is refused with the entry named; the file round-trips.
#[test]
fn an_address_reveal_checks_the_commitments() {
    let f = fixture();
    let mut file = ProofFile::parse(&f.text).unwrap();
    file.reveal = Some(reachline_ledger::proof_file::Reveal {
        borrower: BorrowerId(42),
        key: CommitmentKey::from_bytes([9; 32]),
        contacts: vec![(ContactId(3), "+8613800138000".into())],
    });
    let text = file.to_text();
    assert_eq!(ProofFile::parse(&text).unwrap(), file);
    let v = verify(&text, &f.signer.verifier()).unwrap();
    assert_eq!(v.revealed, vec![LeafIndex(3), LeafIndex(9)]);
    let wrong = text.replace("+8613800138000", "+8613800138001");
    assert!(matches!(
        verify(&wrong, &f.signer.verifier()),
        Err(ProofFileError::Reveal { entry: 0, .. })
    ));
}
