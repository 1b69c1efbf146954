//! What a manifest file says (apps, tasks, volumes, backup schedules) and reading
//! and writing it as YAML or TOML. Every table refuses fields it does not know, so a
//! misspelt field is an error naming it and its line, never silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A whole system: what `ltc apply -f FILE` makes the cluster hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Manifest {
    /// The manifest's name (default: the file's name without its extension): what a
    /// later `ltc apply --prune` of the same manifest recognises as its own.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Keyed by the volume backed up.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backup_schedules: BTreeMap<String, ScheduleSpec>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, AppSpec>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// 10G, 512M… (at least 300M); a larger size than the volume has grows it.
    pub size: String,
    /// The cell to make it on (default: the cell holding the fewest volume bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// hourly, daily, weekly, monthly, or a period like 1h, 30m, 2d.
    pub every: String,
    #[serde(default = "default_keep")]
    pub keep: u32,
    // What follows is `ltc backup schedule`'s other settings. Each one the file
    // names is applied; one it leaves out keeps what the cluster has (as set by
    // `ltc backup schedule`), so a manifest written before them changes none of them.
    /// restic's retention by age: the newest backup of each of the last N days,
    /// weeks, months (0: no such rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Restore-test the newest backup: daily, weekly, a cadence, or "" (never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// Alert when a backup is under this ratio of the previous one's size / time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smaller_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faster_than: Option<f64>,
    /// Commands run in the app's instance around each backup's snapshot (an empty
    /// table: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,
}

/// A backup schedule's hooks (`ltc backup schedule --pre/--post/--app`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSpec {
    /// `sh -c PRE` before the snapshot.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pre: String,
    /// `sh -c POST` after it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub post: String,
    /// The app whose instance runs them (default: the first running app mounting it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Each hook's timeout, like 30s or 2m (default 60s).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timeout: String,
}

fn default_keep() -> u32 {
    7
}

/// How an app is checked for health (default: its first port accepts connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Monitor {
    /// Healthy when this port accepts connections.
    Port(u32),
    /// PORT:/path: healthy when GET answers 2xx.
    Url(String),
    /// Healthy when this shell command exits 0 in the container.
    Command(String),
    /// No health check: running as soon as the process starts.
    None,
}

/// How a changed app is rolled out (see `ltc update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSpec {
    pub max_surge: i32,
    pub max_unavailable: i32,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        let s = lattice_specs::receptor::rollout::StrategyJson::default();
        UpdateSpec {
            max_surge: s.max_surge,
            max_unavailable: s.max_unavailable,
        }
    }
}

/// An app: the fields of `ltc create`, plus `tcp_routes`, `depends_on` and `update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSpec {
    pub image: String,
    pub command: Vec<String>,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub cpu_weight: u32,
    pub ports: Vec<u32>,
    /// HOST[:PORT]; a HOST without a dot is HOST.DOMAIN. Default: APP.DOMAIN.
    pub http_routes: Vec<String>,
    pub no_routes: bool,
    /// EXTERNAL:CONTAINER ports routed over TCP by the router.
    pub tcp_routes: Vec<String>,
    pub monitor: Option<Monitor>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub placement_tags: Vec<String>,
    /// NAME:/path[:ro]
    pub volumes: Vec<String>,
    /// How long an instance may take to start (and `ltc apply` waits), e.g. 90s, 2m.
    pub timeout: String,
    /// Apps (or tasks) that must be healthy (or completed) before this one starts.
    pub depends_on: Vec<String>,
    pub update: UpdateSpec,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            image: String::new(),
            command: vec![],
            instances: 1,
            memory_mb: 128,
            disk_mb: 0,
            cpu_weight: 100,
            ports: vec![8080],
            http_routes: vec![],
            no_routes: false,
            tcp_routes: vec![],
            monitor: None,
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            privileged: false,
            placement_tags: vec![],
            volumes: vec![],
            timeout: "2m".into(),
            depends_on: vec![],
            update: UpdateSpec::default(),
        }
    }
}

/// A task: run once to completion (again only once deleted: `ltc delete-task`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    pub image: String,
    pub command: Vec<String>,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub cpu_weight: u32,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub placement_tags: Vec<String>,
    pub volumes: Vec<String>,
    /// A file in the container whose contents become the task's result.
    pub result_file: String,
    /// How long `ltc apply` waits for it to complete, e.g. 5m.
    pub timeout: String,
    pub depends_on: Vec<String>,
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            image: String::new(),
            command: vec![],
            memory_mb: 128,
            disk_mb: 0,
            cpu_weight: 100,
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            privileged: false,
            placement_tags: vec![],
            volumes: vec![],
            result_file: String::new(),
            timeout: "10m".into(),
            depends_on: vec![],
        }
    }
}

/// The two ways of writing a manifest, told apart by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    pub fn of(path: &Path) -> anyhow::Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Ok(Format::Yaml),
            Some("toml") => Ok(Format::Toml),
            _ => anyhow::bail!(
                "{}: name the file NAME.yaml, NAME.yml or NAME.toml so ltc knows how to read it",
                path.display()
            ),
        }
    }
}

/// Reads a manifest; a syntax error or an unknown field is named with its line.
pub fn parse(text: &str, format: Format) -> Result<Manifest, String> {
    match format {
        Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
        Format::Yaml if text.trim().is_empty() => Ok(Manifest::default()),
        Format::Yaml => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
    }
}

/// A map with the keys whose values equal `default`'s removed.
fn without_defaults(v: serde_json::Value, default: serde_json::Value) -> serde_json::Value {
    match (v, default) {
        (serde_json::Value::Object(mut m), serde_json::Value::Object(d)) => {
            m.retain(|k, v| d.get(k) != Some(v));
            serde_json::Value::Object(m)
        }
        (v, _) => v,
    }
}

/// The manifest as `format`, leaving out fields at their defaults.
pub fn write(m: &Manifest, format: Format) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(m)?;
    let app_default = serde_json::to_value(AppSpec::default())?;
    let task_default = serde_json::to_value(TaskSpec::default())?;
    for (kind, default) in [("apps", app_default), ("tasks", task_default)] {
        if let Some(serde_json::Value::Object(items)) = v.get_mut(kind) {
            for item in items.values_mut() {
                *item = without_defaults(item.take(), default.clone());
            }
        }
    }
    Ok(match format {
        Format::Toml => toml::to_string(&toml::Value::try_from(v)?)?,
        Format::Yaml => serde_saphyr::to_string(&v)?,
    })
}
