//! `Perform`: the work the auctioneer gives this cell, reserved if it fits and started
//! in the background, and the check that what runs is what the BBS stores.

use super::*;

impl<R: Runtime> Rep<R> {
    /// Takes what fits and starts it in the background; returns what did not fit.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        let received = Instant::now();
        let mut failed = Work::default();
        for start in work.lrps {
            let Some(desired) = start.desired.clone() else {
                continue;
            };
            let instance_guid = uuid::Uuid::new_v4().to_string();
            let slot = Slot {
                kind: Kind::Lrp {
                    process_guid: desired.process_guid.clone(),
                    index: start.index,
                    instance_guid: instance_guid.clone(),
                },
                memory_mb: desired.memory_mb,
                disk_mb: desired.disk_mb,
                phase: Phase::Reserved,
                owned_since: None,
                stop: CancellationToken::new(),
                net_info: None,
            };
            if !self.reserve(&instance_guid, slot) {
                failed.lrps.push(start);
                continue;
            }
            let rep = self.clone();
            tokio::spawn(async move {
                rep.start_lrp(desired, start.index, instance_guid, received)
                    .await
            });
        }
        for start in work.tasks {
            let Some(task) = start.task.clone() else {
                continue;
            };
            let def = task.definition.clone().unwrap_or_default();
            let slot = Slot {
                kind: Kind::Task {
                    task_guid: task.task_guid.clone(),
                },
                memory_mb: def.memory_mb,
                disk_mb: def.disk_mb,
                phase: Phase::Reserved,
                owned_since: None,
                stop: CancellationToken::new(),
                net_info: None,
            };
            if !self.reserve(&task.task_guid, slot) {
                failed.tasks.push(start);
                continue;
            }
            let rep = self.clone();
            tokio::spawn(async move { rep.start_task(task).await });
        }
        failed
    }

    /// The BBS's copy of an LRP a Perform asked for, if the Perform's matches it.
    pub(super) async fn stored_lrp(&self, sent: models::DesiredLrp) -> Option<models::DesiredLrp> {
        let stored = self
            .bbs
            .desired_lrp(&sent.process_guid)
            .await
            .ok()
            .flatten();
        let verdict = crate::verify::lrp_matches(&sent, stored.as_ref());
        self.accepted(verdict, stored, &sent.process_guid)
    }

    /// The BBS's copy of a Task a Perform asked for, if the Perform's matches it.
    pub(super) async fn stored_task(&self, sent: models::Task) -> Option<models::Task> {
        let stored = self.bbs.task(&sent.task_guid).await.ok().flatten();
        let verdict = crate::verify::task_matches(&sent, stored.as_ref());
        self.accepted(verdict, stored, &sent.task_guid)
    }

    /// The stored copy when the Perform's matched it; otherwise none, counted and said.
    pub(super) fn accepted<T>(
        &self,
        verdict: Result<(), crate::verify::Mismatch>,
        stored: Option<T>,
        guid: &str,
    ) -> Option<T> {
        match verdict {
            Ok(()) => stored,
            Err(e) => {
                self.metrics.refused.inc();
                tracing::warn!(guid, "refused a Perform: {e}");
                None
            }
        }
    }
}
