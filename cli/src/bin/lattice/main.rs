//! `lattice`: the server binary. `lattice bbs` runs the Bulletin Board System,
//! `lattice brain` an auctioneer and converger, `lattice cell` a cell (rep + executor),
//! `lattice router` the HTTP router. `lattice shim DIR` is the per-container shim the
//! cell starts (not for people).

mod config;
mod debuglog;
mod https;
mod join;
mod network;
mod tls;
mod up;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lattice_bbs::server::{self, BbsConfig, StoreUrl};
use lattice_specs::logs::LogBuffer;

#[derive(Parser)]
#[command(
    name = "lattice",
    version,
    about = "Lattice-rs: a container scheduler in the shape of Diego",
    after_help = "Every flag can also come from a LATTICE_* environment variable (see each command's --help) or from a TOML file given with --config FILE (or LATTICE_CONFIG): one table per command, e.g. [cell] memory_mb = 4096. Command-line flags win over the file, the file over the environment.",
    args_override_self = true
)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `lattice_bbs=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the BBS: the state store's only owner, its gRPC API and the public JSON API.
    Bbs(BbsArgs),
    /// Run a brain (auctioneer + converger); several brains elect one active, the others stand by.
    Brain(BrainArgs),
    /// Run a cell: the rep (presence, auctions, reporting) and its containers.
    Cell(Box<CellArgs>),
    /// Run the HTTP router: Host APP.DOMAIN to the app's RUNNING instances.
    Router(RouterArgs),
    /// Run a whole cluster in this process: BBS, brain, one cell and the router.
    Up(up::UpArgs),
    /// The cluster CA: create it, issue components' certificates offline.
    Ca {
        #[command(subcommand)]
        command: tls::CaCommand,
    },
    /// Join tokens: `lattice token create --role cell` on the BBS's machine.
    Token {
        #[command(subcommand)]
        command: join::TokenCommand,
    },
}

#[derive(clap::Args)]
struct CellArgs {
    /// The BBS's gRPC address.
    #[arg(long, env = "LATTICE_BBS", default_value = "127.0.0.1:8889")]
    bbs: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    join: join::JoinArgs,
    /// Where the rep serves gRPC (for the auctioneer) and HTTP (/metrics, /v1/logs/GUID).
    /// Loopback by default: give the cell's own address to reach it from other hosts.
    #[arg(long, env = "LATTICE_CELL_LISTEN", default_value = "127.0.0.1:1800")]
    listen: SocketAddr,
    /// host:port others reach the rep at (default: --listen, with 0.0.0.0 as 127.0.0.1).
    #[arg(long, env = "LATTICE_CELL_ADVERTISE")]
    advertise: Option<String>,
    /// The address published container ports listen on and are reachable at (an IP
    /// address of this host).
    #[arg(long, env = "LATTICE_CELL_ADDRESS", default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// The cell's id (default: cell-HOSTNAME).
    #[arg(long, env = "LATTICE_CELL_ID")]
    cell_id: Option<String>,
    #[arg(long, env = "LATTICE_CELL_ZONE", default_value = "z1")]
    zone: String,
    /// A placement tag work may require (repeatable).
    #[arg(long = "placement-tag")]
    placement_tags: Vec<String>,
    /// A placement tag work may ask for but does not require (repeatable).
    #[arg(long = "optional-placement-tag")]
    optional_placement_tags: Vec<String>,
    #[arg(long, env = "LATTICE_CELL_MEMORY_MB", default_value_t = 8192)]
    memory_mb: i32,
    #[arg(long, env = "LATTICE_CELL_DISK_MB", default_value_t = 65536)]
    disk_mb: i32,
    #[arg(long, env = "LATTICE_CELL_MAX_CONTAINERS", default_value_t = 256)]
    max_containers: i32,
    /// Containers, their state and the preloaded images live here.
    #[arg(long, env = "LATTICE_CELL_DATA_DIR", default_value = ".lattice/cell")]
    data_dir: std::path::PathBuf,
    /// Size of the `local` volume driver's thin pool (a sparse file in DATA/volumes,
    /// made when the first volume is; it costs what volumes write). 0: no volumes.
    #[arg(long, env = "LATTICE_CELL_VOLUME_POOL_SIZE", default_value = "20G")]
    volume_pool_size: String,
    /// A preloaded rootfs, NAME=DIR (repeatable). Without any, `busybox` is built from
    /// /bin/busybox (Debian's busybox-static) into the data directory.
    #[arg(long = "preloaded")]
    preloaded: Vec<String>,
    /// A registry (HOST:PORT) to pull docker:// images from over plain HTTP instead of
    /// HTTPS (repeatable, or comma separated).
    #[arg(
        long = "insecure-registry",
        env = "LATTICE_CELL_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Credentials for a registry that wants them: HOST[:PORT]=USER:PASSWORD
    /// (repeatable; LATTICE_CELL_REGISTRY_CREDENTIALS takes them newline separated).
    #[arg(
        long = "registry-credential",
        env = "LATTICE_CELL_REGISTRY_CREDENTIALS",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    registry_credentials: Vec<String>,
    /// A CA certificate file (PEM) to trust besides the system's roots, for HTTPS
    /// Download/Upload actions and registry pulls (repeatable, or comma-separated).
    #[arg(long, env = "LATTICE_CELL_EXTRA_CA", value_delimiter = ',')]
    extra_ca: Vec<std::path::PathBuf>,
    /// A directory under which `oci:PATH` image layouts may be used (repeatable; none:
    /// no oci: images).
    #[arg(
        long = "oci-root",
        env = "LATTICE_CELL_OCI_ROOTS",
        value_delimiter = ','
    )]
    oci_roots: Vec<std::path::PathBuf>,
    /// The cell bridge's name.
    #[arg(long, default_value = "lattice0")]
    bridge: String,
    /// The bridge's address and prefix (e.g. 10.254.0.1/16); containers get the other
    /// addresses. Without it the cell leases its subnet from the BBS (the same one
    /// back across restarts), with the cluster's network settings.
    #[arg(long)]
    subnet: Option<String>,
    #[command(flatten)]
    overlay: network::OverlayArgs,
    /// Host ports for published container ports, FIRST-LAST.
    #[arg(long, default_value = "61000-61999")]
    ports: String,
    /// Seconds of the cell's presence lease.
    #[arg(long, default_value_t = 15)]
    lease_ttl: u64,
    /// Seconds between bulk syncs with the BBS.
    #[arg(long, default_value_t = 10)]
    sync_interval: u64,
    /// Seconds from SIGTERM to SIGKILL when stopping a container.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Evacuate (hand every instance over to other cells) before exiting on SIGTERM or
    /// Ctrl-C. SIGUSR1 evacuates and exits in any case.
    #[arg(long)]
    evacuate: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Balance {
    RoundRobin,
    LeastConnections,
}

#[derive(clap::Args)]
struct RouterArgs {
    /// The BBS's gRPC address.
    #[arg(long, env = "LATTICE_BBS", default_value = "127.0.0.1:8889")]
    bbs: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    join: join::JoinArgs,
    /// Where to serve HTTP.
    #[arg(long, env = "LATTICE_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The apps' domain (routes are APP.DOMAIN); lattice.localhost resolves to loopback.
    #[arg(long, env = "LATTICE_DOMAIN", default_value = "lattice.localhost")]
    domain: String,
    /// How requests are spread over an app's instances.
    #[arg(
        long,
        env = "LATTICE_ROUTER_BALANCE",
        value_enum,
        default_value = "round-robin"
    )]
    balance: Balance,
    /// Seconds an instance has to answer with its response headers.
    #[arg(long, env = "LATTICE_ROUTER_REQUEST_TIMEOUT", default_value_t = 60)]
    request_timeout: u64,
    /// Seconds between full re-reads of the routes from the BBS.
    #[arg(long, env = "LATTICE_ROUTER_RESYNC", default_value_t = 30)]
    resync: u64,
    /// Event loops serving requests, each on its own thread with its own accept
    /// socket and backend pool (nginx's worker_processes); 0: one per core.
    #[arg(long, env = "LATTICE_ROUTER_WORKERS", default_value_t = 0)]
    workers: usize,
    /// The BBS's public API (e.g. http://127.0.0.1:8888), where access lines go so
    /// `ltc logs APP` shows them; without it they are only in the router's own log.
    #[arg(long, env = "LATTICE_API")]
    api: Option<String>,
    /// USER:PASSWORD for --api, when the BBS requires it.
    #[arg(long, env = "LATTICE_API_BASIC_AUTH")]
    api_basic_auth: Option<String>,
    /// Where to serve /metrics.
    #[arg(
        long,
        env = "LATTICE_ROUTER_METRICS_LISTEN",
        default_value = "127.0.0.1:8891"
    )]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    https: https::HttpsArgs,
}

#[derive(clap::Args)]
struct BrainArgs {
    /// The BBS's gRPC address.
    #[arg(long, env = "LATTICE_BBS", default_value = "127.0.0.1:8889")]
    bbs: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(flatten)]
    join: join::JoinArgs,
    /// This brain's name in the leadership lock (default: a fresh one).
    #[arg(long, env = "LATTICE_BRAIN_ID")]
    id: Option<String>,
    /// How long the lock outlives a brain that died, in seconds (takeover time).
    #[arg(long, env = "LATTICE_BRAIN_LOCK_TTL", default_value_t = 5)]
    lock_ttl: u64,
    /// Seconds between convergence passes (events trigger extra ones).
    #[arg(long, env = "LATTICE_BRAIN_CONVERGENCE_INTERVAL", default_value_t = 30)]
    convergence_interval: u64,
    /// Cells that do not report their state within this many ms are left out of an auction.
    #[arg(long, env = "LATTICE_BRAIN_FETCH_TIMEOUT_MS", default_value_t = 5000)]
    fetch_timeout_ms: u64,
    /// > 0 packs work onto the first cells instead of spreading it (added per cell ordinal).
    #[arg(long, env = "LATTICE_BRAIN_BIN_PACK_WEIGHT", default_value_t = 0.0)]
    bin_pack_weight: f64,
    /// Where to serve /metrics.
    #[arg(
        long,
        env = "LATTICE_BRAIN_METRICS_LISTEN",
        default_value = "127.0.0.1:8890"
    )]
    metrics_listen: SocketAddr,
}

#[derive(clap::Args)]
struct BbsArgs {
    /// Where state lives: etcd://HOST:PORT[,HOST:PORT…] or file:PATH.
    #[arg(
        long,
        env = "LATTICE_BBS_STORE",
        default_value = "file:/var/lib/lattice/bbs.db"
    )]
    store: StoreUrl,
    /// Internal gRPC API address (for the brain, cells and router).
    #[arg(long, env = "LATTICE_BBS_LISTEN", default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// Public JSON API (receptor-shaped) and /metrics address.
    #[arg(long, env = "LATTICE_BBS_API_LISTEN", default_value = "127.0.0.1:8888")]
    api_listen: SocketAddr,
    /// Serve the public API over HTTPS with this certificate (PEM, then its chain
    /// ending with its CA, whose fingerprint `ltc target` shows; with --api-tls-key).
    #[arg(long, env = "LATTICE_BBS_API_TLS_CERT", requires = "api_tls_key")]
    api_tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --api-tls-cert.
    #[arg(long, env = "LATTICE_BBS_API_TLS_KEY", requires = "api_tls_cert")]
    api_tls_key: Option<std::path::PathBuf>,
    /// Require HTTP Basic auth on the public API: USER:PASSWORD.
    #[arg(long, env = "LATTICE_BBS_BASIC_AUTH")]
    basic_auth: Option<String>,
    /// Make an admin API token named `admin` on start unless FILE exists, its secret
    /// written to FILE (0600): the first credential of a BBS no loopback caller reaches.
    #[arg(long, env = "LATTICE_BBS_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Keep backup archives here and serve them at /v1/blobs (none: no blob store).
    #[arg(long, env = "LATTICE_BBS_BLOB_DIR")]
    blob_dir: Option<std::path::PathBuf>,
    /// The public API's URL as cells reach it (backup tasks send archives there);
    /// default: http://API_LISTEN (loopback when it listens on 0.0.0.0).
    #[arg(long, env = "LATTICE_BBS_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Fail a request as "store unavailable" when the store takes longer than this.
    #[arg(long, env = "LATTICE_BBS_STORE_TIMEOUT_MS", default_value_t = 2000)]
    store_timeout_ms: u64,
    #[command(flatten)]
    network: network::BbsNetworkArgs,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// The cluster CA's directory (`lattice ca init --dir`, with its key): machines
    /// may join with tokens (`lattice token create`) and renew their certificates;
    /// the gRPC port then also takes clients without a certificate, for joining.
    #[arg(long, env = "LATTICE_BBS_JOIN_CA_DIR")]
    join_ca_dir: Option<std::path::PathBuf>,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Starts a BBS with `lattice bbs`'s flags; its public API takes connections once
/// `api_opens` turns true (at once without one).
async fn start_bbs(
    a: BbsArgs,
    logs: LogBuffer,
    api_opens: Option<tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<server::RunningBbs> {
    if let Some(auth) = &a.basic_auth {
        anyhow::ensure!(
            auth.contains(':'),
            "--basic-auth must be USER:PASSWORD, e.g. --basic-auth admin:s3cret"
        );
    }
    let network = a.network.cluster_network()?;
    let api_tls = match (&a.api_tls_cert, &a.api_tls_key) {
        (Some(cert), Some(key)) => Some(
            lattice_bbs::serve::tls_config_from_files(cert, key)
                .context("--api-tls-cert/--api-tls-key")?,
        ),
        _ => None,
    };
    let join = match &a.join_ca_dir {
        Some(d) => Some(lattice_bbs::grpc::JoinAuthority::new(std::sync::Arc::new(
            lattice_tls::ca::Ca::load(d)
                .with_context(|| format!("loading --join-ca-dir {}", d.display()))?,
        ))),
        None => None,
    };
    server::start(BbsConfig {
        store: a.store.clone(),
        listen: a.listen,
        api_listen: a.api_listen,
        basic_auth: a.basic_auth,
        store_timeout: Duration::from_millis(a.store_timeout_ms),
        logs,
        blob_dir: a.blob_dir,
        advertise_url: a.advertise_url,
        api_limits: Default::default(),
        api_tls,
        api_opens,
        network,
        tls: a.tls.node(lattice_specs::identity::Role::Bbs)?,
        grpc_client_auth: match join {
            Some(_) => lattice_tls::ClientAuth::Optional,
            None => lattice_tls::ClientAuth::Required,
        },
        join,
    })
    .await
    .context("starting the BBS")
}

async fn run_bbs(a: BbsArgs, logs: LogBuffer) -> anyhow::Result<()> {
    let store = a.store.clone();
    let token_file = a.admin_token_file.clone();
    let bbs = start_bbs(a, logs, None).await?;
    if let Some(file) = token_file {
        lattice_bbs::api::bootstrap_admin_token(&bbs.db, &file).await?;
    }
    // One machine-readable line for scripts and tests.
    println!(
        "lattice bbs ready grpc={} api={} store={store:?}",
        bbs.grpc_addr, bbs.api_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    bbs.shutdown().await;
    Ok(())
}

fn brain_config(a: &BrainArgs) -> anyhow::Result<lattice_brain::leader::BrainConfig> {
    use lattice_brain::{auctioneer::AuctioneerConfig, leader::BrainConfig};
    anyhow::ensure!(a.lock_ttl >= 1, "--lock-ttl must be at least 1 second");
    anyhow::ensure!(a.bin_pack_weight >= 0.0, "--bin-pack-weight must be >= 0");
    let mut cfg = BrainConfig {
        lock_ttl: Duration::from_secs(a.lock_ttl),
        convergence_interval: Duration::from_secs(a.convergence_interval.max(1)),
        auctioneer: AuctioneerConfig {
            fetch_timeout: Duration::from_millis(a.fetch_timeout_ms),
            ..Default::default()
        },
        ..Default::default()
    };
    cfg.auctioneer.auction.bin_pack_weight = a.bin_pack_weight;
    if let Some(id) = &a.id {
        cfg.id = id.clone();
    }
    Ok(cfg)
}

/// Serves `/metrics` (what `render` returns) and `/readyz` (200 with what `ready`
/// says when it is `Ok`, 503 with the reason otherwise) on `listen`.
async fn serve_metrics(
    listen: SocketAddr,
    render: fn() -> String,
    ready: impl Fn() -> Result<String, String> + Clone + Send + Sync + 'static,
) -> anyhow::Result<SocketAddr> {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding --metrics-listen {listen}"))?;
    let addr = listener.local_addr()?;
    let readyz = move || async move {
        match ready() {
            Ok(what) => (StatusCode::OK, format!("ready: {what}\n")),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { render() }),
        )
        .route("/readyz", axum::routing::get(readyz));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn run_brain(mut a: BrainArgs) -> anyhow::Result<()> {
    let role = lattice_specs::identity::Role::Brain;
    let dir = join::default_dir(role);
    let joined = a
        .join
        .ensure(role, a.id.as_deref(), &dir, &mut a.tls)
        .await?;
    let cfg = brain_config(&a)?;
    let leader = cfg.leader.clone();
    let metrics_addr = serve_metrics(
        a.metrics_listen,
        lattice_brain::metrics::render,
        move || leader.get().map(|l| format!("{l} leads")),
    )
    .await?;
    println!(
        "lattice brain ready id={} bbs={} metrics={}",
        cfg.id, a.bbs, metrics_addr
    );
    let tls = a.tls.node(lattice_specs::identity::Role::Brain)?;
    let brain = lattice_brain::server::start(&a.bbs, tls.as_ref(), cfg)?;
    if let Some(files) = joined {
        join::keep_renewed(&a.bbs, files)?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    brain.shutdown().await;
    Ok(())
}

/// `HOST[:PORT]=USER:PASSWORD` entries → registry → (user, password).
fn parse_credentials(
    entries: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, (String, String)>> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let bad = || {
                anyhow::anyhow!(
                    "--registry-credential {:?}: expected HOST[:PORT]=USER:PASSWORD, e.g. registry.local:5000=ci:s3cret",
                    e.split(':').next().unwrap_or("")
                )
            };
            let (host, cred) = e.trim().split_once('=').ok_or_else(bad)?;
            let (user, password) = cred.split_once(':').ok_or_else(bad)?;
            if host.is_empty() || user.is_empty() {
                return Err(bad());
            }
            Ok((host.to_string(), (user.to_string(), password.to_string())))
        })
        .collect()
}

fn parse_subnet(s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (ip, prefix) = s
        .split_once('/')
        .with_context(|| format!("--subnet {s:?}: expected ADDRESS/PREFIX, e.g. 10.254.0.1/16"))?;
    let prefix: u8 = prefix
        .parse()
        .with_context(|| format!("--subnet {s:?}: bad prefix"))?;
    anyhow::ensure!(
        (8..=30).contains(&prefix),
        "--subnet {s:?}: prefix must be 8..30"
    );
    Ok((
        ip.parse()
            .with_context(|| format!("--subnet {s:?}: bad address"))?,
        prefix,
    ))
}

fn parse_ports(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--ports {s:?}: expected FIRST-LAST, e.g. 61000-61999"))?;
    let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
    anyhow::ensure!(a > 0 && a <= b, "--ports {s:?}: FIRST must be at most LAST");
    Ok((a, b))
}

/// The `--extra-ca` files' PEM texts, each checked.
fn read_extra_ca(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut pems = Vec::new();
    for f in files {
        let pem = std::fs::read_to_string(f)
            .with_context(|| format!("--extra-ca {}: cannot read it", f.display()))?;
        lattice_cell::transfer::client(std::slice::from_ref(&pem))
            .with_context(|| format!("--extra-ca {}", f.display()))?;
        pems.push(pem);
    }
    Ok(pems)
}

/// `lattice cell`'s flags as the cell's configuration.
fn cell_config(a: &CellArgs) -> anyhow::Result<lattice_cell::server::CellConfig> {
    use lattice_cell::{executor, network, rep, rootfs};
    let mut providers = rootfs::Providers {
        insecure_registries: a.insecure_registries.clone(),
        oci_roots: a.oci_roots.clone(),
        registry_credentials: parse_credentials(&a.registry_credentials)?,
        extra_ca: read_extra_ca(&a.extra_ca)?,
        ..Default::default()
    };
    for p in &a.preloaded {
        let (name, dir) = p
            .split_once('=')
            .with_context(|| format!("--preloaded {p:?}: expected NAME=DIR"))?;
        let dir = std::path::PathBuf::from(dir);
        anyhow::ensure!(
            dir.is_dir(),
            "--preloaded {p:?}: {} is not a directory",
            dir.display()
        );
        providers.preloaded.insert(name.to_string(), dir);
    }
    // Without --subnet, the cell's start fills these in from its lease.
    let (gateway, prefix) = match &a.subnet {
        Some(s) => parse_subnet(s)?,
        None => (std::net::Ipv4Addr::UNSPECIFIED, 0),
    };
    let overlay = a.overlay.overlay(a.address, a.subnet.is_some())?;
    let exe = std::env::current_exe().context("finding the lattice binary for the shim")?;
    let executor = executor::ExecutorConfig {
        data_dir: a.data_dir.clone(),
        providers,
        shim: vec![exe.into_os_string(), "shim".into()],
        network: network::NetworkConfig {
            bridge: a.bridge.clone(),
            gateway,
            prefix,
            ports: parse_ports(&a.ports)?,
            publish_ip: a.address,
            overlay,
            ..Default::default()
        },
        grace: Duration::from_secs(a.grace),
        volume_pool_size: match lattice_specs::volume::parse_size(&a.volume_pool_size)
            .map_err(|e| anyhow::anyhow!("--volume-pool-size: {e}"))?
        {
            0 => None,
            n => Some(n),
        },
        // The cell's disk is its containers' filesystem: each holds to its disk_mb.
        scratch_size: Some(a.disk_mb.max(1) as u64 * 1024 * 1024),
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into());
    let tls = a.tls.node(lattice_specs::identity::Role::Cell)?;
    // With a certificate, the cell is who it names.
    let cell_id = match (&tls, &a.cell_id) {
        (Some(t), Some(id)) if *id != t.identity().name => anyhow::bail!(
            "--cell-id {id} but --tls-cert names {}: give the cell's own certificate (or leave out --cell-id)",
            t.identity()
        ),
        (Some(t), _) => t.identity().name.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => format!("cell-{hostname}"),
    };
    // The rep's address is the cell's to fill in once it listens.
    let mut rep = rep::RepConfig::new(&cell_id, "");
    rep.zone = a.zone.clone();
    rep.address = a.address.to_string();
    rep.capacity = lattice_specs::rep_api::Resources {
        memory_mb: a.memory_mb,
        disk_mb: a.disk_mb,
        containers: a.max_containers,
    };
    rep.placement_tags = a.placement_tags.clone();
    rep.optional_placement_tags = a.optional_placement_tags.clone();
    rep.lease_ttl = Duration::from_secs(a.lease_ttl.max(1));
    rep.sync_interval = Duration::from_secs(a.sync_interval.max(1));
    Ok(lattice_cell::server::CellConfig {
        bbs: a.bbs.clone(),
        listen: a.listen,
        advertise: a.advertise.clone(),
        executor,
        rep,
        lease_subnet: a.subnet.is_none(),
        tls,
    })
}

async fn run_cell(mut a: CellArgs) -> anyhow::Result<()> {
    let dir = a.data_dir.join("tls");
    let role = lattice_specs::identity::Role::Cell;
    let joined = a
        .join
        .ensure(role, a.cell_id.as_deref(), &dir, &mut a.tls)
        .await?;
    let cell = lattice_cell::server::start(cell_config(&a)?).await?;
    if let Some(files) = joined {
        join::keep_renewed(&a.bbs, files)?;
    }
    let rep = cell.rep.config();
    println!(
        "lattice cell ready id={} listen={} advertise={} bbs={}",
        rep.cell_id, cell.addr, rep.rep_address, a.bbs
    );
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let evacuate = tokio::select! {
        _ = shutdown_signal() => a.evacuate,
        _ = usr1.recv() => true,
    };
    if evacuate {
        tracing::info!("evacuating before exit");
        cell.evacuate_and_stop().await;
    } else {
        tracing::info!("shutting down (containers keep running; a restarted cell re-adopts them)");
        cell.shutdown().await;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `lattice router`'s flags as the router's configuration; access lines go to
/// `logs` when given.
fn router_config(
    a: &RouterArgs,
    logs: Option<lattice_router::logs::LogSink>,
) -> anyhow::Result<lattice_router::server::RouterConfig> {
    use lattice_router::proxy;
    let bbs_tls = match a.tls.node(lattice_specs::identity::Role::Router)? {
        Some(t) => Some(lattice_tls::client::ClientTls::new(
            &t,
            lattice_tls::bbs_identity(),
        )?),
        None => None,
    };
    Ok(lattice_router::server::RouterConfig {
        bbs: a.bbs.clone(),
        bbs_tls,
        listen: a.listen,
        https: a.https.config()?,
        resync: Duration::from_secs(a.resync.max(1)),
        workers: a.workers,
        proxy: proxy::ProxyConfig {
            balance: match a.balance {
                Balance::RoundRobin => proxy::Balance::RoundRobin,
                Balance::LeastConnections => proxy::Balance::LeastConnections,
            },
            request_timeout: Duration::from_secs(a.request_timeout.max(1)),
            domain: a.domain.clone(),
            logs,
            ..Default::default()
        },
    })
}

/// Starts a router with `lattice router`'s flags.
async fn start_router(
    a: &RouterArgs,
    logs: Option<lattice_router::logs::LogSink>,
) -> anyhow::Result<lattice_router::server::RunningRouter> {
    let cfg = router_config(a, logs)?;
    let https = cfg.https.as_ref().map(|h| h.listen);
    lattice_router::server::start(cfg)
        .await
        .with_context(|| match https {
            Some(h) => format!("binding --listen {} and --https-listen {h}", a.listen),
            None => format!("binding --listen {}", a.listen),
        })
}

async fn run_router(mut a: RouterArgs) -> anyhow::Result<()> {
    let role = lattice_specs::identity::Role::Router;
    let dir = join::default_dir(role);
    let joined = a.join.ensure(role, None, &dir, &mut a.tls).await?;
    if let Some(files) = joined {
        join::keep_renewed(&a.bbs, files)?;
    }
    let logs = a.api.clone().map(|api| {
        let (sink, rx) = lattice_router::logs::channel();
        tokio::spawn(lattice_router::logs::post_to_api(
            rx,
            api,
            a.api_basic_auth.clone(),
        ));
        sink
    });
    let router = start_router(&a, logs).await?;
    let metrics_addr = serve_metrics(
        a.metrics_listen,
        lattice_router::metrics::render,
        router.readiness(),
    )
    .await?;
    let https = match router.https_addr {
        Some(h) => format!(" https={h}"),
        None => String::new(),
    };
    println!(
        "lattice router ready listen={}{https} domain={} bbs={} metrics={metrics_addr}",
        router.addr, a.domain, a.bbs
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    router.shutdown().await;
    Ok(())
}

fn main() {
    // The shim forks containers with raw clone(2): it must start before any runtime
    // thread exists, so it is dispatched here, ahead of clap and tokio.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "shim") {
        lattice_cell::shim::main(&args[2..]);
    }
    let (args, config) = match config::expand(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("lattice: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the runtime")
        .block_on(async_main(cli, config.unwrap_or_default()))
}

async fn async_main(cli: Cli, config: toml::Table) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // The components' own logs, for `ltc debug-logs` (served by the BBS, so kept by
    // the processes that run one).
    let debug_logs = LogBuffer::default();
    let keeps_debug_logs = matches!(cli.command, Command::Bbs(_) | Command::Up(_));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let debug = keeps_debug_logs.then(|| {
        debuglog::DebugLogLayer {
            buffer: debug_logs.clone(),
        }
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("rtr", tracing_subscriber::filter::LevelFilter::OFF),
        )
    });
    tracing_subscriber::registry().with(fmt).with(debug).init();
    let r = match cli.command {
        Command::Bbs(a) => run_bbs(a, debug_logs).await,
        Command::Brain(a) => run_brain(a).await,
        Command::Cell(a) => run_cell(*a).await,
        Command::Router(a) => run_router(a).await,
        Command::Up(a) => up::run(a, &config, debug_logs).await,
        Command::Ca { command } => tls::run_ca(command),
        Command::Token { command } => join::run_token(command).await,
    };
    if let Err(e) = r {
        eprintln!("lattice: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_listens_on_loopback_unless_told() {
        // Env would override the defaults this checks.
        for var in ["LATTICE_CELL_LISTEN", "LATTICE_CELL_ADDRESS"] {
            assert!(std::env::var_os(var).is_none(), "{var} is set");
        }
        let cli = Cli::try_parse_from(["lattice", "cell"]).unwrap();
        let Command::Cell(a) = cli.command else {
            panic!("not the cell command")
        };
        assert!(a.listen.ip().is_loopback(), "{}", a.listen);
        assert!(a.address.is_loopback(), "{}", a.address);
        assert!(Cli::try_parse_from(["lattice", "cell", "--address", "cell-1.local"]).is_err());
    }

    #[test]
    fn registry_credentials() {
        let c = parse_credentials(&[
            "registry.local:5000=ci:s3:cret".into(),
            "ghcr.io=bot:x".into(),
            String::new(),
        ])
        .unwrap();
        assert_eq!(
            c["registry.local:5000"],
            ("ci".to_string(), "s3:cret".to_string())
        );
        assert_eq!(c["ghcr.io"].0, "bot");
        for bad in ["ghcr.io", "=u:p", "ghcr.io=nouser", "ghcr.io=:p"] {
            let e = parse_credentials(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("HOST[:PORT]=USER:PASSWORD"), "{bad}: {e}");
            assert!(!e.contains(":p\""), "never echoes a password: {e}");
        }
    }
}
