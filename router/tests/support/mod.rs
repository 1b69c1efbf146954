//! What the router's tests share: a real BBS on a temporary store, a router
//! following it, and backends standing in for instances.

#![allow(dead_code)] // Each test binary uses its own part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::store::embedded::EmbeddedStore;
use lattice_bbs::testing::fixtures;
use lattice_router::emitter::{self, Routes};
use lattice_router::proxy::{serve_per_core, ProxyConfig};
use lattice_router::tls::HttpsConfig;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::*;
use lattice_specs::models::*;
use tokio::sync::watch;

pub struct Bbs {
    pub running: RunningBbs,
    _dir: tempfile::TempDir,
}

pub async fn bbs() -> Bbs {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("bbs.db")).unwrap());
    let cfg = BbsConfig::loopback(
        StoreUrl::File(dir.path().join("bbs.db")),
        Duration::from_secs(3),
    );
    Bbs {
        running: server::start_with_store(store, cfg).await.unwrap(),
        _dir: dir,
    }
}

impl Bbs {
    pub async fn client(&self) -> BbsClient<tonic::transport::Channel> {
        BbsClient::connect(format!("http://{}", self.running.grpc_addr))
            .await
            .unwrap()
    }

    pub async fn desire(&self, guid: &str, host: &str, instances: i32) {
        let d = fixtures::routed_lrp(guid, instances, host);
        self.client()
            .await
            .desire_lrp(DesireLrpRequest {
                desired_lrp: Some(d),
            })
            .await
            .unwrap();
    }

    /// Mark instance `index` RUNNING at 127.0.0.1:`port`.
    pub async fn run(&self, guid: &str, index: i32, port: u16) -> ActualLrpInstanceKey {
        fixtures::run_instance(&mut self.client().await, guid, index, port).await
    }
}

pub struct Router {
    pub addr: SocketAddr,
    /// Where it serves HTTPS, when asked to.
    pub https: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.follower.abort();
    }
}

pub async fn router(bbs: &Bbs, cfg: ProxyConfig) -> Router {
    router_with(bbs, cfg, None).await
}

/// A router on two event loops, serving HTTPS too when `https` says so.
pub async fn router_with(bbs: &Bbs, cfg: ProxyConfig, https: Option<HttpsConfig>) -> Router {
    let routes = Arc::new(Routes::default());
    let (ready_tx, mut ready) = watch::channel(false);
    let follower = tokio::spawn(emitter::follow(
        bbs.running.grpc_addr.to_string(),
        None,
        routes.clone(),
        Duration::from_secs(30),
        ready_tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("router got its first snapshot")
        .unwrap();
    // Two event loops, as `lattice router` runs one per core.
    let (stop, stopped) = watch::channel(false);
    let (bound, _threads) = serve_per_core(
        routes,
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        https,
        2,
        stopped,
    )
    .unwrap();
    Router {
        addr: bound.http,
        https: bound.https,
        stop,
        follower,
    }
}

/// A backend answering with its name and echoing what it saw in headers.
pub async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let mut r = Response::new(Full::new(Bytes::from(name)));
                    for h in [
                        "x-forwarded-for",
                        "x-forwarded-proto",
                        "x-request-id",
                        "host",
                    ] {
                        if let Some(v) = req.headers().get(h) {
                            r.headers_mut().insert(
                                format!("seen-{h}")
                                    .parse::<hyper::header::HeaderName>()
                                    .unwrap(),
                                v.clone(),
                            );
                        }
                    }
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
