//! Keeping a joined machine's certificate fresh without a restart: once two thirds
//! of its lifetime have passed (`lattice_specs::join::renew_at`), ask the BBS for a
//! new one for the same key and identity ([`crate::join::renew`]) and replace the
//! certificate file; the TLS layer reloads it for new handshakes while open streams
//! continue on the old one. A failed renewal is retried, at most a minute apart.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::identity::Identity;
use lattice_specs::join::renew_at;
use lattice_tls::files::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tonic::transport::Channel;

use crate::join::{renew, JoinError};

/// The longest wait between two tries of a failed renewal.
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// The validity of the certificate in `cert_pem`, Unix seconds: (not before, not after).
pub fn validity(cert_pem: &str) -> Result<(i64, i64), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When the certificate in `cert_pem`, received at `received` (Unix seconds), should
/// be renewed. Its lifetime counts from when it was received, not from its
/// `not_before` (which the CA sets a few minutes early for clock skew).
pub fn due(cert_pem: &str, received: i64) -> Result<i64, String> {
    let (not_before, not_after) = validity(cert_pem)?;
    Ok(renew_at(not_before.max(received), not_after))
}

/// Reads the certificate and when it is due for renewal.
fn next_renewal(files: &TlsFiles) -> Result<i64, String> {
    let pem = std::fs::read_to_string(&files.cert).map_err(|e| e.to_string())?;
    let received = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .map(unix)
        .map_err(|e| e.to_string())?;
    due(&pem, received)
}

/// Writes `bytes` to `path` (mode 0600) by a rename, so a reader sees the old file
/// or the new one, never a part.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), JoinError> {
    lattice_tls::ca::write_file_atomic(path, bytes, 0o600)
        .map_err(|e| JoinError::Key(e.to_string()))
}

/// Renews once: a new certificate for the key in `files`, written over the old one.
pub async fn renew_once(
    client: &mut BbsClient<Channel>,
    files: &TlsFiles,
    identity: &Identity,
) -> Result<(), JoinError> {
    let key = std::fs::read_to_string(&files.key)
        .map_err(|e| JoinError::Key(format!("{}: {e}", files.key.display())))?;
    let cert = renew(client, &key, identity).await?;
    write_private(&files.cert, cert.as_bytes())?;
    Ok(())
}

/// Renews the certificate in `files` whenever it is due, for ever (spawn it; drop the
/// task to stop). `client` must authenticate with that certificate.
pub async fn keep_renewed(mut client: BbsClient<Channel>, files: TlsFiles, identity: Identity) {
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match next_renewal(&files) {
            Ok(at) => Duration::from_secs((at - unix(SystemTime::now())).max(0) as u64),
            Err(e) => {
                tracing::warn!(cert = %files.cert.display(), error = %e, "cannot read the certificate to renew");
                RETRY_AT_MOST
            }
        };
        tokio::time::sleep(wait).await;
        match renew_once(&mut client, &files, &identity).await {
            Ok(()) => {
                retry = Duration::from_secs(1);
                tracing::info!(%identity, cert = %files.cert.display(), "certificate renewed");
            }
            Err(e) => {
                tracing::warn!(%identity, error = %e, retry_in = ?retry, "renewing the certificate failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_AT_MOST);
            }
        }
    }
}
