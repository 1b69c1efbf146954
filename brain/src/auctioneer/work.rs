//! The auctioneer's pure steps around the placement: turning what waits into
//! work items with their constraints, keeping retried work off the cells that
//! refused it, grouping the placed work per cell, and reading a cell's refusals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::{DesiredLrp, Task, VolumeMount};
use lattice_specs::rep_api::{LrpStart, TaskStart, Work};

use super::StartRequest;
use crate::auction::{CellView, Constraints, Outcome, WorkItem, WorkKind};
use crate::converger::LrpKey;
use crate::metrics as m;
use crate::retry::Setback;

/// The LRP instances of a batch that still wait to be placed.
#[derive(Debug, Default)]
pub struct WaitingLrps {
    /// Desired LRPs by process guid.
    pub desired: HashMap<String, Arc<DesiredLrp>>,
    /// Instances known to be UNCLAIMED (and not evacuating).
    pub unclaimed: HashSet<(String, i32)>,
    /// Read in bulk: the instances were not checked, every one is taken as waiting.
    pub bulk: bool,
}

/// A batch as the placement sees it, with where each item came from.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<WorkItem>,
    /// For each item, its desired LRP and index when it is an instance.
    pub lrp_of: Vec<Option<(Arc<DesiredLrp>, i32)>>,
    /// For each item, its task when it is one.
    pub task_of: Vec<Option<Task>>,
}

/// Where a volume lives, as the auction needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeHome {
    /// Its cell (empty: it waits for one).
    pub cell: String,
    /// The task refilling it from its backup after a failover (empty: none). Only that
    /// task may mount it meanwhile.
    pub refilled_by: String,
}

/// Whether any of the work mounts volumes (then the auction needs their cells).
pub fn mounts_volumes(waiting: &WaitingLrps, tasks: &[Task]) -> bool {
    waiting
        .desired
        .values()
        .any(|d| !d.volume_mounts.is_empty())
        || tasks.iter().any(|t| {
            t.definition
                .as_ref()
                .is_some_and(|d| !d.volume_mounts.is_empty())
        })
}

/// The work items of the instances in `lrp_keys` that still wait and of the PENDING
/// `tasks` (`volumes`: volume name → where it lives). Equal constraints are shared.
pub fn batch_of(
    lrp_keys: Vec<LrpKey>,
    waiting: &WaitingLrps,
    tasks: Vec<Task>,
    volumes: &HashMap<String, VolumeHome>,
) -> Batch {
    let mut interned: HashMap<Constraints, Arc<Constraints>> = HashMap::new();
    let mut intern = |c: Constraints| {
        interned
            .entry(c.clone())
            .or_insert_with(|| Arc::new(c))
            .clone()
    };
    let mut batch = Batch::default();
    let mut guid_arcs: HashMap<String, Arc<str>> = HashMap::new();
    for k in lrp_keys {
        let still_waiting = waiting.bulk
            || waiting
                .unclaimed
                .contains(&(k.process_guid.clone(), k.index));
        let (Some(d), true) = (waiting.desired.get(&k.process_guid), still_waiting) else {
            continue;
        };
        if k.index >= d.instances {
            continue;
        }
        let guid = guid_arcs
            .entry(k.process_guid.clone())
            .or_insert_with(|| Arc::from(k.process_guid.as_str()))
            .clone();
        batch.items.push(WorkItem {
            kind: WorkKind::Lrp {
                process_guid: guid,
                index: k.index,
            },
            memory_mb: d.memory_mb,
            disk_mb: d.disk_mb,
            constraints: intern(constraints_of(d, volumes)),
            avoid: vec![],
        });
        batch.lrp_of.push(Some((d.clone(), k.index)));
        batch.task_of.push(None);
    }
    for t in tasks {
        if t.state() != TaskState::Pending {
            continue;
        }
        let def = t.definition.clone().unwrap_or_default();
        batch.items.push(WorkItem {
            kind: WorkKind::Task {
                task_guid: t.task_guid.clone(),
            },
            memory_mb: def.memory_mb,
            disk_mb: def.disk_mb,
            constraints: intern(Constraints {
                rootfs: def.rootfs.clone(),
                placement_tags: def.placement_tags.clone(),
                volume_drivers: drivers(&def.volume_mounts),
                volume_cell: volume_cell(&def.volume_mounts, volumes),
                volume_wait: volume_wait(&def.volume_mounts, volumes, &t.task_guid),
            }),
            avoid: vec![],
        });
        batch.lrp_of.push(None);
        batch.task_of.push(Some(t));
    }
    batch
}

fn constraints_of(d: &DesiredLrp, volumes: &HashMap<String, VolumeHome>) -> Constraints {
    Constraints {
        rootfs: d.rootfs.clone(),
        placement_tags: d.placement_tags.clone(),
        volume_drivers: drivers(&d.volume_mounts),
        volume_cell: volume_cell(&d.volume_mounts, volumes),
        volume_wait: volume_wait(&d.volume_mounts, volumes, &d.process_guid),
    }
}

/// Why work `work` (a task or process guid) cannot mount its volumes yet: one is
/// being refilled by another task after a failover. Its cell would refuse the claim,
/// so the work waits for the refill instead of being sent there.
fn volume_wait(
    mounts: &[VolumeMount],
    volumes: &HashMap<String, VolumeHome>,
    work: &str,
) -> Option<String> {
    mounts.iter().find_map(|m| {
        let home = volumes.get(&m.volume)?;
        (!home.refilled_by.is_empty() && home.refilled_by != work).then(|| {
            format!(
                "volume {} is being refilled from its backup after a failover (task {}): waiting for it",
                m.volume, home.refilled_by
            )
        })
    })
}

/// The cell work must run on because its volumes live there.
fn volume_cell(
    mounts: &[VolumeMount],
    volumes: &HashMap<String, VolumeHome>,
) -> Option<(String, String)> {
    // Scratch volumes are made wherever the work goes.
    let mut names: Vec<&str> = mounts
        .iter()
        .filter(|m| m.scratch_bytes == 0)
        .map(|m| m.volume.as_str())
        .collect();
    names.sort();
    names.dedup();
    let first = names.first()?;
    let cell = |n: &str| volumes.get(n).map(|h| h.cell.clone()).unwrap_or_default();
    let list = |names: &[&str]| {
        if names.len() == 1 {
            format!("volume {}", names[0])
        } else {
            format!("volumes {}", names.join(", "))
        }
    };
    if names.iter().any(|n| !volumes.contains_key(*n)) {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !volumes.contains_key(*n))
            .collect();
        return Some((
            String::new(),
            format!("{} does not exist: `ltc volume create` it", list(&missing)),
        ));
    }
    if names.iter().any(|n| cell(n) != cell(first)) {
        let each: Vec<String> = names
            .iter()
            .map(|n| format!("{n} on {}", cell(n)))
            .collect();
        return Some((
            String::new(),
            format!(
                "the volumes live on different cells ({}); one container can only mount volumes of one cell",
                each.join(", ")
            ),
        ));
    }
    Some((cell(first), list(&names)))
}

fn drivers(mounts: &[VolumeMount]) -> Vec<String> {
    let mut d: Vec<String> = mounts
        .iter()
        .map(|m| {
            if m.driver.is_empty() {
                "local".to_string()
            } else {
                m.driver.clone()
            }
        })
        .collect();
    d.sort();
    d.dedup();
    d
}

/// Keep retried work off the cells that refused it (`avoid`: cell ids per request).
pub fn keep_off_refusers(
    items: &mut [WorkItem],
    views: &[CellView],
    avoid: &HashMap<StartRequest, Vec<String>>,
) {
    if avoid.is_empty() {
        return;
    }
    let index: HashMap<&str, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.cell_id.as_str(), i))
        .collect();
    for item in items.iter_mut() {
        if let Some(cells) = avoid.get(&StartRequest::of(&item.kind)) {
            item.avoid = cells
                .iter()
                .filter_map(|c| index.get(c.as_str()).copied())
                .collect();
        }
    }
}

/// The placed work grouped per cell (by index into the views): the one Perform
/// each cell gets, and which items it holds.
pub fn work_per_cell(outcome: &Outcome, batch: &Batch) -> HashMap<usize, (Work, Vec<usize>)> {
    let mut per_cell: HashMap<usize, (Work, Vec<usize>)> = HashMap::new();
    for (w, c) in &outcome.placed {
        let entry = per_cell.entry(*c).or_default();
        if let Some((d, index)) = &batch.lrp_of[*w] {
            entry.0.lrps.push(LrpStart {
                desired: Some((**d).clone()),
                index: *index,
            });
            m::LRP_AUCTIONS_STARTED.inc();
        } else if let Some(t) = &batch.task_of[*w] {
            entry.0.tasks.push(TaskStart {
                task: Some(t.clone()),
            });
            m::TASK_AUCTIONS_STARTED.inc();
        }
        entry.1.push(*w);
    }
    per_cell
}

/// The setbacks of the work a cell was handed (`sent`, as requests), given what
/// its Perform answered: the work it handed back, or why it could not be reached.
pub fn perform_setbacks(
    cell_id: &str,
    sent: Vec<StartRequest>,
    answer: Result<Work, String>,
) -> Vec<(StartRequest, Setback)> {
    let refused = |reason: String| Setback::Refused {
        reason,
        cell: cell_id.to_string(),
    };
    let failed = match answer {
        Ok(failed) => failed,
        Err(e) => {
            let reason = format!("cell {cell_id} could not be reached: {e}");
            return sent
                .into_iter()
                .map(|r| (r, refused(reason.clone())))
                .collect();
        }
    };
    let refused_lrps: HashSet<(String, i32)> = failed
        .lrps
        .iter()
        .map(|l| {
            (
                l.desired
                    .as_ref()
                    .map(|d| d.process_guid.clone())
                    .unwrap_or_default(),
                l.index,
            )
        })
        .collect();
    let refused_tasks: HashSet<String> = failed
        .tasks
        .iter()
        .filter_map(|t| t.task.as_ref().map(|t| t.task_guid.clone()))
        .collect();
    sent.into_iter()
        .filter(|req| match req {
            StartRequest::Lrp(k) => refused_lrps.contains(&(k.process_guid.clone(), k.index)),
            StartRequest::Task(g) => refused_tasks.contains(g),
        })
        .map(|req| (req, refused(format!("cell {cell_id} refused the work"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::TaskDefinition;

    fn mount(volume: &str) -> VolumeMount {
        VolumeMount {
            volume: volume.into(),
            container_path: "/data".into(),
            ..Default::default()
        }
    }

    fn task(guid: &str) -> Task {
        Task {
            task_guid: guid.into(),
            state: TaskState::Pending as i32,
            definition: Some(TaskDefinition {
                volume_mounts: vec![mount("pg")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_refilling_task_may_go_to_a_volume_being_refilled() {
        let app = DesiredLrp {
            process_guid: "app".into(),
            instances: 1,
            volume_mounts: vec![mount("pg")],
            ..Default::default()
        };
        let waiting = WaitingLrps {
            desired: [("app".to_string(), Arc::new(app))].into(),
            unclaimed: [("app".to_string(), 0)].into(),
            bulk: false,
        };
        let keys = || {
            vec![LrpKey {
                process_guid: "app".into(),
                index: 0,
            }]
        };
        let home = |refilled_by: &str| {
            let h = VolumeHome {
                cell: "b".into(),
                refilled_by: refilled_by.into(),
            };
            HashMap::from([("pg".to_string(), h)])
        };
        let tasks = || vec![task("refill"), task("other")];

        let b = batch_of(keys(), &waiting, tasks(), &home("refill"));
        let waits: Vec<Option<&str>> = b
            .items
            .iter()
            .map(|w| w.constraints.volume_wait.as_deref())
            .collect();
        assert!(waits[0].is_some_and(|w| w.contains("volume pg is being refilled")));
        assert_eq!(waits[1], None, "the refilling task goes");
        assert!(waits[2].is_some(), "another task waits");
        assert!(b
            .items
            .iter()
            .all(|w| w.constraints.volume_cell.as_ref().unwrap().0 == "b"));

        // Refilled: everything may go to the volume's cell.
        let b = batch_of(keys(), &waiting, tasks(), &home(""));
        assert!(b.items.iter().all(|w| w.constraints.volume_wait.is_none()));
    }
}
