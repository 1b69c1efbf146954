//! The apps' certificates on disk: `CERT,KEY` pairs of PEM files given one by
//! one, and directories holding `NAME.crt` + `NAME.key` pairs or `NAME/`
//! subdirectories with `fullchain.pem` + `privkey.pem` (certbot's `live/`
//! layout), read into an [`SniCerts`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{CertError, SniCerts};

/// Reads one certificate chain (PEM, leaf first) and its private key (PEM:
/// PKCS#8, PKCS#1 or SEC1), checking that the key is the certificate's.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let shown = |p: &Path| p.display().to_string();
    let read_err = |p: &Path, e: rustls::pki_types::pem::Error| CertError::Read {
        file: shown(p),
        error: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(cert, e))?;
    if chain.is_empty() {
        return Err(CertError::Empty { file: shown(cert) });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified =
        CertifiedKey::from_der(chain, private, &provider).map_err(|e| CertError::KeyMismatch {
            cert: shown(cert),
            key: shown(key),
            error: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

/// The `(certificate, key)` pairs in `dir`, in name order: `NAME.crt` with
/// `NAME.key`, and `NAME/fullchain.pem` with `NAME/privkey.pem`. Other files
/// are left alone; a `.crt` without its `.key` is an error.
pub fn pairs_in(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, CertError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CertError::Read {
        file: dir.display().to_string(),
        error: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    let mut pairs = vec![];
    for p in paths {
        if p.is_dir() {
            let (chain, key) = (p.join("fullchain.pem"), p.join("privkey.pem"));
            if chain.is_file() {
                if !key.is_file() {
                    return Err(CertError::MissingKey {
                        cert: chain.display().to_string(),
                        key: key.display().to_string(),
                    });
                }
                pairs.push((chain, key));
            }
        } else if p.extension().is_some_and(|e| e == "crt") {
            let key = p.with_extension("key");
            if !key.is_file() {
                return Err(CertError::MissingKey {
                    cert: p.display().to_string(),
                    key: key.display().to_string(),
                });
            }
            pairs.push((p, key));
        }
    }
    if pairs.is_empty() {
        return Err(CertError::NoCertificates {
            dir: dir.display().to_string(),
        });
    }
    Ok(pairs)
}

/// Every certificate of `pairs` and of the directories `dirs`, by name.
pub fn load(pairs: &[(PathBuf, PathBuf)], dirs: &[PathBuf]) -> Result<SniCerts, CertError> {
    let mut all = pairs.to_vec();
    for d in dirs {
        all.extend(pairs_in(d)?);
    }
    let mut certs = SniCerts::default();
    for (cert, key) in &all {
        certs.add(load_pair(cert, key)?, &cert.display().to_string())?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate for `names` as `cert` and `key`.
    fn write(cert: &Path, key: &Path, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(cert, c.cert.pem()).unwrap();
        std::fs::write(key, c.signing_key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_directory_of_pairs_and_certbot_folders_is_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(&d.join("b.crt"), &d.join("b.key"), &["b.test"]);
        std::fs::create_dir(d.join("a")).unwrap();
        write(
            &d.join("a/fullchain.pem"),
            &d.join("a/privkey.pem"),
            &["a.test", "*.a.test"],
        );
        std::fs::write(d.join("README"), "not a certificate").unwrap();
        std::fs::create_dir(d.join("empty")).unwrap();
        let certs = load(&[], &[d.to_path_buf()]).unwrap();
        assert_eq!(certs.names(), ["a.test", "*.a.test", "b.test"]);
        assert!(certs.choose("x.a.test").is_some());
    }

    #[test]
    fn missing_keys_mismatched_keys_and_empty_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = load(&[], &[d.to_path_buf()]).unwrap_err().to_string();
        assert!(
            err.contains("no certificate") && err.contains(&d.display().to_string()),
            "{err}"
        );

        write(&d.join("a.crt"), &d.join("other.key"), &["a.test"]);
        let err = load(&[], &[d.to_path_buf()]).unwrap_err().to_string();
        assert!(err.contains("a.key"), "{err}");

        write(&d.join("b.crt"), &d.join("b.key"), &["b.test"]);
        let err = load(&[(d.join("a.crt"), d.join("b.key"))], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.crt") && err.contains("b.key"), "{err}");

        let err = load(&[(d.join("nope.crt"), d.join("b.key"))], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.crt"), "{err}");
    }
}
