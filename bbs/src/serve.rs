//! Serving the public API over HTTP with the limits a public server needs (the router
//! has the same ones): a client has [`ApiLimits::header_read_timeout`] to send a
//! request's headers, on a new connection or an idle keep-alive one (slowloris), and at
//! most [`ApiLimits::max_connections`] connections are served at once; further ones
//! wait in the listen backlog until one ends. A client that hangs up is noticed at once
//! (no half-close), so the answer it was streaming (a log follow, the event stream) is
//! dropped with everything feeding it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

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

/// Serves `app` on `listener` until `stop` turns true, then lets the connections'
/// requests in flight finish (idle connections close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ApiLimits,
    stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let stopping = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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
        let (builder, app, watcher, stop) = (
            builder.clone(),
            app.clone(),
            graceful.watcher(),
            stop.clone(),
        );
        let within = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let ready = tokio::select! {
                r = first_bytes(&stream, within) => r,
                _ = stopping(stop) => false,
            };
            if !ready {
                return;
            }
            // Handlers may ask who is calling (`ConnectInfo<SocketAddr>`).
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let svc = TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
