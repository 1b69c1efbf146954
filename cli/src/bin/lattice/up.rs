//! `lattice up`: a whole cluster in one process — the BBS on the embedded store (or
//! etcd), one brain, one cell offering `preloaded:busybox`, and the router — for one
//! machine. Ctrl-C stops every container and component; starting again on the same
//! data directory brings every app back (the store keeps what is desired, the brain
//! starts it again).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use lattice_bbs::server::StoreUrl;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::logs::LogBuffer;

use crate::cell::CellArgs;
use crate::config::section_args;
use crate::{BbsArgs, BrainArgs, RouterArgs};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state (the store, containers, images).
    #[arg(long, env = "LATTICE_DATA_DIR", default_value = "/var/lib/lattice")]
    data_dir: PathBuf,
    /// The public API (`ltc target` this).
    #[arg(long, env = "LATTICE_API_LISTEN", default_value = "127.0.0.1:8888")]
    api_listen: SocketAddr,
    /// A host name or address other machines reach the public API by (repeatable):
    /// with --api-listen beyond loopback the API is HTTPS, its certificate from the
    /// cluster CA naming these and the listen address.
    #[arg(long = "api-hostname", value_name = "NAME")]
    api_hostnames: Vec<String>,
    /// Where the router serves the apps.
    #[arg(long, env = "LATTICE_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    router_listen: SocketAddr,
    /// The address the router opens TCP routes' external ports on (default:
    /// --router-listen's).
    #[arg(long, env = "LATTICE_ROUTER_TCP_LISTEN")]
    tcp_listen: Option<std::net::IpAddr>,
    /// The apps' domain: app APP answers at APP.DOMAIN (lattice.localhost resolves to
    /// loopback).
    #[arg(long, env = "LATTICE_DOMAIN", default_value = "lattice.localhost")]
    domain: String,
    /// Where state lives: file:PATH (default: DATA_DIR/bbs.db) or etcd://HOST:PORT[,…].
    #[arg(long, env = "LATTICE_STORE")]
    store: Option<StoreUrl>,
    /// Require HTTP Basic auth on the public API: USER:PASSWORD.
    #[arg(long, env = "LATTICE_BASIC_AUTH")]
    basic_auth: Option<String>,
    /// The BBS's internal gRPC address (the brain, cell and router use it).
    #[arg(long, default_value = "127.0.0.1:8889")]
    grpc_listen: SocketAddr,
    /// Where the cell's rep listens (auctions, /metrics, logs).
    #[arg(long, default_value = "127.0.0.1:1800")]
    cell_listen: SocketAddr,
    /// Where the brain's, router's and cell's /metrics are served (the API serves the
    /// BBS's; the cell's own listener takes only the cluster's certificates).
    #[arg(long, default_value = "127.0.0.1:8890")]
    metrics_listen: SocketAddr,
    /// A CA certificate file (PEM) the cell and the BBS trust besides the system's
    /// roots (HTTPS downloads, uploads, registry pulls, Task completion callbacks);
    /// repeatable.
    #[arg(long, env = "LATTICE_EXTRA_CA", value_delimiter = ',')]
    extra_ca: Vec<PathBuf>,
    /// Where volumes' backup repositories live (repeatable, `[NAME=]URL`; the first is
    /// the default): `blob` (DATA_DIR/blobs/restic, the default), `dir:/PATH` or
    /// `s3://BUCKET[/PREFIX]` (endpoint and keys from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    #[arg(
        long = "backup-store",
        env = "LATTICE_BACKUP_STORE",
        value_delimiter = ',',
        value_name = "[NAME=]URL"
    )]
    backup_stores: Vec<String>,
    /// The cell's volume pool size (as `lattice cell --volume-pool-size`).
    #[arg(long)]
    volume_pool_size: Option<String>,
    /// The most the cell's volume pool grows to at its watermark (as `lattice cell
    /// --volume-pool-max`).
    #[arg(long)]
    volume_pool_max: Option<String>,
    /// The router's HTTPS for the apps (as `lattice router` takes them).
    #[command(flatten)]
    https: crate::https::HttpsArgs,
    /// What `GET /v1/version` says as `lattice_release` (as `lattice bbs
    /// --lattice-release`): an original `ltc` build's version (e.g. v0.7.0) keeps its
    /// `ltc target` from warning.
    #[arg(long, env = "LATTICE_LATTICE_RELEASE")]
    lattice_release: Option<String>,
    /// Diego's ssh proxy for the original Lattice `ltc ssh` (default: port 2222 of
    /// --api-listen's address).
    #[arg(long, env = "LATTICE_SSH_PROXY_LISTEN")]
    ssh_proxy_listen: Option<SocketAddr>,
    /// The blob store over WebDAV, the original `ltc`'s droplet store (default: port
    /// 8444 of --api-listen's address).
    #[arg(long, env = "LATTICE_DAV_LISTEN")]
    dav_listen: Option<SocketAddr>,
    /// A v2 registry (`http://HOST:PORT` or `https://…`) to answer Docker's v1
    /// registry API from, for the original Lattice `ltc create HOST:PORT/NAME` (it
    /// asks for v1, which registries no longer serve); the face listens on
    /// --docker-v1-listen and the cell pulls through it.
    #[arg(long, env = "LATTICE_DOCKER_V1_UPSTREAM")]
    docker_v1_upstream: Option<reqwest::Url>,
    /// Where that face listens (default: port 5001 of --api-listen's address).
    #[arg(long, env = "LATTICE_DOCKER_V1_LISTEN")]
    docker_v1_listen: Option<SocketAddr>,
}

/// Parses a component's flags as `lattice NAME` would: the config file's `[NAME]`
/// table, then `LATTICE_*` variables and defaults, with `forced` (what `up` decides)
/// last so it wins.
fn component_args<T: clap::Args>(
    config: &toml::Table,
    name: &str,
    forced: &[String],
) -> anyhow::Result<T> {
    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct One<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }
    let mut argv: Vec<std::ffi::OsString> = vec![format!("lattice up ({name})").into()];
    argv.extend(section_args(config, name)?);
    argv.extend(forced.iter().map(Into::into));
    One::<T>::try_parse_from(argv)
        .map(|o| o.args)
        .map_err(|e| anyhow::anyhow!("the [{name}] settings: {e}"))
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

pub async fn run(a: UpArgs, config: &toml::Table, debug_logs: LogBuffer) -> anyhow::Result<()> {
    let began = Instant::now();
    anyhow::ensure!(
        crate::cell::nix_is_root(),
        "lattice up runs containers and needs root: try `sudo lattice up`"
    );
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating --data-dir {}", a.data_dir.display()))?;
    let data_dir = a.data_dir.canonicalize()?;
    let store = a
        .store
        .clone()
        .unwrap_or_else(|| StoreUrl::File(data_dir.join("bbs.db")));

    // Every internal connection is mutual TLS, with certificates from a CA made in
    // DATA/tls on first start (kept and reused after).
    let cell_args: CellArgs = component_args(config, "cell", &[])?;
    let cell_id = crate::cell::cell_config(&cell_args)?.rep.cell_id;
    let identities = [
        Identity::new(Role::Bbs, "bbs")?,
        Identity::new(Role::Cell, &cell_id)
            .with_context(|| format!("the cell id {cell_id:?} cannot name a certificate"))?,
        Identity::new(Role::Router, "router")?,
        Identity::new(Role::Brain, "brain")?,
    ];
    let certs_began = Instant::now();
    let certs = crate::tls::up_certificates(&data_dir.join("tls"), &identities)?;
    tracing::info!(
        ms = certs_began.elapsed().as_millis() as u64,
        "lattice up: certificates ready"
    );
    let [bbs_tls, cell_tls, router_tls, brain_tls] =
        [0, 1, 2, 3].map(|i| crate::tls::TlsArgs::flags(&certs[i]));

    // The BBS first: everything else talks to it.
    let mut forced = vec![
        format!("--store={}", store_arg(&store)),
        format!("--listen={}", a.grpc_listen),
        format!("--api-listen={}", a.api_listen),
        format!("--blob-dir={}", data_dir.join("blobs").display()),
        // The cluster's backup key, made on first start, kept beside the state (back
        // it up apart from the data: `ltc backup key export`).
        format!(
            "--backup-key-file={}",
            data_dir.join(BACKUP_KEY_FILE).display()
        ),
    ];
    forced.extend(
        a.backup_stores
            .iter()
            .map(|s| format!("--backup-store={s}")),
    );
    // The original ltc's ssh proxy and droplet store, beside the API (Lattice's ports).
    let beside_api = |port| SocketAddr::new(a.api_listen.ip(), port);
    forced.extend([
        format!(
            "--ssh-proxy-listen={}",
            a.ssh_proxy_listen.unwrap_or(beside_api(2222))
        ),
        format!(
            "--ssh-host-key-file={}",
            data_dir.join(SSH_HOST_KEY_FILE).display()
        ),
        format!("--dav-listen={}", a.dav_listen.unwrap_or(beside_api(8444))),
    ]);
    if let Some(upstream) = &a.docker_v1_upstream {
        forced.extend([
            format!("--docker-v1-upstream={upstream}"),
            format!(
                "--docker-v1-listen={}",
                a.docker_v1_listen.unwrap_or(beside_api(5001))
            ),
        ]);
    }
    if let Some(auth) = &a.basic_auth {
        forced.push(format!("--basic-auth={auth}"));
    }
    if let Some(release) = &a.lattice_release {
        forced.push(format!("--lattice-release={release}"));
    }
    forced.extend(bbs_tls);
    // HTTPS completion callbacks trust what the cell's downloads trust.
    forced.extend(
        a.extra_ca
            .iter()
            .map(|f| format!("--callback-extra-ca={}", f.display())),
    );
    forced.extend(
        a.api_hostnames
            .iter()
            .map(|h| format!("--api-hostname={h}")),
    );
    let bbs_args: BbsArgs = component_args(config, "bbs", &forced)?;
    let everything = crate::api_tls::Cluster {
        node_cert: true,
        ca_key: true,
    };
    let api_scheme = match crate::api_tls::choose(a.api_listen, &bbs_args.api_tls, everything)? {
        crate::api_tls::ApiTls::Plain => "http",
        _ => "https",
    };
    let ca = lattice_tls::ca::Ca::load(&data_dir.join("tls"))?;
    // Its public API opens once the cell registered: work sent as soon as the API
    // answers finds the cell (a volume its driver, a Task its place).
    let (open_api, api_opens) = tokio::sync::watch::channel(false);
    let bbs = crate::start_bbs(
        bbs_args,
        debug_logs.clone(),
        Some(api_opens),
        Some(std::sync::Arc::new(ca)),
    )
    .await?;
    // An admin API token for ltc on other machines (this one's loopback needs none).
    let admin_token = data_dir.join(ADMIN_TOKEN_FILE);
    lattice_bbs::api::bootstrap_admin_token(&bbs.db, &admin_token).await?;
    let grpc = bbs.grpc_addr.to_string();
    let api = loopback(bbs.api_addr);

    // The cell, so the brain finds it at its first auction.
    let mut forced = vec![
        format!("--bbs={grpc}"),
        format!("--data-dir={}", data_dir.join("cell").display()),
        format!("--listen={}", a.cell_listen),
    ];
    forced.extend(
        a.extra_ca
            .iter()
            .map(|f| format!("--extra-ca={}", f.display())),
    );
    forced.extend(cell_tls);
    forced.extend(
        a.volume_pool_size
            .iter()
            .map(|s| format!("--volume-pool-size={s}")),
    );
    forced.extend(
        a.volume_pool_max
            .iter()
            .map(|s| format!("--volume-pool-max={s}")),
    );
    let mut cell_args: CellArgs = component_args(config, "cell", &forced)?;
    // The v1 face is plain HTTP: the cell pulls the images it names through it.
    if let Some(face) = bbs.docker_v1_addr {
        cell_args
            .insecure_registries
            .push(loopback(face).to_string());
    }
    let cell = lattice_cell::server::start(crate::cell::cell_config(&cell_args)?).await?;
    let cell_id = cell.rep.config().cell_id.clone();
    cell_announced(&bbs, &cell_id).await?;
    let _ = open_api.send(true);

    // The router, its access lines straight into the BBS's log buffer.
    let mut forced = vec![
        format!("--bbs={grpc}"),
        format!("--listen={}", a.router_listen),
        format!(
            "--tcp-listen={}",
            a.tcp_listen.unwrap_or(a.router_listen.ip())
        ),
        format!("--domain={}", a.domain),
    ];
    forced.extend(router_tls);
    let mut router_args: RouterArgs = component_args(config, "router", &forced)?;
    if a.https.https_listen.is_some() {
        router_args.https = a.https.clone();
    }
    let (sink, mut lines) = lattice_router::logs::channel();
    let buffer = bbs.logs.clone();
    tokio::spawn(async move {
        while let Some(m) = lines.recv().await {
            buffer.push(m);
        }
    });
    let router = crate::start_router(
        &router_args,
        Some(sink),
        api_hosts(&a.domain, api, api_scheme),
    )
    .await?;

    let mut forced = vec![format!("--bbs={grpc}")];
    forced.extend(brain_tls);
    let brain_args: BrainArgs = component_args(config, "brain", &forced)?;
    let brain_config = crate::brain_config(&brain_args)?;
    let leader = brain_config.leader.clone();
    let brain_tls = brain_args.tls.node(Role::Brain)?;
    let brain = lattice_brain::server::start(&grpc, brain_tls.as_ref(), brain_config)?;
    let routes = router.readiness();
    // The cell's too: its own listener takes only the cluster's certificates.
    let rep = cell.rep.clone();
    let metrics = crate::serve_metrics(
        a.metrics_listen,
        move || {
            lattice_brain::metrics::render()
                + &lattice_router::metrics::render()
                + &rep.metrics.render()
        },
        // The brain's and the router's readiness: both must be.
        move || Ok(format!("{} leads; {}", leader.get()?, routes()?)),
    )
    .await?;

    print_ready(
        &a,
        Ready {
            api,
            api_scheme,
            router: router.addr,
            https: router.https_addr,
            cell_id: &cell_id,
            store: &store,
            metrics,
            ssh: bbs.ssh_addr,
            dav: bbs.dav_addr,
            docker_v1: bbs.docker_v1_addr,
            began,
        },
    );

    crate::shutdown_signal().await;
    // A second Ctrl-C means now.
    tokio::spawn(async {
        crate::shutdown_signal().await;
        eprintln!("lattice up: stopping at once (containers may be left running)");
        std::process::exit(130);
    });
    println!("lattice up: stopping (every container is stopped; `lattice up` again brings the apps back)");
    router.shutdown().await;
    brain.shutdown().await;
    cell.stop_all_and_shutdown().await;
    bbs.shutdown().await;
    println!("lattice up: stopped");
    Ok(())
}

/// The hosts the router sends to the public API, as Lattice's router sent them to the
/// receptor and loggregator's doppler (what the original `ltc` calls, port 80 of its
/// target, e.g. through `http_proxy` to the router): `receptor.DOMAIN` and
/// `doppler.DOMAIN`. Only to a plain-HTTP API (the router does not speak TLS to its
/// backends; the original `ltc` speaks plain HTTP anyway).
fn api_hosts(
    domain: &str,
    api: SocketAddr,
    api_scheme: &str,
) -> Vec<lattice_router::proxy::FixedHost> {
    if api_scheme != "http" {
        return vec![];
    }
    ["receptor", "doppler"]
        .into_iter()
        .map(|name| lattice_router::proxy::FixedHost {
            host: format!("{name}.{domain}").to_ascii_lowercase(),
            addr: api,
            name: format!("lattice-api ({name})"),
        })
        .collect()
}

/// Where, in the data directory, the admin API token `lattice up` made is kept (0600).
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The cluster's backup key, in DATA_DIR.
const BACKUP_KEY_FILE: &str = "backup.key";

/// The ssh proxy's host key, in the data directory.
const SSH_HOST_KEY_FILE: &str = "ssh_host_key";

/// Waits until the cell `cell_id` is present in the BBS (at most 5 s).
async fn cell_announced(
    bbs: &lattice_bbs::server::RunningBbs,
    cell_id: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bbs
        .db
        .cells()
        .await
        .unwrap_or_default()
        .iter()
        .any(|c| c.cell_id == cell_id)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cell did not announce itself to the BBS within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What `lattice up` says once it is ready.
struct Ready<'a> {
    api: SocketAddr,
    /// http on loopback, else https.
    api_scheme: &'static str,
    router: SocketAddr,
    https: Option<SocketAddr>,
    cell_id: &'a str,
    store: &'a StoreUrl,
    metrics: SocketAddr,
    ssh: Option<SocketAddr>,
    dav: Option<SocketAddr>,
    docker_v1: Option<SocketAddr>,
    began: Instant,
}

/// The ready line (for scripts and tests), then what to do next (for people).
fn print_ready(a: &UpArgs, r: Ready<'_>) {
    let Ready {
        api,
        api_scheme,
        router,
        https,
        cell_id,
        store,
        metrics,
        ssh,
        dav,
        docker_v1,
        began,
    } = r;
    // The exact `ltc target` line: ltc assumes lattice.localhost:8080 unless told.
    let port = router.port();
    let apps_domain = if port == 80 {
        a.domain.clone()
    } else {
        format!("{}:{port}", a.domain)
    };
    let mut target = format!("ltc target {api_scheme}://{api}");
    if apps_domain != "lattice.localhost:8080" {
        target.push_str(&format!(" --domain {apps_domain}"));
    }
    if let Some(auth) = &a.basic_auth {
        let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
        target.push_str(&format!(" --user {user} --password PASSWORD"));
    }
    let https_field = https.map(|h| format!(" https={h}")).unwrap_or_default();
    // The first line is for scripts and tests; the rest for people.
    println!(
        "lattice up ready api={api_scheme}://{api} router={}{https_field} domain={} cell={} store={} in {:.2}s",
        router,
        a.domain,
        cell_id,
        store_arg(store),
        began.elapsed().as_secs_f64()
    );
    println!("  apps answer at http://APP.{apps_domain}/ (through the router)");
    if let Some(h) = https {
        let port = match h.port() {
            443 => String::new(),
            p => format!(":{p}"),
        };
        println!("  and at https://APP.{}{port}/", a.domain);
    }
    println!(
        "  the cell {} offers preloaded:busybox; metrics at http://{metrics}/metrics",
        cell_id
    );
    if let (Some(ssh), Some(dav)) = (ssh, dav) {
        println!(
            "  the original Lattice ltc: ssh proxy at {ssh} (ssh -p {} diego:APP/0@{}), droplet store (WebDAV) at http://{dav}/blobs/",
            ssh.port(),
            ssh.ip()
        );
    }
    if let Some(face) = docker_v1 {
        println!(
            "  and a Docker v1 registry face at {face} (the original ltc: ltc create APP {}/IMAGE)",
            loopback(face)
        );
    }
    println!("  now run:  {target}");
    println!(
        "  (an admin API token is in {}: `ltc login --token-file` it where loopback is not enough)",
        a.data_dir.join(ADMIN_TOKEN_FILE).display()
    );
    println!("  then:     ltc create hello preloaded:busybox -- sh -c 'echo hello > index.html; exec httpd -f -p 8080'");
}

/// A store URL as `--store` takes it.
fn store_arg(s: &StoreUrl) -> String {
    match s {
        StoreUrl::File(p) => format!("file:{}", p.display()),
        StoreUrl::Etcd(eps) => format!("etcd://{}", eps.join(",")),
    }
}
