//! TLS for the apps: the router terminates HTTPS with a certificate per domain
//! chosen by the name the client asks for (`sni`), read from PEM files
//! (`files`), and speaks HTTP/2 or HTTP/1.1 as the client's ALPN says. A
//! client naming no host we hold a certificate for gets an `unrecognized_name`
//! alert, not some other domain's certificate.

mod files;
mod sni;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{Acceptor, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

pub use files::{load, load_pair, pairs_in};
pub use sni::SniCerts;

use crate::metrics as m;

/// A certificate that cannot be served, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {file}: {error}")]
    Read { file: String, error: String },
    #[error("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty { file: String },
    #[error("{file}: not a certificate rustls can read: {error}")]
    Parse { file: String, error: String },
    #[error("the key {key} is not the private key of {cert} ({error}): give each certificate its own key")]
    KeyMismatch {
        cert: String,
        key: String,
        error: String,
    },
    #[error("{cert} has no key: put its private key (PEM) at {key}")]
    MissingKey { cert: String, key: String },
    #[error("{file} names no DNS name in its subject alternative names: clients could not match it to a domain")]
    NoDnsNames { file: String },
    #[error("no certificate found in {dir}: put NAME.crt + NAME.key pairs (PEM) there, or NAME/fullchain.pem + NAME/privkey.pem")]
    NoCertificates { dir: String },
}

/// Where and how the router serves HTTPS.
#[derive(Clone)]
pub struct HttpsConfig {
    pub listen: SocketAddr,
    pub tls: Arc<Terminator>,
    /// Answer every plain HTTP request with a 308 to the same URL over HTTPS.
    pub redirect_http: bool,
}

impl std::fmt::Debug for HttpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConfig")
            .field("listen", &self.listen)
            .field("names", &self.tls.certs.names())
            .field("redirect_http", &self.redirect_http)
            .finish()
    }
}

/// The fatal `unrecognized_name` alert (RFC 6066 §3) as a plaintext TLS record:
/// what a client asking for a host we hold no certificate for gets.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no certificate for {0}")]
    UnknownName(String),
    #[error("the client named no server (SNI); every certificate is chosen by name")]
    NoName,
    #[error("the handshake took longer than {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Handshake(std::io::Error),
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::UnknownName(_) => "unknown_name",
            Refused::NoName => "no_name",
            Refused::Timeout(_) => "timeout",
            Refused::Handshake(_) => "handshake",
        }
    }
}

/// Terminates TLS for client connections with the certificates of `certs`.
pub struct Terminator {
    config: Arc<ServerConfig>,
    certs: Arc<SniCerts>,
}

impl Terminator {
    /// TLS 1.2 and 1.3 (aws-lc-rs), h2 then HTTP/1.1 by ALPN, no client certificates.
    pub fn new(certs: SniCerts) -> Arc<Terminator> {
        let certs = Arc::new(certs);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(Terminator {
            config: Arc::new(config),
            certs,
        })
    }

    pub fn names(&self) -> &[String] {
        self.certs.names()
    }

    /// The TLS handshake with a client, within `within`: refused with an
    /// `unrecognized_name` alert when it asks for a name no certificate covers.
    pub async fn accept(
        &self,
        stream: TcpStream,
        within: Duration,
    ) -> Result<TlsStream<TcpStream>, Refused> {
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
                .await
                .map_err(Refused::Handshake)?;
            let name = start.client_hello().server_name().map(str::to_string);
            let refused = match name {
                None => Some(Refused::NoName),
                Some(n) if self.certs.choose(&n).is_none() => Some(Refused::UnknownName(n)),
                Some(_) => None,
            };
            if let Some(refused) = refused {
                let mut io = start.io;
                let _ = io.write_all(&UNRECOGNIZED_NAME).await;
                let _ = io.shutdown().await;
                return Err(refused);
            }
            start
                .into_stream(self.config.clone())
                .await
                .map_err(Refused::Handshake)
        };
        let r = match tokio::time::timeout(within, handshake).await {
            Ok(r) => r,
            Err(_) => Err(Refused::Timeout(within)),
        };
        match &r {
            Ok(tls) => {
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => "h2",
                    _ => "http/1.1",
                };
                m::TLS_CONNECTIONS.with_label_values(&[protocol]).inc();
            }
            Err(e) => {
                m::TLS_REFUSED.with_label_values(&[e.reason()]).inc();
                tracing::debug!(error = %e, "TLS handshake refused");
            }
        }
        r
    }
}
