//! `lattice`: the server binary. `lattice bbs` runs the Bulletin Board System,
//! `lattice brain` an auctioneer and converger, `lattice cell` a cell (rep + executor),
//! `lattice router` the HTTP router. `lattice shim DIR` is the per-container shim the
//! cell starts (not for people).

mod api_tls;
mod cell;
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
    Cell(Box<cell::CellArgs>),
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
    /// The address TCP routes' external ports are opened on (default: --listen's).
    #[arg(long, env = "LATTICE_ROUTER_TCP_LISTEN")]
    tcp_listen: Option<std::net::IpAddr>,
    /// TCP route connections open at once, over every port; more are closed at once.
    #[arg(
        long,
        env = "LATTICE_ROUTER_TCP_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    tcp_max_connections: usize,
    /// Seconds a TCP route connection may pass no byte either way before it is closed.
    #[arg(long, env = "LATTICE_ROUTER_TCP_IDLE_TIMEOUT", default_value_t = 300)]
    tcp_idle_timeout: u64,
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
    /// HTTPS for the public API: by default in a cluster (with --tls-* or
    /// --join-ca-dir) beyond loopback; plain HTTP beyond loopback is refused unless
    /// --api-insecure-http.
    #[command(flatten)]
    api_tls: api_tls::ApiTlsArgs,
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
    /// Where volumes' backup repositories live (repeatable, `[NAME=]URL`; the first is
    /// the default; none: the blob store's, BLOB_DIR/restic): `blob`, `dir:/PATH` or
    /// `s3://BUCKET[/PREFIX]` (endpoint and keys from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    #[arg(
        long = "backup-store",
        env = "LATTICE_BBS_BACKUP_STORE",
        value_delimiter = ',',
        value_name = "[NAME=]URL",
        value_parser = lattice_specs::repo::parse_named_store
    )]
    backup_stores: Vec<(String, lattice_specs::repo::StoreUrl)>,
    /// The cluster's backup key (every repository's password), made (0600) when the
    /// file does not exist; give every BBS of a cluster the same file. None: the BBS
    /// serves no repository's password (backups into repositories fail).
    #[arg(long, env = "LATTICE_BBS_BACKUP_KEY_FILE")]
    backup_key_file: Option<std::path::PathBuf>,
    /// The public API's URL as cells reach it (backup tasks send archives there);
    /// default: http://API_LISTEN, https:// when the API is served over HTTPS
    /// (loopback when it listens on 0.0.0.0).
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
    /// How long after a Task completed its completion callback is retried (connection
    /// errors, timeouts, 5xx answers; a 4xx is final); then the task is deleted all
    /// the same. The brain leaves such tasks to the BBS for an hour: it must be less
    /// (refused otherwise).
    #[arg(long, env = "LATTICE_BBS_CALLBACK_RETRY_SECS", default_value_t = 600)]
    callback_retry_secs: u64,
    /// Time one completion callback POST may take, connecting included.
    #[arg(
        long,
        env = "LATTICE_BBS_CALLBACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    callback_timeout_ms: u64,
    /// A CA certificate file (PEM) trusted for HTTPS callback URLs besides the
    /// system's roots (repeatable, or comma-separated); the cluster CA (--tls-ca) is
    /// trusted too.
    #[arg(long, env = "LATTICE_BBS_CALLBACK_EXTRA_CA", value_delimiter = ',')]
    callback_extra_ca: Vec<std::path::PathBuf>,
    /// What `GET /v1/version` says as `lattice_release` (default: this build's
    /// version, as `lattice --version` says it). The original `ltc target` warns
    /// unless it equals its own build's version: set that one (e.g. v0.7.0) to
    /// silence it.
    #[arg(long, env = "LATTICE_BBS_LATTICE_RELEASE")]
    lattice_release: Option<String>,
    /// Serve Diego's ssh proxy here (the original Lattice `ltc ssh`, and
    /// `ssh -p 2222 diego:APP/INDEX@HOST` with the API's credential as password);
    /// none: no ssh proxy.
    #[arg(long, env = "LATTICE_BBS_SSH_PROXY_LISTEN")]
    ssh_proxy_listen: Option<SocketAddr>,
    /// The ssh proxy's host key (ECDSA P-256, OpenSSH format), made (0600) when missing.
    #[arg(
        long,
        env = "LATTICE_BBS_SSH_HOST_KEY_FILE",
        default_value = "/var/lib/lattice/ssh_host_key"
    )]
    ssh_host_key_file: std::path::PathBuf,
    /// Serve the blob store over WebDAV here (`/blobs/`: the original Lattice
    /// droplet store `ltc target` checks, port 8444; needs --blob-dir); none: no WebDAV.
    #[arg(long, env = "LATTICE_BBS_DAV_LISTEN")]
    dav_listen: Option<SocketAddr>,
    /// Answer Docker's v1 registry API (what the original Lattice `ltc create` asks a
    /// registry for an image's command and ports) from this v2 registry,
    /// `http://HOST:PORT` or `https://HOST[:PORT]`, and pass `/v2/` through to it;
    /// served on --docker-v1-listen.
    #[arg(
        long,
        env = "LATTICE_BBS_DOCKER_V1_UPSTREAM",
        requires = "docker_v1_listen"
    )]
    docker_v1_upstream: Option<reqwest::Url>,
    /// Where the Docker v1 registry face listens (plain HTTP; `ltc create
    /// HOST:PORT/NAME` names it, and cells pull from it over v2).
    #[arg(
        long,
        env = "LATTICE_BBS_DOCKER_V1_LISTEN",
        requires = "docker_v1_upstream"
    )]
    docker_v1_listen: Option<SocketAddr>,
}

/// `lattice bbs`'s completion callback flags as its settings.
fn callback_config(a: &BbsArgs) -> anyhow::Result<lattice_bbs::callbacks::CallbackConfig> {
    anyhow::ensure!(
        a.callback_timeout_ms > 0,
        "--callback-timeout-ms must be more than 0, e.g. --callback-timeout-ms 10000"
    );
    // The brain deletes a task with a callback this long after it completed, whatever
    // the BBS is doing: the retries must be over by then.
    let backstop = lattice_brain::converger::ConvergeConfig::default().expire_callback_task;
    let window =
        Duration::from_secs(a.callback_retry_secs) + Duration::from_millis(a.callback_timeout_ms);
    anyhow::ensure!(
        window < backstop,
        "--callback-retry-secs {} with --callback-timeout-ms {}: callbacks must be over within {} s of a task completing (the brain deletes such tasks then); retry for less",
        a.callback_retry_secs,
        a.callback_timeout_ms,
        backstop.as_secs()
    );
    let files = [
        a.callback_extra_ca.clone(),
        a.tls.tls_ca.iter().cloned().collect(),
    ]
    .concat();
    let mut extra_ca = Vec::new();
    for f in files {
        let pem = std::fs::read_to_string(&f)
            .with_context(|| format!("--callback-extra-ca {}: cannot read it", f.display()))?;
        lattice_tls::web::client(std::slice::from_ref(&pem))
            .with_context(|| format!("--callback-extra-ca {}", f.display()))?;
        extra_ca.push(pem);
    }
    Ok(lattice_bbs::callbacks::CallbackConfig {
        retry_for: Duration::from_secs(a.callback_retry_secs),
        timeout: Duration::from_millis(a.callback_timeout_ms),
        extra_ca,
        ..Default::default()
    })
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
/// `api_opens` turns true (at once without one). `api_ca`: a CA (with its key) to
/// issue the API's certificate from besides --join-ca-dir's (`lattice up`'s).
async fn start_bbs(
    a: BbsArgs,
    logs: LogBuffer,
    api_opens: Option<tokio::sync::watch::Receiver<bool>>,
    api_ca: Option<std::sync::Arc<lattice_tls::ca::Ca>>,
) -> anyhow::Result<server::RunningBbs> {
    if let Some(auth) = &a.basic_auth {
        anyhow::ensure!(
            auth.contains(':'),
            "--basic-auth must be USER:PASSWORD, e.g. --basic-auth admin:s3cret"
        );
    }
    let network = a.network.cluster_network()?;
    let callbacks = callback_config(&a)?;
    let ca = match &a.join_ca_dir {
        Some(d) => Some(std::sync::Arc::new(
            lattice_tls::ca::Ca::load(d)
                .with_context(|| format!("loading --join-ca-dir {}", d.display()))?,
        )),
        None => None,
    };
    let join = ca.clone().map(lattice_bbs::grpc::JoinAuthority::new);
    let tls = a.tls.node(lattice_specs::identity::Role::Bbs)?;
    let issuer = ca.or(api_ca);
    let cluster = api_tls::Cluster {
        node_cert: tls.is_some(),
        ca_key: issuer.is_some(),
    };
    let api_choice = api_tls::choose(a.api_listen, &a.api_tls, cluster)?;
    let api_tls = api_tls::server_config(&api_choice, tls.as_ref(), issuer.as_ref())?;
    server::start(BbsConfig {
        store: a.store.clone(),
        listen: a.listen,
        api_listen: a.api_listen,
        basic_auth: a.basic_auth,
        store_timeout: Duration::from_millis(a.store_timeout_ms),
        logs,
        blob_dir: a.blob_dir,
        backup_stores: a.backup_stores,
        backup_key_file: a.backup_key_file,
        s3: lattice_bbs::repos::S3Settings::from_env(),
        advertise_url: a.advertise_url,
        api_limits: Default::default(),
        api_tls,
        api_opens,
        network,
        tls,
        grpc_client_auth: match join {
            Some(_) => lattice_tls::ClientAuth::Optional,
            None => lattice_tls::ClientAuth::Required,
        },
        join,
        callbacks,
        lattice_release: a
            .lattice_release
            .unwrap_or_else(|| lattice_bbs::api::VERSION.to_string()),
        ssh_proxy: a
            .ssh_proxy_listen
            .map(|l| lattice_bbs::sshproxy::SshProxyConfig::new(l, a.ssh_host_key_file.clone())),
        dav_listen: a.dav_listen,
        docker_v1: a
            .docker_v1_upstream
            .zip(a.docker_v1_listen)
            .map(
                |(upstream, listen)| lattice_bbs::docker_v1::serve::DockerV1Config {
                    listen,
                    upstream,
                },
            ),
    })
    .await
    .context("starting the BBS")
}

async fn run_bbs(a: BbsArgs, logs: LogBuffer) -> anyhow::Result<()> {
    let store = a.store.clone();
    let token_file = a.admin_token_file.clone();
    let bbs = start_bbs(a, logs, None, None).await?;
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
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
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
            axum::routing::get(move || {
                let render = render.clone();
                async move { render() }
            }),
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
        tcp: lattice_router::tcp::TcpConfig {
            max_connections: a.tcp_max_connections.max(1),
            idle_timeout: Duration::from_secs(a.tcp_idle_timeout.max(1)),
            ..lattice_router::tcp::TcpConfig::on(a.tcp_listen.unwrap_or(a.listen.ip()))
        },
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

/// Starts a router with `lattice router`'s flags, serving the `fixed` hosts ahead of
/// the apps' routes.
async fn start_router(
    a: &RouterArgs,
    logs: Option<lattice_router::logs::LogSink>,
    fixed: Vec<lattice_router::proxy::FixedHost>,
) -> anyhow::Result<lattice_router::server::RunningRouter> {
    let mut cfg = router_config(a, logs)?;
    cfg.proxy.fixed = fixed;
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
    let logs = match a.api.clone() {
        Some(api) => {
            // An HTTPS API is verified against the system's roots and the cluster CA.
            let ca = match &a.tls.tls_ca {
                Some(f) => vec![std::fs::read_to_string(f)
                    .with_context(|| format!("--tls-ca {}: cannot read it", f.display()))?],
                None => vec![],
            };
            let http = lattice_tls::web::client(&ca).context("--tls-ca")?;
            let (sink, rx) = lattice_router::logs::channel();
            tokio::spawn(lattice_router::logs::post_to_api(
                rx,
                api,
                a.api_basic_auth.clone(),
                http,
            ));
            Some(sink)
        }
        None => None,
    };
    let router = start_router(&a, logs, vec![]).await?;
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
        Command::Cell(a) => cell::run_cell(*a).await,
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
    fn callback_retries_must_end_before_the_brains_backstop() {
        let bbs = |args: &[&str]| {
            let mut all = vec!["lattice", "bbs"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).unwrap().command {
                Command::Bbs(a) => callback_config(&a),
                _ => panic!("not the bbs command"),
            }
        };
        assert!(bbs(&[]).is_ok());
        assert!(bbs(&["--callback-retry-secs", "3000"]).is_ok());
        let e = bbs(&["--callback-retry-secs", "3600"]).unwrap_err();
        assert!(e.to_string().contains("--callback-retry-secs 3600"), "{e}");
        assert!(bbs(&["--callback-timeout-ms", "0"]).is_err());
    }
}
