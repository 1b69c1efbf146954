//! Checking a manifest whole against the cluster before anything changes: every app
//! and task builds, names are unique, `depends_on` and volume references resolve (in
//! the file or the cluster) and have no cycle, sizes and schedules parse, no volume
//! shrinks. Gives the built requests and the start-up order.

use std::collections::{BTreeMap, BTreeSet};

use lattice_specs::receptor::{DesiredLrpCreateRequest, TaskCreateRequest};
use lattice_specs::volume::{format_size, parse_size};

use super::build;
use super::model::Manifest;
use super::plan::Cluster;
use super::schedule;
use crate::target::Target;

/// A manifest that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub apps: BTreeMap<String, DesiredLrpCreateRequest>,
    pub tasks: BTreeMap<String, TaskCreateRequest>,
    /// The volumes' sizes in bytes.
    pub volumes: BTreeMap<String, u64>,
    /// Apps and tasks (and the cluster's apps and tasks they depend on) by start-up
    /// order: each one's dependencies are in earlier waves.
    pub waves: Vec<Vec<String>>,
}

/// Every dependency edge as (dependent, dependencies).
fn dependencies(m: &Manifest) -> BTreeMap<&str, &[String]> {
    m.apps
        .iter()
        .map(|(n, a)| (n.as_str(), a.depends_on.as_slice()))
        .chain(
            m.tasks
                .iter()
                .map(|(n, t)| (n.as_str(), t.depends_on.as_slice())),
        )
        .collect()
}

/// One cycle among `left` (nodes that never became ready), as `a → b → a`.
fn a_cycle(deps: &BTreeMap<&str, &[String]>, left: &BTreeSet<&str>) -> String {
    let Some(&start) = left.iter().next() else {
        return String::new();
    };
    let mut path = vec![start];
    let mut at = start;
    loop {
        let next = deps[at]
            .iter()
            .map(String::as_str)
            .find(|d| left.contains(d))
            .unwrap_or(start);
        if let Some(i) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<&str> = path[i..].to_vec();
            cycle.push(next);
            return cycle.join(" → ");
        }
        path.push(next);
        at = next;
    }
}

/// Start-up waves by `depends_on` (Kahn's algorithm), or the cycle that prevents them.
pub fn waves(m: &Manifest) -> Result<Vec<Vec<String>>, String> {
    let deps = dependencies(m);
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut waves = vec![];
    // Dependencies outside the file (the cluster's) come first.
    let outside: BTreeSet<&str> = deps
        .values()
        .flat_map(|d| d.iter().map(String::as_str))
        .filter(|d| !deps.contains_key(d))
        .collect();
    let total = deps.len() + outside.len();
    if !outside.is_empty() {
        waves.push(outside.iter().map(|s| s.to_string()).collect());
        done.extend(outside);
    }
    while done.len() < total {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(n, d)| !done.contains(*n) && d.iter().all(|x| done.contains(x.as_str())))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            let left: BTreeSet<&str> = deps.keys().copied().filter(|n| !done.contains(n)).collect();
            return Err(format!("depends_on has a cycle: {}", a_cycle(&deps, &left)));
        }
        waves.push(ready.iter().map(|s| s.to_string()).collect());
        done.extend(ready);
    }
    Ok(waves)
}

fn check_references(m: &Manifest, cluster: &Cluster, errors: &mut Vec<String>) {
    for (name, a) in &m.apps {
        if m.tasks.contains_key(name) {
            errors.push(format!(
                "{name} is both an app and a task: give them different names"
            ));
        }
        refs("app", name, &a.depends_on, &a.volumes, m, cluster, errors);
    }
    for (name, t) in &m.tasks {
        refs("task", name, &t.depends_on, &t.volumes, m, cluster, errors);
    }
    for (volume, s) in &m.backup_schedules {
        if !m.volumes.contains_key(volume) && !cluster.volumes.contains_key(volume) {
            errors.push(format!(
                "backup_schedules.{volume}: no volume {volume} in the file or the cluster: declare it under volumes"
            ));
        }
        if let Err(e) = lattice_specs::schedule::parse_backup_cadence(&s.every) {
            errors.push(format!(
                "backup_schedules.{volume}.every: {:?}: {}",
                e.every, e.reason
            ));
        }
        // The other settings, as the API would judge them.
        if let Err((field, why)) = schedule::overlay(volume, s, None).policy().check() {
            errors.push(format!("backup_schedules.{volume}.{field}: {why}"));
        }
        if let Some(h) = &s.hooks {
            match schedule::hooks(volume, h) {
                Err(e) => errors.push(format!("{e:#}")),
                Ok(Some(r)) => {
                    if let Err(e) = r.into_model() {
                        errors.push(format!("backup_schedules.{volume}.hooks: {e}"));
                    }
                }
                Ok(None) => {}
            }
        }
    }
}

fn refs(
    kind: &str,
    name: &str,
    depends_on: &[String],
    volumes: &[String],
    m: &Manifest,
    cluster: &Cluster,
    errors: &mut Vec<String>,
) {
    for d in depends_on {
        let known = m.apps.contains_key(d)
            || m.tasks.contains_key(d)
            || cluster.apps.contains_key(d)
            || cluster.tasks.contains_key(d);
        if d == name {
            errors.push(format!("{kind} {name}: depends_on names itself"));
        } else if !known {
            errors.push(format!(
                "{kind} {name}: depends_on names {d}, which neither the file nor the cluster has (`ltc list` shows the apps)"
            ));
        }
    }
    for v in volumes {
        let volume = v.split(':').next().unwrap_or_default();
        if !volume.is_empty()
            && !m.volumes.contains_key(volume)
            && !cluster.volumes.contains_key(volume)
        {
            errors.push(format!(
                "{kind} {name}: mounts volume {volume}, which neither the file nor the cluster has: declare it under volumes"
            ));
        }
    }
}

fn check_volumes(
    m: &Manifest,
    cluster: &Cluster,
    errors: &mut Vec<String>,
) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    for (name, v) in &m.volumes {
        match parse_size(&v.size) {
            Err(e) => errors.push(format!("volume {name}: {e}")),
            Ok(size) => {
                if let Some(have) = cluster.volumes.get(name) {
                    if size < have.size_bytes {
                        errors.push(format!(
                            "volume {name}: size {} is smaller than its {}: volumes only grow",
                            format_size(size),
                            format_size(have.size_bytes)
                        ));
                    }
                }
                sizes.insert(name.clone(), size);
            }
        }
    }
    sizes
}

/// A manifest's name: what its record in the cluster is called by.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks the whole manifest; every problem found, not just the first.
pub fn check(m: &Manifest, cluster: &Cluster, target: &Target) -> Result<Checked, Vec<String>> {
    let mut errors = vec![];
    if !valid_name(&m.name) {
        errors.push(format!(
            "name {:?}: use lowercase letters, digits and dashes (it names the manifest's record in the cluster)",
            m.name
        ));
    }
    let mut apps = BTreeMap::new();
    for (name, a) in &m.apps {
        match build::app_request(name, a, target) {
            Ok(r) => {
                apps.insert(name.clone(), r);
            }
            Err(e) => errors.push(format!("app {name}: {e:#}")),
        }
    }
    let mut tasks = BTreeMap::new();
    for (name, t) in &m.tasks {
        match build::task_request(name, t) {
            Ok(r) => {
                tasks.insert(name.clone(), r);
            }
            Err(e) => errors.push(format!("task {name}: {e:#}")),
        }
    }
    let volumes = check_volumes(m, cluster, &mut errors);
    check_references(m, cluster, &mut errors);
    let waves = waves(m).unwrap_or_else(|e| {
        errors.push(e);
        vec![]
    });
    if errors.is_empty() {
        Ok(Checked {
            apps,
            tasks,
            volumes,
            waves,
        })
    } else {
        Err(errors)
    }
}
