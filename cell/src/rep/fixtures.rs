//! Model builders for the rep's unit tests: slots, instance records and Tasks, and
//! the LRPs and Tasks a BBS accepts.

use super::*;

/// The cell the fixtures are on.
pub const CELL: &str = "cell-1";

/// A slot of an instance of `process_guid`/`index`, in `phase`, ours since `owned_since`.
pub fn lrp_slot(
    process_guid: &str,
    index: i32,
    instance_guid: &str,
    phase: Phase,
    owned_since: Option<Instant>,
) -> (String, Slot) {
    let kind = Kind::Lrp {
        process_guid: process_guid.into(),
        index,
        instance_guid: instance_guid.into(),
    };
    (instance_guid.into(), slot(kind, phase, owned_since))
}

/// A slot of Task `task_guid`, in `phase`, ours since `owned_since`.
pub fn task_slot(task_guid: &str, phase: Phase, owned_since: Option<Instant>) -> (String, Slot) {
    let kind = Kind::Task {
        task_guid: task_guid.into(),
    };
    (task_guid.into(), slot(kind, phase, owned_since))
}

fn slot(kind: Kind, phase: Phase, owned_since: Option<Instant>) -> Slot {
    Slot {
        kind,
        memory_mb: 64,
        disk_mb: 128,
        phase,
        owned_since,
        stop: CancellationToken::new(),
        net_info: None,
    }
}

/// An instance record of `process_guid`/`index` run by `instance_guid` on `cell_id`.
pub fn actual(
    process_guid: &str,
    index: i32,
    instance_guid: &str,
    cell_id: &str,
    state: LrpState,
) -> models::ActualLrp {
    models::ActualLrp {
        key: Some(models::ActualLrpKey {
            process_guid: process_guid.into(),
            index,
            domain: "d".into(),
        }),
        instance_key: Some(models::ActualLrpInstanceKey {
            instance_guid: instance_guid.into(),
            cell_id: cell_id.into(),
        }),
        state: state as i32,
        ..Default::default()
    }
}

/// A Task record in `state` on `cell_id`.
pub fn task(task_guid: &str, state: TaskState, cell_id: &str) -> models::Task {
    models::Task {
        task_guid: task_guid.into(),
        state: state as i32,
        cell_id: cell_id.into(),
        ..Default::default()
    }
}

/// An LRP the BBS accepts, of one instance whose health check is a command (the fake
/// runtime's checks pass).
pub fn checked_lrp(process_guid: &str) -> models::DesiredLrp {
    let mut d = lattice_bbs::testing::fixtures::desired_lrp(process_guid, 1);
    d.monitor = Some(models::Action {
        action: Some(A::Run(models::RunAction {
            path: "true".into(),
            ..Default::default()
        })),
    });
    d
}

/// A Task definition the BBS accepts: `/bin/true` in busybox.
pub fn valid_task_definition() -> models::TaskDefinition {
    models::TaskDefinition {
        rootfs: "preloaded:busybox".into(),
        cpu_weight: 1,
        action: Some(models::Action {
            action: Some(A::Run(models::RunAction {
                path: "/bin/true".into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// The shim's event for a process that exited cleanly, stopped by the cell or not.
pub fn clean_exit(stopped: bool) -> ShimEvent {
    ShimEvent::Exited {
        failed: false,
        reason: String::new(),
        stopped,
        result: None,
    }
}
