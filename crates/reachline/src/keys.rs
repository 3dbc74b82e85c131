//! The key file: the master key and the blind-index key, as `reachline keys init` writes them.

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
}

impl KeyFile {
    pub fn generate(key_id: &str) -> Self {
        Self {
            version: 1,
            key_id: key_id.into(),
            master_key: Secret32::random().to_base64(),
            blind_index_key: Secret32::random().to_base64(),
        }
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
        Ok(Keyring::new(&self.key_id, &m, &b))
    }

    /// Writes the file readable by its owner only; refuses to overwrite an existing one.
    pub fn write_new(&self, path: &Path) -> anyhow::Result<()> {
        let body = format!(
            "# Reachline keys. Anyone with this file and the database can read borrowers' personal data;\n\
             # without it nobody can. Keep it apart from database backups.\n{}",
            toml::to_string(self)?
        );
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| match e.kind() {
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
}
