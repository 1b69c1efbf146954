//! `lattice cell`: its flags, and the cell's configuration made of them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::{join, network, shutdown_signal, tls};

#[derive(clap::Args)]
pub(crate) struct CellArgs {
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
    /// The most the pool grows to: past 80% used it grows by half its size up to this
    /// (default: --volume-pool-size, no growth); at it, the cell warns.
    #[arg(long, env = "LATTICE_CELL_VOLUME_POOL_MAX")]
    volume_pool_max: Option<String>,
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
    pub insecure_registries: Vec<String>,
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
    /// Download/Upload actions and registry pulls (repeatable, or comma-separated);
    /// the cluster CA (--tls-ca) is trusted too.
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
/// The pool's size (none: no volumes) and the most it grows to, from the flags.
fn pool_sizes(a: &CellArgs) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let size = lattice_specs::volume::parse_size(&a.volume_pool_size)
        .map_err(|e| anyhow::anyhow!("--volume-pool-size: {e}"))?;
    let max = match &a.volume_pool_max {
        None => None,
        Some(m) => Some(
            lattice_specs::volume::parse_size(m)
                .map_err(|e| anyhow::anyhow!("--volume-pool-max: {e}"))?,
        ),
    };
    if let Some(max) = max {
        anyhow::ensure!(
            size > 0,
            "--volume-pool-max: the cell has no volume pool (--volume-pool-size 0); drop --volume-pool-max or give the pool a size"
        );
        anyhow::ensure!(
            max >= size,
            "--volume-pool-max: {} is below --volume-pool-size {}; the pool only grows, give a maximum at least its size",
            lattice_specs::volume::format_size(max),
            lattice_specs::volume::format_size(size)
        );
    }
    Ok(((size > 0).then_some(size), max))
}

pub(crate) fn cell_config(a: &CellArgs) -> anyhow::Result<lattice_cell::server::CellConfig> {
    use lattice_cell::{executor, network, rep, rootfs};
    let mut providers = rootfs::Providers {
        insecure_registries: a.insecure_registries.clone(),
        oci_roots: a.oci_roots.clone(),
        registry_credentials: parse_credentials(&a.registry_credentials)?,
        // The cluster CA too: the BBS's API (where backups' archives go) serves a
        // certificate from it.
        extra_ca: read_extra_ca(
            &[a.extra_ca.clone(), a.tls.tls_ca.iter().cloned().collect()].concat(),
        )?,
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
    let (volume_pool_size, volume_pool_max) = pool_sizes(a)?;
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
        volume_pool_size,
        volume_pool_max,
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
        lifecycle: Some(lifecycle_binaries()),
    })
}

/// Diego's lifecycle binaries, ours (the `lattice-lifecycle` crate), built static by
/// build.rs: every cell serves them to its containers.
fn lifecycle_binaries() -> lattice_cell::fileserver::Binaries {
    static HEALTHCHECK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/healthcheck"));
    static DIEGO_SSHD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/diego-sshd"));
    lattice_cell::fileserver::Binaries {
        healthcheck: bytes::Bytes::from_static(HEALTHCHECK),
        diego_sshd: bytes::Bytes::from_static(DIEGO_SSHD),
    }
}

pub(crate) async fn run_cell(mut a: CellArgs) -> anyhow::Result<()> {
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

pub(crate) fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

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

    #[test]
    fn the_pool_maximum_is_checked_against_its_size() {
        let sizes = |args: &[&str]| {
            let argv = ["lattice", "cell"].iter().chain(args);
            let Command::Cell(a) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not the cell command")
            };
            pool_sizes(&a).map_err(|e| e.to_string())
        };
        let g = |n: u64| n << 30;
        assert_eq!(sizes(&["--volume-pool-size=10G"]), Ok((Some(g(10)), None)));
        assert_eq!(
            sizes(&["--volume-pool-size=10G", "--volume-pool-max=40G"]),
            Ok((Some(g(10)), Some(g(40))))
        );
        let e = sizes(&["--volume-pool-size=10G", "--volume-pool-max=5G"]).unwrap_err();
        assert!(
            e.starts_with("--volume-pool-max: 5G is below --volume-pool-size 10G"),
            "{e}"
        );
        let e = sizes(&["--volume-pool-size=0", "--volume-pool-max=5G"]).unwrap_err();
        assert!(e.contains("no volume pool"), "{e}");
        let e = sizes(&["--volume-pool-max=lots"]).unwrap_err();
        assert!(e.starts_with("--volume-pool-max: "), "{e}");
    }
}
