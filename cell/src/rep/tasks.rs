//! Tasks: started once the BBS says so, supervised to their end, completed with
//! their result (or their failure). [`task_end`] reads how one ended from its shim's
//! events; the runner reads its result file when needed and reports it.

use super::*;

/// How a Task's work ended, as its shim said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TaskEnd {
    pub failed: bool,
    pub reason: String,
    /// The result file's content, when the shim sent it.
    pub result: Option<String>,
}

/// The end among a Task's new `events`, if it ended (the first end said wins).
pub(super) fn task_end(events: Vec<ShimEvent>) -> Option<TaskEnd> {
    events.into_iter().find_map(|e| match e {
        ShimEvent::Exited {
            failed,
            reason,
            result,
            ..
        } => Some(TaskEnd {
            failed,
            reason,
            result,
        }),
        ShimEvent::CreateFailed { reason } => Some(TaskEnd {
            failed: true,
            reason,
            result: None,
        }),
        _ => None,
    })
}

impl<R: Runtime> Rep<R> {
    pub(super) fn task_request(&self, t: &models::Task) -> ContainerRequest {
        let def = t.definition.clone().unwrap_or_default();
        let source = if def.log_source.is_empty() {
            "TASK"
        } else {
            &def.log_source
        };
        let mut env = vec![("CELL_ID".to_string(), self.cfg.cell_id.clone())];
        env.extend(def.env.iter().map(|e| (e.name.clone(), e.value.clone())));
        ContainerRequest {
            handle: t.task_guid.clone(),
            rootfs: def.rootfs.clone(),
            memory_mb: def.memory_mb,
            disk_mb: def.disk_mb,
            cpu_weight: def.cpu_weight,
            max_pids: def.max_pids,
            privileged: def.privileged,
            host_network: false,
            ports: vec![],
            env,
            action: def.action.clone().unwrap_or_default(),
            log_source: source.to_string(),
            volume_mounts: def.volume_mounts.clone(),
            egress_rules: def.egress_rules.clone(),
            tags: [
                ("kind".to_string(), "task".to_string()),
                ("task_guid".to_string(), t.task_guid.clone()),
                (
                    "log_guid".to_string(),
                    log_guid_of(&def.log_guid, &t.task_guid),
                ),
                ("result_file".to_string(), def.result_file.clone()),
            ]
            .into(),
        }
    }

    #[tracing::instrument(skip_all, fields(task_guid = %t.task_guid))]
    pub(super) async fn start_task(self: Arc<Self>, t: models::Task) {
        let guid = t.task_guid.clone();
        // What runs is what the BBS stores, whatever the Perform carried.
        let Some(t) = self.stored_task(t).await else {
            self.release(&guid);
            return;
        };
        match self.bbs.start_task(&guid, &self.cfg.cell_id).await {
            Ok(true) => {}
            Ok(false) => {
                self.release(&guid);
                return;
            }
            Err(e) => {
                tracing::info!("start refused: {}", e.message);
                self.release(&guid);
                return;
            }
        }
        self.set_phase(&guid, Phase::Claimed);
        let req = self.task_request(&t);
        let log_guid = req.tags["log_guid"].clone();
        self.logs.register(&guid, &log_guid);
        self.logs.cell(&log_guid, "Creating container for task");
        let progress = self.logs.progress(&log_guid);
        match self.exec.create_with_progress(req, &progress).await {
            Ok(info) => {
                self.metrics.starts.inc();
                self.supervise_task(info).await;
            }
            Err(e) => {
                let reason = format!("failed to create container: {e:#}");
                self.logs.cell(&log_guid, &reason);
                self.complete(&guid, true, &reason, "").await;
                self.release(&guid);
            }
        }
    }

    pub(super) async fn complete(&self, guid: &str, failed: bool, reason: &str, result: &str) {
        let r = self
            .bbs
            .complete_task(guid, &self.cfg.cell_id, failed, reason, result)
            .await;
        if let Err(e) = r {
            tracing::info!(task_guid = guid, "completion refused: {}", e.message);
        }
    }

    pub(super) async fn supervise_task(self: &Arc<Self>, info: ContainerInfo) {
        let guid = info.handle().to_string();
        let result_file = info
            .request
            .tags
            .get("result_file")
            .cloned()
            .unwrap_or_default();
        let log_guid = info
            .request
            .tags
            .get("log_guid")
            .cloned()
            .unwrap_or_default();
        let stop = match self.slots.lock().unwrap().get(&guid) {
            Some(s) => s.stop.clone(),
            None => return,
        };
        let mut offset = 0;
        let mut asked_to_stop = false;
        let mut signal = self.exec.event_signal(&guid);
        let tick = if signal.is_live() {
            EVENT_FALLBACK
        } else {
            EVENT_POLL
        };
        loop {
            tokio::select! {
                _ = stop.cancelled(), if !asked_to_stop => {
                    asked_to_stop = true;
                    self.logs.cell(&log_guid, "Cancelling task");
                    self.exec.stop(&guid);
                }
                _ = signal.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let (events, off) = self.exec.events(&guid, offset);
            offset = off;
            let Some(end) = task_end(events) else {
                if !asked_to_stop && self.exec.shim_pid(&guid).is_none() {
                    // The shim died without a word (killed): the task failed.
                    let (events, _) = self.exec.events(&guid, offset);
                    if events.is_empty() {
                        self.complete(&guid, true, "the task's container vanished", "")
                            .await;
                        break;
                    }
                }
                continue;
            };
            if !asked_to_stop {
                self.report_end(&guid, &log_guid, &result_file, end).await;
            }
            break;
        }
        self.exec.destroy(&guid).await;
        self.release(&guid);
    }

    /// Completes a Task that ended on its own: its result from the shim, or read from
    /// its result file when the shim did not send one.
    async fn report_end(&self, guid: &str, log_guid: &str, result_file: &str, end: TaskEnd) {
        let TaskEnd {
            mut failed,
            mut reason,
            result,
        } = end;
        let from_shim = result.is_some();
        let mut result = result.unwrap_or_default();
        if !failed && !result_file.is_empty() && !from_shim {
            match self.exec.read_file(guid, result_file).await {
                Ok(r) => result = r,
                Err(e) => {
                    failed = true;
                    reason = format!("{e:#}");
                }
            }
        }
        self.logs.cell(
            log_guid,
            if failed {
                format!("Task failed: {reason}")
            } else {
                "Task completed".to_string()
            },
        );
        self.complete(guid, failed, &reason, &result).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{container, eventually, rep, Call, FakeRuntime};
    use super::super::fixtures::{clean_exit, task_slot};
    use super::*;

    #[test]
    fn a_task_ends_with_its_first_exit_or_create_failure() {
        assert_eq!(task_end(vec![]), None);
        let progress = ShimEvent::Progress {
            message: "50%".into(),
        };
        assert_eq!(task_end(vec![progress]), None);
        let done = ShimEvent::Exited {
            failed: false,
            reason: String::new(),
            stopped: false,
            result: Some("42".into()),
        };
        let failed = ShimEvent::CreateFailed {
            reason: "no such image".into(),
        };
        assert_eq!(
            task_end(vec![done.clone(), failed.clone()]),
            Some(TaskEnd {
                failed: false,
                reason: String::new(),
                result: Some("42".into())
            })
        );
        assert_eq!(
            task_end(vec![ShimEvent::Destroyed, failed, done]),
            Some(TaskEnd {
                failed: true,
                reason: "no such image".into(),
                result: None
            })
        );
    }

    #[tokio::test]
    async fn a_finished_task_has_its_result_file_read_then_its_container_destroyed() {
        let fake = FakeRuntime::new();
        let info = container(
            "t-1",
            &[("kind", "task"), ("result_file", "/out"), ("log_guid", "t")],
        );
        fake.put(info.clone(), true, vec![clean_exit(false)]);
        fake.put_file("t-1", "/out", "42");
        let rep = rep(fake.clone());
        let (handle, slot) = task_slot("t-1", Phase::Claimed, Some(Instant::now()));
        rep.slots.lock().unwrap().insert(handle, slot);
        rep.supervise_task(info).await;
        assert_eq!(
            fake.calls(),
            vec![
                Call::ReadFile("t-1".into(), "/out".into()),
                Call::Destroy("t-1".into())
            ]
        );
        assert!(rep.slots.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_task_told_to_stop_is_stopped_and_destroyed_without_a_result() {
        let fake = FakeRuntime::new();
        let info = container(
            "t-1",
            &[("kind", "task"), ("result_file", "/out"), ("log_guid", "t")],
        );
        fake.put(info.clone(), true, vec![]);
        let rep = rep(fake.clone());
        let (handle, slot) = task_slot("t-1", Phase::Claimed, Some(Instant::now()));
        let stop = slot.stop.clone();
        rep.slots.lock().unwrap().insert(handle, slot);
        let supervised = tokio::spawn({
            let rep = rep.clone();
            async move { rep.supervise_task(info).await }
        });
        stop.cancel();
        assert!(eventually(|| fake.calls().contains(&Call::Stop("t-1".into()))).await);
        fake.push_event("t-1", clean_exit(true));
        supervised.await.unwrap();
        assert_eq!(
            fake.calls(),
            vec![Call::Stop("t-1".into()), Call::Destroy("t-1".into())]
        );
        assert!(rep.slots.lock().unwrap().is_empty());
    }
}
