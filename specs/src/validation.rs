//! Validation of every model, with messages that name the offending field.
//! A model that fails validation is never written to the store.

use std::fmt;

use crate::models::{
    action, check, Action, CellPresence, CheckDefinition, DesiredLrp, DesiredLrpUpdate, Domain,
    TaskDefinition, VolumeMount,
};
use crate::rootfs::RootFs;
mod egress;
use egress::check_egress;
pub use egress::validate_egress_rules;

pub const MAX_ANNOTATION_BYTES: usize = 10 * 1024;
pub const MAX_ROUTES_BYTES: usize = 128 * 1024;
pub const MAX_ACTION_DEPTH: usize = 32;
/// Actions in one tree (every Run of a Parallel is a process the shim starts).
pub const MAX_ACTIONS: usize = 1024;
/// A guid's length. The cell names a Task's container (and so its network namespace,
/// `/var/run/netns/lattice-GUID`, a file name of at most 255 bytes) after its guid, so
/// 247 is the longest that runs; 200 leaves room for the suffixes of temporary names.
pub const MAX_GUID_LEN: usize = 200;
/// Instances of one LRP. Every instance is a record in the store and a container on
/// some cell; a larger number is a typo (or an attack) that would exhaust the BBS's
/// and the brain's memory.
pub const MAX_INSTANCES: i32 = 10_000;
/// An LRP's `start_timeout`: a year. The receptor sends seconds and the model keeps
/// milliseconds, so a larger value could not be stored as sent (it saturates).
pub const MAX_START_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;
/// Container ports of one LRP (each is a host port and a forwarder on the cell).
pub const MAX_PORTS: usize = 64;
/// Environment variables in one list (`env`, or a Run's `env`).
pub const MAX_ENV_VARS: usize = 1024;
/// One string handed to `execve` (a path, an argument, or an env entry `NAME=VALUE`)
/// with its NUL: the kernel's `MAX_ARG_STRLEN` (32 pages). Longer ones fail to exec.
pub const MAX_EXEC_STRING_BYTES: usize = 128 * 1024;
/// Every path, argument and env entry of a definition together (the kernel refuses an
/// exec whose arguments and environment exceed a quarter of the stack limit, 2 MiB by
/// default; the image's own env comes on top).
pub const MAX_EXEC_BYTES: usize = 1024 * 1024;
/// `memory_mb`: 1 TiB.
pub const MAX_MEMORY_MB: i32 = 1024 * 1024;
/// `disk_mb`: 16 TiB.
pub const MAX_DISK_MB: i32 = 16 * 1024 * 1024;
/// `max_pids`: the kernel's `PID_MAX_LIMIT`.
pub const MAX_PIDS: i32 = 4 * 1024 * 1024;
/// `resource_limits.nofile`: the kernel's default `fs.nr_open`.
pub const MAX_NOFILE: u64 = 1024 * 1024;
/// Placement tags of one definition, and the bytes of one tag.
pub const MAX_PLACEMENT_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 255;
/// Volume mounts of one definition.
pub const MAX_VOLUME_MOUNTS: usize = 16;
/// Egress rules of one definition, and destinations or ports of one rule.
pub const MAX_EGRESS_RULES: usize = 1024;
pub const MAX_RULE_ENTRIES: usize = 1024;
/// Health checks of one LRP.
pub const MAX_CHECKS: usize = 16;
/// Bytes of `log_guid`, `log_source` and `metrics_guid`.
pub const MAX_NAME_BYTES: usize = 255;
/// Paths inside a container where nothing may be mounted: the cell's own files
/// (`/.lattice/pause` is every container's init) and the kernel's file systems.
pub const RESERVED_CONTAINER_PATHS: &[&str] = &["/", "/.lattice", "/proc", "/sys", "/dev"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// One or more fields that are wrong. Displays as
/// `invalid field process_guid: …; invalid field instances: …`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "invalid field {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

/// A guid: 1–[`MAX_GUID_LEN`] characters of a-z, A-Z, 0-9, `_` and `-`.
pub fn check_guid(errs: &mut ValidationErrors, field: &str, v: &str) {
    if v.is_empty() {
        errs.add(field, "is required");
    } else if v.len() > MAX_GUID_LEN {
        errs.add(field, format!("must be at most {MAX_GUID_LEN} characters"));
    } else if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errs.add(field, "must contain only a-z, A-Z, 0-9, _ and -");
    }
}

fn check_required(errs: &mut ValidationErrors, field: &str, v: &str) {
    if v.trim().is_empty() {
        errs.add(field, "is required");
    }
}

fn check_rootfs(errs: &mut ValidationErrors, v: &str) {
    if v.is_empty() {
        errs.add("rootfs", "is required");
    } else if let Err(e) = RootFs::parse(v) {
        errs.add("rootfs", e.to_string());
    }
}

fn check_non_negative(errs: &mut ValidationErrors, field: &str, v: i32) {
    if v < 0 {
        errs.add(field, "must be >= 0");
    }
}

/// `0 <= v <= max`.
fn check_count(errs: &mut ValidationErrors, field: &str, v: i32, max: i32) {
    if v < 0 {
        errs.add(field, "must be >= 0");
    } else if v > max {
        errs.add(field, format!("must be at most {max} (got {v})"));
    }
}

/// At most `max` entries (or bytes: `unit`).
fn check_len(errs: &mut ValidationErrors, field: &str, len: usize, max: usize, unit: &str) {
    if len > max {
        errs.add(field, format!("must have at most {max} {unit} (got {len})"));
    }
}

/// What a whole definition may add up to, counted while its parts are checked.
#[derive(Default)]
struct Budget {
    actions: usize,
    exec_bytes: usize,
}

impl Budget {
    /// One string handed to `execve` (with its NUL).
    fn exec_string(&mut self, errs: &mut ValidationErrors, field: &str, len: usize) {
        let len = len + 1;
        self.exec_bytes += len;
        if len > MAX_EXEC_STRING_BYTES {
            errs.add(
                field,
                format!(
                    "must be shorter than {MAX_EXEC_STRING_BYTES} bytes (got {}): the kernel refuses longer arguments and environment strings",
                    len - 1
                ),
            );
        }
    }

    fn finish(self, errs: &mut ValidationErrors) {
        if self.exec_bytes > MAX_EXEC_BYTES {
            errs.add(
                "env",
                format!(
                    "the environment, paths and arguments of every Run together must be at most {MAX_EXEC_BYTES} bytes (got {})",
                    self.exec_bytes
                ),
            );
        }
    }
}

/// `log_guid`, `log_source`, `metrics_guid`.
fn check_names(errs: &mut ValidationErrors, names: [(&str, &str); 3]) {
    for (field, v) in names {
        check_len(errs, field, v.len(), MAX_NAME_BYTES, "bytes");
    }
}

fn check_cpu_weight(errs: &mut ValidationErrors, v: u32) {
    if !(1..=100).contains(&v) {
        errs.add("cpu_weight", "must be between 1 and 100");
    }
}

fn check_annotation(errs: &mut ValidationErrors, v: &str) {
    if v.len() > MAX_ANNOTATION_BYTES {
        errs.add(
            "annotation",
            format!(
                "must be at most {MAX_ANNOTATION_BYTES} bytes (got {})",
                v.len()
            ),
        );
    }
}

fn check_env(
    errs: &mut ValidationErrors,
    field: &str,
    env: &[crate::models::EnvironmentVariable],
    budget: &mut Budget,
) {
    check_len(errs, field, env.len(), MAX_ENV_VARS, "variables");
    for (i, e) in env.iter().enumerate() {
        if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
            errs.add(
                format!("{field}[{i}].name"),
                "must be non-empty and contain no '=' or NUL",
            );
        }
        if e.value.contains('\0') {
            errs.add(format!("{field}[{i}].value"), "must not contain NUL");
        }
        // Exec'd as `NAME=VALUE`.
        let len = e.name.len() + 1 + e.value.len();
        budget.exec_string(errs, &format!("{field}[{i}].value"), len);
    }
}

/// A Run's path, arguments, env and limits.
fn check_run(
    errs: &mut ValidationErrors,
    field: &str,
    r: &crate::models::RunAction,
    budget: &mut Budget,
) {
    budget.exec_string(errs, &format!("{field}.path"), r.path.len());
    for (i, a) in r.args.iter().enumerate() {
        budget.exec_string(errs, &format!("{field}.args[{i}]"), a.len());
    }
    check_env(errs, &format!("{field}.env"), &r.env, budget);
    if let Some(n) = r.resource_limits.as_ref().and_then(|l| l.nofile) {
        if n > MAX_NOFILE {
            errs.add(
                format!("{field}.resource_limits.nofile"),
                format!("must be at most {MAX_NOFILE} (got {n})"),
            );
        }
    }
}

fn check_routes(errs: &mut ValidationErrors, routes: &std::collections::HashMap<String, String>) {
    let total: usize = routes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ROUTES_BYTES {
        errs.add(
            "routes",
            format!("must be at most {MAX_ROUTES_BYTES} bytes (got {total})"),
        );
    }
    for (name, raw) in routes {
        if name == crate::routes::TCP_ROUTER_KEY {
            if let Err(bad) = crate::routes::TcpRoute::parse(raw) {
                bad.into_iter().for_each(|(f, m)| errs.add(f, m));
            }
        } else if serde_json::from_str::<serde_json::Value>(raw).is_err() {
            errs.add(format!("routes.{name}"), "must be valid JSON");
        }
    }
}

fn check_placement_tags(errs: &mut ValidationErrors, tags: &[String]) {
    check_len(
        errs,
        "placement_tags",
        tags.len(),
        MAX_PLACEMENT_TAGS,
        "tags",
    );
    for (i, t) in tags.iter().enumerate() {
        if t.trim().is_empty() {
            errs.add(format!("placement_tags[{i}]"), "must not be empty");
        }
        check_len(
            errs,
            &format!("placement_tags[{i}]"),
            t.len(),
            MAX_TAG_BYTES,
            "bytes",
        );
    }
}

/// The reserved path (see [`RESERVED_CONTAINER_PATHS`]) that an absolute path without
/// `..` is, or lies under.
pub fn reserved_container_path(path: &str) -> Option<&'static str> {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    let want = parts(path);
    RESERVED_CONTAINER_PATHS.iter().copied().find(|r| {
        let r = parts(r);
        if r.is_empty() {
            want.is_empty()
        } else {
            want.starts_with(&r)
        }
    })
}

fn check_volume_mounts(errs: &mut ValidationErrors, mounts: &[VolumeMount]) {
    check_len(
        errs,
        "volume_mounts",
        mounts.len(),
        MAX_VOLUME_MOUNTS,
        "mounts",
    );
    let mut paths = std::collections::HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let f = format!("volume_mounts[{i}]");
        if m.scratch_bytes > 0 {
            if !m.volume.is_empty() || m.snapshot {
                errs.add(
                    format!("{f}.scratch_bytes"),
                    "a scratch volume has no name and no snapshot",
                );
            }
        } else if m.volume.is_empty() {
            errs.add(format!("{f}.volume"), "is required");
        // (a standby copy is mounted only by the task refreshing it: the BBS checks)
        } else if let Err(e) = crate::volume::check_copy_name("volume", &m.volume) {
            errs.add(format!("{f}.volume"), e);
        }
        if m.snapshot && !m.read_only {
            errs.add(format!("{f}.read_only"), "a snapshot mount is read-only");
        }
        if !m.driver.is_empty() && m.driver != "local" {
            errs.add(format!("{f}.driver"), "only the \"local\" driver exists");
        }
        let path = &m.container_path;
        if !path.starts_with('/') {
            errs.add(format!("{f}.container_path"), "must be an absolute path");
        } else if path.split('/').any(|c| c == "..") || path.len() > 4096 {
            errs.add(
                format!("{f}.container_path"),
                "must have no '..' and at most 4096 bytes",
            );
        } else if let Some(r) = reserved_container_path(path) {
            errs.add(
                format!("{f}.container_path"),
                format!("{path:?} is reserved ({r} belongs to the container's runtime); mount the volume elsewhere, e.g. /data"),
            );
        } else if !paths.insert(path.trim_end_matches('/')) {
            errs.add(format!("{f}.container_path"), "is mounted twice");
        }
    }
}

fn check_port(errs: &mut ValidationErrors, field: &str, p: u32) {
    if p == 0 || p > 65535 {
        errs.add(field, "must be a port between 1 and 65535");
    }
}

/// The main action: like [`check_action`], except that with an image rootfs (`oci:`,
/// `docker://`) a lone Run may leave `path` empty to run the image's entrypoint and cmd.
fn check_main_action(errs: &mut ValidationErrors, a: &Action, rootfs: &str, budget: &mut Budget) {
    let image = matches!(
        RootFs::parse(rootfs),
        Ok(RootFs::Oci { .. } | RootFs::Docker { .. })
    );
    match &a.action {
        Some(action::Action::Run(r)) if image && r.path.is_empty() => {
            check_run(errs, "action.run", r, budget)
        }
        _ => check_action_at(errs, "action", a, 0, budget),
    }
}

/// Validate an action tree (`field` is where it sits, e.g. "action" or "setup").
pub fn check_action(errs: &mut ValidationErrors, field: &str, a: &Action) {
    let mut budget = Budget::default();
    check_action_at(errs, field, a, 0, &mut budget);
    budget.finish(errs);
}

fn check_action_at(
    errs: &mut ValidationErrors,
    field: &str,
    a: &Action,
    depth: usize,
    budget: &mut Budget,
) {
    if depth > MAX_ACTION_DEPTH {
        errs.add(
            field,
            format!("actions nest deeper than {MAX_ACTION_DEPTH} levels"),
        );
        return;
    }
    budget.actions += 1;
    if budget.actions > MAX_ACTIONS {
        if budget.actions == MAX_ACTIONS + 1 {
            errs.add(
                field,
                format!("a definition may hold at most {MAX_ACTIONS} actions"),
            );
        }
        return;
    }
    let inner = |errs: &mut ValidationErrors,
                 budget: &mut Budget,
                 name: &str,
                 sub: &Option<Box<Action>>| match sub {
        None => errs.add(format!("{field}.{name}.action"), "is required"),
        Some(s) => check_action_at(
            errs,
            &format!("{field}.{name}.action"),
            s,
            depth + 1,
            budget,
        ),
    };
    let list = |errs: &mut ValidationErrors, budget: &mut Budget, name: &str, subs: &[Action]| {
        if subs.is_empty() {
            errs.add(
                format!("{field}.{name}.actions"),
                "must contain at least one action",
            );
        }
        for (i, s) in subs.iter().enumerate() {
            let f = format!("{field}.{name}.actions[{i}]");
            check_action_at(errs, &f, s, depth + 1, budget);
        }
    };
    match &a.action {
        None => errs.add(field, "must be one of run, download, upload, timeout, emit_progress, try, parallel, serial, codependent"),
        Some(action::Action::Run(r)) => {
            check_required(errs, &format!("{field}.run.path"), &r.path);
            check_run(errs, &format!("{field}.run"), r, budget);
        }
        Some(action::Action::Download(d)) => {
            check_required(errs, &format!("{field}.download.from"), &d.from);
            check_required(errs, &format!("{field}.download.to"), &d.to);
            if !d.checksum_algorithm.is_empty() || !d.checksum_value.is_empty() {
                if !matches!(d.checksum_algorithm.as_str(), "sha256" | "sha1" | "md5") {
                    errs.add(format!("{field}.download.checksum_algorithm"), "must be sha256, sha1 or md5");
                }
                if d.checksum_value.is_empty() || !d.checksum_value.chars().all(|c| c.is_ascii_hexdigit()) {
                    errs.add(format!("{field}.download.checksum_value"), "must be a hex digest");
                }
            }
        }
        Some(action::Action::Upload(u)) => {
            check_required(errs, &format!("{field}.upload.from"), &u.from);
            check_required(errs, &format!("{field}.upload.to"), &u.to);
        }
        Some(action::Action::Timeout(t)) => {
            inner(errs, budget, "timeout", &t.action);
            if t.timeout <= 0 {
                errs.add(format!("{field}.timeout.timeout"), "must be > 0 (nanoseconds)");
            }
        }
        Some(action::Action::EmitProgress(e)) => inner(errs, budget, "emit_progress", &e.action),
        Some(action::Action::Try(t)) => inner(errs, budget, "try", &t.action),
        Some(action::Action::Parallel(p)) => list(errs, budget, "parallel", &p.actions),
        Some(action::Action::Serial(s)) => list(errs, budget, "serial", &s.actions),
        Some(action::Action::Codependent(c)) => list(errs, budget, "codependent", &c.actions),
        Some(action::Action::Repository(r)) => {
            check_required(errs, &format!("{field}.repository.repository"), &r.repository);
            if crate::repo::RepoOp::parse(&r.op).is_none() {
                errs.add(format!("{field}.repository.op"), "must be backup, restore, forget or check");
            }
        }
    }
}

fn check_health(errs: &mut ValidationErrors, cd: &CheckDefinition) {
    check_len(
        errs,
        "check_definition.checks",
        cd.checks.len(),
        MAX_CHECKS,
        "checks",
    );
    for (i, c) in cd.checks.iter().enumerate() {
        match &c.check {
            None => errs.add(
                format!("check_definition.checks[{i}]"),
                "must be tcp or http",
            ),
            Some(check::Check::Tcp(t)) => check_port(
                errs,
                &format!("check_definition.checks[{i}].tcp.port"),
                t.port,
            ),
            Some(check::Check::Http(h)) => {
                check_port(
                    errs,
                    &format!("check_definition.checks[{i}].http.port"),
                    h.port,
                );
                if !h.path.is_empty() && !h.path.starts_with('/') {
                    errs.add(
                        format!("check_definition.checks[{i}].http.path"),
                        "must start with /",
                    );
                }
            }
        }
    }
}

pub fn validate_desired_lrp(d: &DesiredLrp) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    let mut budget = Budget::default();
    check_guid(&mut e, "process_guid", &d.process_guid);
    check_required(&mut e, "domain", &d.domain);
    check_rootfs(&mut e, &d.rootfs);
    check_count(&mut e, "instances", d.instances, MAX_INSTANCES);
    if d.start_timeout_ms > MAX_START_TIMEOUT_MS {
        e.add(
            "start_timeout",
            format!(
                "must be at most {} seconds (a year)",
                MAX_START_TIMEOUT_MS / 1000
            ),
        );
    }
    match &d.action {
        None => e.add("action", "is required"),
        Some(a) => check_main_action(&mut e, a, &d.rootfs, &mut budget),
    }
    if let Some(a) = &d.setup {
        check_action_at(&mut e, "setup", a, 0, &mut budget);
    }
    if let Some(a) = &d.monitor {
        check_action_at(&mut e, "monitor", a, 0, &mut budget);
    }
    if let Some(cd) = &d.check_definition {
        check_health(&mut e, cd);
    }
    check_env(&mut e, "env", &d.env, &mut budget);
    budget.finish(&mut e);
    check_len(&mut e, "ports", d.ports.len(), MAX_PORTS, "ports");
    for (i, p) in d.ports.iter().enumerate() {
        check_port(&mut e, &format!("ports[{i}]"), *p);
    }
    check_routes(&mut e, &d.routes);
    check_container(
        &mut e,
        [d.memory_mb, d.disk_mb, d.max_pids],
        [&d.log_guid, &d.log_source, &d.metrics_guid],
        d.cpu_weight,
    );
    check_placement_tags(&mut e, &d.placement_tags);
    check_volume_mounts(&mut e, &d.volume_mounts);
    check_annotation(&mut e, &d.annotation);
    check_egress(&mut e, &d.egress_rules);
    e.into_result()
}

/// What LRPs and Tasks both say of their container: memory, disk and pids limits, log
/// and metrics names, CPU weight.
fn check_container(
    e: &mut ValidationErrors,
    [memory_mb, disk_mb, max_pids]: [i32; 3],
    [log_guid, log_source, metrics_guid]: [&String; 3],
    cpu_weight: u32,
) {
    check_count(e, "memory_mb", memory_mb, MAX_MEMORY_MB);
    check_count(e, "disk_mb", disk_mb, MAX_DISK_MB);
    check_count(e, "max_pids", max_pids, MAX_PIDS);
    check_names(
        e,
        [
            ("log_guid", log_guid),
            ("log_source", log_source),
            ("metrics_guid", metrics_guid),
        ],
    );
    check_cpu_weight(e, cpu_weight);
}

pub fn validate_desired_lrp_update(u: &DesiredLrpUpdate) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    if let Some(i) = u.instances {
        check_count(&mut e, "instances", i, MAX_INSTANCES);
    }
    if u.has_routes {
        check_routes(&mut e, &u.routes);
    }
    if let Some(a) = &u.annotation {
        check_annotation(&mut e, a);
    }
    e.into_result()
}

pub fn validate_task(
    task_guid: &str,
    domain: &str,
    d: &TaskDefinition,
) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    let mut budget = Budget::default();
    check_guid(&mut e, "task_guid", task_guid);
    check_required(&mut e, "domain", domain);
    check_rootfs(&mut e, &d.rootfs);
    match &d.action {
        None => e.add("action", "is required"),
        Some(a) => check_main_action(&mut e, a, &d.rootfs, &mut budget),
    }
    check_env(&mut e, "env", &d.env, &mut budget);
    budget.finish(&mut e);
    check_container(
        &mut e,
        [d.memory_mb, d.disk_mb, d.max_pids],
        [&d.log_guid, &d.log_source, &d.metrics_guid],
        d.cpu_weight,
    );
    check_annotation(&mut e, &d.annotation);
    check_placement_tags(&mut e, &d.placement_tags);
    check_volume_mounts(&mut e, &d.volume_mounts);
    check_egress(&mut e, &d.egress_rules);
    let url = d.completion_callback_url.as_str();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        e.add(
            "completion_callback_url",
            "must be an http:// or https:// URL",
        );
    }
    if !d.result_file.is_empty() && !d.result_file.starts_with('/') {
        e.add("result_file", "must be an absolute path");
    } else {
        check_len(&mut e, "result_file", d.result_file.len(), 4096, "bytes");
    }
    e.into_result()
}

pub fn validate_cell(c: &CellPresence) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    check_guid(&mut e, "cell_id", &c.cell_id);
    check_required(&mut e, "rep_address", &c.rep_address);
    match &c.capacity {
        None => e.add("capacity", "is required"),
        Some(cap) => {
            check_non_negative(&mut e, "capacity.memory_mb", cap.memory_mb);
            check_non_negative(&mut e, "capacity.disk_mb", cap.disk_mb);
            check_non_negative(&mut e, "capacity.containers", cap.containers);
        }
    }
    e.into_result()
}

pub fn validate_domain(d: &Domain) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    check_required(&mut e, "domain", &d.name);
    if d.name.contains('/') {
        e.add("domain", "must not contain '/'");
    }
    if d.ttl_seconds < 0 {
        e.add("ttl", "must be >= 0");
    }
    e.into_result()
}

#[cfg(test)]
mod tests;
