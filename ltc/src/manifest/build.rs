//! From a manifest's app or task to the API's request (apps through `ltc create`'s own
//! builder), and back from an app's definition to a manifest's app (`ltc export`).

use std::collections::BTreeMap;

use lattice_specs::models::{action, check, Action};
use lattice_specs::receptor::rollout::StrategyJson;
use lattice_specs::receptor::{DesiredLrpCreateRequest, TaskCreateRequest};
use lattice_specs::routes::{CfRoute, TcpRoute};

use super::model::{AppSpec, Monitor, TaskSpec};
use crate::app::{self, CreateArgs};
use crate::target::Target;

fn env_args(env: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    env.iter()
        .map(|(n, v)| {
            anyhow::ensure!(
                !n.is_empty() && !n.contains('='),
                "env: {n:?} is not a variable name (use letters, digits and _)"
            );
            Ok(format!("{n}={v}"))
        })
        .collect()
}

/// The DesiredLRP the app asks for: `ltc create`'s.
pub fn app_request(
    name: &str,
    spec: &AppSpec,
    target: &Target,
) -> anyhow::Result<DesiredLrpCreateRequest> {
    let (monitor_port, monitor_url, monitor_command, no_monitor) = match &spec.monitor {
        None => (None, None, None, false),
        Some(Monitor::Port(p)) => (Some(*p), None, None, false),
        Some(Monitor::Url(u)) => (None, Some(u.clone()), None, false),
        Some(Monitor::Command(c)) => (None, None, Some(c.clone()), false),
        Some(Monitor::None) => (None, None, None, true),
    };
    anyhow::ensure!(
        !spec.no_routes || spec.http_routes.is_empty(),
        "no_routes and http_routes contradict each other: keep one"
    );
    // Flags `ltc create` may gain that a manifest does not say keep their defaults.
    #[allow(clippy::needless_update)]
    let args = CreateArgs {
        app: name.into(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        instances: spec.instances,
        memory_mb: spec.memory_mb,
        disk_mb: spec.disk_mb,
        cpu_weight: spec.cpu_weight,
        ports: spec.ports.clone(),
        http_routes: spec.http_routes.clone(),
        no_routes: spec.no_routes,
        monitor_port,
        monitor_url,
        monitor_command,
        no_monitor,
        env: env_args(&spec.env)?,
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        privileged: spec.privileged,
        placement_tags: spec.placement_tags.clone(),
        volumes: spec.volumes.clone(),
        timeout: timeout(&spec.timeout)?,
        tcp_routes: spec.tcp_routes.clone(),
        ..Default::default()
    };
    app::create_request(&args, target)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("--tcp-route ", "tcp_routes: ")))
}

pub fn timeout(s: &str) -> anyhow::Result<std::time::Duration> {
    app::parse_duration(s).map_err(|e| anyhow::anyhow!("timeout: {e}"))
}

pub fn strategy(spec: &AppSpec) -> StrategyJson {
    StrategyJson {
        max_surge: spec.update.max_surge,
        max_unavailable: spec.update.max_unavailable,
        canary: 0,
    }
}

/// The task the manifest asks for (its name is its task guid and log guid).
pub fn task_request(name: &str, spec: &TaskSpec) -> anyhow::Result<TaskCreateRequest> {
    anyhow::ensure!(
        spec.image.contains(':'),
        "image {:?}: say where it comes from, e.g. preloaded:busybox",
        spec.image
    );
    let image = !spec.image.starts_with("preloaded:");
    let (path, args) = match spec.command.split_first() {
        _ if image => (String::new(), spec.command.clone()),
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => anyhow::bail!("command: say what to run, e.g. [sh, -c, 'echo hi']"),
    };
    timeout(&spec.timeout)?;
    let env = app::env_vars(&env_args(&spec.env)?)?;
    Ok(TaskCreateRequest {
        task_guid: name.into(),
        domain: "lattice".into(),
        rootfs: spec.image.clone(),
        action: Some(Action {
            action: Some(action::Action::Run(lattice_specs::models::RunAction {
                path,
                args,
                dir: spec.working_dir.clone().unwrap_or_default(),
                env: env.clone(),
                user: spec.user.clone().unwrap_or_default(),
                ..Default::default()
            })),
        }),
        env,
        cpu_weight: spec.cpu_weight,
        disk_mb: spec.disk_mb,
        memory_mb: spec.memory_mb,
        log_guid: name.into(),
        log_source: "TASK".into(),
        metrics_guid: name.into(),
        result_file: spec.result_file.clone(),
        privileged: spec.privileged,
        placement_tags: spec.placement_tags.clone(),
        volume_mounts: app::volume_mounts(&spec.volumes)?,
        ..Default::default()
    })
}

/// A size as a manifest says it, exactly: `10G`, `300M`, or bytes.
pub fn exact_size(bytes: u64) -> String {
    for (u, name) in [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ] {
        if bytes >= u && bytes.is_multiple_of(u) {
            return format!("{}{name}", bytes / u);
        }
    }
    bytes.to_string()
}

fn duration_text(secs: u64) -> String {
    if secs.is_multiple_of(60) && secs > 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

fn monitor_of(req: &DesiredLrpCreateRequest) -> Option<Monitor> {
    if let Some(Action {
        action: Some(action::Action::Run(r)),
    }) = &req.monitor
    {
        return match &r.args[..] {
            [c, cmd] if r.path == "/bin/sh" && c == "-c" => Some(Monitor::Command(cmd.clone())),
            _ => None,
        };
    }
    let cd = req.check_definition.as_ref()?;
    match cd.checks.as_slice() {
        [] => Some(Monitor::None),
        [c] => match &c.check {
            Some(check::Check::Tcp(t)) => Some(Monitor::Port(t.port)),
            Some(check::Check::Http(h)) => Some(Monitor::Url(format!("{}:{}", h.port, h.path))),
            _ => None,
        },
        _ => None,
    }
}

fn routes_of(name: &str, req: &DesiredLrpCreateRequest, target: &Target, spec: &mut AppSpec) {
    match req.routes.get(lattice_specs::routes::ROUTER_KEY) {
        None => spec.no_routes = true,
        Some(_) => {
            let routes = CfRoute::list_from_json(&req.routes);
            let default = req.ports.first().map(|p| {
                vec![CfRoute {
                    hostnames: vec![format!("{name}.{}", target.route_domain())],
                    port: *p,
                }]
            });
            if Some(&routes) != default.as_ref() {
                spec.http_routes = routes
                    .iter()
                    .flat_map(|r| r.hostnames.iter().map(move |h| format!("{h}:{}", r.port)))
                    .collect();
            }
        }
    }
    spec.tcp_routes = TcpRoute::list_from_json(&req.routes)
        .iter()
        .map(|r| format!("{}:{}", r.external_port, r.container_port))
        .collect();
}

/// The manifest's app for a definition. Only what the manifest can say is kept: the
/// caller checks that building it again gives the same definition.
pub fn app_spec(name: &str, req: &DesiredLrpCreateRequest, target: &Target) -> AppSpec {
    let mut spec = AppSpec {
        image: req.rootfs.clone(),
        instances: req.instances,
        memory_mb: req.memory_mb,
        disk_mb: req.disk_mb,
        cpu_weight: req.cpu_weight,
        ports: req.ports.clone(),
        monitor: monitor_of(req),
        env: req
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        privileged: req.privileged,
        placement_tags: req.placement_tags.clone(),
        volumes: req
            .volume_mounts
            .iter()
            .map(|m| {
                let ro = if m.read_only { ":ro" } else { "" };
                format!("{}:{}{ro}", m.volume, m.container_path)
            })
            .collect(),
        timeout: duration_text(req.start_timeout),
        ..Default::default()
    };
    if let Some(Action {
        action: Some(action::Action::Run(r)),
    }) = &req.action
    {
        spec.command = if r.path.is_empty() {
            r.args.clone()
        } else {
            std::iter::once(r.path.clone())
                .chain(r.args.iter().cloned())
                .collect()
        };
        spec.working_dir = Some(r.dir.clone()).filter(|d| !d.is_empty());
        spec.user = Some(r.user.clone()).filter(|u| !u.is_empty());
    }
    routes_of(name, req, target, &mut spec);
    // TCP routes' container ports are added to the ports by the builder.
    let tcp_ports: Vec<u32> = TcpRoute::list_from_json(&req.routes)
        .into_iter()
        .map(|r| r.container_port.into())
        .collect();
    if spec.ports.len() > 1 {
        while spec.ports.len() > 1 && spec.ports.last().is_some_and(|p| tcp_ports.contains(p)) {
            spec.ports.pop();
        }
    }
    spec
}
