//! Leaving: evacuation (instances handed over, Diego's way) and `stop_all` (a
//! cluster going down as a whole).

use super::*;

impl Rep {
    /// Hands this cell's instances over (Diego's evacuation): no new work is taken;
    /// each running instance is marked EVACUATING and keeps serving until its
    /// replacement runs elsewhere, then is stopped. Returns when the cell is empty of
    /// LRPs (tasks are left to finish) or the evacuation timeout passes.
    pub async fn evacuate(self: &Arc<Self>) {
        self.evacuating.store(true, Ordering::SeqCst);
        tracing::info!(cell = %self.cfg.cell_id, "evacuating");
        let deadline = Instant::now() + self.cfg.evacuation_timeout;
        loop {
            let (lrps, tasks): (Vec<_>, Vec<_>) = self
                .snapshot()
                .into_iter()
                .partition(|(_, s)| matches!(s.kind, Kind::Lrp { .. }));
            let tasks_left = !tasks.is_empty();
            if (lrps.is_empty() && !tasks_left) || Instant::now() > deadline {
                break;
            }
            for (handle, slot) in lrps {
                let Kind::Lrp {
                    process_guid,
                    index,
                    instance_guid,
                } = &slot.kind
                else {
                    continue;
                };
                let (key, ik) = self.keys(process_guid, *index, instance_guid);
                let req = api::EvacuateRequest {
                    key: Some(key),
                    instance_key: Some(ik),
                    net_info: slot.net_info.clone(),
                    error_message: String::new(),
                };
                let keep = match slot.phase {
                    Phase::Running => self.bbs().evacuate_running_actual_lrp(req).await,
                    _ => self.bbs().evacuate_claimed_actual_lrp(req).await,
                };
                let keep = keep.map(|r| r.into_inner().keep_container).unwrap_or(false);
                if !keep {
                    slot.stop.cancel();
                    tracing::info!(handle, "evacuated");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops everything this cell runs, for a cluster that is shutting down as a whole
    /// (`lattice up`): no new work is taken, every instance is stopped and its record
    /// removed (the converger starts it again when the cluster comes back), every task
    /// fails with "the cell stopped". Returns once every container is gone, or after
    /// the grace period and some.
    pub async fn stop_all(self: &Arc<Self>) {
        self.evacuating.store(true, Ordering::SeqCst);
        for (handle, slot) in self.snapshot() {
            if matches!(slot.kind, Kind::Task { .. }) {
                self.complete(&handle, true, "the cell stopped while the task ran", "")
                    .await;
            }
            slot.stop.cancel();
        }
        let deadline = Instant::now() + self.exec.config().grace + Duration::from_secs(5);
        while !self.slots.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(v) = self.exec.volumes() {
            let v = v.clone();
            let _ = tokio::task::spawn_blocking(move || v.close()).await;
        }
    }
}
