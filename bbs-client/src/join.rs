//! Joining a cluster with a token (`lattice cell|brain|router --join HOST:PORT
//! --token T`), and renewing the certificate it brought.
//!
//! [`join`]: make a key, ask the BBS for its CA certificate (over TLS that checks
//! nothing yet: the answer is public and is checked against the SHA-256 the token
//! carries before anything secret is sent), then connect again trusting only that CA
//! and verifying the BBS's identity (`bbs.bbs.lattice`), and send the token with a
//! signing request for the key; the answer is a certificate naming the joiner.
//! [`renew`]: a new certificate for the same key and identity, asked over a channel
//! on which the current certificate authenticates the caller.

use std::sync::Arc;

use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::{Empty, JoinRequest, RenewCertificateRequest};
use lattice_specs::identity::Identity;
use lattice_specs::join::{CaFingerprint, JoinToken};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Channel, Endpoint};

use crate::error::BbsError;

pub use lattice_tls::bbs_identity;

/// What a joined machine keeps (PEM): its private key, its certificate, the CA's.
#[derive(Clone)]
pub struct Credentials {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// Never prints the private key.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Why joining or renewing failed. Nothing is issued.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("connecting to the BBS at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the BBS at {addr} presents CA {got}, but the join token expects CA {want}: it is not the cluster the token is from (or someone is in between); nothing was sent")]
    WrongCa {
        addr: String,
        got: CaFingerprint,
        want: CaFingerprint,
    },
    /// (Its message is the BBS's: not also a source, so it is printed once.)
    #[error("the BBS refused: {0}")]
    Refused(BbsError),
    #[error("the BBS's answer is unusable: {0}")]
    BadAnswer(String),
    #[error("making the key or signing request: {0}")]
    Key(String),
}

impl From<BbsError> for JoinError {
    fn from(e: BbsError) -> JoinError {
        JoinError::Refused(e)
    }
}

/// A connection to `addr` (host:port) over TLS with `config`, verifying the server as
/// `server`. (A component connects with its own certificate; a joiner has none yet,
/// and first trusts nothing.)
pub async fn tls_channel(
    addr: &str,
    config: ClientConfig,
    server: &Identity,
) -> Result<Channel, JoinError> {
    let connect_err = |reason: String| JoinError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let tls = lattice_tls::client::ClientTls::from_config(config, server.clone());
    Endpoint::from_shared(lattice_specs::http_url(addr))
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(tls.connector())
        .await
        .map_err(|e| connect_err(format!("{e}: {}", source_chain(&e))))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

use lattice_tls::config::provider;

fn client_config(
    verifier: Option<Arc<dyn ServerCertVerifier>>,
    roots: RootCertStore,
) -> Result<ClientConfig, JoinError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Key(e.to_string()))?;
    Ok(match verifier {
        Some(v) => builder.dangerous().with_custom_certificate_verifier(v),
        None => builder.with_root_certificates(roots),
    }
    .with_no_client_auth())
}

/// Accepts whatever certificate the server shows (still checking the handshake's
/// signatures): used only to fetch the CA certificate, which is public and is
/// checked against the token's fingerprint before anything else is sent.
#[derive(Debug)]
struct FetchOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for FetchOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A fresh private key (ECDSA P-256), PKCS#8 PEM.
pub fn new_key_pem() -> Result<String, JoinError> {
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Key(e.to_string()))?;
    Ok(key.serialize_pem())
}

/// A signing request for `key_pem` naming `identity` (the CA writes the names itself).
pub fn csr_pem(key_pem: &str, identity: &Identity) -> Result<String, JoinError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| JoinError::Key(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![identity.dns_name()])
        .map_err(|e| JoinError::Key(e.to_string()))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| JoinError::Key(e.to_string()))?;
    csr.pem().map_err(|e| JoinError::Key(e.to_string()))
}

fn ca_der(ca_pem: &str) -> Result<CertificateDer<'static>, JoinError> {
    CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| JoinError::BadAnswer(format!("the CA certificate: {e}")))
}

/// Joins the cluster whose BBS is at `addr` with `token` as `identity`: the key made
/// here and the certificate the BBS issued for it.
pub async fn join(
    addr: &str,
    token: &JoinToken,
    identity: &Identity,
) -> Result<Credentials, JoinError> {
    let key_pem = new_key_pem()?;
    let csr = csr_pem(&key_pem, identity)?;
    // 1. The CA, over a channel that checks nothing, checked against the token.
    let fetch = client_config(
        Some(Arc::new(FetchOnly(provider()))),
        RootCertStore::empty(),
    )?;
    let channel = tls_channel(addr, fetch, &bbs_identity()).await?;
    let ca_pem = BbsClient::new(channel)
        .join_ca(Empty {})
        .await
        .map_err(BbsError::from)?
        .into_inner()
        .ca_pem;
    let der = ca_der(&ca_pem)?;
    let got = CaFingerprint::of_der(&der);
    if got != token.ca {
        return Err(JoinError::WrongCa {
            addr: addr.to_string(),
            got,
            want: token.ca,
        });
    }
    // 2. The token, only to a BBS holding a certificate of that CA.
    let mut roots = RootCertStore::empty();
    roots
        .add(der)
        .map_err(|e| JoinError::BadAnswer(format!("the CA certificate: {e}")))?;
    let channel = tls_channel(addr, client_config(None, roots)?, &bbs_identity()).await?;
    let issued = BbsClient::new(channel)
        .join(JoinRequest {
            token: token.to_string(),
            role: identity.role.to_string(),
            name: identity.name.clone(),
            csr_pem: csr,
        })
        .await
        .map_err(BbsError::from)?
        .into_inner();
    if issued.ca_pem.trim() != ca_pem.trim() {
        return Err(JoinError::BadAnswer(
            "the certificate came with another CA than the one checked".into(),
        ));
    }
    Ok(Credentials {
        key_pem,
        cert_pem: issued.cert_pem,
        ca_pem,
    })
}

/// A new certificate for the key `key_pem` and `identity`, from the BBS behind
/// `client` (a channel on which the current certificate authenticates the caller).
pub async fn renew(
    client: &mut BbsClient<Channel>,
    key_pem: &str,
    identity: &Identity,
) -> Result<String, JoinError> {
    let csr = csr_pem(key_pem, identity)?;
    let issued = client
        .renew_certificate(RenewCertificateRequest { csr_pem: csr })
        .await
        .map_err(BbsError::from)?
        .into_inner();
    Ok(issued.cert_pem)
}
