//! Apps (DesiredLRPs with `process_guid` = the app's name): `create`, `scale`,
//! `remove`, and waiting, with progress, until the instances run; the definition
//! building `ltc update` shares (`crate::rollout`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{
    self, action, check, Action, Check, CheckDefinition, EnvironmentVariable,
};
use lattice_specs::receptor::{ActualLrpResponse, DesiredLrpCreateRequest, DesiredLrpResponse};
use lattice_specs::routes::{CfRoute, TcpRoute, TCP_ROUTER_KEY};

use crate::api::{error_name, Api};
use crate::target::Target;

#[derive(clap::Args, Debug, Default)]
pub struct CreateArgs {
    /// The app's name (its process guid, log guid and default route APP.DOMAIN).
    pub app: String,
    /// The image: preloaded:NAME (e.g. preloaded:busybox), oci:/PATH[:TAG] (an OCI
    /// image layout on the cell) or docker://HOST[:PORT]/REPO[:TAG].
    pub image: String,
    /// What to run, after `--`: the command and its arguments (an oci: or docker://
    /// image without one runs its entrypoint and cmd).
    #[arg(last = true)]
    pub command: Vec<String>,
    #[arg(short, long, default_value_t = 1)]
    pub instances: i32,
    #[arg(short, long = "memory-mb", default_value_t = 128)]
    pub memory_mb: i32,
    #[arg(short, long = "disk-mb", default_value_t = 0)]
    pub disk_mb: i32,
    /// Relative CPU share, 1-100.
    #[arg(short, long = "cpu-weight", default_value_t = 100)]
    pub cpu_weight: u32,
    /// Container ports, comma separated (the first is routed and checked).
    #[arg(short, long, value_delimiter = ',', default_value = "8080")]
    pub ports: Vec<u32>,
    /// HOST[:PORT] routes (repeatable); a HOST without a dot is HOST.DOMAIN. Default:
    /// APP.DOMAIN to the first port.
    #[arg(short = 'R', long = "http-route")]
    pub http_routes: Vec<String>,
    /// No HTTP routes: the app is not reachable at APP.DOMAIN (TCP routes still apply).
    #[arg(long, conflicts_with = "http_routes")]
    pub no_routes: bool,
    /// EXTERNAL:CONTAINER — the router's TCP port EXTERNAL reaches container port
    /// CONTAINER, which is added to --ports (repeatable; one app per external port).
    #[arg(long = "tcp-route")]
    pub tcp_routes: Vec<String>,
    /// Healthy when this port accepts connections (the default: the first port).
    #[arg(short = 'M', long = "monitor-port")]
    pub monitor_port: Option<u32>,
    /// Healthy when GET PORT:/path answers 2xx.
    #[arg(short = 'U', long = "monitor-url", conflicts_with = "monitor_port")]
    pub monitor_url: Option<String>,
    /// Healthy when this shell command exits 0 in the container.
    #[arg(long = "monitor-command", conflicts_with_all = ["monitor_port", "monitor_url"])]
    pub monitor_command: Option<String>,
    /// No health check: running as soon as the process starts.
    #[arg(long, conflicts_with_all = ["monitor_port", "monitor_url", "monitor_command"])]
    pub no_monitor: bool,
    /// NAME=VALUE, or NAME to pass ltc's own value (repeatable).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// The process's working directory (default: the image's, else /).
    #[arg(short, long = "working-dir")]
    pub working_dir: Option<String>,
    /// The user the process runs as (default: root, the image's first user).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Run with every privilege (no seccomp, all capabilities).
    #[arg(long)]
    pub privileged: bool,
    /// Only on cells with this placement tag (repeatable).
    #[arg(long = "placement-tag")]
    pub placement_tags: Vec<String>,
    /// NAME:/path[:ro] — mount volume NAME (repeatable).
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// How long to wait for every instance to run, e.g. 90s, 2m.
    #[arg(short, long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 30s, 2m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn routes_json(routes: &[(String, u32)]) -> BTreeMap<String, serde_json::Value> {
    let mut by_port: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (h, p) in routes {
        by_port.entry(*p).or_default().push(h.clone());
    }
    let list: Vec<CfRoute> = by_port
        .into_iter()
        .map(|(port, hostnames)| CfRoute { hostnames, port })
        .collect();
    CfRoute::to_json(&list)
}

/// `--http-route` values as (hostname, port); `default_port` when a route names none.
pub fn parse_routes(
    routes: &[String],
    domain: &str,
    default_port: u32,
) -> anyhow::Result<Vec<(String, u32)>> {
    routes
        .iter()
        .map(|r| {
            let (host, port) = match r.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u32>()
                        .ok()
                        .filter(|p| (1..=65535).contains(p))
                        .with_context(|| format!("--http-route {r:?}: {p:?} is not a port"))?,
                ),
                None => (r.as_str(), default_port),
            };
            anyhow::ensure!(
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "--http-route {r:?}: expected HOST[:PORT], e.g. www or www.example.com:8080"
            );
            let host = if host.contains('.') {
                host.to_lowercase()
            } else {
                format!("{}.{domain}", host.to_lowercase())
            };
            Ok((host, port))
        })
        .collect()
}

/// `--tcp-route` values added to `routes` (as `tcp-router`) and their container ports
/// to `ports`.
pub(crate) fn add_tcp_routes(
    flags: &[String],
    ports: &mut Vec<u32>,
    routes: &mut BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<()> {
    if flags.is_empty() {
        return Ok(());
    }
    let tcp = flags
        .iter()
        .map(|f| TcpRoute::parse_flag(f).map_err(|e| anyhow::anyhow!("--tcp-route {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = tcp.iter().find(|r| !seen.insert(r.external_port)) {
        anyhow::bail!(
            "--tcp-route: external port {} is named twice: one app, one route per port",
            twice.external_port
        );
    }
    for r in &tcp {
        if !ports.contains(&u32::from(r.container_port)) {
            ports.push(r.container_port.into());
        }
    }
    routes.insert(TCP_ROUTER_KEY.into(), TcpRoute::to_value(&tcp));
    Ok(())
}

/// An app's TCP routes (from its `tcp-router` routes).
pub fn tcp_routes(d: &DesiredLrpResponse) -> Vec<TcpRoute> {
    TcpRoute::list_from_json(&d.request.routes)
}

/// Hostnames an app is routed at (from its `cf-router` routes).
pub fn hostnames(d: &DesiredLrpResponse) -> Vec<String> {
    CfRoute::list_from_json(&d.request.routes)
        .into_iter()
        .flat_map(|r| r.hostnames)
        .collect()
}

pub(crate) fn env_vars(env: &[String]) -> anyhow::Result<Vec<EnvironmentVariable>> {
    env.iter()
        .map(|e| {
            let (name, value) = match e.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (
                    e.clone(),
                    std::env::var(e).with_context(|| {
                        format!("--env {e}: ltc has no {e} in its environment to pass; use --env {e}=VALUE")
                    })?,
                ),
            };
            anyhow::ensure!(!name.is_empty(), "--env {e:?}: expected NAME=VALUE");
            Ok(EnvironmentVariable { name, value })
        })
        .collect()
}

pub(crate) fn volume_mounts(volumes: &[String]) -> anyhow::Result<Vec<models::VolumeMount>> {
    volumes
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let (name, path, ro) = match parts[..] {
                [n, p] => (n, p, false),
                [n, p, "ro"] => (n, p, true),
                [n, p, "rw"] => (n, p, false),
                _ => anyhow::bail!("--volume {v:?}: expected NAME:/path[:ro]"),
            };
            anyhow::ensure!(
                !name.is_empty() && path.starts_with('/'),
                "--volume {v:?}: expected NAME:/path[:ro] with an absolute path"
            );
            Ok(models::VolumeMount {
                driver: String::new(),
                volume: name.into(),
                container_path: path.into(),
                read_only: ro,
                snapshot: false,
                scratch_bytes: 0,
            })
        })
        .collect()
}

fn sh(cmd: &str) -> models::RunAction {
    models::RunAction {
        path: "/bin/sh".into(),
        args: vec!["-c".into(), cmd.into()],
        ..Default::default()
    }
}

/// What runs: the command after `--` as (path, args). An OCI or registry image brings
/// its entrypoint and cmd, as `docker run` does: what follows `--` replaces cmd and
/// goes to the entrypoint (the cell resolves it); a preloaded rootfs needs a command.
pub(crate) fn run_command(
    name: &str,
    image: &str,
    command: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    Ok(match command.split_first() {
        _ if !image.starts_with("preloaded:") => (String::new(), command.to_vec()),
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => anyhow::bail!(
            "say what to run after `--`, e.g. ltc create {name} {image} -- sh -c 'echo hi > index.html; exec httpd -f -p 8080'"
        ),
    })
}

/// The health check the `--monitor-*` / `--no-monitor` flags ask for, as
/// (check definition, monitor action); (None, None) is the cell's default (the first
/// port accepts connections).
pub(crate) fn health_check(
    no_monitor: bool,
    port: Option<u32>,
    url: Option<&str>,
    command: Option<&str>,
) -> anyhow::Result<(Option<CheckDefinition>, Option<Action>)> {
    let checks = |check| {
        Some(CheckDefinition {
            checks: vec![Check { check: Some(check) }],
            log_source: String::new(),
        })
    };
    Ok(if no_monitor {
        (Some(CheckDefinition::default()), None)
    } else if let Some(p) = port {
        let tcp = check::Check::Tcp(models::TcpCheck {
            port: p,
            connect_timeout_ms: 0,
        });
        (checks(tcp), None)
    } else if let Some(u) = url {
        let (port, path) = u
            .split_once(':')
            .and_then(|(p, path)| Some((p.parse::<u32>().ok()?, path)))
            .filter(|(_, path)| path.starts_with('/'))
            .with_context(|| {
                format!("--monitor-url {u:?}: expected PORT:/path, e.g. 8080:/health")
            })?;
        let http = check::Check::Http(models::HttpCheck {
            port,
            request_timeout_ms: 0,
            path: path.into(),
        });
        (checks(http), None)
    } else if let Some(c) = command {
        let run = Action {
            action: Some(action::Action::Run(sh(c))),
        };
        (None, Some(run))
    } else {
        (None, None)
    })
}

/// The DesiredLRP `ltc create` asks for.
pub fn create_request(a: &CreateArgs, target: &Target) -> anyhow::Result<DesiredLrpCreateRequest> {
    let name = &a.app;
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-'),
        "app name {name:?}: use lowercase letters, digits and dashes (it becomes the hostname {name}.{})",
        target.route_domain()
    );
    anyhow::ensure!(
        a.image.contains(':'),
        "image {:?}: say where it comes from, e.g. preloaded:busybox",
        a.image
    );
    let (path, args) = run_command(name, &a.image, &a.command)?;
    anyhow::ensure!(a.instances >= 0, "--instances must be 0 or more");
    anyhow::ensure!(
        (1..=100).contains(&a.cpu_weight),
        "--cpu-weight must be 1..100"
    );
    anyhow::ensure!(
        a.ports.iter().all(|p| (1..=65535).contains(p)),
        "--ports: container ports are 1..65535"
    );
    let first_port = a.ports.first().copied();
    let mut routes = if a.no_routes {
        BTreeMap::new()
    } else {
        let port = first_port
            .context("--ports is empty: an app with routes needs a port (or use --no-routes)")?;
        let mut r = parse_routes(&a.http_routes, target.route_domain(), port)?;
        if r.is_empty() {
            r.push((format!("{name}.{}", target.route_domain()), port));
        }
        routes_json(&r)
    };
    let mut ports = a.ports.clone();
    add_tcp_routes(&a.tcp_routes, &mut ports, &mut routes)?;
    let env = env_vars(&a.env)?;
    let (check_definition, monitor) = health_check(
        a.no_monitor,
        a.monitor_port,
        a.monitor_url.as_deref(),
        a.monitor_command.as_deref(),
    )?;
    let run = models::RunAction {
        path,
        args,
        dir: a.working_dir.clone().unwrap_or_default(),
        env: env.clone(),
        user: a.user.clone().unwrap_or_default(),
        ..Default::default()
    };
    Ok(DesiredLrpCreateRequest {
        process_guid: name.clone(),
        domain: "lattice".into(),
        rootfs: a.image.clone(),
        instances: a.instances,
        env,
        action: Some(Action {
            action: Some(action::Action::Run(run)),
        }),
        monitor,
        check_definition,
        start_timeout: a.timeout.as_secs().max(1),
        disk_mb: a.disk_mb,
        memory_mb: a.memory_mb,
        cpu_weight: a.cpu_weight,
        privileged: a.privileged,
        ports,
        routes,
        log_guid: name.clone(),
        log_source: "APP".into(),
        metrics_guid: name.clone(),
        placement_tags: a.placement_tags.clone(),
        volume_mounts: volume_mounts(&a.volumes)?,
        ..Default::default()
    })
}

/// Where waiting for instances stands.
#[derive(Debug, PartialEq)]
pub enum Progress {
    Waiting {
        running: usize,
        wanted: usize,
        summary: String,
    },
    Done,
    Failed(String),
}

/// Crash counts per index when a wait began: crashes counted there are old news.
pub type Baseline = std::collections::HashMap<i32, i32>;

pub fn baseline(actuals: &[ActualLrpResponse]) -> Baseline {
    actuals.iter().map(|a| (a.index, a.crash_count)).collect()
}

/// Judges the instances of an app that should have `wanted` of them running; a crash
/// counts if the instance's crash count grew past `base`.
pub fn progress(actuals: &[ActualLrpResponse], wanted: usize, base: &Baseline) -> Progress {
    let live: Vec<_> = actuals
        .iter()
        .filter(|a| (a.index as usize) < wanted)
        .collect();
    if let Some(a) = live.iter().find(|a| !a.placement_error.is_empty()) {
        return Progress::Failed(format!(
            "instance {} cannot be placed: {}",
            a.index, a.placement_error
        ));
    }
    if let Some(a) = live.iter().find(|a| {
        a.crash_count > base.get(&a.index).copied().unwrap_or(0)
            && !a.crash_reason.is_empty()
            && a.state != "RUNNING"
    }) {
        return Progress::Failed(format!("instance {} crashed: {}", a.index, a.crash_reason));
    }
    let running = live
        .iter()
        .filter(|a| a.state == "RUNNING" && a.presence != "EVACUATING")
        .count();
    if running == wanted && actuals.len() == wanted {
        return Progress::Done;
    }
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &live {
        *states.entry(a.state.as_str()).or_default() += 1;
    }
    let mut summary: Vec<String> = states
        .iter()
        .filter(|(s, _)| **s != "RUNNING")
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    if actuals.len() > wanted {
        summary.push(format!("{} stopping", actuals.len() - wanted));
    }
    Progress::Waiting {
        running,
        wanted,
        summary: summary.join(", "),
    }
}

/// Waits until `app` has `wanted` RUNNING instances, showing progress on stderr.
pub async fn wait_running(
    api: &Api,
    app: &str,
    wanted: usize,
    timeout: Duration,
    base: &Baseline,
) -> anyhow::Result<()> {
    let mut shown = ProgressLine::new();
    let mut errors = 0;
    loop {
        // A passing hiccup of the API (a slow store) is not the app's failure.
        let actuals = match api.actual_lrps_of(app).await {
            Ok(a) => {
                errors = 0;
                a
            }
            Err(e) if errors < 5 => {
                errors += 1;
                say_retrying(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = match progress(&actuals, wanted, base) {
            Progress::Done => {
                shown.clear();
                return Ok(());
            }
            Progress::Failed(why) => {
                shown.end();
                anyhow::bail!(
                    "{app}: {why}. `ltc status {app}` and `ltc logs {app}` say more; the app stays desired until `ltc remove {app}`"
                )
            }
            Progress::Waiting {
                running,
                wanted,
                summary,
            } => {
                let extra = if summary.is_empty() {
                    String::new()
                } else {
                    format!(" ({summary})")
                };
                format!("{app}: {running}/{wanted} instances running{extra}")
            }
        };
        shown.show(line);
        if shown.timed_out(timeout) {
            anyhow::bail!(
                "{app}: timed out after {}s with {}. `ltc status {app}` and `ltc logs {app}` say why",
                timeout.as_secs(),
                shown.last
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A waiting command's progress on stderr: one line rewritten in place, with the
/// time waited, on a terminal; each new line printed otherwise.
pub(crate) struct ProgressLine {
    tty: bool,
    began: Instant,
    /// The last line shown.
    pub last: String,
}

impl ProgressLine {
    pub fn new() -> ProgressLine {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            began: Instant::now(),
            last: String::new(),
        }
    }

    pub fn show(&mut self, line: String) {
        if self.tty {
            eprint!("\r\x1b[2K{line} {:.1}s", self.began.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
        } else if line != self.last {
            eprintln!("{line}");
        }
        self.last = line;
    }

    /// Whether `timeout` has passed since the wait began (the line is then ended).
    pub fn timed_out(&self, timeout: Duration) -> bool {
        let out = self.began.elapsed() > timeout;
        if out {
            self.end();
        }
        out
    }

    /// Keeps the line shown on a terminal and moves on to the next.
    pub fn end(&self) {
        if self.tty && !self.last.is_empty() {
            eprintln!();
        }
    }

    /// Erases the line shown on a terminal.
    pub fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

pub(crate) fn say_retrying(e: &anyhow::Error) {
    eprintln!("ltc: {e:#} (retrying)");
}

pub(crate) fn print_urls(target: &Target, d: &DesiredLrpResponse) {
    for h in hostnames(d) {
        println!("{}", target.app_url(&h));
    }
    for r in tcp_routes(d) {
        println!("{}", target.tcp_route(&r));
    }
}

pub async fn create(api: &Api, a: &CreateArgs) -> anyhow::Result<()> {
    let req = create_request(a, &api.target)?;
    match api.create_desired_lrp(&req).await {
        Err(e) if error_name(&e) == Some(ErrorName::DesiredLRPAlreadyExists) => anyhow::bail!(
            "app {} already exists: use `ltc scale {} N` or `ltc remove {}`",
            a.app,
            a.app,
            a.app
        ),
        r => r?,
    }
    eprintln!(
        "Creating app {} ({} instance(s) of {})",
        a.app, a.instances, a.image
    );
    wait_running(
        api,
        &a.app,
        a.instances as usize,
        a.timeout,
        &Baseline::new(),
    )
    .await?;
    println!("App {} is running, {} instance(s).", a.app, a.instances);
    print_urls(&api.target, &api.desired_lrp(&a.app).await?);
    Ok(())
}

pub async fn scale(api: &Api, app: &str, instances: i32, timeout: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(instances >= 0, "instances must be 0 or more");
    api.app(app).await?;
    // Crashes from before this scale are not its failure.
    let base = baseline(&api.actual_lrps_of(app).await?);
    api.update_desired_lrp(
        app,
        &lattice_specs::receptor::DesiredLrpUpdateRequest {
            instances: Some(instances),
            ..Default::default()
        },
    )
    .await?;
    eprintln!("Scaling {app} to {instances} instance(s)");
    wait_running(api, app, instances as usize, timeout, &base).await?;
    println!("App {app} is running {instances} instance(s).");
    if instances > 0 {
        print_urls(&api.target, &api.desired_lrp(app).await?);
    }
    Ok(())
}

pub async fn remove(api: &Api, apps: &[String]) -> anyhow::Result<()> {
    let mut failed = 0;
    for app in apps {
        match api.remove_desired_lrp(app).await {
            Ok(()) => println!("Removed {app}."),
            Err(e) if error_name(&e) == Some(ErrorName::DesiredLRPNotFound) => {
                eprintln!("ltc: app {app} not found: `ltc list` shows the apps");
                failed += 1;
            }
            Err(e) => {
                eprintln!("ltc: removing {app}: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} app(s) not removed", apps.len());
    Ok(())
}

#[cfg(test)]
mod tests;
