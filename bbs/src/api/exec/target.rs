//! Where a session inside running work goes, as pure decisions: from an app's
//! instances or a Task to the container (its handle, its cell), or to the receptor
//! error that says why there is none: no such app or Task, an index out of range, an
//! instance or Task that is not running (with its state and why).

use lattice_specs::errors::ErrorName;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::{task, ActualLrp, Task};

/// A running container a session can enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The container's handle on its cell: an instance's guid, a Task's guid.
    pub handle: String,
    pub cell_id: String,
    /// How messages and logs name it ("instance 0 of web", "task t1").
    pub label: String,
}

/// Why there is no container to enter (a receptor error's name and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoTarget {
    pub name: ErrorName,
    pub message: String,
}

impl NoTarget {
    fn new(name: ErrorName, message: String) -> NoTarget {
        NoTarget { name, message }
    }
}

/// What an instance record says about why it is not running.
fn not_running(label: &str, a: &ActualLrp) -> String {
    let cell = a
        .instance_key
        .as_ref()
        .map(|k| k.cell_id.as_str())
        .unwrap_or_default();
    let mut why = match a.state() {
        State::Unclaimed if !a.placement_error.is_empty() => {
            format!(
                "{label} is UNCLAIMED: it cannot be placed ({})",
                a.placement_error
            )
        }
        State::Unclaimed => format!("{label} is UNCLAIMED (waiting for a cell)"),
        State::Claimed => format!("{label} is CLAIMED (starting on cell {cell})"),
        State::Crashed => format!("{label} is CRASHED (waiting to be restarted)"),
        State::Running => format!("{label} is RUNNING"),
    };
    if a.crash_count > 0 && !a.crash_reason.is_empty() {
        why.push_str(&format!(
            "; it crashed {} time{}, last: {}",
            a.crash_count,
            if a.crash_count == 1 { "" } else { "s" },
            a.crash_reason
        ));
    }
    why
}

/// How many instances an app has, as an out-of-range refusal says it.
fn instances_range(guid: &str, instances: i32) -> String {
    match instances {
        0 => format!("{guid} has 0 instances (it is scaled to zero)"),
        1 => format!("{guid} has 1 instance (index 0)"),
        n => format!("{guid} has {n} instances (0..{})", n - 1),
    }
}

/// The container of instance `index` of app `guid` (which desires `instances`), from
/// its records (ordinary, evacuating, replaced, suspect copies): a RUNNING one, the
/// ordinary record first.
pub fn lrp_target(
    guid: &str,
    index: i32,
    instances: i32,
    records: &[ActualLrp],
) -> Result<Target, NoTarget> {
    if index >= instances {
        return Err(NoTarget::new(
            ErrorName::ActualLRPIndexNotFound,
            format!("no instance {index}: {}", instances_range(guid, instances)),
        ));
    }
    let label = format!("instance {index} of {guid}");
    let running = records
        .iter()
        .filter(|a| a.state() == State::Running)
        .filter(|a| {
            a.instance_key
                .as_ref()
                .is_some_and(|k| !k.cell_id.is_empty())
        })
        .min_by_key(|a| a.presence() != Presence::Ordinary);
    if let Some(a) = running {
        let k = a.instance_key.as_ref().expect("filtered on its key");
        return Ok(Target {
            handle: k.instance_guid.clone(),
            cell_id: k.cell_id.clone(),
            label,
        });
    }
    let record = records
        .iter()
        .min_by_key(|a| a.presence() != Presence::Ordinary);
    let message = match record {
        Some(a) => not_running(&label, a),
        None => format!("{label} has no record yet (it is being started)"),
    };
    Err(NoTarget::new(ErrorName::InstanceNotRunning, message))
}

/// The container of Task `t`, when it runs.
pub fn task_target(t: &Task) -> Result<Target, NoTarget> {
    let label = format!("task {}", t.task_guid);
    let why = match t.state() {
        task::State::Running if !t.cell_id.is_empty() => {
            return Ok(Target {
                handle: t.task_guid.clone(),
                cell_id: t.cell_id.clone(),
                label,
            })
        }
        task::State::Invalid | task::State::Pending | task::State::Running => {
            "PENDING (waiting for a cell)".to_string()
        }
        s @ (task::State::Completed | task::State::Resolving) => {
            let name = if s == task::State::Completed {
                "COMPLETED"
            } else {
                "RESOLVING"
            };
            if t.failed {
                format!("{name}: it failed ({})", t.failure_reason)
            } else {
                format!("{name}: it succeeded")
            }
        }
    };
    Err(NoTarget::new(
        ErrorName::InstanceNotRunning,
        format!("{label} is {why}; only a running task can be entered"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::testing::instance_key;

    fn record(state: State, presence: Presence, guid: &str, cell: &str) -> ActualLrp {
        let mut a = ActualLrp {
            instance_key: Some(instance_key(guid, cell)),
            ..Default::default()
        };
        a.set_state(state);
        a.set_presence(presence);
        a
    }

    #[test]
    fn a_running_instance_is_entered_by_its_guid_on_its_cell() {
        let got = lrp_target(
            "web",
            1,
            2,
            &[record(State::Running, Presence::Ordinary, "i-1", "cell-a")],
        );
        assert_eq!(
            got,
            Ok(Target {
                handle: "i-1".into(),
                cell_id: "cell-a".into(),
                label: "instance 1 of web".into()
            })
        );
        // The ordinary record first; a copy still running (evacuating, replaced) will do.
        let both = [
            record(State::Running, Presence::Evacuating, "old", "cell-a"),
            record(State::Running, Presence::Ordinary, "new", "cell-b"),
        ];
        assert_eq!(lrp_target("web", 0, 1, &both).unwrap().handle, "new");
        let starting = [
            record(State::Claimed, Presence::Ordinary, "new", "cell-b"),
            record(State::Running, Presence::Evacuating, "old", "cell-a"),
        ];
        assert_eq!(lrp_target("web", 0, 1, &starting).unwrap().handle, "old");
    }

    #[test]
    fn an_index_out_of_range_says_how_many_there_are() {
        let e = lrp_target("web", 2, 2, &[]).unwrap_err();
        assert_eq!(e.name, ErrorName::ActualLRPIndexNotFound);
        assert_eq!(e.message, "no instance 2: web has 2 instances (0..1)");
        let e = lrp_target("web", 1, 1, &[]).unwrap_err();
        assert_eq!(e.message, "no instance 1: web has 1 instance (index 0)");
        let e = lrp_target("web", 0, 0, &[]).unwrap_err();
        assert!(e.message.contains("scaled to zero"), "{}", e.message);
    }

    #[test]
    fn an_instance_not_running_says_its_state_and_why() {
        let mut crashed = record(State::Crashed, Presence::Ordinary, "i", "");
        crashed.crash_count = 3;
        crashed.crash_reason = "exited with status 2".into();
        let e = lrp_target("web", 0, 1, &[crashed]).unwrap_err();
        assert_eq!(e.name, ErrorName::InstanceNotRunning);
        assert_eq!(
            e.message,
            "instance 0 of web is CRASHED (waiting to be restarted); it crashed 3 times, last: exited with status 2"
        );
        let mut unplaced = record(State::Unclaimed, Presence::Ordinary, "", "");
        unplaced.placement_error = "insufficient resources: memory".into();
        let e = lrp_target("web", 0, 1, &[unplaced]).unwrap_err();
        assert!(
            e.message
                .contains("UNCLAIMED: it cannot be placed (insufficient resources: memory)"),
            "{}",
            e.message
        );
        let claimed = record(State::Claimed, Presence::Ordinary, "i", "cell-a");
        let e = lrp_target("web", 0, 1, &[claimed]).unwrap_err();
        assert_eq!(
            e.message,
            "instance 0 of web is CLAIMED (starting on cell cell-a)"
        );
        let e = lrp_target("web", 0, 1, &[]).unwrap_err();
        assert_eq!(e.name, ErrorName::InstanceNotRunning);
        assert!(e.message.contains("no record yet"), "{}", e.message);
    }

    #[test]
    fn only_a_running_task_is_entered() {
        use lattice_specs::testing::task as task_in;
        let t = task_in("t1", task::State::Running, "cell-a");
        assert_eq!(
            task_target(&t),
            Ok(Target {
                handle: "t1".into(),
                cell_id: "cell-a".into(),
                label: "task t1".into()
            })
        );
        let e = task_target(&task_in("t1", task::State::Pending, "")).unwrap_err();
        assert_eq!(e.name, ErrorName::InstanceNotRunning);
        assert_eq!(
            e.message,
            "task t1 is PENDING (waiting for a cell); only a running task can be entered"
        );
        let mut done = task_in("t1", task::State::Completed, "cell-a");
        done.failed = true;
        done.failure_reason = "exit status 1".into();
        let e = task_target(&done).unwrap_err();
        assert!(
            e.message
                .starts_with("task t1 is COMPLETED: it failed (exit status 1)"),
            "{}",
            e.message
        );
    }
}
