//! The Task state machine: PENDING → RUNNING → COMPLETED → RESOLVING → deleted.
//! Cancelling or failing may go PENDING → COMPLETED; a rejection sends the
//! task back to PENDING until `max_retries` rejections fail it.
//!
//! Every operation is a pure function on a `Task`: it checks the transition
//! and applies it, or refuses with a `ModelError` and leaves the task as it was.

use crate::models::task::State;
use crate::models::Task;
use crate::ModelError;

/// Rejections allowed before a task is failed (Diego's default).
pub const DEFAULT_MAX_RETRIES: i32 = 3;

pub fn state_name(s: State) -> &'static str {
    match s {
        State::Invalid => "INVALID",
        State::Pending => "PENDING",
        State::Running => "RUNNING",
        State::Completed => "COMPLETED",
        State::Resolving => "RESOLVING",
    }
}

/// Where a task may go from a state. `None` as target means "deleted".
pub fn allows_transition(from: State, to: Option<State>) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Pending, Some(Running))
            | (Pending, Some(Completed))
            | (Pending, Some(Pending)) // rejected, will be retried
            | (Running, Some(Pending)) // rejected by its cell before it ran
            | (Running, Some(Completed))
            | (Completed, Some(Resolving))
            | (Resolving, None)
    )
}

fn refuse(task: &Task, op: &'static str, detail: impl Into<String>) -> ModelError {
    ModelError::TaskTransition {
        op,
        task_guid: task.task_guid.clone(),
        from: state_name(task.state()),
        detail: detail.into(),
    }
}

fn check(task: &Task, op: &'static str, to: Option<State>) -> Result<(), ModelError> {
    if allows_transition(task.state(), to) {
        Ok(())
    } else {
        Err(refuse(task, op, ""))
    }
}

/// A new task as the BBS stores it on creation.
pub fn new_task(
    task_guid: String,
    domain: String,
    definition: crate::models::TaskDefinition,
    now: i64,
) -> Task {
    let mut t = Task {
        task_guid,
        domain,
        definition: Some(definition),
        created_at: now,
        updated_at: now,
        ..Default::default()
    };
    t.set_state(State::Pending);
    t
}

/// A cell starts the task. Returns whether the cell should actually run it:
/// `false` when the same cell already started it (a retried call).
pub fn start(task: &mut Task, cell_id: &str, now: i64) -> Result<bool, ModelError> {
    if task.state() == State::Running && task.cell_id == cell_id {
        return Ok(false);
    }
    if task.state() == State::Running {
        return Err(refuse(
            task,
            "start",
            format!(" (running on cell {})", task.cell_id),
        ));
    }
    check(task, "start", Some(State::Running))?;
    task.set_state(State::Running);
    task.cell_id = cell_id.to_string();
    task.updated_at = now;
    Ok(true)
}

fn to_completed(task: &mut Task, failed: bool, reason: &str, result: &str, now: i64) {
    task.set_state(State::Completed);
    task.failed = failed;
    task.failure_reason = if failed {
        reason.to_string()
    } else {
        String::new()
    };
    task.result = result.to_string();
    task.updated_at = now;
    task.first_completed_at = now;
}

/// The user cancels: PENDING or RUNNING → COMPLETED (failed, "task was cancelled").
pub fn cancel(task: &mut Task, now: i64) -> Result<(), ModelError> {
    check(task, "cancel", Some(State::Completed))?;
    to_completed(task, true, "task was cancelled", "", now);
    Ok(())
}

/// The system fails the task (e.g. its cell vanished, it can never be placed).
pub fn fail(task: &mut Task, reason: &str, now: i64) -> Result<(), ModelError> {
    check(task, "fail", Some(State::Completed))?;
    to_completed(task, true, reason, "", now);
    Ok(())
}

/// The auction or a cell could not run it: back to PENDING, or failed once
/// `max_retries` rejections have happened.
pub fn reject(task: &mut Task, reason: &str, max_retries: i32, now: i64) -> Result<(), ModelError> {
    check(task, "reject", Some(State::Pending))?;
    task.rejection_count += 1;
    task.rejection_reason = reason.to_string();
    if task.rejection_count >= max_retries {
        to_completed(task, true, reason, "", now);
    } else {
        task.set_state(State::Pending);
        task.cell_id.clear();
        task.updated_at = now;
    }
    Ok(())
}

/// The cell running the task reports its end.
pub fn complete(
    task: &mut Task,
    cell_id: &str,
    failed: bool,
    reason: &str,
    result: &str,
    now: i64,
) -> Result<(), ModelError> {
    if task.state() == State::Running && task.cell_id != cell_id {
        return Err(refuse(
            task,
            "complete",
            format!(" (running on cell {}, not {cell_id})", task.cell_id),
        ));
    }
    if task.state() != State::Running {
        return Err(refuse(task, "complete", ""));
    }
    to_completed(task, failed, reason, result, now);
    Ok(())
}

/// Someone took responsibility for the completed task's result.
pub fn resolving(task: &mut Task, now: i64) -> Result<(), ModelError> {
    check(task, "resolve", Some(State::Resolving))?;
    task.set_state(State::Resolving);
    task.updated_at = now;
    Ok(())
}

/// May the task's record be deleted now?
pub fn check_delete(task: &Task) -> Result<(), ModelError> {
    check(task, "delete", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 5] = [
        State::Invalid,
        State::Pending,
        State::Running,
        State::Completed,
        State::Resolving,
    ];

    fn task_in(state: State, cell: &str) -> Task {
        crate::testing::task("t", state, cell)
    }

    #[test]
    fn transition_table_is_exactly_the_allowed_set() {
        use State::*;
        let allowed = [
            (Pending, Some(Running)),
            (Pending, Some(Completed)),
            (Pending, Some(Pending)),
            (Running, Some(Pending)),
            (Running, Some(Completed)),
            (Completed, Some(Resolving)),
            (Resolving, None),
        ];
        let targets: Vec<Option<State>> = ALL.iter().map(|s| Some(*s)).chain([None]).collect();
        for from in ALL {
            for to in &targets {
                assert_eq!(
                    allows_transition(from, *to),
                    allowed.contains(&(from, *to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn start_only_from_pending_and_idempotent_on_same_cell() {
        for s in ALL {
            let mut t = task_in(s, "");
            let r = start(&mut t, "cell-1", 5);
            match s {
                State::Pending => {
                    assert_eq!(r, Ok(true));
                    assert_eq!(t.state(), State::Running);
                    assert_eq!(t.cell_id, "cell-1");
                    assert_eq!(t.updated_at, 5);
                }
                _ => {
                    assert!(r.is_err(), "{s:?}");
                    assert_eq!(t, task_in(s, ""), "refused start must not change the task");
                }
            }
        }
        let mut t = task_in(State::Running, "cell-1");
        assert_eq!(start(&mut t, "cell-1", 1), Ok(false));
        let err = start(&mut t, "cell-2", 1).unwrap_err();
        assert!(err.to_string().contains("running on cell cell-1"), "{err}");
    }

    #[test]
    fn cancel_and_fail_from_pending_or_running_only() {
        for s in ALL {
            let mut t = task_in(s, "c");
            let ok = matches!(s, State::Pending | State::Running);
            assert_eq!(cancel(&mut t, 9).is_ok(), ok, "cancel {s:?}");
            if ok {
                assert_eq!(t.state(), State::Completed);
                assert!(t.failed);
                assert_eq!(t.failure_reason, "task was cancelled");
                assert_eq!(t.first_completed_at, 9);
            } else {
                assert_eq!(
                    cancel(&mut t, 9).unwrap_err().name(),
                    crate::errors::ErrorName::TaskNotCancelable
                );
            }
            let mut t = task_in(s, "c");
            assert_eq!(fail(&mut t, "cell vanished", 9).is_ok(), ok, "fail {s:?}");
            if ok {
                assert_eq!(t.failure_reason, "cell vanished");
            }
        }
    }

    #[test]
    fn reject_returns_to_pending_until_max_retries() {
        let mut t = task_in(State::Running, "c");
        reject(&mut t, "insufficient resources: memory", 3, 1).unwrap();
        assert_eq!(
            (t.state(), t.rejection_count, t.cell_id.as_str()),
            (State::Pending, 1, "")
        );
        reject(&mut t, "insufficient resources: memory", 3, 2).unwrap();
        assert_eq!(t.state(), State::Pending);
        reject(&mut t, "insufficient resources: memory", 3, 3).unwrap();
        assert_eq!(t.state(), State::Completed);
        assert!(t.failed);
        assert_eq!(t.failure_reason, "insufficient resources: memory");
        for s in [State::Invalid, State::Completed, State::Resolving] {
            assert!(reject(&mut task_in(s, ""), "x", 3, 0).is_err(), "{s:?}");
        }
    }

    #[test]
    fn complete_needs_running_on_the_same_cell() {
        for s in ALL {
            let mut t = task_in(s, "c1");
            let r = complete(&mut t, "c1", false, "", "42", 3);
            assert_eq!(r.is_ok(), s == State::Running, "{s:?}");
        }
        let mut t = task_in(State::Running, "c1");
        assert!(complete(&mut t, "c2", false, "", "", 3).is_err());
        assert_eq!(t.state(), State::Running);
        complete(&mut t, "c1", true, "exited with status 2", "partial", 3).unwrap();
        assert!(t.failed);
        assert_eq!(t.failure_reason, "exited with status 2");
        assert_eq!(t.result, "partial");
    }

    #[test]
    fn resolving_then_delete() {
        for s in ALL {
            let mut t = task_in(s, "");
            assert_eq!(resolving(&mut t, 1).is_ok(), s == State::Completed, "{s:?}");
            assert_eq!(
                check_delete(&task_in(s, "")).is_ok(),
                s == State::Resolving,
                "{s:?}"
            );
        }
    }
}
