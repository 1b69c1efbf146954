//! The pure diff of a checked manifest against the cluster: what to create, change
//! (in place, or as a new generation rolled out), run and remove, field by field, in
//! start-up order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_specs::receptor::rollout::{GenerationRequest, StrategyJson};
use lattice_specs::receptor::{
    BackupScheduleRequest, DesiredLrpCreateRequest, DesiredLrpResponse, DesiredLrpUpdateRequest,
    TaskCreateRequest, TaskResponse, VolumeResponse,
};
use lattice_specs::volume::format_size;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::build;
use super::check::Checked;
use super::model::Manifest;
use super::schedule;
use crate::target::Target;

/// What the last apply of a manifest declared, kept in the cluster: what `--prune`
/// may remove once the file no longer declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    pub apps: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub backup_schedules: BTreeSet<String>,
}

/// What the cluster holds, as far as a manifest cares.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub apps: BTreeMap<String, DesiredLrpResponse>,
    pub tasks: BTreeMap<String, TaskResponse>,
    pub volumes: BTreeMap<String, VolumeResponse>,
    pub schedules: BTreeMap<String, BackupScheduleRequest>,
    pub ledger: Ledger,
}

/// One field that changes: `None` when absent on that side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppUpdate {
    /// Only instances or routes change: `PUT`, no new generation.
    InPlace(DesiredLrpUpdateRequest),
    /// A new generation, rolled out instance by instance.
    Generation(Box<GenerationRequest>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateVolume {
        name: String,
        size_bytes: u64,
        cell: Option<String>,
    },
    GrowVolume {
        name: String,
        from: u64,
        to: u64,
    },
    /// The whole schedule to PUT, and the cluster's before (none: a new one).
    SetSchedule {
        request: Box<BackupScheduleRequest>,
        old: Option<Box<BackupScheduleRequest>>,
    },
    CreateApp(Box<DesiredLrpCreateRequest>),
    UpdateApp {
        name: String,
        fields: Vec<FieldChange>,
        how: AppUpdate,
    },
    CreateTask(Box<TaskCreateRequest>),
    RemoveApp(String),
    RemoveTask(String),
    RemoveSchedule(String),
    RemoveVolume(String),
}

/// What an app or task in a wave must reach before the next wave starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// This many instances RUNNING (at the current generation).
    App { instances: usize, timeout: Duration },
    /// Completed, not failed.
    Task { timeout: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub change: Option<Change>,
    /// Whether to wait for it: it changed, or something that changes depends on it.
    pub wait: Option<Ready>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Volumes, then backup schedules.
    pub storage: Vec<Change>,
    /// Apps and tasks in start-up order.
    pub waves: Vec<Vec<Node>>,
    pub prune: Vec<Change>,
    /// What is left alone, and why.
    pub notes: Vec<String>,
    /// The record to keep after this apply.
    pub ledger: Ledger,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.storage
            .iter()
            .chain(
                self.waves
                    .iter()
                    .flatten()
                    .filter_map(|n| n.change.as_ref()),
            )
            .chain(&self.prune)
    }

    pub fn is_empty(&self) -> bool {
        self.changes().next().is_none()
    }
}

/// Whether `--prune` was given, and `--prune-volumes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune {
    pub apps: bool,
    pub volumes: bool,
}

// ---------------------------------------------------------------- field views

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        // Environment variables are compared by name, whatever their order.
        Value::Array(items)
            if !items.is_empty()
                && items.iter().all(|i| {
                    i.get("name").is_some_and(Value::is_string) && i.get("value").is_some()
                }) =>
        {
            for i in items {
                let name = i["name"].as_str().unwrap_or_default();
                out.insert(key(name), i["value"].to_string());
            }
        }
        Value::Array(items) if items.is_empty() => {}
        _ => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

/// A value as dotted paths to its leaves (compact JSON); empty lists and nulls
/// left out, `env`-like lists keyed by name.
pub fn fields<T: Serialize>(v: &T) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(v).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

pub fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Keeps on `built` what a manifest cannot say, as the cluster's app has it.
fn carry_unsayable(built: &mut DesiredLrpCreateRequest, have: &DesiredLrpCreateRequest) {
    built.annotation = have.annotation.clone();
    built.setup = have.setup.clone();
    built.egress_rules = have.egress_rules.clone();
    built.max_pids = have.max_pids;
    built.crash_policy = have.crash_policy;
    built.host_network = have.host_network;
}

/// The fields of `have` that `rebuilt` (its definition read into a manifest and
/// built again) does not say the same.
pub fn unsaid(mut rebuilt: DesiredLrpCreateRequest, have: &DesiredLrpCreateRequest) -> Vec<String> {
    carry_unsayable(&mut rebuilt, have);
    diff(&fields(have), &fields(&rebuilt))
        .into_iter()
        .map(|f| f.field)
        .collect()
}

/// The fields that change only in place (`PUT`).
fn in_place_fields(r: &DesiredLrpCreateRequest) -> DesiredLrpCreateRequest {
    DesiredLrpCreateRequest {
        instances: 0,
        routes: BTreeMap::new(),
        annotation: String::new(),
        ..r.clone()
    }
}

/// The change that makes the app `have` into `built`, or None when they agree.
fn app_change(
    name: &str,
    mut built: DesiredLrpCreateRequest,
    have: &DesiredLrpCreateRequest,
    strategy: StrategyJson,
    target: &Target,
) -> Option<Change> {
    carry_unsayable(&mut built, have);
    if fields(&built) == fields(have) {
        return None;
    }
    // Shown in the manifest's own terms; the definition's when those agree.
    let mut shown = diff(
        &fields(&build::app_spec(name, have, target)),
        &fields(&build::app_spec(name, &built, target)),
    );
    shown.retain(|f| f.field != "update" && !f.field.starts_with("update."));
    if shown.is_empty() {
        shown = diff(&fields(have), &fields(&built));
    }
    let how = if fields(&in_place_fields(&built)) == fields(&in_place_fields(have)) {
        AppUpdate::InPlace(DesiredLrpUpdateRequest {
            instances: (built.instances != have.instances).then_some(built.instances),
            routes: (built.routes != have.routes).then(|| built.routes.clone()),
            annotation: None,
        })
    } else {
        AppUpdate::Generation(Box::new(GenerationRequest {
            definition: built,
            strategy,
        }))
    };
    Some(Change::UpdateApp {
        name: name.into(),
        fields: shown,
        how,
    })
}

fn storage(m: &Manifest, c: &Checked, cluster: &Cluster) -> anyhow::Result<Vec<Change>> {
    let mut out = vec![];
    for (name, size) in &c.volumes {
        match cluster.volumes.get(name) {
            None => out.push(Change::CreateVolume {
                name: name.clone(),
                size_bytes: *size,
                cell: m.volumes[name].cell.clone(),
            }),
            Some(v) if v.size_bytes < *size => out.push(Change::GrowVolume {
                name: name.clone(),
                from: v.size_bytes,
                to: *size,
            }),
            Some(_) => {}
        }
    }
    for (volume, s) in &m.backup_schedules {
        let have = cluster.schedules.get(volume);
        let request = schedule::desired(volume, s, have)?;
        let old = have.map(schedule::settings);
        if old.as_ref() != Some(&request) {
            out.push(Change::SetSchedule {
                request: Box::new(request),
                old: old.map(Box::new),
            });
        }
    }
    Ok(out)
}

fn node(
    name: &str,
    m: &Manifest,
    c: &Checked,
    cluster: &Cluster,
    target: &Target,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Option<Change>, Ready)> {
    if let Some(built) = c.apps.get(name) {
        let spec = &m.apps[name];
        let ready = Ready::App {
            instances: built.instances.max(0) as usize,
            timeout: build::timeout(&spec.timeout)?,
        };
        let change = match cluster.apps.get(name) {
            None => Some(Change::CreateApp(Box::new(built.clone()))),
            Some(have) => {
                if let Some(d) = have.deployment.as_ref().filter(|d| d.in_progress()) {
                    let change = app_change(
                        name,
                        built.clone(),
                        &have.request,
                        build::strategy(spec),
                        target,
                    );
                    anyhow::ensure!(
                        change.is_none(),
                        "app {name} is being updated ({}, generation {}): wait for it, or `ltc rollback {name}`, then apply again",
                        d.state,
                        d.target_generation
                    );
                }
                app_change(
                    name,
                    built.clone(),
                    &have.request,
                    build::strategy(spec),
                    target,
                )
            }
        };
        return Ok((change, ready));
    }
    if let Some(built) = c.tasks.get(name) {
        let ready = Ready::Task {
            timeout: build::timeout(&m.tasks[name].timeout)?,
        };
        let change = match cluster.tasks.get(name) {
            None => Some(Change::CreateTask(Box::new(built.clone()))),
            Some(have) => {
                let changed = diff(&fields(&have.request), &fields(built));
                if !changed.is_empty() {
                    notes.push(format!(
                        "task {name} already ran ({}): a task runs once, so its changes ({}) take effect only after `ltc delete-task {name}`",
                        have.state,
                        changed.iter().map(|f| f.field.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
                None
            }
        };
        return Ok((change, ready));
    }
    // The cluster's own app or task that something in the file depends on.
    Ok(match cluster.apps.get(name) {
        Some(a) => (
            None,
            Ready::App {
                instances: a.request.instances.max(0) as usize,
                timeout: Duration::from_secs(a.request.start_timeout.max(60)),
            },
        ),
        None => (
            None,
            Ready::Task {
                timeout: Duration::from_secs(600),
            },
        ),
    })
}

/// The nodes whose readiness matters: the changed ones and what they depend on.
fn to_wait_for(m: &Manifest, changed: &BTreeSet<String>) -> BTreeSet<String> {
    let deps = |n: &str| -> Vec<String> {
        m.apps
            .get(n)
            .map(|a| a.depends_on.clone())
            .or_else(|| m.tasks.get(n).map(|t| t.depends_on.clone()))
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = changed.iter().cloned().collect();
    while let Some(n) = todo.pop() {
        if out.insert(n.clone()) {
            todo.extend(deps(&n));
        }
    }
    out
}

fn prune(m: &Manifest, cluster: &Cluster, p: Prune, plan: &mut Plan) {
    let l = &cluster.ledger;
    let gone = |kept: &BTreeSet<String>, declared: Vec<&String>, exists: &dyn Fn(&str) -> bool| {
        kept.iter()
            .filter(|n| !declared.contains(n) && exists(n))
            .cloned()
            .collect::<Vec<_>>()
    };
    let apps = gone(&l.apps, m.apps.keys().collect(), &|n| {
        cluster.apps.contains_key(n)
    });
    let tasks = gone(&l.tasks, m.tasks.keys().collect(), &|n| {
        cluster.tasks.contains_key(n)
    });
    let schedules = gone(
        &l.backup_schedules,
        m.backup_schedules.keys().collect(),
        &|n| cluster.schedules.contains_key(n),
    );
    let volumes = gone(&l.volumes, m.volumes.keys().collect(), &|n| {
        cluster.volumes.contains_key(n)
    });
    let mut ledger = Ledger {
        apps: m.apps.keys().cloned().collect(),
        tasks: m.tasks.keys().cloned().collect(),
        volumes: m.volumes.keys().cloned().collect(),
        backup_schedules: m.backup_schedules.keys().cloned().collect(),
    };
    let mut left = |what: &str,
                    names: Vec<String>,
                    remove: bool,
                    flag: &str,
                    set: &mut BTreeSet<String>,
                    make: fn(String) -> Change| {
        for n in names {
            if remove {
                plan.prune.push(make(n));
            } else {
                plan.notes.push(format!(
                    "{what} {n} is no longer in the manifest: {flag} removes it"
                ));
                set.insert(n);
            }
        }
    };
    left(
        "app",
        apps,
        p.apps,
        "--prune",
        &mut ledger.apps,
        Change::RemoveApp,
    );
    left(
        "task",
        tasks,
        p.apps,
        "--prune",
        &mut ledger.tasks,
        Change::RemoveTask,
    );
    left(
        "backup schedule of",
        schedules,
        p.apps,
        "--prune",
        &mut ledger.backup_schedules,
        Change::RemoveSchedule,
    );
    left(
        "volume",
        volumes,
        p.volumes,
        "--prune-volumes",
        &mut ledger.volumes,
        Change::RemoveVolume,
    );
    plan.ledger = ledger;
}

/// The plan that makes the cluster hold what the checked manifest says.
pub fn plan(
    m: &Manifest,
    c: &Checked,
    cluster: &Cluster,
    target: &Target,
    p: Prune,
) -> Result<Plan, Vec<String>> {
    let mut plan = Plan {
        storage: storage(m, c, cluster).map_err(|e| vec![format!("{e:#}")])?,
        ..Default::default()
    };
    let mut errors = vec![];
    let mut waves = vec![];
    for wave in &c.waves {
        let mut nodes = vec![];
        for name in wave {
            match node(name, m, c, cluster, target, &mut plan.notes) {
                Ok((change, ready)) => nodes.push((name.clone(), change, ready)),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        waves.push(nodes);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let changed: BTreeSet<String> = waves
        .iter()
        .flatten()
        .filter(|(_, change, _)| change.is_some())
        .map(|(n, _, _)| n.clone())
        .collect();
    let wait = to_wait_for(m, &changed);
    plan.waves = waves
        .into_iter()
        .map(|w| {
            w.into_iter()
                .map(|(name, change, ready)| Node {
                    wait: wait.contains(&name).then_some(ready),
                    name,
                    change,
                })
                .collect()
        })
        .collect();
    prune(m, cluster, p, &mut plan);
    Ok(plan)
}

// ---------------------------------------------------------------- rendering

fn field_line(f: &FieldChange) -> String {
    match (&f.old, &f.new) {
        (Some(o), Some(n)) => format!("    {}: {o} → {n}", f.field),
        (None, Some(n)) => format!("    {}: + {n}", f.field),
        (Some(o), None) => format!("    {}: - {o}", f.field),
        (None, None) => format!("    {}", f.field),
    }
}

/// One change as the lines `--dry-run` prints (and `apply` as it goes).
pub fn describe(c: &Change) -> String {
    match c {
        Change::CreateVolume {
            name, size_bytes, ..
        } => format!("volume {name}: create ({})", format_size(*size_bytes)),
        Change::GrowVolume { name, from, to } => format!(
            "volume {name}: grow {} → {}",
            format_size(*from),
            format_size(*to)
        ),
        Change::SetSchedule { request, old: None } => format!(
            "backup schedule of {}: create ({})",
            request.volume,
            schedule::created(request)
        ),
        Change::SetSchedule {
            request,
            old: Some(old),
        } => format!(
            "backup schedule of {}: {}",
            request.volume,
            schedule::differences(old, request).join(", ")
        ),
        Change::CreateApp(r) => format!(
            "app {}: create ({} instance(s) of {})",
            r.process_guid, r.instances, r.rootfs
        ),
        Change::UpdateApp { name, fields, how } => {
            let head = match how {
                AppUpdate::InPlace(_) => format!("app {name}: change in place"),
                AppUpdate::Generation(g) => format!(
                    "app {name}: change, rolled out as a new generation (max surge {}, max unavailable {})",
                    g.strategy.max_surge, g.strategy.max_unavailable
                ),
            };
            std::iter::once(head)
                .chain(fields.iter().map(field_line))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Change::CreateTask(t) => format!("task {}: run ({})", t.task_guid, t.rootfs),
        Change::RemoveApp(n) => format!("app {n}: remove (no longer in the manifest)"),
        Change::RemoveTask(n) => format!("task {n}: remove (no longer in the manifest)"),
        Change::RemoveSchedule(v) => {
            format!("backup schedule of {v}: remove (no longer in the manifest)")
        }
        Change::RemoveVolume(n) => format!("volume {n}: remove with its data (--prune-volumes)"),
    }
}

/// The whole plan, as `--dry-run` prints it.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for c in plan.changes() {
        out.push_str(&describe(c));
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str("Nothing to change: the cluster holds what the manifest says.\n");
    }
    for n in &plan.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}
