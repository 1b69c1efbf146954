//! Running a BBS: open the store, start the event hub, serve gRPC and the
//! public JSON API until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::db::Db;
use crate::events::EventHub;
use crate::grpc::BbsGrpc;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::EtcdStore;
use crate::store::Store;

/// Where state lives: `etcd://HOST:PORT[,HOST:PORT…]` or `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Etcd(Vec<String>),
    File(PathBuf),
}

impl FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<StoreUrl, String> {
        let usage = "use etcd://HOST:PORT[,HOST:PORT…] or file:PATH";
        if let Some(rest) = s.strip_prefix("etcd://") {
            let eps: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            if eps.is_empty()
                || eps.iter().any(|e| {
                    e.rsplit_once(':')
                        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                })
            {
                return Err(format!(
                    "bad etcd endpoints in {s:?}: each must be HOST:PORT; {usage}"
                ));
            }
            return Ok(StoreUrl::Etcd(eps));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(format!("empty path in {s:?}; {usage}"));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        Err(format!("unknown store {s:?}; {usage}"))
    }
}

pub async fn open_store(url: &StoreUrl, etcd_timeout: Duration) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match url {
        StoreUrl::Etcd(eps) => Arc::new(
            EtcdStore::connect(eps, etcd_timeout)
                .await
                .context("connecting to etcd")?,
        ),
        StoreUrl::File(p) => Arc::new(
            EmbeddedStore::open(p)
                .with_context(|| format!("opening the embedded store {}", p.display()))?,
        ),
    })
}

#[derive(Debug, Clone)]
pub struct BbsConfig {
    pub store: StoreUrl,
    /// Internal gRPC API.
    pub listen: SocketAddr,
    /// Public JSON API and /metrics.
    pub api_listen: SocketAddr,
    /// `user:password` for the public API.
    pub basic_auth: Option<String>,
    /// How long a store call may take before the request fails as unavailable.
    pub store_timeout: Duration,
    /// The BBS's own log lines (see [`crate::logs`]); shared with whoever else feeds it.
    pub logs: lattice_specs::logs::LogBuffer,
    /// Where the blob store keeps backup archives (none: no blob store).
    pub blob_dir: Option<std::path::PathBuf>,
    /// The public API's URL as cells reach it (default: from `api_listen`, loopback
    /// for an unspecified address).
    pub advertise_url: Option<String>,
    /// Header-read timeout and connection cap of the public API.
    pub api_limits: crate::serve::ApiLimits,
    /// Serve the public API over TLS with this (see [`crate::serve::tls_config`]);
    /// None: plain HTTP.
    pub api_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// When set, the public API takes no connection (clients wait in the listen
    /// backlog) until this turns true: `lattice up` opens it once its cell registered,
    /// so no request finds a cluster without a cell. None: served at once.
    pub api_opens: Option<watch::Receiver<bool>>,
    /// The container network cells lease their subnets of, the internal DNS domain
    /// and the default egress rules.
    pub network: crate::db::ClusterNetwork,
    /// Mutual TLS on the gRPC API with the BBS's certificate (and the client side of
    /// its calls to reps). None: plaintext, allowed on a loopback `listen` only.
    pub tls: Option<lattice_tls::NodeTls>,
    /// Whether gRPC clients must present a certificate (Optional lets a joining
    /// component in without one; it then carries no identity).
    pub grpc_client_auth: lattice_tls::ClientAuth,
    /// The cluster CA (with its key) and the validity of what it issues: machines
    /// join with tokens and renew their certificates (`grpc::join`). None: no joining.
    pub join: Option<crate::grpc::JoinAuthority>,
    /// Task completion callbacks: retry window, timeout, concurrency, trusted CAs.
    pub callbacks: crate::callbacks::CallbackConfig,
    /// The named backup stores (`--backup-store [NAME=]URL`; the first is the
    /// default); none: the blob store's, when there is a blob store.
    pub backup_stores: Vec<(String, lattice_specs::repo::StoreUrl)>,
    /// The file holding the cluster's backup key (made when missing); None: no key,
    /// repositories' passwords are not served.
    pub backup_key_file: Option<std::path::PathBuf>,
    /// How S3 backup stores reach S3 (`lattice bbs`: from its environment).
    pub s3: crate::repos::S3Settings,
    /// What `/v1/version` says as `lattice_release` (default: this build's version;
    /// an operator may set an original `ltc` build's, e.g. `v0.7.0`, so its `ltc
    /// target` does not warn).
    pub lattice_release: String,
    /// Diego's ssh proxy (`crate::sshproxy`) on this address, with this host key
    /// file; None: no ssh proxy.
    pub ssh_proxy: Option<crate::sshproxy::SshProxyConfig>,
    /// The WebDAV face of the blob store (`crate::dav`) on this address; None: none.
    pub dav_listen: Option<SocketAddr>,
    /// Docker's v1 registry API in front of a v2 registry (`crate::docker_v1`), for
    /// the original `ltc create`; None: none.
    pub docker_v1: Option<crate::docker_v1::serve::DockerV1Config>,
}

impl BbsConfig {
    /// A BBS on `store` serving both APIs on free loopback ports, no auth, no blob
    /// store, `store_timeout` for store calls (tests and benchmarks start from this).
    pub fn loopback(store: StoreUrl, store_timeout: Duration) -> BbsConfig {
        BbsConfig {
            store,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            basic_auth: None,
            store_timeout,
            logs: Default::default(),
            blob_dir: None,
            advertise_url: None,
            api_limits: Default::default(),
            api_tls: None,
            api_opens: None,
            network: Default::default(),
            tls: None,
            grpc_client_auth: lattice_tls::ClientAuth::Required,
            join: None,
            callbacks: Default::default(),
            backup_stores: Vec::new(),
            backup_key_file: None,
            s3: Default::default(),
            lattice_release: crate::api::VERSION.into(),
            ssh_proxy: None,
            dav_listen: None,
            docker_v1: None,
        }
    }
}

pub struct RunningBbs {
    pub grpc_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The ssh proxy's address, when it serves.
    pub ssh_addr: Option<SocketAddr>,
    /// The WebDAV blob store's address, when it serves.
    pub dav_addr: Option<SocketAddr>,
    /// The Docker v1 registry face's address, when it serves.
    pub docker_v1_addr: Option<SocketAddr>,
    pub db: Db,
    /// The log lines the BBS keeps itself (see [`crate::logs`]).
    pub logs: lattice_specs::logs::LogBuffer,
    /// The API's state (what the brain's schedule claims start backups with).
    pub api: ApiState,
    hub: EventHub,
    stop: watch::Sender<bool>,
    /// The servers and loops `shutdown` waits for, by name.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// How long `shutdown` waits for the servers to finish what is in flight before it
/// aborts what is left (a shutdown never hangs: a test run once did, for good).
const SHUTDOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

impl RunningBbs {
    /// Stop serving and wait for in-flight requests to finish.
    pub async fn shutdown(self) {
        // Event streams never end by themselves: close them so the servers can drain.
        self.hub.close();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WITHIN;
        for (name, mut t) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!(
                    task = name,
                    "still running {SHUTDOWN_WITHIN:?} after the shutdown began: aborted"
                );
                t.abort();
            }
        }
    }
}

pub async fn start(cfg: BbsConfig) -> anyhow::Result<RunningBbs> {
    let store = open_store(&cfg.store, cfg.store_timeout).await?;
    start_with_store(store, cfg).await
}

pub async fn start_with_store(store: Arc<dyn Store>, cfg: BbsConfig) -> anyhow::Result<RunningBbs> {
    let backend = store.backend();
    let db = Db::new(store.clone()).with_network(cfg.network.clone());
    // Backup schedules of the old layout become schedules of kind backup.
    db.migrate_backup_schedules()
        .await
        .context("moving the backup schedules to the schedules")?;
    let hub = EventHub::start(store).await;
    let (stop, stopped) = watch::channel(false);
    let logs = cfg.logs.clone();

    let grpc_listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the gRPC listener {}", cfg.listen))?;
    let api_listener = TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("binding the API listener {}", cfg.api_listen))?;
    let grpc_tls = match &cfg.tls {
        Some(t) => Some(t.server_config(cfg.grpc_client_auth)?),
        None => None,
    };
    let grpc_listener = lattice_tls::server::Listener::new(grpc_listener, grpc_tls)
        .with_context(|| format!("serving gRPC on {}", cfg.listen))?;
    lattice_tls::metrics::register(&crate::metrics::REGISTRY);
    let grpc_addr = grpc_listener.local_addr();
    let api_addr = api_listener.local_addr()?;

    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let public_url = cfg.advertise_url.clone().unwrap_or_else(|| {
        let mut a = api_addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if cfg.api_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{a}")
    });
    let state = ApiState {
        db: db.clone(),
        hub: hub.clone(),
        basic_auth: cfg.basic_auth.clone(),
        logs: logs.clone(),
        blobs: match &cfg.blob_dir {
            Some(d) => Some(
                crate::blobs::BlobStore::open(d)
                    .with_context(|| format!("opening the blob store at {}", d.display()))?,
            ),
            None => None,
        },
        cells: crate::cell_client::CellClient::new(cfg.tls.as_ref(), Arc::new(db.clone()))?,
        public_url,
        stores: crate::repos::Stores::open(&cfg.backup_stores, cfg.blob_dir.as_deref(), &cfg.s3)?,
        backup_key: match &cfg.backup_key_file {
            Some(f) => Some(crate::repos::BackupKey::load_or_create(f)?),
            None => None,
        },
        lattice_release: cfg.lattice_release.clone(),
        cpu_samples: Default::default(),
    };
    let settler = crate::backups::spawn_settler(state.clone());
    let callbacks = crate::callbacks::spawn(
        db.clone(),
        &hub,
        logs.clone(),
        cfg.callbacks.clone(),
        stopped.clone(),
    )
    .context("the CAs trusted for task completion callbacks")?;
    let mut svc = BbsGrpc::new(db.clone(), hub.clone()).with_api(state.clone());
    if let Some(join) = &cfg.join {
        svc = svc.with_join(crate::grpc::JoinAuthority {
            plaintext: cfg.tls.is_none(),
            ..join.clone()
        });
    }
    let svc = svc.into_server();
    let grpc_stop = wait(stopped.clone());
    let grpc = tokio::spawn(async move {
        let incoming = grpc_listener.into_incoming();
        if let Err(e) = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(tonic::service::InterceptorLayer::new(
                lattice_tls::server::identity_interceptor,
            ))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, grpc_stop)
            .await
        {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });

    let mut tasks = vec![];
    let ssh_addr = match &cfg.ssh_proxy {
        Some(p) => {
            let (addr, task) = crate::sshproxy::start(state.clone(), p, stopped.clone()).await?;
            tasks.push(("the ssh proxy", task));
            Some(addr)
        }
        None => None,
    };
    let dav_addr = match cfg.dav_listen {
        Some(listen) => {
            let (addr, task) = crate::dav::start(state.clone(), listen, stopped.clone()).await?;
            tasks.push(("the WebDAV server", task));
            Some(addr)
        }
        None => None,
    };
    let docker_v1_addr = match &cfg.docker_v1 {
        Some(c) => {
            let (addr, task) = crate::docker_v1::serve::start(c, stopped.clone()).await?;
            tasks.push(("the Docker v1 registry face", task));
            Some(addr)
        }
        None => None,
    };
    let app = api::router(state.clone());
    let (limits, opens, tls) = (
        cfg.api_limits.clone(),
        cfg.api_opens.clone(),
        cfg.api_tls.clone(),
    );
    let http = tokio::spawn(async move {
        if let Some(mut opens) = opens {
            // Closed without opening (the opener is gone): serve.
            tokio::select! {
                _ = opens.wait_for(|open| *open) => {}
                _ = wait(stopped.clone()) => return,
            }
        }
        crate::serve::serve(api_listener, app, limits, tls, stopped).await
    });

    tracing::info!(%grpc_addr, %api_addr, store = backend, "bbs serving");
    tasks.extend([
        ("the gRPC server", grpc),
        ("the API server", http),
        ("the settler", settler),
        ("the callbacks", callbacks),
    ]);
    Ok(RunningBbs {
        grpc_addr,
        api_addr,
        ssh_addr,
        dav_addr,
        docker_v1_addr,
        db,
        logs,
        api: state,
        hub,
        stop,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            "etcd://127.0.0.1:2379".parse(),
            Ok(StoreUrl::Etcd(vec!["127.0.0.1:2379".into()]))
        );
        assert_eq!(
            "etcd://a:1,b:2".parse(),
            Ok(StoreUrl::Etcd(vec!["a:1".into(), "b:2".into()]))
        );
        assert_eq!(
            "file:/var/lib/lattice/bbs.db".parse(),
            Ok(StoreUrl::File("/var/lib/lattice/bbs.db".into()))
        );
        for bad in [
            "",
            "etcd://",
            "etcd://host",
            "etcd://h:x",
            "file:",
            "redis://x",
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert!(e.contains("etcd://HOST:PORT"), "{bad}: {e}");
        }
    }
}
