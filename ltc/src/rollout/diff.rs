//! What changed between two definitions of an app, named for people: `ltc update`
//! says what it rolls out, `ltc history` what each generation changed. Environment
//! variables are named, never their values (they may be secrets). Pure.

use std::collections::BTreeMap;

use lattice_specs::models::{action, check, Action, RunAction};
use lattice_specs::receptor::DesiredLrpCreateRequest;
use lattice_specs::routes::CfRoute;

/// The changes that make a new generation (everything but instances, routes and the
/// annotation), e.g. `image preloaded:busybox → preloaded:alpine`, `env ~A +B -C`.
pub fn definition_changes(
    old: &DesiredLrpCreateRequest,
    new: &DesiredLrpCreateRequest,
) -> Vec<String> {
    let mut out = vec![];
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} → {b}"));
        }
    };
    let (ro, rn) = (run_of(&old.action), run_of(&new.action));
    field("image", old.rootfs.clone(), new.rootfs.clone());
    field("command", command(&old.action), command(&new.action));
    field(
        "memory",
        format!("{} MB", old.memory_mb),
        format!("{} MB", new.memory_mb),
    );
    field(
        "disk",
        format!("{} MB", old.disk_mb),
        format!("{} MB", new.disk_mb),
    );
    field(
        "cpu weight",
        old.cpu_weight.to_string(),
        new.cpu_weight.to_string(),
    );
    field("ports", list(&old.ports), list(&new.ports));
    field("health check", health(old), health(new));
    field("working dir", or_default(&ro.dir), or_default(&rn.dir));
    field("user", or_default(&ro.user), or_default(&rn.user));
    field(
        "privileged",
        old.privileged.to_string(),
        new.privileged.to_string(),
    );
    field(
        "placement tags",
        list(&old.placement_tags),
        list(&new.placement_tags),
    );
    field(
        "volumes",
        list(
            &old.volume_mounts
                .iter()
                .map(|v| format!("{}:{}", v.volume, v.container_path))
                .collect::<Vec<_>>(),
        ),
        list(
            &new.volume_mounts
                .iter()
                .map(|v| format!("{}:{}", v.volume, v.container_path))
                .collect::<Vec<_>>(),
        ),
    );
    field(
        "start timeout",
        format!("{}s", old.start_timeout),
        format!("{}s", new.start_timeout),
    );
    if let Some(env) = env_change(&env_of(old, &ro), &env_of(new, &rn)) {
        out.insert(
            usize::from(out.first().is_some_and(|c| c.starts_with("image"))),
            env,
        );
    }
    if rest(old) != rest(new) {
        out.push("other settings (`ltc history APP --json` has the definitions)".into());
    }
    out
}

/// The changes applied in place, without a new generation.
pub fn in_place_changes(
    old: &DesiredLrpCreateRequest,
    new: &DesiredLrpCreateRequest,
) -> Vec<String> {
    let mut out = vec![];
    if old.instances != new.instances {
        out.push(format!("instances {} → {}", old.instances, new.instances));
    }
    let routes = |d: &DesiredLrpCreateRequest| {
        let r: Vec<String> = CfRoute::list_from_json(&d.routes)
            .into_iter()
            .flat_map(|r| {
                r.hostnames
                    .into_iter()
                    .map(move |h| format!("{h}:{}", r.port))
            })
            .collect();
        list(&r)
    };
    let (ro, rn) = (routes(old), routes(new));
    if ro != rn {
        out.push(format!("routes {ro} → {rn}"));
    } else if old.routes != new.routes {
        out.push("routes changed".into());
    }
    if old.annotation != new.annotation {
        out.push("annotation changed".into());
    }
    out
}

fn run_of(a: &Option<Action>) -> RunAction {
    match a.as_ref().and_then(|a| a.action.as_ref()) {
        Some(action::Action::Run(r)) => r.clone(),
        _ => RunAction::default(),
    }
}

fn list<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn or_default(s: &str) -> String {
    if s.is_empty() {
        "(default)".into()
    } else {
        s.into()
    }
}

/// The command as a shell would read it: `sh -c 'echo hi'`.
pub fn command(a: &Option<Action>) -> String {
    match a.as_ref().and_then(|a| a.action.as_ref()) {
        Some(action::Action::Run(r)) => {
            let words: Vec<String> = std::iter::once(&r.path)
                .chain(&r.args)
                .filter(|w| !w.is_empty())
                .map(|w| quote(w))
                .collect();
            if words.is_empty() {
                "(the image's)".into()
            } else {
                format!("`{}`", words.join(" "))
            }
        }
        Some(_) => "(not one command)".into(),
        None => "(none)".into(),
    }
}

fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        w.into()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The health check as `ltc create`'s flags name it.
fn health(d: &DesiredLrpCreateRequest) -> String {
    if let Some(m) = &d.monitor {
        return format!("command {}", command(&Some(m.clone())));
    }
    let Some(def) = &d.check_definition else {
        return "the first port".into();
    };
    let checks: Vec<String> = def
        .checks
        .iter()
        .map(|c| match &c.check {
            Some(check::Check::Tcp(t)) => format!("port {}", t.port),
            Some(check::Check::Http(h)) => format!("http {}:{}", h.port, h.path),
            None => "?".into(),
        })
        .collect();
    if checks.is_empty() {
        "none".into()
    } else {
        checks.join(" and ")
    }
}

/// Variables by name: the app's, then its command's (which win).
fn env_of(d: &DesiredLrpCreateRequest, run: &RunAction) -> BTreeMap<String, String> {
    d.env
        .iter()
        .chain(&run.env)
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect()
}

/// `env ~CHANGED +NEW -GONE` (by name, then the gone ones).
fn env_change(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Option<String> {
    let mut parts = vec![];
    for (k, v) in new {
        match old.get(k) {
            None => parts.push(format!("+{k}")),
            Some(o) if o != v => parts.push(format!("~{k}")),
            _ => {}
        }
    }
    parts.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| format!("-{k}")),
    );
    (!parts.is_empty()).then(|| format!("env {}", parts.join(" ")))
}

/// The definition without every field named above: what "other settings" compares.
fn rest(d: &DesiredLrpCreateRequest) -> DesiredLrpCreateRequest {
    let mut r = d.clone();
    r.rootfs.clear();
    r.instances = 0;
    r.routes.clear();
    r.annotation.clear();
    r.env.clear();
    (r.memory_mb, r.disk_mb, r.cpu_weight) = (0, 0, 0);
    r.ports.clear();
    (r.check_definition, r.monitor) = (None, None);
    r.privileged = false;
    r.placement_tags.clear();
    r.volume_mounts.clear();
    r.start_timeout = 0;
    if let Some(action::Action::Run(run)) = r.action.as_mut().and_then(|a| a.action.as_mut()) {
        (run.path, run.dir, run.user) = (String::new(), String::new(), String::new());
        run.args.clear();
        run.env.clear();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::EnvironmentVariable;

    fn def(image: &str, env: &[(&str, &str)], args: &[&str]) -> DesiredLrpCreateRequest {
        let env: Vec<EnvironmentVariable> = env
            .iter()
            .map(|(n, v)| EnvironmentVariable {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect();
        DesiredLrpCreateRequest {
            process_guid: "web".into(),
            rootfs: image.into(),
            instances: 2,
            memory_mb: 128,
            ports: vec![8080],
            env: env.clone(),
            action: Some(Action {
                action: Some(action::Action::Run(RunAction {
                    path: "sh".into(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                    env,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn changes_are_named_without_secret_values() {
        let old = def(
            "preloaded:busybox",
            &[("A", "1"), ("B", "2"), ("C", "3")],
            &["-c", "serve"],
        );
        let new = def(
            "preloaded:alpine",
            &[("A", "9"), ("C", "3"), ("D", "4")],
            &["-c", "echo 'hi'"],
        );
        assert_eq!(
            definition_changes(&old, &new),
            [
                "image preloaded:busybox → preloaded:alpine",
                "env ~A +D -B",
                "command `sh -c serve` → `sh -c 'echo '\\''hi'\\'''`",
            ]
        );
        let text = definition_changes(&old, &new).join(" ");
        assert!(
            !text.contains('9') && !text.contains('4'),
            "no values: {text}"
        );
        assert_eq!(definition_changes(&old, &old), Vec::<String>::new());
    }

    #[test]
    fn resources_health_and_other_settings() {
        let old = def("preloaded:busybox", &[], &[]);
        let mut new = old.clone();
        new.memory_mb = 256;
        new.monitor = Some(Action {
            action: Some(action::Action::Run(RunAction {
                path: "true".into(),
                ..Default::default()
            })),
        });
        new.max_pids = 10;
        assert_eq!(
            definition_changes(&old, &new),
            [
                "memory 128 MB → 256 MB",
                "health check the first port → command `true`",
                "other settings (`ltc history APP --json` has the definitions)",
            ]
        );
    }

    #[test]
    fn in_place_changes_are_apart() {
        let old = def("preloaded:busybox", &[], &[]);
        let mut new = old.clone();
        new.instances = 4;
        new.routes = CfRoute::to_json(&[CfRoute {
            hostnames: vec!["www.example.com".into()],
            port: 8080,
        }]);
        assert_eq!(definition_changes(&old, &new), Vec::<String>::new());
        assert_eq!(
            in_place_changes(&old, &new),
            ["instances 2 → 4", "routes none → www.example.com:8080"]
        );
    }
}
