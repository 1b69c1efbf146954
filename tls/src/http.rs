//! Serving an axum app (HTTP and gRPC alike) on a [`Listener`] with the limits a
//! server reachable from the network needs: a client has
//! [`HttpLimits::header_read_timeout`] to send its first bytes after the handshake
//! and, over HTTP/1, a request's headers (on a new connection or an idle keep-alive
//! one: slowloris); an HTTP/2 client that stops answering pings is dropped after the
//! same time. Each request carries the connection's [`crate::PeerInfo`] as
//! `ConnectInfo<PeerInfo>` (what [`crate::server::with_identity`] reads). HTTP/1
//! upgrades are served (the rep's exec sessions are WebSockets).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::Listener;

/// Limits of an [`serve`]d HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send its first bytes, and a request's headers (HTTP/1),
    /// counted from the connection's start or from the end of its previous answer.
    pub header_read_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub keep_alive_interval: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `stop` completes, then lets requests in flight
/// finish (idle connections close at once).
pub async fn serve(
    mut listener: Listener,
    app: axum::Router,
    limits: HttpLimits,
    stop: impl Future<Output = ()> + Send,
) {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let conn = tokio::select! {
            c = listener.next() => match c {
                Some(c) => c,
                None => break,
            },
            _ = &mut stop => break,
        };
        let peer = conn.peer().clone();
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer.clone())));
        let io = TokioIo::new(FirstReadWithin::new(conn, limits.header_read_timeout));
        // With upgrades: the rep's exec and port-forward sessions are WebSockets.
        let served = b
            .serve_connection_with_upgrades(io, TowerToHyperService::new(app))
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(remote = %peer.remote, error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A stream whose first read must bring bytes within a time (hyper's version
/// sniffing and HTTP/2 would wait for them without a limit); after that, reads go
/// straight through. (The BBS's public API wraps its connections in it too.)
pub struct FirstReadWithin<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstReadWithin<S> {
    pub fn new(inner: S, within: Duration) -> Self {
        FirstReadWithin {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstReadWithin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let late = match &mut this.deadline {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if late {
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time");
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstReadWithin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
