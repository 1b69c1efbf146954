//! Listening the way nginx does: one single-threaded event loop per core,
//! each with its own `SO_REUSEPORT` accept socket and backend pool.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Proxy, ProxyConfig};
use crate::emitter::Routes;

/// Serve on `threads` event loops, each a single-threaded runtime with its own
/// `SO_REUSEPORT` accept socket and its own backend connection pool, the way
/// nginx runs a worker per core: a request never hops between threads.
/// Returns the bound address once every loop listens.
pub fn serve_per_core(
    routes: Arc<Routes>,
    cfg: ProxyConfig,
    addr: SocketAddr,
    threads: usize,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
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
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(bind(bound)?);
    }
    let mut handles = vec![];
    for (i, l) in listeners.into_iter().enumerate() {
        let (routes, cfg, shutdown) = (routes.clone(), cfg.clone(), shutdown.clone());
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
                        Proxy::new(routes, cfg).serve(listener, shutdown).await;
                    });
                })?,
        );
    }
    Ok((bound, handles))
}
