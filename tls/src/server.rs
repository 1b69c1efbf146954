//! Accepting connections for tonic and axum servers: [`Listener`] takes TCP
//! connections, completes each TLS handshake in its own task (a slow client holds up
//! nobody) and hands over [`Conn`]s that know their [`PeerInfo`]. The peer's
//! [`Identity`] then reaches every request's extensions (as `Identity` itself): for
//! tonic through [`identity_interceptor`], for axum through [`with_identity`]. Without
//! TLS (loopback only) requests carry no identity.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lattice_specs::authz::NoClientCertificate;
use lattice_specs::identity::Identity;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsError;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const BACKLOG: usize = 256;

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The identity the client's certificate names; None without TLS or without a
    /// client certificate (a joining client).
    pub identity: Option<Identity>,
    /// The connection is TLS: without an identity, its client presented no
    /// certificate, and its requests carry [`NoClientCertificate`] (such a caller
    /// may only join), never pass for a plaintext loopback caller.
    pub tls: bool,
}

impl PeerInfo {
    /// Puts what authorization needs to know of the caller into `ext`: its
    /// [`Identity`], or [`NoClientCertificate`] for TLS without a certificate.
    fn mark(&self, ext: &mut tonic::Extensions) {
        match &self.identity {
            Some(id) => {
                ext.insert(id.clone());
            }
            None if self.tls => {
                ext.insert(NoClientCertificate);
            }
            None => {}
        }
    }
}

/// The identity of the caller of a gRPC request (None: no TLS, or TLS without a
/// client certificate).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<Identity> {
    request.extensions().get::<Identity>().cloned()
}

/// A tonic interceptor copying the connection's identity into the request's
/// extensions as [`Identity`] (`Server::builder().layer(tonic::service::InterceptorLayer::new(identity_interceptor))`).
#[allow(clippy::result_large_err)]
pub fn identity_interceptor(
    mut req: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(peer) = req.extensions().get::<PeerInfo>().cloned() {
        peer.mark(req.extensions_mut());
    }
    Ok(req)
}

/// `router` with the connection's identity copied into each request's extensions as
/// [`Identity`] (serve it with `into_make_service_with_connect_info::<PeerInfo>()`).
pub fn with_identity<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    router.layer(axum::middleware::map_request(
        |mut req: axum::extract::Request| async move {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<PeerInfo>>()
                .map(|c| c.0.clone());
            if let Some(peer) = peer {
                peer.mark(req.extensions_mut());
            }
            req
        },
    ))
}

/// Refuses plaintext beyond loopback: the error to give when `addr` would serve
/// without TLS and is not a loopback address.
pub fn check_plaintext_allowed(addr: SocketAddr) -> Result<(), TlsError> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(TlsError::PlaintextBeyondLoopback(addr))
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection: plaintext (loopback) or TLS, with what is known of its peer.
pub struct Conn {
    io: Io,
    peer: PeerInfo,
}

impl Conn {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Accepted connections, handshaken (TLS) or not (loopback plaintext).
pub struct Listener {
    rx: mpsc::Receiver<Conn>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Serves `tcp` with `tls` (None: plaintext, refused unless `tcp` is on loopback).
    pub fn new(tcp: TcpListener, tls: Option<Arc<ServerConfig>>) -> Result<Listener, TlsError> {
        let local = tcp.local_addr().map_err(|source| TlsError::Io {
            path: "listener".into(),
            source,
        })?;
        if tls.is_none() {
            check_plaintext_allowed(local)?;
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        let task = tokio::spawn(accept_loop(tcp, tls.map(TlsAcceptor::from), tx));
        Ok(Listener { rx, local, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection (None once the accepting stopped).
    pub async fn next(&mut self) -> Option<Conn> {
        self.rx.recv().await
    }

    /// The connections as the stream tonic's `serve_with_incoming` takes.
    pub fn into_incoming(self) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let c = l.next().await?;
            Some((Ok(c), l))
        })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = PeerInfo;
    async fn accept(&mut self) -> (Conn, PeerInfo) {
        match self.next().await {
            Some(c) => {
                let peer = c.peer.clone();
                (c, peer)
            }
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }
    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            local: self.local,
            remote: self.local,
            identity: None,
            tls: false,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> PeerInfo {
        stream.remote_addr().clone()
    }
}

async fn accept_loop(tcp: TcpListener, tls: Option<TlsAcceptor>, tx: mpsc::Sender<Conn>) {
    loop {
        let (stream, remote) = tokio::select! {
            _ = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let Some(acceptor) = tls.clone() else {
            let peer = PeerInfo {
                local,
                remote,
                identity: None,
                tls: false,
            };
            let conn = Conn {
                io: Io::Plain(stream),
                peer,
            };
            if tx.send(conn).await.is_err() {
                return;
            }
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match handshake(acceptor, stream, local, remote).await {
                Ok(conn) => {
                    let _ = tx.send(conn).await;
                }
                Err(reason) => {
                    crate::metrics::HANDSHAKE_FAILURES
                        .with_label_values(&[reason])
                        .inc();
                }
            }
        });
    }
}

/// Completes a server handshake; on failure, the reason's label (and a log line).
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Conn, &'static str> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return Err("timeout");
        }
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            tracing::info!(%remote, error = %e, "TLS handshake refused");
            return Err(reason);
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        None => None,
        Some(cert) => match crate::peer::identity_of_cert(cert) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::info!(%remote, error = %e, "client certificate refused");
                return Err("identity");
            }
        },
    };
    Ok(Conn {
        io: Io::Tls(Box::new(tls)),
        peer: PeerInfo {
            local,
            remote,
            identity,
            tls: true,
        },
    })
}

/// A metric label for a failed handshake.
fn failure_reason(e: &io::Error) -> &'static str {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
            | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        ) => "certificate",
        Some(_) => "protocol",
        None => "io",
    }
}
