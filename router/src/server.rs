//! Running a router as a component: [`start`] follows the BBS for routes and
//! serves HTTP (and HTTPS when configured) on one event loop per core, and TCP
//! routes' ports on the caller's runtime, until
//! [`RunningRouter::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::emitter::{self, Routes};
use crate::proxy::{self, ProxyConfig};
use crate::tls::HttpsConfig;

/// How long `start` waits for the first route table before serving anyway.
const FIRST_ROUTES_WAIT: Duration = Duration::from_secs(10);

/// Everything a router needs to start: what `lattice router`'s flags say.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The BBS's gRPC address (host:port).
    pub bbs: String,
    /// Mutual TLS to the BBS (the router's certificate, the BBS's identity); None:
    /// plaintext (a BBS on loopback).
    pub bbs_tls: Option<lattice_tls::client::ClientTls>,
    /// Where to serve HTTP.
    pub listen: SocketAddr,
    /// Where and with which certificates to serve HTTPS, if at all.
    pub https: Option<HttpsConfig>,
    /// How often the whole route table is read again from the BBS.
    pub resync: Duration,
    /// Event loops serving requests; 0: one per core.
    pub workers: usize,
    /// Where and how TCP routes' external ports are served.
    pub tcp: crate::tcp::TcpConfig,
    pub proxy: ProxyConfig,
}

/// A serving router: one event loop per core.
pub struct RunningRouter {
    /// Where it serves HTTP (the bound address, when `listen` asked for port 0).
    pub addr: SocketAddr,
    /// Where it serves HTTPS, when asked to.
    pub https_addr: Option<SocketAddr>,
    /// Turns true once the first route table arrived from the BBS.
    routes_loaded: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<std::thread::JoinHandle<()>>,
}

impl RunningRouter {
    /// Its readiness (`GET /readyz`): whether it has loaded a route table from the BBS
    /// (it serves the last one it had if the BBS goes away later), as a probe that
    /// outlives `self`.
    pub fn readiness(&self) -> impl Fn() -> Result<String, String> + Clone + Send + Sync {
        let loaded = self.routes_loaded.clone();
        move || match *loaded.borrow() {
            true => Ok("route table loaded".into()),
            false => Err("no route table from the BBS yet".into()),
        }
    }

    /// Stops every event loop and returns once they have ended.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let loops = self.loops;
        let _ = tokio::task::spawn_blocking(move || loops.into_iter().for_each(|l| drop(l.join())))
            .await;
    }
}

/// Follows the BBS for routes and serves once the first table arrived (or after
/// [`FIRST_ROUTES_WAIT`], answering 404 until the BBS answers).
pub async fn start(cfg: RouterConfig) -> std::io::Result<RunningRouter> {
    let routes = Arc::new(Routes::default());
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    tokio::spawn(emitter::follow(
        cfg.bbs.clone(),
        cfg.bbs_tls.clone(),
        routes.clone(),
        cfg.resync.max(Duration::from_secs(1)),
        ready_tx,
    ));
    if tokio::time::timeout(FIRST_ROUTES_WAIT, ready.wait_for(|r| *r))
        .await
        .is_err()
    {
        tracing::warn!(bbs = %cfg.bbs, "no routes from the BBS yet; serving 404s until it answers");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let threads = match cfg.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    tokio::spawn(crate::tcp::serve(
        cfg.tcp,
        routes.tcp_ports(),
        stopped.clone(),
    ));
    let (bound, loops) =
        proxy::serve_per_core(routes, cfg.proxy, cfg.listen, cfg.https, threads, stopped)?;
    Ok(RunningRouter {
        addr: bound.http,
        https_addr: bound.https,
        routes_loaded: ready,
        stop,
        loops,
    })
}
