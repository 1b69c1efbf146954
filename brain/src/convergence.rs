//! Running convergence: take a snapshot from the BBS, decide (`converger`),
//! apply the decisions through the BBS under the brain's fence, and send the
//! auctioneer what needs placing.
//!
//! New UNCLAIMED records reach the auctioneer through BBS events; convergence
//! only sends what no event will announce: stale UNCLAIMED instances and
//! PENDING tasks that wait too long.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs_client::{apply_all, ActualLrpFilter, BrainBbs, TaskFilter};
use lattice_specs::models::task::State as TaskState;
use tokio::sync::mpsc;

use crate::auctioneer::{bbs_err, BrainError, StartRequest};
use crate::converger::{converge, Action, ConvergeConfig, Counts, Memory, Snapshot};
use crate::metrics as m;

pub struct Convergence {
    bbs: Arc<dyn BrainBbs>,
    cfg: ConvergeConfig,
    memory: Memory,
}

impl Convergence {
    pub fn new(bbs: Arc<dyn BrainBbs>, cfg: ConvergeConfig) -> Convergence {
        Convergence {
            bbs,
            cfg,
            memory: Memory::default(),
        }
    }

    /// One pass. With `resend_all`, every waiting instance and task is sent to
    /// the auction whatever its age (a brain that just took over has not seen
    /// the events that announced them).
    pub async fn run_once(
        &mut self,
        auction: &mpsc::UnboundedSender<StartRequest>,
        resend_all: bool,
    ) -> Result<Counts, BrainError> {
        let started = Instant::now();
        // The reads are independent: make them at once.
        let b = &self.bbs;
        let (all_actual, all_tasks) = (ActualLrpFilter::default(), TaskFilter::default());
        let (desired, actual, cells, domains, tasks, schedules) = tokio::try_join!(
            b.desired_lrps(),
            b.actual_lrps(&all_actual),
            b.cells(),
            b.domains(),
            b.tasks(&all_tasks),
            b.schedules(),
        )
        .map_err(bbs_err)?;
        // A schedule's completed runs are its scheduler's to prune, not ours to expire.
        let tasks = crate::schedules::without_kept_runs(tasks, &schedules);
        let cells: HashSet<String> = cells.into_iter().map(|c| c.cell_id).collect();
        let fresh: HashSet<String> = domains.into_iter().map(|d| d.name).collect();

        let snapshot = Snapshot {
            now: lattice_specs::now_nanos(),
            desired: &desired,
            actual: &actual,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks: &tasks,
        };
        let cfg = if resend_all {
            self.memory = Memory::default();
            ConvergeConfig {
                stale_unclaimed: Duration::ZERO,
                kick_task: Duration::ZERO,
                ..self.cfg
            }
        } else {
            self.cfg
        };
        let (actions, counts) = converge(&snapshot, &cfg, &mut self.memory);
        let completed: HashSet<&str> = tasks
            .iter()
            .filter(|t| t.state() == TaskState::Completed)
            .map(|t| t.task_guid.as_str())
            .collect();
        if !actions.is_empty() {
            tracing::info!(actions = actions.len(), ?counts, "converging");
        }

        let calls = actions.into_iter().map(|a| {
                let bbs = self.bbs.clone();
                let auction = auction.clone();
                let was_completed = matches!(&a, Action::DeleteTask { task_guid } if completed.contains(task_guid.as_str()));
                async move {
                    match a {
                        Action::CreateMissing(k) => bbs.create_actual_lrp(&k.process_guid, k.index).await,
                        Action::Restart(k) | Action::ReplaceLost { key: k, .. } => bbs.unclaim_actual_lrp(&k.process_guid, k.index).await,
                        Action::MarkSuspect { key: k, .. } => bbs.suspect_actual_lrp(&k.process_guid, k.index).await,
                        Action::RemoveSuspect(k) => bbs.remove_suspect_actual_lrp(&k.process_guid, k.index).await,
                        Action::Auction(k) => {
                            let _ = auction.send(StartRequest::Lrp(k));
                            Ok(())
                        }
                        Action::Retire { key: k, .. } => bbs.retire_actual_lrp(&k.process_guid, k.index).await,
                        Action::RemoveReplaced(k) => bbs.remove_replaced_actual_lrp(&k.process_guid, k.index).await,
                        Action::RemoveEvacuating { key: k, instance_key } => {
                            bbs.remove_evacuating_actual_lrp(&k.process_guid, k.index, &instance_key).await
                        }
                        Action::FailTask { task_guid, reason } => bbs.fail_task(&task_guid, &reason).await,
                        Action::AuctionTask { task_guid } => {
                            let _ = auction.send(StartRequest::Task(task_guid));
                            Ok(())
                        }
                        Action::DeleteTask { task_guid } => {
                            if was_completed {
                                bbs.resolving_task(&task_guid).await?;
                            }
                            bbs.delete_task(&task_guid).await
                        }
                    }
                }
            });
        // State that moved on since the snapshot is not an error.
        apply_all(calls).await.map_err(bbs_err)?;
        for (kind, n) in [
            ("missing", counts.missing),
            ("extra", counts.extra),
            ("crashed", counts.crashed),
            ("lost", counts.lost),
            ("stale", counts.stale),
        ] {
            m::CONVERGENCE_FOUND
                .with_label_values(&[kind])
                .set(n as i64);
        }
        m::CONVERGENCE_DURATION.observe(started.elapsed().as_secs_f64());
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::Reads;

    /// A BBS where instance 0 of `web` (one instance desired) has gone missing.
    async fn missing_instance() -> FakeBbs {
        let bbs = FakeBbs::start().await;
        let d = lattice_specs::testing::desired_lrp("web", 1);
        bbs.db().desire_lrp(d).await.unwrap();
        bbs.db().remove_actual_lrp("web", 0, None).await.unwrap();
        bbs
    }

    async fn instances(bbs: &FakeBbs) -> usize {
        let filter = ActualLrpFilter::default();
        bbs.actual_lrps(&filter).await.unwrap().len()
    }

    #[tokio::test]
    async fn the_leading_brain_recreates_a_missing_instance() {
        let bbs = missing_instance().await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conv = Convergence::new(bbs.leader("brain").await, ConvergeConfig::default());
        let counts = conv.run_once(&tx, false).await.unwrap();
        assert_eq!(counts.missing, 1);
        assert_eq!(instances(&bbs).await, 1);
    }

    #[tokio::test]
    async fn a_brain_whose_lock_moved_on_gets_lock_lost_and_writes_nothing() {
        let bbs = missing_instance().await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut conv = Convergence::new(bbs.superseded("brain").await, ConvergeConfig::default());
        let r = conv.run_once(&tx, false).await;
        assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
        assert_eq!(instances(&bbs).await, 0);
    }
}
