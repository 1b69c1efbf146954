//! Running a cell: the rep's gRPC API (for the auctioneer) and its HTTP endpoints
//! (`/metrics`, `/readyz`, `/v1/logs/LOG_GUID`, `/v1/containers`, the exec and
//! port-forward sessions of [`crate::sessions`]) on one listener,
//! each call allowed by the caller's identity (see [`crate::rep::authz`]), plus the rep's
//! presence, sync and event loops, the cell's DNS server (see [`crate::dns`]), the
//! lifecycle file server when it has lifecycle binaries (see [`crate::fileserver`]) and
//! (with a leased subnet and an overlay) the overlay following the other cells.
//! [`start`] brings a cell up from its [`CellConfig`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use axum::extract::{Path, Query, State};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use lattice_specs::containers::{CellContainer, ContainerPort};
use lattice_specs::rep_api::rep_server::RepServer;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, ExecutorConfig};
use crate::network::overlay::{self, Overlay};
use crate::network::{lease, KernelHost};
use crate::rep::{authz, Rep, RepConfig, RepGrpc};

/// A running cell.
pub struct RunningCell {
    pub addr: SocketAddr,
    pub rep: Arc<Rep>,
    /// The DNS server on the bridge's gateway address.
    dns: crate::dns::Dns,
    /// The lifecycle file server on the bridge's gateway address, when the cell has
    /// lifecycle binaries to serve.
    file_server: Option<crate::fileserver::FileServer>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Reads the connections logged egress rules allow, into the apps' logs.
    _logged: Option<crate::network::nflog::Reader>,
}

impl RunningCell {
    /// Stops the rep (presence revoked). Containers keep running: a rep started again
    /// on the same data directory re-adopts them.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.dns.stop().await;
        if let Some(f) = self.file_server {
            f.stop().await;
        }
        self.rep.close_executor();
    }

    /// Stops every container (see [`Rep::stop_all`]), then the rep.
    pub async fn stop_all_and_shutdown(self) {
        self.rep.stop_all().await;
        self.shutdown().await;
    }

    /// Evacuates (see [`Rep::evacuate`]), then stops.
    pub async fn evacuate_and_stop(self) {
        self.rep.evacuate().await;
        self.shutdown().await;
    }
}

/// Everything a cell needs to start: what `lattice cell`'s flags say.
pub struct CellConfig {
    /// The BBS's gRPC address (host:port).
    pub bbs: String,
    /// Where the rep serves gRPC (for the auctioneer) and HTTP.
    pub listen: SocketAddr,
    /// host:port others reach the rep at; none: the bound `listen` address, with
    /// an unspecified IP as 127.0.0.1.
    pub advertise: Option<String>,
    /// The executor's settings. Its data directory is created when missing; with
    /// no preloaded rootfs, `busybox` is built from /bin/busybox into it.
    pub executor: ExecutorConfig,
    /// The rep's settings; `rep_address` is filled in from `advertise`.
    pub rep: RepConfig,
    /// Lease the cell's subnet from the BBS at start (the network's gateway, prefix,
    /// cluster network, internal domain and default egress rules come from the
    /// lease; see [`crate::network::lease`]); false: `executor.network` as given.
    /// The overlay (`executor.network.overlay`) runs only with a leased subnet.
    pub lease_subnet: bool,
    /// Mutual TLS with the cell's certificate (naming `cell CELL_ID`): on its
    /// listener (which then requires a client certificate from the CA) and to the
    /// BBS. None: plaintext, allowed on a loopback `listen` only.
    pub tls: Option<lattice_tls::NodeTls>,
    /// Diego's lifecycle binaries (`healthcheck`, `diego-sshd`) the cell serves to
    /// its containers as `file-server.service.cf.internal:8080` (see
    /// [`crate::fileserver`]); none: no file server.
    pub lifecycle: Option<crate::fileserver::Binaries>,
}

/// How long a starting cell waits for an unreachable BBS to lease it a subnet.
const LEASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the overlay reads the cells.
const OVERLAY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts a cell: the executor (re-adopting what an earlier run left), the rep's
/// listener, the rep's presence, sync and event loops, and the DNS server on the
/// bridge's gateway (port 53; an address it cannot listen on is an error).
pub async fn start(mut cfg: CellConfig) -> anyhow::Result<RunningCell> {
    anyhow::ensure!(
        is_root(),
        "lattice cell runs containers and needs root (try sudo)"
    );
    let bbs_tls = cfg
        .tls
        .as_ref()
        .map(|t| lattice_tls::client::ClientTls::new(t, lattice_tls::bbs_identity()))
        .transpose()?;
    let bbs = Arc::new(lattice_bbs_client::GrpcBbs::connect_lazy_tls(
        &cfg.bbs,
        bbs_tls.as_ref(),
    )?);
    let overlay = set_up_subnet(&mut cfg, bbs.as_ref()).await?;
    let exec = &mut cfg.executor;
    std::fs::create_dir_all(&exec.data_dir)
        .with_context(|| format!("creating --data-dir {}", exec.data_dir.display()))?;
    exec.data_dir = exec.data_dir.canonicalize()?;
    if exec.providers.preloaded.is_empty() {
        let dir = exec.data_dir.join("rootfs/busybox");
        crate::rootfs::build_busybox(std::path::Path::new("/bin/busybox"), &dir)?;
        exec.providers.preloaded.insert("busybox".into(), dir);
    }
    let exec = Executor::new(cfg.executor)?;
    let gateway = exec.network().config().gateway;
    let file_server = match cfg.lifecycle.take() {
        Some(bins) => Some(start_file_server(&exec, bins).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding --listen {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let advertised = cfg.advertise.unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    });
    // Whoever calls a rep over TLS learns it from the scheme of its address.
    cfg.rep.rep_address = match &cfg.tls {
        Some(_) if !advertised.contains("://") => format!("https://{advertised}"),
        _ => advertised,
    };
    let server_tls = match &cfg.tls {
        Some(t) => Some(t.server_config(lattice_tls::ClientAuth::Required)?),
        None => None,
    };
    let listener = lattice_tls::server::Listener::new(listener, server_tls)
        .with_context(|| format!("serving --listen {}", cfg.listen))?;
    let mut cell = serve(cfg.rep, bbs.clone(), exec, listener).await?;
    if let Some(f) = file_server {
        cell.dns
            .table()
            .add_static(crate::fileserver::NAME, gateway);
        cell.file_server = Some(f);
    }
    if let Some(o) = overlay {
        let follow = overlay::follow(
            Arc::new(o),
            bbs,
            cell.rep.config().cell_id.clone(),
            OVERLAY_POLL,
            cell.rep.metrics.overlay_peers.clone(),
            cell.shutdown.clone(),
        );
        cell.tasks.push(tokio::spawn(follow));
    }
    Ok(cell)
}

/// The lifecycle file server on the bridge's gateway (a free port), opened to the
/// containers at the gateway's port 8080.
async fn start_file_server(
    exec: &Executor,
    bins: crate::fileserver::Binaries,
) -> anyhow::Result<crate::fileserver::FileServer> {
    let gateway = exec.network().config().gateway;
    let server = crate::fileserver::FileServer::start(gateway, bins)
        .await
        .with_context(|| format!("starting the lifecycle file server on {gateway}"))?;
    exec.set_file_server(server.addr())?;
    Ok(server)
}

/// The cell's subnet: leased from the BBS (filling the network's settings, the rep's
/// subnet and capacity, and starting the overlay when asked for) unless given by hand.
async fn set_up_subnet(
    cfg: &mut CellConfig,
    bbs: &lattice_bbs_client::GrpcBbs,
) -> anyhow::Result<Option<Overlay>> {
    let net = &mut cfg.executor.network;
    if !cfg.lease_subnet {
        anyhow::ensure!(
            net.overlay.is_none(),
            "the overlay needs a subnet leased from the BBS, not an explicit one"
        );
        cfg.rep.subnet = ipnet::Ipv4Net::new(net.gateway, net.prefix)
            .map(|n| n.trunc().to_string())
            .unwrap_or_default();
        return Ok(None);
    }
    let subnet = lease::lease(bbs, &cfg.rep.cell_id, net, LEASE_PATIENCE).await?;
    cfg.rep.subnet = subnet.to_string();
    // The cluster's operator sized the subnets: as many containers as it holds,
    // quietly (the rep warns of an explicit subnet too small for --max-containers).
    let addresses = i32::try_from(net.container_addresses()).unwrap_or(i32::MAX);
    if cfg.rep.capacity.containers > addresses {
        tracing::info!(%subnet, "the leased subnet holds {addresses} containers: offering {addresses}");
        cfg.rep.capacity.containers = addresses;
    }
    let Some(o) = &net.overlay else {
        return Ok(None);
    };
    cfg.rep.overlay_address = o.local.to_string();
    Ok(Some(Overlay::start(
        o.clone(),
        subnet,
        Arc::new(KernelHost),
    )?))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Serves a rep on `listener`. `cfg.rep_address` should be the address others reach
/// the listener at.
async fn serve(
    cfg: RepConfig,
    bbs: Arc<lattice_bbs_client::GrpcBbs>,
    exec: Arc<Executor>,
    listener: lattice_tls::server::Listener,
) -> anyhow::Result<RunningCell> {
    let addr = listener.local_addr();
    let dns_cfg = crate::dns::DnsConfig::for_network(&exec.config().network);
    let rep = Rep::new(cfg, bbs.clone(), exec);
    // Listening is all it waits for: its records fill as the BBS answers.
    let dns = crate::dns::Dns::start(&dns_cfg, bbs, rep.metrics.dns_queries.clone()).await?;
    let shutdown = CancellationToken::new();

    let grpc = tonic::service::Routes::new(RepServer::new(RepGrpc(rep.clone())))
        .prepare()
        .into_axum_router();
    let http = http_app(rep.clone(), shutdown.clone());
    // The caller's identity (from its certificate) in every request's extensions.
    let app = lattice_tls::server::with_identity(grpc.merge(http));
    let stop = shutdown.clone();
    let serve = tokio::spawn(async move {
        // A client has 10 s to send its first bytes and each request's headers.
        let limits = lattice_tls::http::HttpLimits::default();
        lattice_tls::http::serve(listener, app, limits, stop.cancelled_owned()).await;
    });
    let r = rep.clone();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move {
        if let Err(e) = r.run(stop).await {
            tracing::error!("rep stopped: {e:#}");
        }
    });
    Ok(RunningCell {
        addr,
        _logged: log_connections(&rep),
        rep,
        dns,
        file_server: None,
        shutdown,
        tasks: vec![serve, run],
    })
}

/// The rep's HTTP routes, each behind its authorization rule (the caller's identity
/// is read from the request's extensions): metrics, readiness, logs, containers and
/// the exec and port-forward sessions (see [`crate::sessions`]). Streams end when
/// `shutdown` is cancelled.
pub fn http_app(rep: Arc<Rep>, shutdown: CancellationToken) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/v1/logs/{log_guid}", get(logs))
        .route("/v1/containers", get(containers))
        .route(lattice_specs::exec::REP_EXEC, get(crate::sessions::exec))
        .route(
            lattice_specs::exec::REP_FORWARD,
            get(crate::sessions::forward),
        )
        .route_layer(from_fn_with_state(rep.clone(), authz::allow_http))
        .layer(axum::Extension(shutdown))
        .with_state(rep)
}

/// Puts a line in an app's log for each connection a logged egress rule of its
/// container allows (`None`, with a warning, when the cell cannot read them).
fn log_connections(rep: &Arc<Rep>) -> Option<crate::network::nflog::Reader> {
    let group = crate::network::nflog::group(&rep.executor().network().config().bridge);
    let cell = Arc::downgrade(rep);
    let reader = crate::network::nflog::Reader::start(group, move |logged| {
        let Some(rep) = cell.upgrade() else { return };
        if let Some(c) = rep.executor().container_at(logged.source) {
            let guid = c.request.tags.get("log_guid").cloned().unwrap_or_default();
            rep.metrics.logged_connections.inc();
            tracing::debug!(%logged, handle = c.handle(), "logged egress connection");
            rep.logs.cell(&guid, logged.to_string());
        }
    });
    match reader {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("logged egress rules will not reach the apps' logs: {e:#}");
            None
        }
    }
}

async fn metrics(State(rep): State<Arc<Rep>>) -> impl IntoResponse {
    rep.metrics.memory.reset();
    rep.metrics.cpu.reset();
    for c in rep.executor().list() {
        let (mem, cpu) = rep.executor().usage(c.handle());
        let source = c.request.log_source.as_str();
        if let Some(m) = mem {
            rep.metrics
                .memory
                .with_label_values(&[c.handle(), source])
                .set(m as f64);
        }
        if let Some(n) = cpu {
            rep.metrics
                .cpu
                .with_label_values(&[c.handle(), source])
                .set(n as f64 / 1e9);
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        rep.metrics.render(),
    )
}

/// 200 while the cell holds its presence lease in the BBS (auctions can place work on
/// it), else 503 saying why.
async fn readyz(State(rep): State<Arc<Rep>>) -> impl IntoResponse {
    match rep.presence_held() {
        Ok(lease) => (
            axum::http::StatusCode::OK,
            format!("ready: presence held under lease {lease}\n"),
        ),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[derive(serde::Deserialize)]
pub struct LogQuery {
    /// Keep the stream open for new lines (default true).
    pub follow: Option<bool>,
    /// Start with the recent history (default true).
    pub recent: Option<bool>,
}

/// Recent lines of a log guid, then (unless `?follow=false`) every new one, as
/// newline-delimited JSON.
async fn logs(
    State(rep): State<Arc<Rep>>,
    axum::Extension(stopping): axum::Extension<CancellationToken>,
    Path(log_guid): Path<String>,
    Query(q): Query<LogQuery>,
) -> impl IntoResponse {
    let lines = rep
        .logs
        .buffer
        .stream(
            &log_guid,
            q.recent.unwrap_or(true),
            q.follow.unwrap_or(true),
        )
        // A stopping rep ends its streams, or its graceful shutdown would wait on them.
        .take_until(stopping.cancelled_owned())
        .map(|m| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(m.to_ndjson())));
    (
        [("content-type", "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
}

async fn containers(State(rep): State<Arc<Rep>>) -> impl IntoResponse {
    // Disk use walks the containers' files: off the runtime's threads.
    let list = tokio::task::spawn_blocking(move || container_list(&rep))
        .await
        .unwrap_or_default();
    axum::Json(list)
}

fn container_list(rep: &Rep) -> Vec<CellContainer> {
    rep.executor()
        .list()
        .iter()
        .map(|c| {
            let (memory, cpu) = rep.executor().usage(c.handle());
            CellContainer {
                handle: c.handle().to_string(),
                memory_bytes: memory.unwrap_or(0),
                cpu_seconds: cpu.unwrap_or(0) as f64 / 1e9,
                disk_bytes: rep.executor().disk_bytes(c.handle()),
                rootfs: c.request.rootfs.clone(),
                ip: c.ip().to_string(),
                ports: c
                    .ports
                    .iter()
                    .map(|&(container_port, host_port)| ContainerPort {
                        container_port,
                        host_port,
                    })
                    .collect(),
                memory_mb: c.request.memory_mb,
                log_source: c.request.log_source.clone(),
                tags: c
                    .request
                    .tags
                    .iter()
                    .filter(|(k, _)| k.as_str() != "desired")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        })
        .collect()
}
