//! A component's TLS files (its certificate, its key, the cluster CA) and
//! [`ReloadingCert`], the certificate that follows its files: a renewed certificate
//! written over the old one (atomically: [`crate::ca::write_file_atomic`]) is used by
//! the next handshake, while connections already open carry on.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use lattice_specs::identity::Identity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::ca::{write_file_atomic, CaError, IssuedKeyPair, CA_CERT_FILE};
use crate::config::{provider, TlsError};

/// How often a handshake may look at the files for a renewal.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where a component's certificate, key and CA certificate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `DIR/NAME.pem`, `DIR/NAME.key` and `DIR/ca.pem`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(CA_CERT_FILE),
        }
    }

    /// Whether the certificate and key files are there.
    pub fn exist(&self) -> bool {
        self.cert.exists() && self.key.exists() && self.ca.exists()
    }

    /// Writes the key (0600), then the certificate and the CA (0644), each atomically.
    pub fn write(&self, issued: &IssuedKeyPair, ca_pem: &str) -> Result<(), CaError> {
        for p in [&self.cert, &self.key, &self.ca] {
            if let Some(dir) = dir_of(p) {
                crate::ca::ensure_private_dir(dir)?;
            }
        }
        write_file_atomic(&self.key, issued.key_pem.as_bytes(), 0o600)?;
        write_file_atomic(&self.cert, issued.cert.cert_pem.as_bytes(), 0o644)?;
        if fs::read_to_string(&self.ca).ok().as_deref() != Some(ca_pem) {
            write_file_atomic(&self.ca, ca_pem.as_bytes(), 0o644)?;
        }
        Ok(())
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificate chain in `cert_pem` with the key in `key_pem`, checked to belong
/// together, and the identity the certificate names.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Arc<CertifiedKey>, Identity), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    let first = chain.first().ok_or(TlsError::Pem {
        what: "certificate",
        reason: "no CERTIFICATE block".into(),
    })?;
    let identity = crate::peer::identity_of_cert(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "key",
        reason: e.to_string(),
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Rustls)?;
    Ok((Arc::new(ck), identity))
}

/// What identifies a file's version: a renewal written by rename changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

struct Watch {
    cert: PathBuf,
    key: PathBuf,
    /// When the files were last looked at, and their versions then.
    seen: Mutex<(Instant, Option<Stamp>, Option<Stamp>)>,
}

/// A component's certificate and key, replaced when its files change (or by
/// [`ReloadingCert::replace`]); always for the same identity.
pub struct ReloadingCert {
    identity: Identity,
    current: RwLock<Arc<CertifiedKey>>,
    watch: Option<Watch>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// A certificate held in memory only.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ReloadingCert, TlsError> {
        let (ck, identity) = certified_key(cert_pem, key_pem)?;
        Ok(ReloadingCert {
            identity,
            current: RwLock::new(ck),
            watch: None,
        })
    }

    /// The certificate in `cert` with the key in `key`, reloaded when they change.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let (s_cert, s_key) = (stamp(cert), stamp(key));
        let (ck, identity) = certified_key(&read(cert)?, &read(key)?)?;
        Ok(ReloadingCert {
            identity,
            current: RwLock::new(ck),
            watch: Some(Watch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                seen: Mutex::new((Instant::now(), s_cert, s_key)),
            }),
        })
    }

    /// The identity the certificate names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The certificate to present now (after looking for a renewal on disk at most
    /// every [`RELOAD_CHECK_EVERY`]).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.reload_if_changed();
        self.current.read().unwrap().clone()
    }

    /// Uses `cert_pem` + `key_pem` from now on; refused if they do not belong together
    /// or name another identity.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let (ck, identity) = certified_key(cert_pem, key_pem)?;
        if identity != self.identity {
            return Err(TlsError::OtherIdentity {
                expected: self.identity.clone(),
                found: identity,
            });
        }
        *self.current.write().unwrap() = ck;
        Ok(())
    }

    /// Reloads the files if they changed since last looked at (not more often than
    /// [`RELOAD_CHECK_EVERY`]). A half-written or mismatched pair is left for the
    /// next look; the certificate in use stays.
    fn reload_if_changed(&self) {
        let Some(w) = &self.watch else { return };
        let mut seen = w.seen.lock().unwrap();
        if seen.0.elapsed() < RELOAD_CHECK_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let (s_cert, s_key) = (stamp(&w.cert), stamp(&w.key));
        if (s_cert, s_key) == (seen.1, seen.2) {
            return;
        }
        let loaded = read(&w.cert)
            .and_then(|c| read(&w.key).map(|k| (c, k)))
            .and_then(|(c, k)| self.replace(&c, &k));
        match loaded {
            Ok(()) => {
                (seen.1, seen.2) = (s_cert, s_key);
                crate::metrics::CERT_RELOADS
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(cert = %w.cert.display(), identity = %self.identity, "reloaded renewed certificate");
            }
            Err(e) => {
                crate::metrics::CERT_RELOADS
                    .with_label_values(&["invalid"])
                    .inc();
                tracing::warn!(cert = %w.cert.display(), error = %e, "certificate files changed but cannot be used; keeping the current certificate");
            }
        }
    }
}

/// The directory `path` is in, to create if missing; None for a bare file name
/// (`--out bbs`: the empty parent is the working directory, which exists).
fn dir_of(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_bare_file_name_needs_no_directory() {
        assert_eq!(super::dir_of(Path::new("bbs.pem")), None);
        assert_eq!(super::dir_of(Path::new("d/bbs.pem")), Some(Path::new("d")));
        assert_eq!(super::dir_of(Path::new("/bbs.pem")), Some(Path::new("/")));
    }
}
