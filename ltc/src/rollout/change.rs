//! `ltc update`'s definition: the app's current one with only what the named flags
//! say changed, built with `ltc create`'s own pieces (`crate::app`). Pure: no I/O.

use anyhow::Context;
use lattice_specs::models::{action, EnvironmentVariable, RunAction};
use lattice_specs::receptor::DesiredLrpCreateRequest;
use lattice_specs::routes::{CfRoute, ROUTER_KEY, TCP_ROUTER_KEY};

use super::UpdateArgs;
use crate::app::{
    add_tcp_routes, health_check, parse_routes, routes_json, run_command, volume_mounts,
};

/// The flags (clap ids) `ltc update` knows how to apply or that are not part of the
/// definition; any other named flag is refused rather than silently ignored.
const KNOWN: &[&str] = &[
    "app",
    "image",
    "command",
    "instances",
    "memory_mb",
    "disk_mb",
    "cpu_weight",
    "ports",
    "http_routes",
    "no_routes",
    "monitor_port",
    "monitor_url",
    "monitor_command",
    "no_monitor",
    "env",
    "unset_env",
    "working_dir",
    "user",
    "privileged",
    "no_privileged",
    "placement_tags",
    "volumes",
    "tcp_routes",
    "no_tcp_routes",
    // How to roll out and how long to wait: not the definition.
    "timeout",
    "max_surge",
    "max_unavailable",
    "canary",
];

const MONITOR: &[&str] = &[
    "monitor_port",
    "monitor_url",
    "monitor_command",
    "no_monitor",
];
const RUN: &[&str] = &["command", "env", "unset_env", "working_dir", "user"];

/// `current` with the changes `u`'s named flags ask for; `domain` completes a route's
/// hostname as in `ltc create`.
pub fn changed_definition(
    current: &DesiredLrpCreateRequest,
    u: &UpdateArgs,
    domain: &str,
) -> anyhow::Result<DesiredLrpCreateRequest> {
    let a = &u.def;
    let named = |id: &str| u.named.contains(id);
    if let Some(id) = u.named.iter().find(|id| !KNOWN.contains(&id.as_str())) {
        anyhow::bail!(
            "ltc update cannot change --{} yet: `ltc remove {}` and `ltc create` it again",
            id.replace('_', "-"),
            a.app
        );
    }
    let mut new = current.clone();
    if named("image") {
        anyhow::ensure!(
            a.image.contains(':'),
            "image {:?}: say where it comes from, e.g. preloaded:busybox",
            a.image
        );
        new.rootfs = a.image.clone();
    }
    if named("instances") {
        anyhow::ensure!(a.instances >= 0, "--instances must be 0 or more");
        new.instances = a.instances;
    }
    if named("memory_mb") {
        new.memory_mb = a.memory_mb;
    }
    if named("disk_mb") {
        new.disk_mb = a.disk_mb;
    }
    if named("cpu_weight") {
        anyhow::ensure!(
            (1..=100).contains(&a.cpu_weight),
            "--cpu-weight must be 1..100"
        );
        new.cpu_weight = a.cpu_weight;
    }
    if named("privileged") {
        new.privileged = true;
    }
    if u.roll.no_privileged {
        new.privileged = false;
    }
    if named("ports") {
        anyhow::ensure!(
            a.ports.iter().all(|p| (1..=65535).contains(p)),
            "--ports: container ports are 1..65535"
        );
        new.ports = a.ports.clone();
    }
    if named("placement_tags") {
        new.placement_tags = a.placement_tags.clone();
    }
    if named("volumes") {
        new.volume_mounts = volume_mounts(&a.volumes)?;
    }
    if MONITOR.iter().any(|id| named(id)) {
        (new.check_definition, new.monitor) = health_check(
            a.no_monitor,
            a.monitor_port,
            a.monitor_url.as_deref(),
            a.monitor_command.as_deref(),
        )?;
    }
    change_routes(&mut new, u, domain)?;
    change_run(&mut new, u)?;
    Ok(new)
}

/// `--http-route` (the whole new list of HTTP routes) or `--no-routes`; with only
/// `--ports`, the routes kept must still go to one of the ports. `--tcp-route` (the
/// whole new list of TCP routes, their container ports added) or `--no-tcp-routes`.
fn change_routes(
    new: &mut DesiredLrpCreateRequest,
    u: &UpdateArgs,
    domain: &str,
) -> anyhow::Result<()> {
    if u.roll.no_tcp_routes {
        new.routes.remove(TCP_ROUTER_KEY);
    } else if u.named.contains("tcp_routes") {
        add_tcp_routes(&u.def.tcp_routes, &mut new.ports, &mut new.routes)?;
    }
    if u.named.contains("no_routes") {
        new.routes.remove(ROUTER_KEY);
    } else if u.named.contains("http_routes") {
        let port = new.ports.first().copied().context(
            "the app has no ports for --http-route to go to: give --ports too (or --no-routes)",
        )?;
        new.routes.extend(routes_json(&parse_routes(
            &u.def.http_routes,
            domain,
            port,
        )?));
    } else if u.named.contains("ports") {
        for r in CfRoute::list_from_json(&new.routes) {
            anyhow::ensure!(
                new.ports.contains(&r.port),
                "the route {} goes to port {}, which --ports no longer lists: name the routes too (--http-route HOST:PORT) or give --no-routes",
                r.hostnames.join(", "),
                r.port
            );
        }
    }
    Ok(())
}

/// The command, environment, working directory and user: all in the app's run action.
fn change_run(new: &mut DesiredLrpCreateRequest, u: &UpdateArgs) -> anyhow::Result<()> {
    let a = &u.def;
    let named = |id: &str| u.named.contains(id);
    if !RUN.iter().any(|id| named(id)) && !named("image") {
        return Ok(());
    }
    let set = if named("env") {
        crate::app::env_vars(&a.env)?
    } else {
        vec![]
    };
    for n in &u.roll.unset_env {
        anyhow::ensure!(
            !set.iter().any(|v| &v.name == n),
            "--unset-env {n} and --env {n}: say one of them"
        );
    }
    let name = new.process_guid.clone();
    let image = new.rootfs.clone();
    let run_env = match run_action(new) {
        Some(run) => run.env.clone(),
        None => {
            anyhow::ensure!(
                !RUN.iter().any(|id| named(id)),
                "app {name} does not run one command (`ltc create` did not make its action): ltc update cannot change its command, environment, directory or user; POST a whole definition to /v1/desired_lrps/{name}/generations"
            );
            return Ok(());
        }
    };
    if let Some(n) = u
        .roll
        .unset_env
        .iter()
        .find(|n| !new.env.iter().chain(&run_env).any(|v| &v.name == *n))
    {
        anyhow::bail!("--unset-env {n}: app {name} has no variable {n} (`ltc status {name} --json` shows them)");
    }
    apply_env(&mut new.env, &set, &u.roll.unset_env);
    let run = run_action(new).expect("checked above");
    apply_env(&mut run.env, &set, &u.roll.unset_env);
    if named("command") {
        (run.path, run.args) = run_command(&name, &image, &a.command)?;
    } else if run.path.is_empty() && image.starts_with("preloaded:") {
        // From an image with its own entrypoint to a rootfs without one.
        run_command(&name, &image, &[])?;
    }
    if named("working_dir") {
        run.dir = a.working_dir.clone().unwrap_or_default();
    }
    if named("user") {
        run.user = a.user.clone().unwrap_or_default();
    }
    Ok(())
}

fn run_action(d: &mut DesiredLrpCreateRequest) -> Option<&mut RunAction> {
    match d.action.as_mut()?.action.as_mut()? {
        action::Action::Run(run) => Some(run),
        _ => None,
    }
}

/// Sets each of `set` (replacing a variable of the same name where it stands) and
/// removes the `unset` names.
fn apply_env(env: &mut Vec<EnvironmentVariable>, set: &[EnvironmentVariable], unset: &[String]) {
    env.retain(|v| !unset.contains(&v.name));
    for v in set {
        match env.iter_mut().find(|e| e.name == v.name) {
            Some(e) => e.value = v.value.clone(),
            None => env.push(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{create_request, CreateArgs};
    use crate::target::Target;
    use clap::Parser;
    use lattice_specs::models::{check, Check};
    use lattice_specs::routes::TcpRoute;

    #[derive(Parser)]
    struct C {
        #[command(flatten)]
        a: CreateArgs,
    }

    #[derive(Parser)]
    struct U {
        #[command(flatten)]
        u: UpdateArgs,
    }

    const DOMAIN: &str = "lattice.localhost";

    fn created(v: &[&str]) -> DesiredLrpCreateRequest {
        let a = C::try_parse_from(std::iter::once("ltc").chain(v.iter().copied()))
            .unwrap()
            .a;
        create_request(&a, &Target::parse("127.0.0.1:8888").unwrap()).unwrap()
    }

    fn web() -> DesiredLrpCreateRequest {
        created(&[
            "web",
            "preloaded:busybox",
            "-i",
            "3",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-w",
            "/srv",
            "--",
            "httpd",
            "-f",
        ])
    }

    fn update(
        current: &DesiredLrpCreateRequest,
        v: &[&str],
    ) -> anyhow::Result<DesiredLrpCreateRequest> {
        let u = U::try_parse_from(std::iter::once("ltc").chain(v.iter().copied()))?.u;
        changed_definition(current, &u, DOMAIN)
    }

    fn run(d: &DesiredLrpCreateRequest) -> RunAction {
        match d.action.clone().unwrap().action.unwrap() {
            action::Action::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn env(v: &[EnvironmentVariable]) -> Vec<(String, String)> {
        v.iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    #[test]
    fn no_flags_change_nothing_and_defaults_are_not_changes() {
        let cur = web();
        assert_eq!(update(&cur, &["web"]).unwrap(), cur);
        // create's defaults (1 instance, 128 MB, port 8080…) are not taken as asked for.
        let mut big = cur.clone();
        big.memory_mb = 512;
        big.ports = vec![9000];
        big.routes.clear();
        assert_eq!(update(&big, &["web", "--timeout", "5m"]).unwrap(), big);
    }

    #[test]
    fn image_and_env_change_only_what_is_named() {
        let cur = web();
        let new = update(
            &cur,
            &[
                "web",
                "preloaded:alpine",
                "-e",
                "B=3",
                "-e",
                "C=4",
                "--unset-env",
                "A",
            ],
        )
        .unwrap();
        assert_eq!(new.rootfs, "preloaded:alpine");
        let want = vec![("B".into(), "3".into()), ("C".into(), "4".into())];
        assert_eq!(env(&new.env), want);
        assert_eq!(env(&run(&new).env), want, "the run action's too");
        assert_eq!(
            (run(&new).path.as_str(), run(&new).dir.as_str()),
            ("httpd", "/srv"),
            "command and directory kept"
        );
        assert_eq!(
            (new.instances, new.memory_mb, &new.routes),
            (3, 128, &cur.routes)
        );
    }

    #[test]
    fn command_memory_and_health_check_are_replaced() {
        let cur = web();
        let new = update(
            &cur,
            &[
                "web",
                "-m",
                "256",
                "-U",
                "8080:/health",
                "-u",
                "nobody",
                "--",
                "sh",
                "-c",
                "x",
            ],
        )
        .unwrap();
        assert_eq!(new.memory_mb, 256);
        let r = run(&new);
        assert_eq!(
            (r.path.as_str(), r.args.clone(), r.user.as_str()),
            ("sh", vec!["-c".to_string(), "x".into()], "nobody")
        );
        let Some(Check {
            check: Some(check::Check::Http(h)),
        }) = new.check_definition.unwrap().checks.first().cloned()
        else {
            panic!("an HTTP check")
        };
        assert_eq!((h.port, h.path.as_str()), (8080, "/health"));
        let plain = update(&cur, &["web", "--no-monitor"]).unwrap();
        assert_eq!(plain.check_definition.unwrap().checks, vec![]);
    }

    #[test]
    fn routes_ports_and_privileges() {
        let cur = web();
        let new = update(&cur, &["web", "-R", "www", "-R", "api"]).unwrap();
        let hosts: Vec<String> = CfRoute::list_from_json(&new.routes)
            .into_iter()
            .flat_map(|r| r.hostnames)
            .collect();
        assert_eq!(hosts, ["www.lattice.localhost", "api.lattice.localhost"]);
        assert!(update(&cur, &["web", "--no-routes"])
            .unwrap()
            .routes
            .is_empty());
        // Other routers' routes stay when the HTTP ones change.
        let mut tcp = cur.clone();
        tcp.routes
            .insert("tcp-router".into(), serde_json::json!([]));
        assert!(update(&tcp, &["web", "--no-routes"])
            .unwrap()
            .routes
            .contains_key("tcp-router"));
        let e = update(&cur, &["web", "-p", "9000"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("goes to port 8080, which --ports no longer lists"),
            "{e}"
        );
        let moved = update(&cur, &["web", "-p", "9000", "-R", "web"]).unwrap();
        assert_eq!(CfRoute::list_from_json(&moved.routes)[0].port, 9000);
        let t = update(&cur, &["web", "--tcp-route", "5000:7000"]).unwrap();
        assert_eq!(
            TcpRoute::list_from_json(&t.routes),
            [TcpRoute::parse_flag("5000:7000").unwrap()]
        );
        assert!(t.ports.contains(&7000), "{:?}", t.ports);
        assert_eq!(
            CfRoute::list_from_json(&t.routes),
            CfRoute::list_from_json(&cur.routes)
        );
        let e = update(&cur, &["web", "--tcp-route", "5000"]).unwrap_err();
        assert!(e.to_string().contains("--tcp-route"), "{e}");
        let none = update(&t, &["web", "--no-tcp-routes"]).unwrap();
        assert!(TcpRoute::list_from_json(&none.routes).is_empty());
        let p = update(&cur, &["web", "--privileged"]).unwrap();
        assert!(p.privileged);
        assert!(!update(&p, &["web", "--no-privileged"]).unwrap().privileged);
    }

    #[test]
    fn bad_changes_name_the_flag() {
        let cur = web();
        for (args, want) in [
            (
                &["web", "--unset-env", "NOPE"][..],
                "--unset-env NOPE: app web has no variable NOPE",
            ),
            (
                &["web", "-e", "A=2", "--unset-env", "A"],
                "--unset-env A and --env A",
            ),
            (&["web", "busybox"], "say where it comes from"),
            (&["web", "-c", "0"], "--cpu-weight must be 1..100"),
            (&["web", "-i=-1"], "--instances must be 0 or more"),
        ] {
            let e = update(&cur, args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        // An image with its own entrypoint back to a preloaded rootfs needs a command.
        let oci = created(&["img", "oci:/images/web"]);
        let e = update(&oci, &["img", "preloaded:busybox"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("say what to run after `--`"), "{e}");
        assert!(update(&oci, &["img", "preloaded:busybox", "--", "true"]).is_ok());
        // An action ltc did not make: its command cannot be edited, other fields can.
        let mut other = cur.clone();
        other.action = None;
        let e = update(&other, &["web", "-e", "A=2"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not run one command"), "{e}");
        assert_eq!(update(&other, &["web", "-m", "64"]).unwrap().memory_mb, 64);
    }
}
