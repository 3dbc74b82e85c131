//! The key file: the master key, the blind-index key and the ledger's signing key, as
//! `reachline keys init` writes them.
//!
//! Key files written before the ledger existed have no `ledger_signing_key`; they keep working
//! for everything else, and `reachline keys add-ledger-key` adds one (the ledger commands say
//! so when it is missing). Reachline never generates a signing key on its own: a new key is a
//! new log identity, which witnesses and auditors must be told about.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use reachline_store::{Keyring, Secret32};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub key_id: String,
    pub master_key: String,
    pub blind_index_key: String,
    /// The 32-byte Ed25519 seed (base64) that signs the ledger's checkpoints; the key's name
    /// is the configured `[ledger] origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_signing_key: Option<String>,
    /// Master keys being retired by a rotation in progress (`reachline keys rotate-master`):
    /// they still open the data keys not yet re-wrapped. Gone once the rotation finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_master_keys: Vec<PreviousMaster>,
    /// The blind-index key a rotation in progress (`reachline keys rotate-blind-index`) is
    /// moving away from. Gone once it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_blind_index_key: Option<String>,
}

/// A retired master key, kept until every data key is re-wrapped under the current one.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PreviousMaster {
    pub key_id: String,
    pub master_key: String,
}

/// How to tell the operator a key file has no ledger key.
pub const NO_LEDGER_KEY: &str = "has no ledger_signing_key (it predates the ledger): run \
     `reachline keys add-ledger-key` to add one, or set REACHLINE_KEYS__LEDGER_SIGNING_KEY";

impl KeyFile {
    pub fn generate(key_id: &str) -> Self {
        Self {
            version: 1,
            key_id: key_id.into(),
            master_key: Secret32::random().to_base64(),
            blind_index_key: Secret32::random().to_base64(),
            ledger_signing_key: Some(Secret32::random().to_base64()),
            previous_master_keys: Vec::new(),
            previous_blind_index_key: None,
        }
    }

    /// Starts a master-key rotation: a new current master key named `new_id`, the old one kept
    /// as previous. Refuses while a rotation is in progress.
    pub fn begin_rotation(&mut self, new_id: &str) -> anyhow::Result<()> {
        if !self.previous_master_keys.is_empty() {
            bail!("a rotation is in progress; finish it first");
        }
        if new_id == self.key_id {
            bail!(
                "the new master key needs a new name (the current one is {:?})",
                self.key_id
            );
        }
        self.previous_master_keys.push(PreviousMaster {
            key_id: std::mem::replace(&mut self.key_id, new_id.to_string()),
            master_key: std::mem::replace(&mut self.master_key, Secret32::random().to_base64()),
        });
        Ok(())
    }

    /// Replaces the key file at `path` with this one: written beside it (mode 600), synced,
    /// then renamed over it, so a crash leaves the old file or the new, never half of one.
    pub fn replace(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp-rotation");
        let _ = std::fs::remove_file(&tmp);
        let body = self.text()?;
        let mut f = create_private(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Adds a new ledger signing key to the key file at `path`, keeping everything else;
    /// refuses if it has one.
    pub fn add_ledger_key(path: &Path) -> anyhow::Result<()> {
        let kf = Self::read(path)?;
        if kf.ledger_signing_key.is_some() {
            bail!(
                "{} already has a ledger signing key; refusing to replace it",
                path.display()
            );
        }
        let mut text = std::fs::read_to_string(path)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "ledger_signing_key = \"{}\"\n",
            Secret32::random().to_base64()
        ));
        // Write beside it (mode 600), then rename over it: never a half-written key file.
        let tmp = path.with_extension("tmp-ledger-key");
        let _ = std::fs::remove_file(&tmp);
        let mut f = create_private(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The ledger's signer, named `origin`.
    pub fn ledger_signer(&self, path: &Path, origin: &str) -> anyhow::Result<reachline_ledger::note::SignerKey> {
        let seed = self
            .ledger_signing_key
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("key file {} {NO_LEDGER_KEY}", path.display()))?;
        signer_from_seed(seed, origin)
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let kf: KeyFile = toml::from_str(&text).context("key file is not valid")?;
        if kf.version != 1 {
            bail!("key file version {} is not supported (expected 1)", kf.version);
        }
        Ok(kf)
    }

    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        let m = Secret32::from_base64(&self.master_key, "master_key")?;
        let b = Secret32::from_base64(&self.blind_index_key, "blind_index_key")?;
        let mut ring = Keyring::new(&self.key_id, &m, &b);
        for p in &self.previous_master_keys {
            let old = Secret32::from_base64(&p.master_key, "previous_master_keys.master_key")?;
            ring = ring.with_previous(&p.key_id, &old)?;
        }
        Ok(ring)
    }

    /// The file's text: a warning, then the keys.
    fn text(&self) -> anyhow::Result<String> {
        Ok(format!(
            "# Reachline keys. Anyone with this file and the database can read borrowers' personal data;\n\
             # without it nobody can. Keep it apart from database backups.\n{}",
            toml::to_string(self)?
        ))
    }

    /// Writes the file readable by its owner only; refuses to overwrite an existing one.
    pub fn write_new(&self, path: &Path) -> anyhow::Result<()> {
        let body = self.text()?;
        let mut f = create_private(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} already exists; refusing to overwrite keys", path.display())
            }
            _ => anyhow::Error::from(e).context(format!("creating {}", path.display())),
        })?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }
}

/// `reachline keys rotate-master`: starts a rotation (a new master key in the key file, the old
/// kept as previous) unless one is in progress, re-wraps data keys in batches with a progress
/// bar, and, when none is left under an old key, drops the old key from the file. Stopped at
/// any point (`--batches`, Ctrl-C, a crash), it resumes where it stopped when run again: the
/// key file holds both keys until the end, and each batch is one transaction.
pub async fn rotate_master(
    cfg: &crate::config::Config,
    path: &Path,
    new_id: Option<String>,
    batch: usize,
    max_batches: Option<u64>,
) -> anyhow::Result<()> {
    let mut kf = rotating(cfg, path)?;
    let url = cfg.database.url.as_str();
    if kf.previous_master_keys.is_empty() {
        // Check the keys open this database before changing anything.
        reachline_store::open_all(url, kf.keyring()?)
            .await
            .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
        let id = new_id.unwrap_or_else(|| format!("k-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
        let old = kf.key_id.clone();
        kf.begin_rotation(&id)?;
        kf.replace(path)?;
        eprintln!(
            "rotation started: new master key {id:?} written to {}; {old:?} kept until every data key is re-wrapped",
            path.display()
        );
    } else if new_id.is_some() {
        bail!(
            "a rotation to {:?} is in progress: run without --new-key-id to resume it",
            kf.key_id
        );
    } else {
        eprintln!("resuming the rotation to {:?}", kf.key_id);
    }
    let stores = reachline_store::open_all(url, kf.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    let counts = stores.privacy.wrapped_key_counts().await?;
    let left: u64 = counts.iter().filter(|(id, _)| *id != kf.key_id).map(|(_, n)| n).sum();
    let bar = indicatif::ProgressBar::new(left).with_style(
        indicatif::ProgressStyle::with_template("re-wrapping data keys {bar:40} {pos}/{len} ({per_sec}, {eta} left)")
            .expect("valid template"),
    );
    let mut batches = 0u64;
    loop {
        if max_batches.is_some_and(|m| batches >= m) {
            bar.abandon();
            println!("stopped after {batches} batch(es); run `reachline keys rotate-master` again to resume");
            return Ok(());
        }
        let n = stores.privacy.rewrap_batch(batch).await?;
        if n == 0 {
            break;
        }
        bar.inc(n);
        batches += 1;
    }
    bar.finish();
    let counts = stores.privacy.wrapped_key_counts().await?;
    if let Some((id, n)) = counts.iter().find(|(id, _)| *id != kf.key_id) {
        bail!("{n} data key(s) are still under {id:?} (another process wrapping with an old key file?); run again");
    }
    for p in &kf.previous_master_keys {
        stores.privacy.retire_master_check(&p.key_id).await?;
    }
    let retired: Vec<String> = kf.previous_master_keys.drain(..).map(|p| p.key_id).collect();
    kf.replace(path)?;
    println!(
        "rotation finished: every data key is wrapped under {:?}; {:?} removed from {}",
        kf.key_id,
        retired,
        path.display()
    );
    println!(
        "backups written before the rotation need the old master key: take a new backup (`reachline backup`) \
         and retire the old ones, or keep them with the old key file, apart"
    );
    Ok(())
}

/// `reachline keys rotate-blind-index`: a new blind-index key in the key file (the old one kept
/// until the end), every borrower's numbers, email addresses and ID number re-indexed under it
/// in batches with a progress bar (decrypted with their data key, never written in clear), then
/// the old key removed. Until it finishes every other command refuses the database, since
/// lookups would miss borrowers not re-indexed yet; interrupted, it resumes when run again.
pub async fn rotate_blind(
    cfg: &crate::config::Config,
    path: &Path,
    batch: usize,
    max_batches: Option<u64>,
) -> anyhow::Result<()> {
    let mut kf = rotating(cfg, path)?;
    let url = cfg.database.url.as_str();
    if kf.previous_blind_index_key.is_none() {
        reachline_store::open_all(url, kf.keyring()?)
            .await
            .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
        let old = std::mem::replace(&mut kf.blind_index_key, Secret32::random().to_base64());
        kf.previous_blind_index_key = Some(old);
        kf.replace(path)?;
        eprintln!(
            "blind-index rotation started: a new key is in {}, the old one kept until the end",
            path.display()
        );
    } else {
        eprintln!("resuming the blind-index rotation");
    }
    let old = Secret32::from_base64(
        kf.previous_blind_index_key.as_deref().unwrap_or_default(),
        "previous_blind_index_key",
    )?;
    let master = Secret32::from_base64(&kf.master_key, "master_key")?;
    let old_check = Keyring::new(&kf.key_id, &master, &old).blind_check();
    let stores = reachline_store::open_all_for_key_rotation(url, kf.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    stores.privacy.begin_blind_rotation(old_check).await?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("re-indexing borrowers {bar:40} {pos}/{len} ({per_sec}, {eta} left)")
            .expect("valid template"),
    );
    let mut batches = 0u64;
    loop {
        if max_batches.is_some_and(|m| batches >= m) {
            bar.abandon();
            println!("stopped after {batches} batch(es); run `reachline keys rotate-blind-index` again to resume");
            return Ok(());
        }
        let (n, left) = stores.privacy.reindex_batch(batch).await?;
        if n == 0 {
            break;
        }
        bar.set_length(bar.position() + n + left);
        bar.inc(n);
        batches += 1;
    }
    bar.finish();
    let registry = stores.privacy.finish_blind_rotation().await?;
    kf.previous_blind_index_key = None;
    kf.replace(path)?;
    println!(
        "blind-index rotation finished: every borrower is indexed under the new key; the old key is removed from {}",
        path.display()
    );
    if registry > 0 {
        println!(
            "the disconnection registry ({registry} records, kept only as indexes under the old key) was emptied: \
             load it again (`reachline intel load-disconnects FILE`)"
        );
    }
    Ok(())
}

/// The key file a rotation works on (keys given through the environment cannot be rotated
/// here: their owner holds them).
fn rotating(cfg: &crate::config::Config, path: &Path) -> anyhow::Result<KeyFile> {
    if cfg.keys.master_key.is_some() {
        bail!("the keys come from the environment (REACHLINE_KEYS__MASTER_KEY): rotation works on a key file");
    }
    KeyFile::read(path).with_context(|| format!("reading key file {}", path.display()))
}

/// Creates `path` readable by its owner only (mode 600); fails if it exists.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// A signer from a base64 seed and the log's origin.
pub fn signer_from_seed(seed: &str, origin: &str) -> anyhow::Result<reachline_ledger::note::SignerKey> {
    let bytes: [u8; 32] = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, seed.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("ledger_signing_key is not base64 of 32 bytes"))?;
    reachline_ledger::note::SignerKey::from_seed(origin, &bytes)
        .map_err(|e| anyhow::anyhow!("ledger.origin {origin:?} cannot name a signing key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let kf = KeyFile::generate("k1");
        kf.write_new(&p).unwrap();
        let back = KeyFile::read(&p).unwrap();
        assert_eq!(back.master_key, kf.master_key);
        assert!(back.keyring().is_ok());
        assert!(kf
            .write_new(&p)
            .unwrap_err()
            .to_string()
            .contains("refusing to overwrite"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn an_old_key_file_gets_a_ledger_key_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let mut kf = KeyFile::generate("k1");
        kf.ledger_signing_key = None;
        kf.write_new(&p).unwrap();
        let old = KeyFile::read(&p).unwrap();
        let e = old.ledger_signer(&p, "reachline.test/ledger").unwrap_err();
        assert!(e.to_string().contains("reachline keys add-ledger-key"), "{e}");
        KeyFile::add_ledger_key(&p).unwrap();
        let new = KeyFile::read(&p).unwrap();
        assert_eq!(new.master_key, kf.master_key);
        assert!(new.ledger_signer(&p, "reachline.test/ledger").is_ok());
        assert!(KeyFile::add_ledger_key(&p).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
