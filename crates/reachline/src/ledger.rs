//! `reachline ledger …`: the signed checkpoint and its key, a notice's evidence bundle, offline
//! verification, consistency proofs in the form a C2SP witness takes them, and the audit.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;
use reachline_domain::{BorrowerId, Channel, ContactId, ExternalId};
use reachline_ledger::checkpoint;
use reachline_ledger::leaf::{Code, Leaf, LeafKind};
use reachline_ledger::note::VerifierKey;
use reachline_ledger::proof::verify_consistency;
use reachline_ledger::proof_file::{self, Reveal};
use reachline_ledger::tiles::{encode_bundle, Tile, TILE_WIDTH};
use reachline_ledger::{leaf_hash, Hash, TreeSize};
use reachline_store::ledger::{self, LedgerStore, Sequencer, StoredCheckpoint};

use crate::config::Config;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Print the log's verifier key (name+hexid+base64), for verifiers and witnesses.
    Key,
    /// Print the latest signed checkpoint (or the one of --size).
    Checkpoint {
        #[arg(long)]
        size: Option<u64>,
    },
    /// Write the evidence bundle of a notice: every leaf with that notice id, each with its
    /// inclusion proof, and the signed checkpoint they prove against (C2SP tlog-proof blocks).
    Bundle {
        notice: i64,
        #[arg(long)]
        out: PathBuf,
        /// Add the borrower's commitment key and the addresses the leaves commit to (personal
        /// data: only for a dispute).
        #[arg(long)]
        reveal_address: bool,
    },
    /// Verify a bundle or proof file offline, with the log's verifier key alone.
    Verify {
        file: PathBuf,
        /// The verifier key (name+hexid+base64), or a file holding it.
        #[arg(long)]
        key: String,
    },
    /// Prove that checkpoint OLD is a prefix of checkpoint NEW; each is a tree size of a stored
    /// checkpoint or a file holding a signed checkpoint. Prints the proof as a C2SP witness's
    /// add-checkpoint request body: `old <size>`, the proof hashes, a blank line, NEW.
    Consistency { old: String, new: String },
    /// Re-hash the whole log and check it against every stored checkpoint, the stored tiles,
    /// and checkpoints kept elsewhere (--known FILE, repeatable).
    Audit {
        #[arg(long)]
        known: Vec<PathBuf>,
    },
    /// Write the log under DIR in the C2SP tlog-tiles layout, for a static file server to
    /// publish: `checkpoint`, the hash tiles `tile/<L>/<N>[.p/<W>]` and the entry bundles
    /// `tile/entries/<N>[.p/<W>]` of the latest checkpoint. Run it again to bring DIR up to date:
    /// full tiles and bundles never change, so those already there are kept; the checkpoint is
    /// written last, so DIR never shows a checkpoint whose tiles are missing.
    Publish { dir: PathBuf },
    /// Append synthetic leaves in a loop, printing `ack <index> <size>` for each acknowledged
    /// append (the crash test's child).
    #[command(hide = true)]
    Stress {
        /// Stop after this many appends (default: run until killed).
        #[arg(long)]
        leaves: Option<u64>,
        #[arg(long, default_value_t = 8)]
        writers: u64,
        /// Make the leaves about this borrower (external id), committing to their first
        /// contact's address.
        #[arg(long)]
        borrower: Option<String>,
        #[arg(long, default_value_t = 0)]
        notice: i64,
    },
}

/// `verify` works without configuration, database or network.
pub fn verify(file: &Path, key: &str) -> anyhow::Result<()> {
    let key_text = match std::fs::read_to_string(key) {
        Ok(text) => text.trim().to_string(),
        Err(_) => key.trim().to_string(),
    };
    let key = VerifierKey::parse(&key_text).context("the verifier key")?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let v = proof_file::verify(&text, &key).with_context(|| format!("{} does not verify", file.display()))?;
    println!(
        "verified: {} leaves in the log {} at tree size {} (root {}), signed by {}",
        v.leaves.len(),
        v.checkpoint.origin,
        v.checkpoint.size,
        v.checkpoint.root,
        key
    );
    for (index, leaf) in &v.leaves {
        let at = chrono::DateTime::from_timestamp_micros(leaf.time_micros)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| leaf.time_micros.to_string());
        println!(
            "  leaf {index}: {} at {at}, borrower {}, notice {}, contact {}",
            leaf.kind.describe(),
            leaf.borrower.0,
            leaf.notice.map_or("-".into(), |n| n.to_string()),
            leaf.contact.map_or("-".into(), |c| c.0.to_string()),
        );
    }
    if !v.revealed.is_empty() {
        println!(
            "  the revealed address matches the commitment of {} leaves",
            v.revealed.len()
        );
    }
    Ok(())
}

async fn open_ledger(cfg: &Config) -> anyhow::Result<Arc<dyn LedgerStore>> {
    let store = reachline_store::open_ledger(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening the ledger in {}", cfg.database.url.redacted()))?;
    Ok(Arc::from(store))
}

async fn latest(store: &dyn LedgerStore) -> anyhow::Result<StoredCheckpoint> {
    store
        .latest_checkpoint()
        .await?
        .context("the ledger has no checkpoint yet (nothing was ever appended)")
}

/// A checkpoint named by a stored size or a file.
async fn named_checkpoint(store: &dyn LedgerStore, key: &VerifierKey, arg: &str) -> anyhow::Result<StoredCheckpoint> {
    if let Ok(size) = arg.parse::<u64>() {
        return store
            .checkpoint_at(TreeSize(size))
            .await?
            .with_context(|| format!("no checkpoint of size {size} was published"));
    }
    let note = std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?;
    let v = checkpoint::open(note.as_bytes(), std::slice::from_ref(key)).with_context(|| arg.to_string())?;
    Ok(StoredCheckpoint {
        size: v.checkpoint.size,
        root: v.checkpoint.root,
        note,
    })
}

pub async fn run(cfg: &Config, cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Verify { file, key } => verify(&file, &key),
        LedgerCommand::Key => {
            println!("{}", cfg.ledger_signer()?.verifier());
            Ok(())
        }
        LedgerCommand::Checkpoint { size } => {
            let store = open_ledger(cfg).await?;
            let cp = match size {
                Some(s) => store
                    .checkpoint_at(TreeSize(s))
                    .await?
                    .with_context(|| format!("no checkpoint of size {s} was published"))?,
                None => latest(store.as_ref()).await?,
            };
            print!("{}", cp.note);
            Ok(())
        }
        LedgerCommand::Bundle {
            notice,
            out,
            reveal_address,
        } => bundle(cfg, notice, &out, reveal_address).await,
        LedgerCommand::Consistency { old, new } => {
            let store = open_ledger(cfg).await?;
            let key = cfg.ledger_signer()?.verifier();
            let old = named_checkpoint(store.as_ref(), &key, &old).await?;
            let new = named_checkpoint(store.as_ref(), &key, &new).await?;
            if old.size > new.size {
                bail!(
                    "the old checkpoint (size {}) is larger than the new one ({})",
                    old.size,
                    new.size
                );
            }
            let proof = ledger::consistency_proof(store.as_ref(), old.size, new.size).await?;
            if old.size.0 > 0 {
                verify_consistency(old.size, new.size, &proof, &old.root, &new.root).with_context(|| {
                    format!(
                        "the checkpoint of size {} is not a prefix of the one of size {}",
                        old.size, new.size
                    )
                })?;
            }
            let mut s = format!("old {}\n", old.size);
            for h in &proof {
                s.push_str(&h.to_base64());
                s.push('\n');
            }
            s.push('\n');
            s.push_str(&new.note);
            print!("{s}");
            Ok(())
        }
        LedgerCommand::Audit { known } => {
            let store = open_ledger(cfg).await?;
            let key = cfg.ledger_signer()?.verifier();
            let known: Vec<String> = known
                .iter()
                .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
                .collect::<anyhow::Result<_>>()?;
            let report = ledger::audit(store.as_ref(), &key, &known).await?;
            for p in &report.problems {
                println!("{p}");
            }
            let latest = report
                .latest
                .as_ref()
                .map_or("none".to_string(), |c| format!("size {} root {}", c.size, c.root));
            if !report.is_clean() {
                bail!(
                    "the audit found {} problems in {} leaves and {} checkpoints (latest {latest})",
                    report.problems.len(),
                    report.leaves,
                    report.checkpoints
                );
            }
            println!(
                "audit: {} leaves re-hashed; all {} checkpoints are signed and consistent with the latest ({latest})",
                report.leaves, report.checkpoints
            );
            Ok(())
        }
        LedgerCommand::Publish { dir } => {
            let store = open_ledger(cfg).await?;
            let p = publish(store.as_ref(), &dir).await?;
            println!(
                "published the log at tree size {} to {}: {} files written, {} full tiles and bundles already there",
                p.size,
                dir.display(),
                p.written,
                p.kept
            );
            Ok(())
        }
        LedgerCommand::Stress {
            leaves,
            writers,
            borrower,
            notice,
        } => stress(cfg, leaves, writers, borrower, notice).await,
    }
}

async fn bundle(cfg: &Config, notice: i64, out: &Path, reveal_address: bool) -> anyhow::Result<()> {
    let store = open_ledger(cfg).await?;
    let mut file = ledger::bundle(store.as_ref(), notice).await?;
    if reveal_address {
        let leaves: Vec<Leaf> = file
            .entries
            .iter()
            .map(|e| Leaf::decode(&e.leaf))
            .collect::<Result<_, _>>()
            .context("a stored leaf does not decode")?;
        let mut borrowers: Vec<BorrowerId> = leaves.iter().map(|l| l.borrower).collect();
        borrowers.sort();
        borrowers.dedup();
        let [borrower] = borrowers[..] else {
            bail!(
                "the notice's leaves name {} borrowers; a reveal is for one",
                borrowers.len()
            );
        };
        let mut ids: Vec<ContactId> = leaves.iter().filter_map(|l| l.contact).collect();
        ids.sort();
        ids.dedup();
        let main = crate::open_store(cfg).await?;
        let contacts = main.contacts(borrower).await?;
        let key = store.commitment_key(borrower).await?;
        file.reveal = Some(Reveal {
            borrower,
            key,
            contacts: contacts
                .iter()
                .filter(|c| ids.contains(&c.id))
                .map(|c| (c.id, c.point.address.canonical()))
                .collect(),
        });
    }
    let text = file.to_text();
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    let size = file
        .entries
        .first()
        .map(|_| checkpoint_size(&file.checkpoint))
        .unwrap_or_default();
    println!(
        "wrote {} leaves of notice {notice} to {} (tree size {size}{}); verify with: reachline ledger verify {} --key '{}'",
        file.entries.len(),
        out.display(),
        if reveal_address { ", with the address reveal" } else { "" },
        out.display(),
        cfg.ledger_signer()?.verifier()
    );
    Ok(())
}

/// What [`publish`] did.
pub struct Published {
    pub size: TreeSize,
    pub written: usize,
    pub kept: usize,
}

/// Writes the latest checkpoint's tiles and entry bundles, then the checkpoint, under `dir`.
/// Each bundle's leaves are checked against the level-0 tile beside it before either is
/// written, so a damaged database is refused (naming the leaf) rather than published.
pub async fn publish(store: &dyn LedgerStore, dir: &Path) -> anyhow::Result<Published> {
    let cp = latest(store).await?;
    let mut out = Published {
        size: cp.size,
        written: 0,
        kept: 0,
    };
    let tiles = Tile::all_in_tree(cp.size);
    for chunk in tiles.chunks(TILE_WIDTH as usize) {
        let keys: Vec<_> = chunk.iter().map(|t| (t.level, t.index)).collect();
        let stored = store.read_tiles(&keys).await?;
        for (tile, data) in chunk.iter().zip(stored) {
            let full = u64::from(tile.width) == TILE_WIDTH;
            let hashes = usize::from(tile.width) * Hash::LEN;
            let data = data
                .filter(|d| d.len() >= hashes)
                .with_context(|| format!("{} is not stored in full (see reachline ledger audit)", tile.path()))?;
            let data = &data[..hashes];
            let mut files = vec![(tile.path(), data.to_vec())];
            if tile.level.0 == 0 {
                let first = tile.index.0 * TILE_WIDTH;
                let leaves = store.leaves(first, u64::from(tile.width)).await?;
                for (k, hash) in data.chunks(Hash::LEN).enumerate() {
                    let index = first + k as u64;
                    let leaf = leaves
                        .get(k)
                        .filter(|l| l.index.0 == index)
                        .with_context(|| format!("leaf {index} is missing (see reachline ledger audit)"))?;
                    if leaf_hash(&leaf.data).0 != hash {
                        bail!("leaf {index} does not hash to its tile (see reachline ledger audit)");
                    }
                }
                let entries: Vec<&[u8]> = leaves.iter().map(|l| l.data.as_slice()).collect();
                files.push((tile.entries_path(), encode_bundle(&entries)?));
            }
            for (path, bytes) in files {
                let path = dir.join(path);
                if full && path.exists() {
                    out.kept += 1;
                } else {
                    crate::write_replacing(&path, &bytes)?;
                    out.written += 1;
                }
            }
        }
    }
    crate::write_replacing(&dir.join("checkpoint"), cp.note.as_bytes())?;
    out.written += 1;
    Ok(out)
}

fn checkpoint_size(note: &str) -> u64 {
    note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0)
}

/// A synthetic leaf: a send or a receipt of notice `notice`.
pub fn synthetic_leaf(k: u64, borrower: BorrowerId, notice: i64, contact: ContactId, commitment: Hash) -> Leaf {
    let send = k % 3 == 0;
    Leaf {
        kind: if send {
            LeafKind::NoticeSent
        } else {
            LeafKind::Receipt {
                status: Code::parse(if k % 3 == 1 { "accepted" } else { "delivered" }).expect("a valid code"),
            }
        },
        time_micros: 1_767_225_600_000_000 + (k as i64) * 1_000,
        borrower,
        notice: Some(notice),
        contact: Some(contact),
        channel: Some(Channel::Sms),
        provider_message_id: Some(format!("smsc-{:x}", k / 3)),
        template: send.then(|| reachline_ledger::leaf::TemplateRef {
            id: Code::parse("due_reminder.zh-cn").expect("a valid code"),
            version: 2,
        }),
        content_hash: send.then(|| reachline_ledger::leaf::content_hash(&format!("notice {notice}"))),
        address_commitment: send.then_some(commitment),
    }
}

async fn stress(
    cfg: &Config,
    leaves: Option<u64>,
    writers: u64,
    borrower: Option<String>,
    notice: i64,
) -> anyhow::Result<()> {
    let store = open_ledger(cfg).await?;
    let (borrower, contact, commitment) = match borrower {
        Some(ext) => {
            let main = crate::open_store(cfg).await?;
            let b = main
                .borrower_by_external_id(&ExternalId::parse(&ext)?)
                .await?
                .context("no such borrower")?;
            let c = main
                .contacts(b.id)
                .await?
                .into_iter()
                .next()
                .context("the borrower has no contacts")?;
            let key = store.commitment_key(b.id).await?;
            (b.id, c.id, key.commit(&c.point.address))
        }
        None => (BorrowerId(1), ContactId(1), Hash([7; 32])),
    };
    let seq = Sequencer::start(store, cfg.ledger_signer()?, cfg.sequencer_config()).await?;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let seq = seq.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if leaves.is_some_and(|n| k >= n) {
                    return Ok::<(), anyhow::Error>(());
                }
                let n = if notice == 0 { (k / 3) as i64 + 1 } else { notice };
                let a = seq.append(&synthetic_leaf(k, borrower, n, contact, commitment)).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {} {}", a.index, a.checkpoint.size)?;
                out.flush()?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
