//! Carrying a plan out: storage first, then apps and tasks wave by wave (a wave starts
//! only once what it depends on is healthy or completed), then pruning; the manifest's
//! record kept in the cluster before and after. The cluster is behind [`Effects`]
//! ([`ApiEffects`] over the public API; a fake in the tests).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::rollout::progress::{self, Aim};
use anyhow::Context;
use lattice_specs::errors::ErrorName;
use sha2::Digest;

use super::plan::{describe, AppUpdate, Change, Ledger, Plan, Ready};
use crate::api::{error_name, Api};
use crate::app::{self, Baseline};

/// What applying a plan does to the cluster.
#[allow(async_fn_in_trait)]
pub trait Effects {
    /// Makes one change (a volume made or grown is ready when this returns).
    async fn apply(&mut self, change: &Change) -> anyhow::Result<()>;
    /// Waits until the app runs its instances (at its new generation, when it was
    /// just changed) or the task completed; an error says why it will not.
    async fn ready(&mut self, name: &str, ready: Ready) -> anyhow::Result<()>;
    async fn save_ledger(&mut self, ledger: &Ledger) -> anyhow::Result<()>;
}

/// Carries `plan` out; `previous` is the record found before.
pub async fn run<E: Effects>(plan: &Plan, previous: &Ledger, fx: &mut E) -> anyhow::Result<()> {
    // Recorded first, so that what a half-done apply made is still pruned later.
    let mut during = plan.ledger.clone();
    during.apps.extend(previous.apps.iter().cloned());
    during.tasks.extend(previous.tasks.iter().cloned());
    during.volumes.extend(previous.volumes.iter().cloned());
    during
        .backup_schedules
        .extend(previous.backup_schedules.iter().cloned());
    if &during != previous {
        fx.save_ledger(&during).await?;
    }
    for c in &plan.storage {
        println!("{}", describe(c));
        fx.apply(c).await?;
    }
    for wave in &plan.waves {
        for n in wave {
            if let Some(c) = &n.change {
                println!("{}", describe(c));
                fx.apply(c).await?;
            }
        }
        for n in wave {
            if let Some(r) = n.wait {
                fx.ready(&n.name, r).await?;
            }
        }
    }
    for c in &plan.prune {
        println!("{}", describe(c));
        fx.apply(c).await?;
    }
    if plan.ledger != during {
        fx.save_ledger(&plan.ledger).await?;
    }
    Ok(())
}

/// The blob holding a manifest's record.
pub fn ledger_blob(manifest: &str) -> String {
    format!("manifest-{manifest}.json")
}

/// The record of the manifest's last apply (empty when there is none).
pub async fn load_ledger(api: &Api, manifest: &str) -> anyhow::Result<Ledger> {
    let resp = match api.get_blob(&ledger_blob(manifest)).await {
        Err(e) if error_name(&e) == Some(ErrorName::BlobNotFound) => return Ok(Ledger::default()),
        r => r.context("reading the manifest's record (a blob) from the cluster")?,
    };
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the blob {} is not a manifest's record",
            ledger_blob(manifest)
        )
    })
}

/// [`Effects`] through the public API, showing progress as `ltc create` does.
pub struct ApiEffects<'a> {
    pub api: &'a Api,
    pub manifest: String,
    /// Crash counts when an app was changed: earlier crashes are not its failure.
    baselines: HashMap<String, Baseline>,
    /// Apps given a new generation, and its number.
    rolled: HashMap<String, i64>,
}

impl<'a> ApiEffects<'a> {
    pub fn new(api: &'a Api, manifest: &str) -> Self {
        ApiEffects {
            api,
            manifest: manifest.into(),
            baselines: HashMap::new(),
            rolled: HashMap::new(),
        }
    }

    async fn poll_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !done().await? {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{what}: not done after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits for the app's deployment to generation `g` to end, saying how it goes.
    async fn wait_rollout(&self, app: &str, g: i64, timeout: Duration) -> anyhow::Result<()> {
        progress::wait(self.api, app, Aim::Forward(g), timeout).await?;
        Ok(())
    }
}

impl Effects for ApiEffects<'_> {
    async fn apply(&mut self, change: &Change) -> anyhow::Result<()> {
        let api = self.api;
        match change {
            Change::CreateVolume {
                name,
                size_bytes,
                cell,
            } => {
                let req = lattice_specs::receptor::VolumeCreateRequest {
                    name: name.clone(),
                    size_bytes: *size_bytes,
                    cell_id: cell.clone().unwrap_or_default(),
                    ..Default::default()
                };
                crate::storage::create_volume(api, &req, Duration::from_secs(120)).await?;
            }
            Change::GrowVolume { name, to, .. } => {
                api.grow_volume(name, *to).await?;
                self.poll_until(
                    &format!("growing volume {name}"),
                    Duration::from_secs(60),
                    async || {
                        let v = api.volume(name).await?.context("the volume disappeared")?;
                        anyhow::ensure!(v.reason.is_empty(), "volume {name}: {}", v.reason);
                        Ok(v.actual_size_bytes >= *to)
                    },
                )
                .await?;
            }
            Change::SetSchedule { request, .. } => api.set_backup_schedule(request).await?,
            Change::CreateApp(r) => {
                self.baselines
                    .insert(r.process_guid.clone(), Baseline::new());
                api.create_desired_lrp(r).await?;
            }
            Change::UpdateApp { name, how, .. } => {
                let base = app::baseline(&api.actual_lrps_of(name).await?);
                self.baselines.insert(name.clone(), base);
                match how {
                    AppUpdate::InPlace(u) => api.update_desired_lrp(name, u).await?,
                    AppUpdate::Generation(g) => {
                        let d = api.create_generation(name, g).await?;
                        self.rolled.insert(name.clone(), d.generation);
                    }
                }
            }
            Change::CreateTask(t) => api.create_task(t).await?,
            Change::RemoveApp(n) => api.remove_desired_lrp(n).await?,
            Change::RemoveTask(n) => match api.task(n).await?.state.as_str() {
                "COMPLETED" => api.delete_task(n).await?,
                _ => api.cancel_task(n).await?,
            },
            Change::RemoveSchedule(v) => api.remove_schedule(v).await?,
            Change::RemoveVolume(n) => {
                api.remove_volume(n).await?;
                self.poll_until(
                    &format!("removing volume {n}"),
                    Duration::from_secs(60),
                    async || Ok(api.volume(n).await?.is_none()),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn ready(&mut self, name: &str, ready: Ready) -> anyhow::Result<()> {
        match ready {
            Ready::App { instances, timeout } => {
                if let Some(g) = self.rolled.get(name) {
                    let per = timeout.max(Duration::from_secs(60));
                    self.wait_rollout(name, *g, per * instances.max(1) as u32)
                        .await?;
                }
                let base = match self.baselines.get(name) {
                    Some(b) => b.clone(),
                    None => app::baseline(&self.api.actual_lrps_of(name).await?),
                };
                app::wait_running(self.api, name, instances, timeout, &base).await?;
                eprintln!("{name}: {instances} instance(s) running");
            }
            Ready::Task { timeout } => {
                let api = self.api;
                self.poll_until(&format!("task {name}"), timeout, async || {
                    let t = api.task(name).await?;
                    if t.state != "COMPLETED" {
                        return Ok(false);
                    }
                    anyhow::ensure!(
                        !t.failed,
                        "task {name} failed: {}. `ltc logs {name}` says more; `ltc delete-task {name}` lets it run again",
                        t.failure_reason
                    );
                    Ok(true)
                })
                .await?;
                eprintln!("{name}: completed");
            }
        }
        Ok(())
    }

    async fn save_ledger(&mut self, ledger: &Ledger) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(ledger)?;
        let sum: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.api
            .put_blob(&ledger_blob(&self.manifest), bytes.into(), &sum)
            .await
            .context("keeping the manifest's record (a blob) in the cluster")
    }
}
