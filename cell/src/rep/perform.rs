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

#[cfg(test)]
mod tests {
    use super::super::fake::{eventually, rep_over, Call, FakeRuntime};
    use super::super::fixtures::{checked_lrp, CELL};
    use super::*;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::{ActualLrpFilter, Reads};
    use lattice_specs::rep_api::LrpStart;

    fn start(desired: models::DesiredLrp) -> Work {
        Work {
            lrps: vec![LrpStart {
                desired: Some(desired),
                index: 0,
            }],
            tasks: vec![],
        }
    }

    /// Instance `index` of `process_guid` as the BBS has it, once `done` holds of it
    /// (waiting up to 5 s); the last one read otherwise.
    async fn actual_once(
        bbs: &FakeBbs,
        process_guid: &str,
        done: impl Fn(&models::ActualLrp) -> bool,
    ) -> models::ActualLrp {
        let filter = ActualLrpFilter {
            process_guid: process_guid.into(),
            index: Some(0),
            ..Default::default()
        };
        let mut last = models::ActualLrp::default();
        for _ in 0..1000 {
            last = bbs.actual_lrps(&filter).await.unwrap().remove(0);
            if done(&last) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        last
    }

    #[tokio::test]
    async fn a_performed_lrp_is_claimed_then_reported_running_on_this_cell() {
        let bbs = FakeBbs::start().await;
        bbs.db().desire_lrp(checked_lrp("web")).await.unwrap();
        let stored = bbs.desired_lrp("web").await.unwrap();
        let fake = FakeRuntime::new();
        let rep = rep_over(&bbs, fake.clone());

        assert_eq!(rep.perform(start(stored)), Work::default());
        let created = || {
            fake.calls().into_iter().find_map(|c| match c {
                Call::Create(handle) => Some(handle),
                _ => None,
            })
        };
        assert!(eventually(|| created().is_some()).await);
        let handle = created().unwrap();
        // Created, but its process has not started: claimed, not running.
        let claimed = actual_once(&bbs, "web", |_| true).await;
        assert_eq!(claimed.state(), LrpState::Claimed);
        let here = models::ActualLrpInstanceKey {
            instance_guid: handle.clone(),
            cell_id: CELL.into(),
        };
        assert_eq!(claimed.instance_key.as_ref(), Some(&here));

        let started = ShimEvent::RunStarted {
            path: "/bin/httpd".into(),
            pid: 7,
        };
        fake.push_event(&handle, started);
        let running = actual_once(&bbs, "web", |a| a.state() == LrpState::Running).await;
        assert_eq!(running.state(), LrpState::Running);
        assert_eq!(running.instance_key, Some(here));
        let net = running.net_info.expect("a running instance's address");
        assert_eq!(net.address, rep.config().address);
        assert!(eventually(|| rep.state().starting_containers == 0).await);
        assert!(fake.calls().contains(&Call::Check(handle)));
    }

    #[tokio::test]
    async fn an_lrp_the_bbs_does_not_have_is_refused_and_its_room_released() {
        let bbs = FakeBbs::start().await;
        let fake = FakeRuntime::new();
        let rep = rep_over(&bbs, fake.clone());

        assert_eq!(rep.perform(start(checked_lrp("ghost"))), Work::default());
        assert!(eventually(|| rep.metrics.refused.get() == 1).await);
        assert!(eventually(|| rep.state().lrps.is_empty()).await);
        assert_eq!(fake.calls(), vec![]);
    }
}
