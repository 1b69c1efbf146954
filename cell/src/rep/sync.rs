//! Bulk sync with the BBS, periodically and when asked: drift fixed both ways.
//! [`reconcile`] decides from the containers and the BBS's records what is wrong; the
//! runner lists the records and applies its [`SyncAction`]s.

use super::*;

impl<R: Runtime> Rep<R> {
    pub(super) async fn sync_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_gc = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.sync_now.notified() => {}
                _ = tokio::time::sleep(self.cfg.sync_interval) => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!("bulk sync failed: {}", e.message);
            }
            if let Err(e) = self.sync_volumes().await {
                tracing::warn!("volume sync failed: {e}");
            }
            if last_gc.elapsed() >= LAYER_GC_EVERY {
                last_gc = Instant::now();
                self.exec.collect_layers(LAYER_KEEP).await;
            }
        }
    }

    /// One bulk sync: containers the BBS no longer gives this cell are stopped; records
    /// that say this cell runs something it has no container for are corrected.
    pub async fn sync(&self) -> Result<(), BbsError> {
        let listed_at = Instant::now();
        let bbs = &self.bbs;
        let actuals = bbs.actual_lrps(&self.cfg.cell_id, "", None).await?;
        let tasks = bbs.tasks(&self.cfg.cell_id).await?;
        let slots = self.snapshot();
        let actions = reconcile(&self.cfg.cell_id, listed_at, &slots, &actuals, &tasks);
        for action in actions {
            match action {
                SyncAction::Stop { handle } => {
                    tracing::info!(
                        handle,
                        "the BBS no longer gives this cell {handle}: stopping it"
                    );
                    if let Some((_, slot)) = slots.iter().find(|(h, _)| *h == handle) {
                        slot.stop.cancel();
                    }
                }
                SyncAction::RemoveActual { key, instance_key } => {
                    tracing::info!(process_guid = %key.process_guid, index = key.index, "record without a container: removing it");
                    let _ = bbs.remove_actual_lrp(&key, &instance_key).await;
                }
                SyncAction::FailTask { task_guid } => {
                    let _ = bbs
                        .fail_task(&task_guid, "the cell lost the task's container")
                        .await;
                }
            }
        }
        Ok(())
    }
}

/// What a bulk sync does about one drift between the containers and the BBS.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SyncAction {
    /// The BBS no longer gives this cell the container's work: stop it.
    Stop { handle: String },
    /// A record says this cell runs an instance it has no container for.
    RemoveActual {
        key: api::ActualLrpRef,
        instance_key: models::ActualLrpInstanceKey,
    },
    /// A Task RUNNING here by the BBS has no container.
    FailTask { task_guid: String },
}

/// The drift between the cell's `slots` and the BBS's records of it (`actuals` and
/// `tasks`, listed at `listed_at`), as what to do: first the containers to stop, then
/// the records to correct. A slot that became ours after the listing, or is already
/// stopping, is left alone (the listing may not show it yet); records the BBS already
/// knows to be crashed, unclaimed or evacuating are not corrected.
pub(super) fn reconcile(
    cell_id: &str,
    listed_at: Instant,
    slots: &[(String, Slot)],
    actuals: &[models::ActualLrp],
    tasks: &[models::Task],
) -> Vec<SyncAction> {
    let owned_before_list = |s: &Slot| s.owned_since.is_some_and(|t| t < listed_at);
    let ours = |a: &models::ActualLrp, guid: &str| {
        a.instance_key
            .as_ref()
            .is_some_and(|k| k.instance_guid == guid && k.cell_id == cell_id)
    };
    let running_here = |t: &models::Task| t.state() == TaskState::Running && t.cell_id == cell_id;
    let mut actions = vec![];
    for (handle, slot) in slots {
        if !owned_before_list(slot) || slot.stop.is_cancelled() {
            continue;
        }
        let keep = match &slot.kind {
            Kind::Lrp { instance_guid, .. } => actuals.iter().any(|a| ours(a, instance_guid)),
            Kind::Task { task_guid } => tasks
                .iter()
                .any(|t| &t.task_guid == task_guid && running_here(t)),
        };
        if !keep {
            actions.push(SyncAction::Stop {
                handle: handle.clone(),
            });
        }
    }
    let held = |guid: &str| slots.iter().any(|(h, _)| h == guid);
    for a in actuals {
        let (Some(k), Some(ik)) = (&a.key, &a.instance_key) else {
            continue;
        };
        if ik.cell_id != cell_id
            || held(&ik.instance_guid)
            || a.presence() == Presence::Evacuating
            || a.state() == LrpState::Crashed
            || a.state() == LrpState::Unclaimed
        {
            continue;
        }
        actions.push(SyncAction::RemoveActual {
            key: api::ActualLrpRef {
                process_guid: k.process_guid.clone(),
                index: k.index,
            },
            instance_key: ik.clone(),
        });
    }
    for t in tasks {
        if running_here(t) && !held(&t.task_guid) {
            actions.push(SyncAction::FailTask {
                task_guid: t.task_guid.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn stop(handle: &str) -> SyncAction {
        SyncAction::Stop {
            handle: handle.into(),
        }
    }

    fn remove(process_guid: &str, index: i32, instance_guid: &str) -> SyncAction {
        SyncAction::RemoveActual {
            key: api::ActualLrpRef {
                process_guid: process_guid.into(),
                index,
            },
            instance_key: models::ActualLrpInstanceKey {
                instance_guid: instance_guid.into(),
                cell_id: CELL.into(),
            },
        }
    }

    fn fail(task_guid: &str) -> SyncAction {
        SyncAction::FailTask {
            task_guid: task_guid.into(),
        }
    }

    /// Times around a listing: a slot owned `before` it, and one owned `after` it.
    fn times() -> (Instant, Instant, Instant) {
        let before = Instant::now();
        let listed_at = before + Duration::from_millis(10);
        (before, listed_at, listed_at + Duration::from_millis(10))
    }

    #[test]
    fn no_drift_no_action() {
        let (before, listed_at, _) = times();
        let slots = vec![
            lrp_slot("web", 0, "i-0", Phase::Running, Some(before)),
            task_slot("t-1", Phase::Claimed, Some(before)),
        ];
        let actuals = vec![actual("web", 0, "i-0", CELL, LrpState::Running)];
        let tasks = vec![task("t-1", TaskState::Running, CELL)];
        assert_eq!(reconcile(CELL, listed_at, &slots, &actuals, &tasks), vec![]);
    }

    #[test]
    fn a_container_the_bbs_no_longer_gives_this_cell_is_stopped() {
        let (before, listed_at, _) = times();
        let slots = vec![
            lrp_slot("web", 0, "i-gone", Phase::Running, Some(before)),
            lrp_slot("web", 1, "i-moved", Phase::Running, Some(before)),
            task_slot("t-done", Phase::Claimed, Some(before)),
            task_slot("t-elsewhere", Phase::Claimed, Some(before)),
        ];
        let actuals = vec![actual("web", 1, "i-moved", "cell-2", LrpState::Running)];
        let tasks = vec![
            task("t-done", TaskState::Completed, CELL),
            task("t-elsewhere", TaskState::Running, "cell-2"),
        ];
        let mut got = reconcile(CELL, listed_at, &slots, &actuals, &tasks);
        got.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            got,
            vec![
                stop("i-gone"),
                stop("i-moved"),
                stop("t-done"),
                stop("t-elsewhere")
            ]
        );
    }

    #[test]
    fn slots_newer_than_the_listing_or_already_stopping_are_left_alone() {
        let (before, listed_at, after) = times();
        let stopping = lrp_slot("web", 2, "i-stopping", Phase::Running, Some(before));
        stopping.1.stop.cancel();
        let slots = vec![
            lrp_slot("web", 0, "i-new", Phase::Claimed, Some(after)),
            lrp_slot("web", 1, "i-reserved", Phase::Reserved, None),
            task_slot("t-new", Phase::Claimed, Some(after)),
            stopping,
        ];
        assert_eq!(reconcile(CELL, listed_at, &slots, &[], &[]), vec![]);
    }

    #[test]
    fn a_record_claiming_this_cell_without_a_container_is_removed() {
        let (_, listed_at, _) = times();
        let actuals = vec![
            actual("web", 0, "i-lost", CELL, LrpState::Running),
            actual("web", 1, "i-claimed", CELL, LrpState::Claimed),
            // Not corrected: crashed, unclaimed, evacuating or on another cell.
            actual("web", 2, "i-crashed", CELL, LrpState::Crashed),
            actual("web", 3, "i-unclaimed", CELL, LrpState::Unclaimed),
            models::ActualLrp {
                presence: Presence::Evacuating as i32,
                ..actual("web", 4, "i-evacuating", CELL, LrpState::Running)
            },
            actual("web", 5, "i-other", "cell-2", LrpState::Running),
        ];
        assert_eq!(
            reconcile(CELL, listed_at, &[], &actuals, &[]),
            vec![remove("web", 0, "i-lost"), remove("web", 1, "i-claimed")]
        );
    }

    #[test]
    fn a_record_with_a_container_here_is_kept_even_if_the_slot_is_new() {
        let (_, listed_at, after) = times();
        let slots = vec![lrp_slot("web", 0, "i-0", Phase::Claimed, Some(after))];
        let actuals = vec![actual("web", 0, "i-0", CELL, LrpState::Claimed)];
        assert_eq!(reconcile(CELL, listed_at, &slots, &actuals, &[]), vec![]);
    }

    #[test]
    fn a_task_running_here_without_a_container_fails() {
        let (before, listed_at, _) = times();
        let slots = vec![task_slot("t-held", Phase::Claimed, Some(before))];
        let tasks = vec![
            task("t-held", TaskState::Running, CELL),
            task("t-lost", TaskState::Running, CELL),
            task("t-pending", TaskState::Pending, ""),
            task("t-completed", TaskState::Completed, CELL),
            task("t-other", TaskState::Running, "cell-2"),
        ];
        assert_eq!(
            reconcile(CELL, listed_at, &slots, &[], &tasks),
            vec![fail("t-lost")]
        );
    }

    /// Over the in-process BBS: a record claiming this cell with no container here is
    /// removed and a Task RUNNING here with none fails; another cell's record stays.
    #[tokio::test]
    async fn a_sync_corrects_the_bbs_records_of_work_this_cell_does_not_hold() {
        use super::super::fake::{rep_over, FakeRuntime};
        use lattice_bbs_client::fake::FakeBbs;
        use lattice_bbs_client::{ActualLrpFilter, CellWrites, Reads};

        let bbs = FakeBbs::start().await;
        let d = lattice_bbs::testing::fixtures::desired_lrp("web", 2);
        bbs.db().desire_lrp(d).await.unwrap();
        let ik = |instance_guid: &str, cell_id: &str| models::ActualLrpInstanceKey {
            instance_guid: instance_guid.into(),
            cell_id: cell_id.into(),
        };
        bbs.claim_actual_lrp("web", 0, &ik("i-lost", CELL), 1)
            .await
            .unwrap();
        bbs.claim_actual_lrp("web", 1, &ik("i-other", "cell-2"), 1)
            .await
            .unwrap();
        bbs.db()
            .desire_task("t-lost", "test", valid_task_definition())
            .await
            .unwrap();
        assert!(bbs.start_task("t-lost", CELL).await.unwrap());
        let rep = rep_over(&bbs, FakeRuntime::new());

        rep.sync().await.unwrap();

        let left = bbs.actual_lrps(&ActualLrpFilter::default()).await.unwrap();
        let held: Vec<_> = left
            .iter()
            .map(|a| (a.key.as_ref().unwrap().index, a.instance_key.clone()))
            .collect();
        assert_eq!(held, vec![(1, Some(ik("i-other", "cell-2")))]);
        let t = bbs.task("t-lost").await.unwrap();
        assert_eq!(t.state(), TaskState::Completed);
        assert!(t.failed);
        assert_eq!(t.failure_reason, "the cell lost the task's container");
    }

    #[test]
    fn stops_come_before_corrections() {
        let (before, listed_at, _) = times();
        let slots = vec![lrp_slot("web", 0, "i-0", Phase::Running, Some(before))];
        let actuals = vec![actual("web", 1, "i-1", CELL, LrpState::Running)];
        let tasks = vec![task("t-lost", TaskState::Running, CELL)];
        assert_eq!(
            reconcile(CELL, listed_at, &slots, &actuals, &tasks),
            vec![stop("i-0"), remove("web", 1, "i-1"), fail("t-lost")]
        );
    }
}
