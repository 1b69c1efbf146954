//! Following the BBS's events: a sync whenever one touches this cell's work.
//! [`concerns_cell`] decides which do; the follower listens and asks for the sync.

use futures::StreamExt;
use lattice_specs::events::event::Event as E;

use super::*;

/// Whether BBS event `ev` asks this cell to act: a change to or the removal of an
/// instance or a Task it holds (`held` tells by guid), or a change to one of its
/// volumes' cell, state or size (not the use the cell itself reports).
pub(super) fn concerns_cell(ev: &E, cell_id: &str, held: impl Fn(&str) -> bool) -> bool {
    let holds_actual = |a: Option<&models::ActualLrp>| {
        a.and_then(|a| a.instance_key.as_ref())
            .is_some_and(|k| held(&k.instance_guid))
    };
    let holds_task = |t: Option<&models::Task>| t.is_some_and(|t| held(&t.task_guid));
    match ev {
        E::ActualLrpRemoved(r) => holds_actual(r.actual_lrp.as_ref()),
        E::ActualLrpChanged(c) => holds_actual(c.before.as_ref()),
        E::TaskChanged(c) => holds_task(c.before.as_ref()),
        E::TaskRemoved(r) => holds_task(r.task.as_ref()),
        E::VolumeChanged(v) => {
            // A volume the brain just placed changes only its cell.
            let key = |x: &models::Volume| (x.cell_id.clone(), x.state, x.size_bytes);
            v.after
                .as_ref()
                .or(v.before.as_ref())
                .is_some_and(|x| x.cell_id == cell_id)
                && v.before.as_ref().map(key) != v.after.as_ref().map(key)
        }
        _ => false,
    }
}

impl<R: Runtime> Rep<R> {
    /// Triggers a sync whenever an event touches this cell's work.
    pub(super) async fn follow_events(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Ok(mut stream) = self.bbs.subscribe_events().await {
                // Whatever happened while we were not listening.
                self.sync_now.notify_one();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.next() => m,
                    };
                    let Some(Ok(ev)) = msg else { break };
                    let held = |guid: &str| self.slots.lock().unwrap().contains_key(guid);
                    if ev
                        .event
                        .as_ref()
                        .is_some_and(|e| concerns_cell(e, &self.cfg.cell_id, held))
                    {
                        self.sync_now.notify_one();
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use lattice_specs::events::{
        ActualLrpChangedEvent, ActualLrpRemovedEvent, TaskChangedEvent, TaskRemovedEvent,
        VolumeChangedEvent,
    };

    fn held(guid: &str) -> bool {
        guid == "i-0" || guid == "t-1"
    }

    fn volume(cell_id: &str, state: i32, size_bytes: u64, used_bytes: u64) -> models::Volume {
        models::Volume {
            name: "data".into(),
            cell_id: cell_id.into(),
            state,
            size_bytes,
            used_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn events_about_held_instances_and_tasks_concern_the_cell() {
        let mine = actual("web", 0, "i-0", CELL, LrpState::Running);
        let other = actual("web", 1, "i-9", CELL, LrpState::Running);
        let changed = |before: &models::ActualLrp| {
            E::ActualLrpChanged(ActualLrpChangedEvent {
                before: Some(before.clone()),
                after: None,
            })
        };
        let removed = |a: &models::ActualLrp| {
            E::ActualLrpRemoved(ActualLrpRemovedEvent {
                actual_lrp: Some(a.clone()),
            })
        };
        assert!(concerns_cell(&changed(&mine), CELL, held));
        assert!(!concerns_cell(&changed(&other), CELL, held));
        assert!(concerns_cell(&removed(&mine), CELL, held));
        assert!(!concerns_cell(&removed(&other), CELL, held));
        let t = |guid| task(guid, TaskState::Running, CELL);
        let task_changed = |guid| {
            E::TaskChanged(TaskChangedEvent {
                before: Some(t(guid)),
                after: None,
            })
        };
        assert!(concerns_cell(&task_changed("t-1"), CELL, held));
        assert!(!concerns_cell(&task_changed("t-9"), CELL, held));
        let task_removed = E::TaskRemoved(TaskRemovedEvent {
            task: Some(t("t-1")),
        });
        assert!(concerns_cell(&task_removed, CELL, held));
    }

    #[test]
    fn only_volume_changes_that_ask_the_cell_to_act_concern_it() {
        let change = |before: Option<models::Volume>, after: Option<models::Volume>| {
            E::VolumeChanged(VolumeChangedEvent { before, after })
        };
        let created = change(None, Some(volume(CELL, 0, 1 << 30, 0)));
        assert!(concerns_cell(&created, CELL, held));
        let grown = change(
            Some(volume(CELL, 1, 1 << 30, 0)),
            Some(volume(CELL, 1, 2 << 30, 0)),
        );
        assert!(concerns_cell(&grown, CELL, held));
        // The use the cell itself reported.
        let used = change(
            Some(volume(CELL, 1, 1 << 30, 0)),
            Some(volume(CELL, 1, 1 << 30, 5)),
        );
        assert!(!concerns_cell(&used, CELL, held));
        let elsewhere = change(None, Some(volume("cell-2", 0, 1 << 30, 0)));
        assert!(!concerns_cell(&elsewhere, CELL, held));
        // Placed by the brain on this cell after it was recorded without one.
        let placed = change(
            Some(volume("", 0, 1 << 30, 0)),
            Some(volume(CELL, 0, 1 << 30, 0)),
        );
        assert!(concerns_cell(&placed, CELL, held));
        let placed_elsewhere = change(
            Some(volume("", 0, 1 << 30, 0)),
            Some(volume("cell-2", 0, 1 << 30, 0)),
        );
        assert!(!concerns_cell(&placed_elsewhere, CELL, held));
    }
}
