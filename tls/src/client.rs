//! Connecting to a server that must prove an identity: [`ClientTls`] (our certificate,
//! the CA, the server's expected [`Identity`]) and [`lazy_channel`], a tonic channel
//! over TLS (a custom connector; the URL's scheme does not matter) or plaintext.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use lattice_specs::identity::Identity;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{NodeTls, TlsError};

/// How a client reaches one server: presenting `node`'s certificate, expecting the
/// server to prove `server`.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server: Identity,
}

impl ClientTls {
    /// For gRPC (ALPN h2) to the server `server`.
    pub fn new(node: &NodeTls, server: Identity) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            config: node.client_config(&[b"h2"])?,
            server,
        })
    }

    /// For gRPC (ALPN h2) to `server` with a configuration of the caller's own (a
    /// joiner's, which has no certificate yet and may trust nothing or one CA).
    pub fn from_config(mut config: ClientConfig, server: Identity) -> ClientTls {
        config.alpn_protocols = vec![b"h2".to_vec()];
        ClientTls {
            config: Arc::new(config),
            server,
        }
    }

    /// The tonic connector doing this TLS to the URI's host and port (for
    /// `Endpoint::connect_with_connector`; [`lazy_channel`] uses it).
    pub fn connector(&self) -> Connector {
        Connector(self.clone())
    }

    /// The same client configuration, expecting another server.
    pub fn for_server(&self, server: Identity) -> ClientTls {
        ClientTls {
            config: self.config.clone(),
            server,
        }
    }

    pub fn server(&self) -> &Identity {
        &self.server
    }

    /// Opens a TLS connection to `addr` (host:port) verifying the server's identity.
    pub async fn connect(&self, addr: &str) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.server.dns_name())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS to {} at {addr}: {e}", self.server)))
    }
}

/// A lazily connecting channel to `url` (`host:port` or a URL): over TLS with `tls`,
/// else plaintext. `tune` sets the endpoint's timeouts and the like.
pub fn lazy_channel(
    url: &str,
    tls: Option<&ClientTls>,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    let url = lattice_specs::http_url(url);
    match tls {
        None => Ok(tune(Endpoint::from_shared(url)?).connect_lazy()),
        Some(tls) => {
            // Our connector does the TLS: tonic sees a plain http URL.
            let url = match url.strip_prefix("https://") {
                Some(rest) => format!("http://{rest}"),
                None => url,
            };
            let endpoint = tune(Endpoint::from_shared(url)?);
            Ok(endpoint.connect_with_connector_lazy(tls.connector()))
        }
    }
}

/// Connects to the URI's host and port with TLS ([`ClientTls::connector`]).
#[derive(Clone)]
pub struct Connector(ClientTls);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok(TokioIo::new(tls.connect(&addr).await?))
        })
    }
}
