//! rustls configurations for a component ([`NodeTls`]): a server requiring (or, for
//! joining, merely allowing) client certificates from the cluster CA, and clients
//! presenting the component's certificate and trusting only the CA. Both take the
//! certificate from a [`ReloadingCert`] at every handshake, so a renewal needs no
//! restart.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use lattice_specs::identity::{Identity, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::files::{read, ReloadingCert, TlsFiles};
use crate::peer::PeerError;

/// What went wrong loading a component's TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a usable PEM {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("the certificate names no Lattice identity: {0} (issue it with `lattice ca issue`)")]
    Identity(#[from] PeerError),
    #[error("a certificate for {found} cannot replace the one for {expected}")]
    OtherIdentity { expected: Identity, found: Identity },
    #[error("TLS: {0}")]
    Rustls(rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
    #[error("refusing to serve without TLS on {0}: only loopback listeners may be plaintext; give --tls-cert, --tls-key and --tls-ca (or listen on 127.0.0.1)")]
    PlaintextBeyondLoopback(std::net::SocketAddr),
}

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

/// The crypto provider every config here uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate from the CA (the default).
    Required,
    /// A client may connect without a certificate (then it carries no identity:
    /// only joining is open to it); one it presents must still be from the CA.
    Optional,
}

/// A component's certificate (reloading) and the cluster CA it trusts.
#[derive(Clone, Debug)]
pub struct NodeTls {
    cert: Arc<ReloadingCert>,
    roots: Arc<RootCertStore>,
    /// The CA's certificates (sent after ours by a public server).
    ca_certs: Arc<Vec<CertificateDer<'static>>>,
}

impl NodeTls {
    /// From PEM in memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<NodeTls, TlsError> {
        Ok(NodeTls {
            cert: Arc::new(ReloadingCert::from_pem(cert_pem, key_pem)?),
            roots: Arc::new(roots(ca_pem)?),
            ca_certs: Arc::new(certs(ca_pem)?),
        })
    }

    /// From the files (the certificate and key reloaded when they change).
    pub fn from_files(files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let ca_pem = read(&files.ca)?;
        Ok(NodeTls {
            cert: Arc::new(ReloadingCert::from_files(&files.cert, &files.key)?),
            roots: Arc::new(roots(&ca_pem)?),
            ca_certs: Arc::new(certs(&ca_pem)?),
        })
    }

    /// Who this component is, as its certificate says.
    pub fn identity(&self) -> &Identity {
        self.cert.identity()
    }

    /// The certificate (to replace it in memory on renewal).
    pub fn cert(&self) -> &Arc<ReloadingCert> {
        &self.cert
    }

    /// A server config presenting our certificate, verifying clients against the CA;
    /// ALPN h2 and http/1.1.
    pub fn server_config(&self, auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let verifier = match auth {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.cert.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A server config for a public endpoint (the BBS's JSON API): presenting our
    /// certificate followed by the CA's (a client like `ltc` trusts the CA it was
    /// shown), asking no client certificate; ALPN h2 and http/1.1. A renewed
    /// certificate is used from the next handshake.
    pub fn public_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(WithCa {
                cert: self.cert.clone(),
                ca_certs: self.ca_certs.clone(),
            }));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A client config presenting our certificate and trusting the CA only; the server
    /// is checked against the name the connection is made for (an identity's
    /// [`Identity::dns_name`]). ALPN `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        self.client_with(verifier, alpn)
    }

    /// A client config for servers of `role` reached by address (an HTTP client
    /// calling many cells): the server's certificate must chain to the CA and name an
    /// identity of `role` (whatever name the URL had).
    pub fn client_config_for_role(&self, role: Role) -> Result<Arc<ClientConfig>, TlsError> {
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        self.client_with(Arc::new(RoleVerifier { inner, role }), &[])
    }

    fn client_with(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Resolver(self.cert.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

/// The CA certificates in `ca_pem`.
pub fn roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for der in certs(ca_pem)? {
        store.add(der).map_err(TlsError::Rustls)?;
    }
    Ok(store)
}

/// The certificates in `ca_pem` (at least one).
fn certs(ca_pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let all = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    if all.is_empty() {
        return Err(TlsError::Pem {
            what: "CA certificate",
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(all)
}

/// Presents the component's current certificate, as server and as client.
#[derive(Debug)]
struct Resolver(Arc<ReloadingCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Presents the component's current certificate followed by the CA's.
#[derive(Debug)]
struct WithCa {
    cert: Arc<ReloadingCert>,
    ca_certs: Arc<Vec<CertificateDer<'static>>>,
}

impl ResolvesServerCert for WithCa {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.cert.current();
        let mut chain = current.cert.clone();
        chain.extend(
            self.ca_certs
                .iter()
                .filter(|ca| !current.cert.contains(ca))
                .cloned(),
        );
        Some(Arc::new(CertifiedKey::new(chain, current.key.clone())))
    }
}

/// Accepts a server certificate from the CA that names any identity of `role`.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<WebPkiServerVerifier>,
    role: Role,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = crate::peer::identity_of_cert(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if id.role != self.role {
            return Err(rustls::Error::General(format!(
                "the server's certificate is for {id}, not a {}",
                self.role
            )));
        }
        let name = ServerName::try_from(id.dns_name())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
