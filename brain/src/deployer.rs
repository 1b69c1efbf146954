//! Running rolling updates: the active brain looks for apps whose deployment is
//! in progress, and every [`TICK`] (or at once when an event says something
//! moved) reads each one's DesiredLRP and instances, asks `rollout::plan`, and
//! makes the BBS calls its steps name, under the brain's fence.
//!
//! Everything it needs of the BBS is [`RolloutBbs`]; [`BbsRollouts`] is that
//! over the brain's BBS client, and the tests use an in-memory fake. The
//! deployment's state lives in the DesiredLRP, so a brain that takes over
//! carries on where the last one stopped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lattice_bbs_client::{ActualLrpFilter, BrainBbs, Result};
use lattice_specs::models::deployment::State as DeploymentState;
use lattice_specs::models::{ActualLrp, Deployment, DesiredLrp};
use tokio::sync::Notify;

use crate::auctioneer::{bbs_err, BrainError};
use crate::metrics as m;
use crate::rollout::{in_progress, plan, Step};

/// How often apps in a deployment are looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// How often every app is read to find deployments no event announced.
pub const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// What the deployer asks of the BBS: its reads and the rollout writes.
#[async_trait]
pub trait RolloutBbs: Send + Sync {
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>>;
    /// One app; a `NotFound` error once it is gone.
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp>;
    /// Every record of one app (ordinary, REPLACED and the others).
    async fn actual_lrps(&self, process_guid: &str) -> Result<Vec<ActualLrp>>;
    async fn replace_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<()>;
    async fn drain_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn remove_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    async fn restore_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()>;
    /// Compare-and-swap: refused when the stored deployment is no longer `expected`.
    async fn update_deployment(
        &self,
        process_guid: &str,
        expected: &Deployment,
        new: &Deployment,
    ) -> Result<()>;
    /// Back to the deployment's previous generation, the target having failed for `reason`.
    async fn roll_back_failed(&self, process_guid: &str, reason: &str) -> Result<()>;
}

/// [`RolloutBbs`] over the brain's (fenced) BBS client.
pub struct BbsRollouts(pub Arc<dyn BrainBbs>);

#[async_trait]
impl RolloutBbs for BbsRollouts {
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>> {
        self.0.desired_lrps().await
    }
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        self.0.desired_lrp(process_guid).await
    }
    async fn actual_lrps(&self, process_guid: &str) -> Result<Vec<ActualLrp>> {
        let filter = ActualLrpFilter {
            process_guid: process_guid.into(),
            ..Default::default()
        };
        self.0.actual_lrps(&filter).await
    }
    async fn replace_actual_lrp(
        &self,
        process_guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<()> {
        self.0
            .replace_actual_lrp(process_guid, index, surge, target_generation)
            .await?;
        Ok(())
    }
    async fn drain_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        self.0.drain_replaced_actual_lrp(process_guid, index).await
    }
    async fn remove_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        self.0.remove_replaced_actual_lrp(process_guid, index).await
    }
    async fn restore_replaced_actual_lrp(&self, process_guid: &str, index: i32) -> Result<()> {
        self.0
            .restore_replaced_actual_lrp(process_guid, index)
            .await
    }
    async fn update_deployment(
        &self,
        process_guid: &str,
        expected: &Deployment,
        new: &Deployment,
    ) -> Result<()> {
        self.0
            .update_deployment(process_guid, expected.clone(), new.clone())
            .await
    }
    async fn roll_back_failed(&self, process_guid: &str, reason: &str) -> Result<()> {
        self.0
            .rollback_desired_lrp(process_guid, 0, true, reason)
            .await?;
        Ok(())
    }
}

/// The clock steps are decided at (Unix ns); tests set their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct Deployer {
    bbs: Arc<dyn RolloutBbs>,
    clock: Clock,
    /// Apps whose deployment was in progress when last looked at.
    active: BTreeSet<String>,
    last_scan: Option<Instant>,
}

impl Deployer {
    pub fn new(bbs: Arc<dyn RolloutBbs>) -> Deployer {
        Deployer::with_clock(bbs, Arc::new(lattice_specs::now_nanos))
    }

    pub fn with_clock(bbs: Arc<dyn RolloutBbs>, clock: Clock) -> Deployer {
        Deployer {
            bbs,
            clock,
            active: BTreeSet::new(),
            last_scan: None,
        }
    }

    /// The apps being deployed, as last seen.
    pub fn active(&self) -> &BTreeSet<String> {
        &self.active
    }

    /// One pass over the apps in a deployment (all apps are read first with
    /// `rescan`, or when the last full read is [`RESCAN_EVERY`] old). Returns
    /// the steps taken. A lost lock ends it; other failures of one app are
    /// logged and tried again at the next pass.
    pub async fn run_once(&mut self, rescan: bool) -> std::result::Result<usize, BrainError> {
        let due = self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if rescan || due {
            let all = self.bbs.desired_lrps().await.map_err(bbs_err)?;
            self.active = all
                .into_iter()
                .filter(in_progress)
                .map(|d| d.process_guid)
                .collect();
            self.last_scan = Some(Instant::now());
        }
        let mut taken = 0;
        for guid in self.active.clone() {
            match self.move_app(&guid).await {
                Ok(Some(n)) => taken += n,
                Ok(None) => {
                    self.active.remove(&guid);
                }
                Err(e) if e.is_lock_lost() => return Err(BrainError::LockLost),
                Err(e) => {
                    tracing::warn!(app = %guid, error = %e, "deployment step failed; retrying")
                }
            }
        }
        m::DEPLOYMENTS_IN_PROGRESS.set(self.active.len() as i64);
        Ok(taken)
    }

    /// Plan and apply one app's steps: how many were taken, or None when its
    /// deployment is over (or the app is gone).
    async fn move_app(&self, guid: &str) -> Result<Option<usize>> {
        let desired = match self.bbs.desired_lrp(guid).await {
            Err(e) if e.is_not_found() => return Ok(None),
            r => r?,
        };
        if !in_progress(&desired) {
            return Ok(None);
        }
        let actuals = self.bbs.actual_lrps(guid).await?;
        let steps = plan(&desired, &actuals, (self.clock)());
        let n = steps.len();
        for step in steps {
            match self.apply(&desired, &step).await {
                Ok(()) => m::ROLLOUT_STEPS.with_label_values(&[step.name()]).inc(),
                // The records moved on since they were read: the next pass sees how.
                Err(e) if e.is_moved_on() => {
                    tracing::debug!(app = %guid, step = step.name(), error = %e, "step refused: state moved on");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(n))
    }

    async fn apply(&self, desired: &DesiredLrp, step: &Step) -> Result<()> {
        let (guid, b) = (desired.process_guid.as_str(), &self.bbs);
        let generation = desired.generation;
        match step {
            Step::Replace { index, surge } => {
                tracing::info!(app = %guid, index, surge, generation, "replacing instance");
                b.replace_actual_lrp(guid, *index, *surge, generation).await
            }
            Step::Drain { index } => {
                tracing::info!(app = %guid, index, "draining the replaced instance");
                b.drain_replaced_actual_lrp(guid, *index).await
            }
            Step::RemoveReplaced { index } => {
                tracing::info!(app = %guid, index, "removing the drained instance");
                b.remove_replaced_actual_lrp(guid, *index).await
            }
            Step::Restore { index } => {
                tracing::info!(app = %guid, index, generation, "restoring the replaced instance");
                b.restore_replaced_actual_lrp(guid, *index).await
            }
            Step::Fail { reason } => {
                tracing::warn!(app = %guid, generation, %reason, "generation failed; rolling back");
                b.roll_back_failed(guid, reason).await
            }
            Step::Progress { deployment } => {
                let expected = desired.deployment.clone().unwrap_or_default();
                b.update_deployment(guid, &expected, deployment).await?;
                record_end(guid, deployment);
                Ok(())
            }
        }
    }
}

/// Log and count a deployment that just ended or paused.
fn record_end(guid: &str, d: &Deployment) {
    let result = match d.state() {
        DeploymentState::Succeeded => "succeeded",
        DeploymentState::Failed => "failed",
        DeploymentState::RolledBack => "rolled_back",
        DeploymentState::Paused => {
            tracing::info!(app = %guid, generation = d.target_generation, "canaries run; waiting for a promotion");
            return;
        }
        _ => return,
    };
    tracing::info!(app = %guid, generation = d.target_generation, result, reason = %d.reason, "deployment ended");
    m::DEPLOYMENTS.with_label_values(&[result]).inc();
}

/// What wakes the deployer before its next tick.
pub struct DeployWake {
    /// An app's definition changed: read every app again.
    pub rescan: Arc<Notify>,
    /// An instance changed: look at the apps in a deployment now.
    pub now: Arc<Notify>,
}

/// Run deployments until the lock is lost.
pub async fn run(mut deployer: Deployer, wake: DeployWake) -> std::result::Result<(), BrainError> {
    let mut rescan = true;
    loop {
        match deployer.run_once(rescan).await {
            Ok(_) => rescan = false,
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "deployments failed; retrying at the next tick"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = wake.rescan.notified() => rescan = true,
            _ = wake.now.notified() => {}
        }
    }
}

#[cfg(test)]
mod bbs_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
