//! Serving the public API over HTTP with the limits a public server needs (the router
//! has the same ones): a client has [`ApiLimits::header_read_timeout`] to send a
//! request's headers, on a new connection or an idle keep-alive one (slowloris), and at
//! most [`ApiLimits::max_connections`] connections are served at once; further ones
//! wait in the listen backlog until one ends. A client that hangs up is noticed at once
//! (no half-close), so the answer it was streaming (a log follow, the event stream) is
//! dropped with everything feeding it.
//!
//! Given a rustls server configuration, the API is served over TLS instead: the
//! handshake must end within the same header-read timeout, HTTP/2 or HTTP/1.1 is
//! chosen by ALPN (HTTP/1.1 when the client offers none), and a failed handshake is
//! logged and counted (`bbs_api_tls_handshake_failures_total`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;

/// The ALPN names the API speaks over TLS, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the API's certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("{path}: {what}")]
    Read { path: String, what: String },
    #[error("{0}")]
    Config(String),
}

/// The public API's TLS configuration from PEM files: `cert` holds the server's
/// certificate followed by its chain, `key` its private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_config_from_files(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsFilesError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path, what: &str| TlsFilesError::Read {
        path: p.display().to_string(),
        what: what.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| read(cert, &format!("not a PEM certificate file ({e})")))?;
    if chain.is_empty() {
        return Err(read(
            cert,
            "holds no certificate: give the PEM file with BEGIN CERTIFICATE",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| read(key, &format!("holds no PEM private key ({e})")))?;
    tls_config(chain, key_der)
}

/// The public API's TLS configuration from a certificate chain and its key.
pub fn tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsFilesError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFilesError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsFilesError::Config(format!(
                "the API certificate does not go with its key ({e}): give the key the certificate was issued for"
            ))
        })?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// `cfg` speaking the API's ALPN names when its maker set none.
fn with_alpn(cfg: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    if !cfg.alpn_protocols.is_empty() {
        return cfg;
    }
    let mut c = (*cfg).clone();
    c.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Limits of the public API's HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    /// Time a client has to send a request's headers, counted from the connection's
    /// start or from the end of its previous answer.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests in flight on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_streams_per_connection: 128,
        }
    }
}

fn builder(limits: &ApiLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .half_close(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.header_read_timeout);
    b
}

/// The first bytes of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (at most `within`) until the client's first bytes tell HTTP/1 from HTTP/2,
/// which hyper's version sniffing would wait for without a limit. False: the client
/// hung up, or said too little in time.
async fn first_bytes(stream: &TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return true;
        }
        // Part of an HTTP/2 preface: the rest is on its way (peeking does not wait).
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10)))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// How each connection is served: plaintext (HTTP/1 or HTTP/2 told by the first
/// bytes) or TLS (told by ALPN).
struct Conns {
    /// Plaintext: sniffs the version.
    auto: auto::Builder<TokioExecutor>,
    /// Over TLS without ALPN `h2`: HTTP/1.1 with upgrades (WebSockets).
    h1: auto::Builder<TokioExecutor>,
    /// Over TLS with ALPN `h2`.
    h2: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time to finish the TLS handshake, and then to send the first bytes.
    within: Duration,
}

type Svc = TowerToHyperService<Router>;

impl Conns {
    fn new(limits: &ApiLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Conns {
        let b = builder(limits);
        Conns {
            auto: b.clone(),
            h1: b.clone().http1_only(),
            h2: b.http2_only(),
            tls: tls.map(|c| tokio_rustls::TlsAcceptor::from(with_alpn(c))),
            within: limits.header_read_timeout,
        }
    }

    /// Serves one connection until it ends, or until `stop` while it is still
    /// saying hello (a TLS handshake, its first bytes).
    async fn serve(
        &self,
        stream: TcpStream,
        svc: Svc,
        watcher: hyper_util::server::graceful::Watcher,
        stop: watch::Receiver<bool>,
    ) {
        let Some(acceptor) = &self.tls else {
            let ready = tokio::select! {
                r = first_bytes(&stream, self.within) => r,
                _ = stopping(stop) => false,
            };
            if ready {
                let conn = self
                    .auto
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "API connection ended");
                }
            }
            return;
        };
        let handshake = tokio::time::timeout(self.within, acceptor.accept(stream));
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return handshake_failed(&e.to_string()),
                Err(_) => return handshake_failed("no TLS handshake within the header-read timeout"),
            },
            _ = stopping(stop) => return,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        // A client that says nothing after its handshake is dropped like a slow one.
        let io = TokioIo::new(lattice_tls::http::FirstReadWithin::new(tls, self.within));
        let ended = if h2 {
            watcher.watch(self.h2.serve_connection(io, svc)).await
        } else {
            // HTTP/1.1 with upgrades: `ltc ssh`'s WebSockets.
            let conn = self.h1.serve_connection_with_upgrades(io, svc);
            watcher.watch(conn.into_owned()).await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "API connection ended");
        }
    }
}

fn handshake_failed(why: &str) {
    tracing::debug!(error = why, "API TLS handshake failed");
    crate::metrics::API_TLS_HANDSHAKE_FAILURES.inc();
}

async fn stopping(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` turns
/// true, then lets the connections' requests in flight finish (idle connections
/// close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ApiLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) {
    let conns = Arc::new(Conns::new(&limits, tls));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        // A free slot first, then a connection: beyond the cap, clients wait in the
        // kernel's backlog rather than cost a task and buffers here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopping(stop.clone()) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping(stop.clone()) => break,
        };
        let _ = stream.set_nodelay(true);
        // Handlers may ask who is calling (`ConnectInfo<SocketAddr>`).
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let (conns, watcher, stop) = (conns.clone(), graceful.watcher(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            conns
                .serve(stream, TowerToHyperService::new(app), watcher, stop)
                .await
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_certificate_files_are_checked_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::test_pki::TestCa::new("serve test CA");
        let (cert, key) = ca.server(&["localhost"]).write(dir.path());
        let cfg = tls_config_from_files(&cert, &key).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let missing = dir.path().join("missing.pem");
        let e = tls_config_from_files(&missing, &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = tls_config_from_files(&garbage, &key)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = tls_config_from_files(&cert, &garbage)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("private key"),
            "{e}"
        );

        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key) = ca.server(&["localhost"]).write(&other);
        let e = tls_config_from_files(&cert, &other_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not go with its key"), "{e}");
    }
}
