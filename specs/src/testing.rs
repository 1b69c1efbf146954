//! Model builders shared by the unit tests, the integration tests and the benchmarks
//! (the `testing` feature; not in production builds): the common shapes of
//! [`DesiredLrp`], [`ActualLrp`], [`Task`] and their parts, in one place. A test that
//! needs a variant writes it as one of these plus a struct update
//! (`DesiredLrp { cpu_weight: 10, ..testing::desired_lrp("web", 1) }`), and the
//! actions they run (`run`, `sh`, `serial`, `download`, `upload`). Pure: no I/O.

use crate::models::actual_lrp::State;
use crate::models::task::State as TaskState;
use crate::models::{
    action, Action, ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, Backup, CellPresence,
    DesiredLrp, DownloadAction, RunAction, SerialAction, Task, TaskDefinition, UploadAction,
};

/// An action that runs `path` with no arguments.
pub fn run(path: &str) -> Action {
    run_with_args(path, &[])
}

/// An action that runs `path` with `args`.
pub fn run_with_args(path: &str, args: &[&str]) -> Action {
    Action {
        action: Some(action::Action::Run(RunAction {
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

/// `sh -c SCRIPT`.
pub fn sh(script: &str) -> Action {
    run_with_args("/bin/sh", &["-c", script])
}

/// Actions in order.
pub fn serial(actions: Vec<Action>) -> Action {
    Action {
        action: Some(action::Action::Serial(SerialAction {
            actions,
            ..Default::default()
        })),
    }
}

/// A Download action (checked against a sha256 when one is given).
pub fn download(from: &str, to: &str, sha256: &str) -> Action {
    Action {
        action: Some(action::Action::Download(DownloadAction {
            from: from.into(),
            to: to.into(),
            checksum_algorithm: if sha256.is_empty() { "" } else { "sha256" }.into(),
            checksum_value: sha256.into(),
            ..Default::default()
        })),
    }
}

/// An Upload action.
pub fn upload(from: &str, to: &str) -> Action {
    Action {
        action: Some(action::Action::Upload(UploadAction {
            from: from.into(),
            to: to.into(),
            ..Default::default()
        })),
    }
}

/// A valid LRP of `instances` running `/bin/httpd` from `preloaded:busybox` on port 8080,
/// in domain `test` with cpu weight 1.
pub fn desired_lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: guid.into(),
        domain: "test".into(),
        rootfs: "preloaded:busybox".into(),
        instances,
        cpu_weight: 1,
        ports: vec![8080],
        action: Some(run("/bin/httpd")),
        ..Default::default()
    }
}

/// The same LRP, routed at `host` (container port 8080) by the router.
pub fn routed_lrp(guid: &str, instances: i32, host: &str) -> DesiredLrp {
    let mut d = desired_lrp(guid, instances);
    d.routes.insert(
        "cf-router".into(),
        format!(r#"[{{"hostnames":["{host}"],"port":8080}}]"#),
    );
    d
}

/// The instance `instance_guid` on cell `cell`.
pub fn instance_key(instance_guid: &str, cell: &str) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey {
        instance_guid: instance_guid.into(),
        cell_id: cell.into(),
    }
}

/// Instance `index` of `guid` (domain `d`) in `state` since `since`; unless `cell` is
/// empty it is held there as instance `{guid}-{index}` with an empty net info.
pub fn actual_lrp(guid: &str, index: i32, state: State, cell: &str, since: i64) -> ActualLrp {
    let mut a = crate::actual_lrp::new_unclaimed(guid, index, "d", since);
    if !cell.is_empty() {
        a.instance_key = Some(instance_key(&format!("{guid}-{index}"), cell));
        a.net_info = Some(ActualLrpNetInfo::default());
    }
    a.set_state(state);
    a
}

/// A cell's presence offering these volume drivers (nothing else set).
pub fn cell_presence(cell_id: &str, volume_drivers: &[&str]) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        volume_drivers: volume_drivers.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

/// Task `guid` in `state` on `cell` (empty: on no cell), every other field default.
pub fn task(guid: &str, state: TaskState, cell: &str) -> Task {
    let mut t = Task {
        task_guid: guid.into(),
        cell_id: cell.into(),
        ..Default::default()
    };
    t.set_state(state);
    t
}

/// A valid task definition running `path` from `preloaded:busybox` with cpu weight 1.
pub fn task_definition(path: &str) -> TaskDefinition {
    TaskDefinition {
        rootfs: "preloaded:busybox".into(),
        action: Some(run(path)),
        cpu_weight: 1,
        ..Default::default()
    }
}

/// Backup `pg-1` of volume `pg`, with a checksum and manifest (nothing else set).
pub fn backup() -> Backup {
    Backup {
        id: "pg-1".into(),
        volume: "pg".into(),
        task_guid: "backup-pg-1".into(),
        checksum: "c".repeat(64),
        manifest: "a".repeat(64),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{validate_desired_lrp, validate_task};

    #[test]
    fn the_lrp_and_task_definition_are_valid() {
        assert_eq!(validate_desired_lrp(&desired_lrp("web", 2)), Ok(()));
        assert_eq!(validate_desired_lrp(&routed_lrp("web", 1, "a.b")), Ok(()));
        assert_eq!(
            validate_task("t", "d", &task_definition("/bin/true")),
            Ok(())
        );
    }

    #[test]
    fn sh_runs_the_script_with_the_shell() {
        let Some(action::Action::Run(r)) = sh("echo hi").action else {
            panic!("not a run action")
        };
        assert_eq!(
            (r.path.as_str(), r.args),
            ("/bin/sh", vec!["-c".into(), "echo hi".into()])
        );
        let Some(action::Action::Download(d)) = download("u", "/t", "").action else {
            panic!("not a download action")
        };
        assert_eq!(d.checksum_algorithm, "");
    }

    #[test]
    fn an_actual_on_no_cell_has_no_instance() {
        let a = actual_lrp("web", 1, State::Unclaimed, "", 5);
        assert_eq!(a.instance_key, None);
        assert_eq!(a.net_info, None);
        let held = actual_lrp("web", 1, State::Running, "c1", 5);
        assert_eq!(held.instance_key, Some(instance_key("web-1", "c1")));
        assert_eq!(held.state(), State::Running);
        assert_eq!(held.since, 5);
    }
}
