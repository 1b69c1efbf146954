//! The cluster's backup key: every repository's password. It lives only in a file the
//! operator owns (`lattice bbs --backup-key-file PATH`, `lattice up` keeps it in its
//! data directory): 32 random bytes as 64 hex digits, made (0600) when the file does
//! not exist. The BBS's store never holds it, so a copy of the store (or of etcd)
//! opens no backup; every BBS of a cluster is given the same file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// The key (shown only by `Display`-free accessors: Debug hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct BackupKey(String);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(…)")
    }
}

fn check(key: &str) -> Result<(), String> {
    if key.len() >= 32 && key.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("a backup key is one line of at least 32 printable characters (lattice makes 64 hex digits)".into())
    }
}

impl BackupKey {
    /// Reads the key from `path`, making the file (0600, 64 random hex digits) when it
    /// does not exist. A file that exists but holds no key is refused.
    pub fn load_or_create(path: &Path) -> anyhow::Result<BackupKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = text.trim();
                check(key).map_err(|why| {
                    anyhow::anyhow!("--backup-key-file {}: {why}", path.display())
                })?;
                crate::private::restrict(path, crate::private::FILE_MODE)?;
                Ok(BackupKey(key.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = rand::random();
                let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::private::create_dir_all(dir)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(crate::private::FILE_MODE)
                    .open(path)
                    .with_context(|| format!("making the backup key file {}", path.display()))?;
                writeln!(f, "{key}")?;
                f.sync_all()?;
                tracing::info!(path = %path.display(), "made the cluster's backup key");
                Ok(BackupKey(key))
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading --backup-key-file {}", path.display()))
            }
        }
    }

    /// The password every repository opens with.
    pub fn password(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/backup.key");
        let k = BackupKey::load_or_create(&path).unwrap();
        assert_eq!(k.password().len(), 64);
        assert!(k.password().chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            BackupKey::load_or_create(&path).unwrap(),
            k,
            "the same key after"
        );
        assert!(!format!("{k:?}").contains(k.password()), "Debug hides it");
        std::fs::write(&path, "short\n").unwrap();
        let e = BackupKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("--backup-key-file") && e.contains("at least 32"),
            "{e}"
        );
    }
}
