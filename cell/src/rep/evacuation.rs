//! Leaving: evacuation (instances handed over, Diego's way) and `stop_all` (a
//! cluster going down as a whole). [`evacuation_round`] and [`stops_after`] decide
//! what each container's evacuation asks of the BBS and what to do with its answer;
//! [`Rep::evacuate`] asks and acts.

use super::*;

/// Which of the BBS's evacuation calls an instance is handed over with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handover {
    /// RUNNING here: it keeps serving until its replacement runs elsewhere.
    Running,
    /// Not yet RUNNING (reserved or claimed): it makes room at once.
    Claimed,
}

/// One instance to hand over in an evacuation round.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Evacuee {
    pub handle: String,
    pub via: Handover,
    pub request: api::EvacuateRequest,
}

/// One round of evacuation at `now`: none when it is over (nothing left on the cell,
/// or past the `deadline`); otherwise each instance to hand over (none while only
/// Tasks are left: they are left to finish).
pub(super) fn evacuation_round(
    cell_id: &str,
    slots: &[(String, Slot)],
    now: Instant,
    deadline: Instant,
) -> Option<Vec<Evacuee>> {
    if slots.is_empty() || now > deadline {
        return None;
    }
    let evacuees = slots
        .iter()
        .filter_map(|(handle, slot)| {
            let Kind::Lrp {
                process_guid,
                index,
                instance_guid,
            } = &slot.kind
            else {
                return None;
            };
            let (key, ik) = instance_keys(cell_id, process_guid, *index, instance_guid);
            Some(Evacuee {
                handle: handle.clone(),
                via: match slot.phase {
                    Phase::Running => Handover::Running,
                    _ => Handover::Claimed,
                },
                request: api::EvacuateRequest {
                    key: Some(key),
                    instance_key: Some(ik),
                    net_info: slot.net_info.clone(),
                    error_message: String::new(),
                },
            })
        })
        .collect();
    Some(evacuees)
}

/// Whether an evacuated instance's container stops, given the BBS's answer (whether
/// it keeps the container; none when the call failed).
pub(super) fn stops_after(keep_container: Option<bool>) -> bool {
    !keep_container.unwrap_or(false)
}

impl<R: Runtime> Rep<R> {
    /// Hands this cell's instances over (Diego's evacuation): no new work is taken;
    /// each running instance is marked EVACUATING and keeps serving until its
    /// replacement runs elsewhere, then is stopped. Returns when the cell is empty of
    /// LRPs (tasks are left to finish) or the evacuation timeout passes.
    pub async fn evacuate(self: &Arc<Self>) {
        self.evacuating.store(true, Ordering::SeqCst);
        tracing::info!(cell = %self.cfg.cell_id, "evacuating");
        let deadline = Instant::now() + self.cfg.evacuation_timeout;
        loop {
            let slots = self.snapshot();
            let Some(evacuees) =
                evacuation_round(&self.cfg.cell_id, &slots, Instant::now(), deadline)
            else {
                break;
            };
            for e in evacuees {
                let keep = self.hand_over(&e).await.ok();
                if stops_after(keep) {
                    if let Some((_, slot)) = slots.iter().find(|(h, _)| *h == e.handle) {
                        slot.stop.cancel();
                    }
                    tracing::info!(handle = e.handle, "evacuated");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks the BBS to take over evacuee `e`: whether to keep its container.
    async fn hand_over(&self, e: &Evacuee) -> Result<bool, BbsError> {
        let r = &e.request;
        let key = r.key.clone().unwrap_or_default();
        let ik = r.instance_key.clone().unwrap_or_default();
        match e.via {
            Handover::Running => {
                let net = r.net_info.clone().unwrap_or_default();
                let keep = self.bbs.evacuate_running_actual_lrp(&key, &ik, &net);
                keep.await
            }
            // The BBS reads no net info (nor error message) of a claimed instance.
            Handover::Claimed => self.bbs.evacuate_claimed_actual_lrp(&key, &ik).await,
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
        let deadline = Instant::now() + self.exec.grace() + Duration::from_secs(5);
        while !self.slots.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(v) = self.exec.volumes() {
            let v = v.clone();
            let _ = tokio::task::spawn_blocking(move || v.close()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn net() -> models::ActualLrpNetInfo {
        models::ActualLrpNetInfo {
            address: "10.0.0.5".into(),
            ports: vec![],
            instance_address: "10.253.0.2".into(),
        }
    }

    #[test]
    fn running_instances_are_handed_over_running_others_claimed() {
        let t0 = Instant::now();
        let mut running = lrp_slot("web", 0, "i-0", Phase::Running, Some(t0));
        running.1.net_info = Some(net());
        let slots = vec![
            running,
            lrp_slot("web", 1, "i-1", Phase::Claimed, Some(t0)),
            lrp_slot("web", 2, "i-2", Phase::Reserved, None),
            task_slot("t-1", Phase::Claimed, Some(t0)),
        ];
        let mut round =
            evacuation_round(CELL, &slots, t0, t0 + Duration::from_secs(60)).expect("work is left");
        round.sort_by(|a, b| a.handle.cmp(&b.handle));
        let vias: Vec<_> = round.iter().map(|e| (e.handle.as_str(), e.via)).collect();
        assert_eq!(
            vias,
            vec![
                ("i-0", Handover::Running),
                ("i-1", Handover::Claimed),
                ("i-2", Handover::Claimed)
            ]
        );
        let first = &round[0].request;
        assert_eq!(
            first.key,
            Some(api::ActualLrpRef {
                process_guid: "web".into(),
                index: 0
            })
        );
        assert_eq!(
            first.instance_key,
            Some(models::ActualLrpInstanceKey {
                instance_guid: "i-0".into(),
                cell_id: CELL.into()
            })
        );
        assert_eq!(first.net_info, Some(net()));
        assert_eq!(round[1].request.net_info, None);
    }

    #[test]
    fn evacuation_waits_for_tasks_and_ends_when_empty_or_late() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(60);
        let tasks = vec![task_slot("t-1", Phase::Claimed, Some(t0))];
        assert_eq!(evacuation_round(CELL, &tasks, t0, deadline), Some(vec![]));
        assert_eq!(evacuation_round(CELL, &[], t0, deadline), None);
        let lrps = vec![lrp_slot("web", 0, "i-0", Phase::Running, Some(t0))];
        assert!(evacuation_round(CELL, &lrps, deadline, deadline).is_some());
        assert_eq!(
            evacuation_round(CELL, &lrps, deadline + Duration::from_millis(1), deadline),
            None
        );
    }

    #[test]
    fn a_container_stops_unless_the_bbs_keeps_it() {
        assert!(!stops_after(Some(true)));
        assert!(stops_after(Some(false)));
        assert!(stops_after(None));
    }
}
