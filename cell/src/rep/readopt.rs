//! Re-adoption: a restarted rep takes back the containers its predecessor left
//! running and destroys the dead ones.

use super::*;

impl Rep {
    /// Takes back the containers a previous rep left running; destroys the dead ones.
    pub(super) async fn readopt(self: &Arc<Self>) {
        for info in self.exec.on_disk() {
            let handle = info.handle().to_string();
            let alive = self.exec.shim_pid(&handle).is_some();
            let tags = &info.request.tags;
            let kind = match tags.get("kind").map(String::as_str) {
                Some("lrp") => {
                    let index = tags.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
                    Kind::Lrp {
                        process_guid: tags.get("process_guid").cloned().unwrap_or_default(),
                        index,
                        instance_guid: handle.clone(),
                    }
                }
                Some("task") => Kind::Task {
                    task_guid: handle.clone(),
                },
                _ => {
                    self.exec.destroy(&handle).await;
                    continue;
                }
            };
            // A Task that ended while no rep was there says how in its events: it is
            // supervised to its end (its result reported) like a live one.
            let ended_task = matches!(kind, Kind::Task { .. })
                && self.exec.events(&handle, 0).0.iter().any(|e| {
                    matches!(
                        e,
                        ShimEvent::Exited { stopped: false, .. } | ShimEvent::CreateFailed { .. }
                    )
                });
            if !alive && !ended_task {
                tracing::info!(handle, "reaping a container whose shim is gone");
                self.exec.destroy(&handle).await;
                continue;
            }
            if let Err(e) = self.exec.adopt(&info).await {
                tracing::warn!(handle, "cannot re-adopt: {e:#}; destroying it");
                self.exec.destroy(&handle).await;
                continue;
            }
            let log_guid = tags.get("log_guid").cloned().unwrap_or_default();
            self.logs.register(&handle, &log_guid);
            let slot = Slot {
                kind: kind.clone(),
                memory_mb: info.request.memory_mb,
                disk_mb: info.request.disk_mb,
                phase: Phase::Claimed,
                owned_since: Some(Instant::now()),
                stop: CancellationToken::new(),
                net_info: Some(self.net_info(&info)),
            };
            self.slots.lock().unwrap().insert(handle.clone(), slot);
            tracing::info!(handle, "re-adopted a running container");
            let rep = self.clone();
            match kind {
                Kind::Lrp {
                    process_guid,
                    index,
                    ..
                } => {
                    let d: models::DesiredLrp = tags
                        .get("desired")
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_default();
                    let running = self.is_running_here(&process_guid, index, &handle).await;
                    if running {
                        self.set_phase(&handle, Phase::Running);
                    }
                    tokio::spawn(async move {
                        rep.supervise_lrp(info, d, index, running, Instant::now())
                            .await
                    });
                }
                Kind::Task { .. } => {
                    tokio::spawn(async move { rep.supervise_task(info).await });
                }
            }
        }
    }

    pub(super) async fn is_running_here(
        &self,
        process_guid: &str,
        index: i32,
        instance_guid: &str,
    ) -> bool {
        let Ok(r) = self
            .bbs()
            .actual_lr_ps(api::ActualLrPsRequest {
                process_guid: process_guid.into(),
                index: Some(index),
                ..Default::default()
            })
            .await
        else {
            return false;
        };
        r.into_inner().actual_lrps.iter().any(|a| {
            a.state() == LrpState::Running
                && a.instance_key
                    .as_ref()
                    .is_some_and(|k| k.instance_guid == instance_guid)
        })
    }
}
