//! The ssh proxy's host key: ECDSA P-256 (`ecdsa-sha2-nistp256`), the one host-key
//! algorithm both the original `ltc` (2015 golang.org/x/crypto: ECDSA or `ssh-rsa`
//! with SHA-1 only) and today's OpenSSH (which refuses SHA-1 `ssh-rsa`) accept. Made
//! once, kept in OpenSSH's private-key format in its file (0600), so clients that
//! recorded it keep trusting the proxy across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};

/// Why the host key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("the ssh host key file {path}: {why}")]
    Io { path: String, why: std::io::Error },
    #[error("the ssh host key file {path} is not an OpenSSH private key ({why}): move it away and a new key is made")]
    Unreadable { path: String, why: String },
    #[error("the ssh host key file {path} holds a {algorithm} key: the proxy's must be ECDSA P-256 (ecdsa-sha2-nistp256), which the original ltc and OpenSSH both accept; move it away and a new key is made")]
    WrongAlgorithm { path: String, algorithm: String },
    #[error("making an ssh host key: {0}")]
    Generate(String),
}

fn the_algorithm() -> Algorithm {
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    }
}

/// The key in `path`, made (0600, its directory 0700 when made) when there is none.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let shown = path.display().to_string();
    let io = |why| HostKeyError::Io {
        path: shown.clone(),
        why,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
                HostKeyError::Unreadable {
                    path: shown.clone(),
                    why: e.to_string(),
                }
            })?;
            if key.algorithm() != the_algorithm() {
                return Err(HostKeyError::WrongAlgorithm {
                    path: shown,
                    algorithm: key.algorithm().to_string(),
                });
            }
            crate::private::restrict(path, crate::private::FILE_MODE).map_err(io)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), the_algorithm())
                .map_err(|e| HostKeyError::Generate(e.to_string()))?;
            let text = key
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| HostKeyError::Generate(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::private::create_dir_all(dir).map_err(io)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::private::FILE_MODE)
                .open(path)
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(path = %shown, fingerprint = %key.fingerprint(russh::keys::HashAlg::Sha256), "made the ssh proxy's host key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh").join("host_key");
        let made = load_or_create(&path).unwrap();
        assert_eq!(made.algorithm(), the_algorithm());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(again.public_key(), made.public_key(), "the same key");

        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, HostKeyError::Unreadable { .. }), "{e}");

        let ed = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .unwrap()
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap();
        std::fs::write(&path, ed.as_bytes()).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, HostKeyError::WrongAlgorithm { .. }), "{e}");
    }
}
