//! Listening the way nginx does: one single-threaded event loop per core,
//! each with its own `SO_REUSEPORT` accept sockets (HTTP, and HTTPS when
//! asked) and backend pool.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Proxy, ProxyConfig};
use crate::emitter::Routes;
use crate::tls::HttpsConfig;

/// The addresses a router listens on (the bound ports, when port 0 was asked).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

/// Serve on `threads` event loops, each a single-threaded runtime with its own
/// `SO_REUSEPORT` accept sockets and its own backend connection pool, the way
/// nginx runs a worker per core: a request never hops between threads.
/// Returns the bound addresses once every loop listens.
pub fn serve_per_core(
    routes: Arc<Routes>,
    mut cfg: ProxyConfig,
    addr: SocketAddr,
    https: Option<HttpsConfig>,
    threads: usize,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(Bound, Vec<std::thread::JoinHandle<()>>)> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        // Listen through std so no runtime is needed here.
        // SAFETY: the fd comes straight from the socket, which gives it up.
        let listener = unsafe {
            <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(
                std::os::fd::IntoRawFd::into_raw_fd(socket),
            )
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
        // SAFETY: `raw` is the open socket `listener` owns; listen(2) only reads it.
        if unsafe { libc::listen(raw, 4096) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    // One socket per loop on each address, the first binding the port the rest share.
    let per_loop = |addr: SocketAddr| -> std::io::Result<(SocketAddr, Vec<_>)> {
        let first = bind(addr)?;
        let bound = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads.max(1) {
            listeners.push(bind(bound)?);
        }
        Ok((bound, listeners))
    };
    let (http, listeners) = per_loop(addr)?;
    let (https_addr, mut tls_listeners) = match &https {
        Some(h) => {
            let (bound, listeners) = per_loop(h.listen)?;
            if h.redirect_http {
                cfg.redirect_to_https = Some(bound.port());
            }
            (Some(bound), listeners.into_iter().map(Some).collect())
        }
        None => (None, vec![]),
    };
    tls_listeners.resize_with(listeners.len(), || None);
    let mut handles = vec![];
    for (i, (l, tls_l)) in listeners.into_iter().zip(tls_listeners).enumerate() {
        let (routes, cfg, shutdown) = (routes.clone(), cfg.clone(), shutdown.clone());
        let tls = tls_l.zip(https.as_ref().map(|h| h.tls.clone()));
        handles.push(
            std::thread::Builder::new()
                .name(format!("router-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime per router thread");
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(l).expect("registering the listener");
                        let tls = tls.map(|(l, t)| {
                            (
                                TcpListener::from_std(l).expect("registering the listener"),
                                t,
                            )
                        });
                        Proxy::new(routes, cfg).serve(listener, tls, shutdown).await;
                    });
                })?,
        );
    }
    Ok((
        Bound {
            http,
            https: https_addr,
        },
        handles,
    ))
}
