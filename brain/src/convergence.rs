//! Running convergence: take a snapshot from the BBS, decide (`converger`),
//! apply the decisions through the BBS under the brain's fence, and send the
//! auctioneer what needs placing.
//!
//! New UNCLAIMED records reach the auctioneer through BBS events; convergence
//! only sends what no event will announce: stale UNCLAIMED instances and
//! PENDING tasks that wait too long.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lattice_specs::bbs_api::*;
use lattice_specs::models::task::State as TaskState;
use tokio::sync::mpsc;

use crate::auctioneer::{bbs_err, BrainError, StartRequest};
use crate::bbs::{apply_all, Bbs};
use crate::converger::{converge, Action, ConvergeConfig, Counts, LrpKey, Memory, Snapshot};
use crate::metrics as m;

pub struct Convergence {
    bbs: Bbs,
    cfg: ConvergeConfig,
    memory: Memory,
}

fn key(k: &LrpKey) -> Option<ActualLrpRef> {
    Some(ActualLrpRef {
        process_guid: k.process_guid.clone(),
        index: k.index,
    })
}

impl Convergence {
    pub fn new(bbs: Bbs, cfg: ConvergeConfig) -> Convergence {
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
        // The five reads are independent: make them at once.
        let b = &self.bbs;
        let (desired, actual, cells, domains, tasks) = tokio::try_join!(
            async {
                b.client()
                    .desired_lr_ps(b.req(DesiredLrPsRequest::default()))
                    .await
            },
            async {
                b.client()
                    .actual_lr_ps(b.req(ActualLrPsRequest::default()))
                    .await
            },
            async { b.client().cells(b.req(Empty {})).await },
            async { b.client().domains(b.req(Empty {})).await },
            async { b.client().tasks(b.req(TasksRequest::default())).await },
        )
        .map_err(bbs_err)?;
        let desired = desired.into_inner().desired_lrps;
        let actual = actual.into_inner().actual_lrps;
        let cells: HashSet<String> = cells
            .into_inner()
            .cells
            .into_iter()
            .map(|c| c.cell_id)
            .collect();
        let fresh: HashSet<String> = domains
            .into_inner()
            .domains
            .into_iter()
            .map(|d| d.name)
            .collect();
        let tasks = tasks.into_inner().tasks;

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
                    let mut c = bbs.client();
                    let r = match a {
                        Action::CreateMissing(k) => c.create_actual_lrp(bbs.req(key(&k).unwrap())).await.map(|_| ()),
                        Action::Restart(k) | Action::ReplaceLost { key: k, .. } => c.unclaim_actual_lrp(bbs.req(key(&k).unwrap())).await.map(|_| ()),
                        Action::MarkSuspect { key: k, .. } => c.suspect_actual_lrp(bbs.req(key(&k).unwrap())).await.map(|_| ()),
                        Action::RemoveSuspect(k) => c.remove_suspect_actual_lrp(bbs.req(key(&k).unwrap())).await.map(|_| ()),
                        Action::Auction(k) => {
                            let _ = auction.send(StartRequest::Lrp(k));
                            Ok(())
                        }
                        Action::Retire { key: k, .. } => c.retire_actual_lrp(bbs.req(RetireActualLrpRequest { key: key(&k) })).await.map(|_| ()),
                        Action::RemoveEvacuating { key: k, instance_key } => c
                            .remove_evacuating_actual_lrp(bbs.req(EvacuateRequest { key: key(&k), instance_key: Some(instance_key), ..Default::default() }))
                            .await
                            .map(|_| ()),
                        Action::FailTask { task_guid, reason } => {
                            c.fail_task(bbs.req(FailTaskRequest { task_guid, failure_reason: reason })).await.map(|_| ())
                        }
                        Action::AuctionTask { task_guid } => {
                            let _ = auction.send(StartRequest::Task(task_guid));
                            Ok(())
                        }
                        Action::DeleteTask { task_guid } => {
                            let mut r = Ok(());
                            if was_completed {
                                r = c.resolving_task(bbs.req(TaskGuidRequest { task_guid: task_guid.clone() })).await.map(|_| ());
                            }
                            match r {
                                Ok(()) => c.delete_task(bbs.req(TaskGuidRequest { task_guid })).await.map(|_| ()),
                                Err(e) => Err(e),
                            }
                        }
                    };
                    r
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
