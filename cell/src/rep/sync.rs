//! Bulk sync with the BBS, periodically and when asked: drift fixed both ways.

use super::*;

impl Rep {
    pub(super) async fn sync_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_gc = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.sync_now.notified() => {}
                _ = tokio::time::sleep(self.cfg.sync_interval) => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!("bulk sync failed: {}", e.message());
            }
            if let Err(e) = self.sync_volumes().await {
                tracing::warn!("volume sync failed: {}", e.message());
            }
            if last_gc.elapsed() >= LAYER_GC_EVERY {
                last_gc = Instant::now();
                self.exec.collect_layers(LAYER_KEEP).await;
            }
        }
    }

    /// One bulk sync: containers the BBS no longer gives this cell are stopped; records
    /// that say this cell runs something it has no container for are corrected.
    pub async fn sync(&self) -> Result<(), tonic::Status> {
        let listed_at = Instant::now();
        let mut bbs = self.bbs();
        let actuals = bbs
            .actual_lr_ps(api::ActualLrPsRequest {
                cell_id: self.cfg.cell_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .actual_lrps;
        let tasks = bbs
            .tasks(api::TasksRequest {
                cell_id: self.cfg.cell_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .tasks;
        let slots = self.snapshot();
        let owned_before_list = |s: &Slot| s.owned_since.is_some_and(|t| t < listed_at);
        let ours = |a: &models::ActualLrp, guid: &str| {
            a.instance_key
                .as_ref()
                .is_some_and(|k| k.instance_guid == guid && k.cell_id == self.cfg.cell_id)
        };
        for (handle, slot) in &slots {
            if !owned_before_list(slot) || slot.stop.is_cancelled() {
                continue;
            }
            let keep = match &slot.kind {
                Kind::Lrp { instance_guid, .. } => actuals.iter().any(|a| ours(a, instance_guid)),
                Kind::Task { task_guid } => tasks.iter().any(|t| {
                    &t.task_guid == task_guid
                        && t.state() == TaskState::Running
                        && t.cell_id == self.cfg.cell_id
                }),
            };
            if !keep {
                tracing::info!(
                    handle,
                    "the BBS no longer gives this cell {handle}: stopping it"
                );
                slot.stop.cancel();
            }
        }
        let held: std::collections::HashSet<String> =
            self.slots.lock().unwrap().keys().cloned().collect();
        for a in &actuals {
            let (Some(k), Some(ik)) = (&a.key, &a.instance_key) else {
                continue;
            };
            if ik.cell_id != self.cfg.cell_id
                || held.contains(&ik.instance_guid)
                || a.presence() == Presence::Evacuating
                || a.state() == LrpState::Crashed
                || a.state() == LrpState::Unclaimed
            {
                continue;
            }
            tracing::info!(process_guid = %k.process_guid, index = k.index, "record without a container: removing it");
            let _ = bbs
                .remove_actual_lrp(api::RemoveActualLrpRequest {
                    key: Some(api::ActualLrpRef {
                        process_guid: k.process_guid.clone(),
                        index: k.index,
                    }),
                    instance_key: Some(ik.clone()),
                })
                .await;
        }
        for t in &tasks {
            if t.state() == TaskState::Running
                && t.cell_id == self.cfg.cell_id
                && !held.contains(&t.task_guid)
            {
                let _ = bbs
                    .fail_task(api::FailTaskRequest {
                        task_guid: t.task_guid.clone(),
                        failure_reason: "the cell lost the task's container".into(),
                    })
                    .await;
            }
        }
        Ok(())
    }
}
