//! The RepositoryAction in a real container (as root): the shim runs its repository
//! helper confined to the volume the action's path lies on, against a local-directory
//! repository inside that volume, and writes the helper's outcome into the container;
//! a failed operation fails the action with the helper's reason.

use std::time::Duration;

use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;
use lattice_specs::models::{self, action::Action as A};
use lattice_specs::repo::{RepoOp, RepoOutcome};

fn repository(op: &str, path: &str, outcome_file: &str) -> models::Action {
    models::Action {
        action: Some(A::Repository(models::RepositoryAction {
            op: op.into(),
            // Inside the volume the path lies on (the helper's root).
            repository: "/repo".into(),
            path: path.into(),
            snapshot: "latest".into(),
            host: "vol1".into(),
            outcome_file: outcome_file.into(),
            ..Default::default()
        })),
    }
}

/// A task with a scratch volume at /vol and the repository's password in its env.
fn task(
    handle: &str,
    action: models::Action,
    password: &str,
) -> lattice_cell::executor::ContainerRequest {
    let mut req = request(handle, action);
    req.memory_mb = 512;
    req.env = vec![("RESTIC_PASSWORD".into(), password.into())];
    req.volume_mounts = vec![models::VolumeMount {
        container_path: "/vol".into(),
        scratch_bytes: 256 << 20,
        ..Default::default()
    }];
    req
}

async fn finished(t: &TestExecutor, handle: &str) -> (bool, String) {
    match wait_event(&t.exec, handle, Duration::from_secs(120), |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await
    {
        ShimEvent::Exited { failed, reason, .. } => (failed, reason),
        _ => unreachable!(),
    }
}

async fn outcome(t: &TestExecutor, handle: &str, file: &str) -> RepoOutcome {
    let text = t.exec.read_file(handle, file).await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}: {text}"))
}

#[tokio::test]
async fn a_task_backs_up_and_restores_its_volume_through_the_helper() {
    require_root();
    let t = TestExecutor::new();
    let action =
        serial(vec![
        sh("mkdir -p /vol/data/sub && echo one > /vol/data/a && seq 1 20000 > /vol/data/sub/b \
            && chmod 640 /vol/data/a && ln -s / /vol/data/escape"),
        repository("backup", "/vol/data", "/tmp/backup.json"),
        repository("restore", "/vol/restored", "/tmp/restore.json"),
        // (diff -r would follow `escape`.)
        sh("cmp /vol/data/a /vol/restored/a && cmp /vol/data/sub/b /vol/restored/sub/b \
            && [ \"$(readlink /vol/restored/escape)\" = / ] \
            && stat -c %a /vol/restored/a > /tmp/mode"),
    ]);
    t.exec
        .create(task("repo-ok", action, "the-key"))
        .await
        .unwrap();
    let (failed, reason) = finished(&t, "repo-ok").await;
    assert!(!failed, "{reason}");
    let backup = outcome(&t, "repo-ok", "/tmp/backup.json").await;
    assert_eq!(backup.op, Some(RepoOp::Backup));
    assert_eq!(backup.error, None);
    assert_eq!(backup.files, 3, "{backup:?}");
    let restore = outcome(&t, "repo-ok", "/tmp/restore.json").await;
    assert_eq!(restore.snapshot, backup.snapshot);
    assert_eq!(
        t.exec.read_file("repo-ok", "/tmp/mode").await.unwrap(),
        "640\n"
    );
    t.exec.destroy("repo-ok").await;
    let left = leftovers(&t.exec, "repo-ok");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_failed_operation_fails_the_action_with_the_helpers_reason() {
    require_root();
    let t = TestExecutor::new();
    let action = serial(vec![
        sh("mkdir -p /vol/data && echo one > /vol/data/a"),
        repository("backup", "/vol/data", "/tmp/backup.json"),
        // Restoring over the data itself: refused, nothing touched.
        repository("restore", "/vol/data", "/tmp/restore.json"),
        sh("echo not reached > /tmp/after"),
    ]);
    t.exec
        .create(task("repo-fail", action, "the-key"))
        .await
        .unwrap();
    let (failed, reason) = finished(&t, "repo-fail").await;
    assert!(failed);
    assert!(
        reason.starts_with("repository restore of /vol/data failed: restore target")
            && reason.contains("is not empty"),
        "{reason}"
    );
    let restore = outcome(&t, "repo-fail", "/tmp/restore.json").await;
    assert!(restore.error.unwrap().contains("is not empty"));
    assert!(t.exec.read_file("repo-fail", "/tmp/after").await.is_err());
    t.exec.destroy("repo-fail").await;
}
