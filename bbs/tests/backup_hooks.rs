//! Backups with hooks and on repositories at the public API, on a BBS with an embedded
//! store (no cell runs anything here; the hooks' exec sessions are the unit tests' of
//! `backup_hooks` and the e2e tests'): bad hooks are refused naming the field, a named
//! app that does not run fails the backup before any task (`BackupHookFailed`), hooks
//! with no running instance are skipped with a warning and the backup task is desired
//! on the volume's repository, and a schedule keeps its hooks.

mod common;

use common::client::{assert_error, start, As, Auth};
use lattice_specs::errors::ErrorName;
use serde_json::json;

async fn with_volume() -> (lattice_bbs::server::RunningBbs, tempfile::TempDir, As) {
    let (bbs, dir) = start(None, true).await;
    let api = As::new(&bbs, Auth::None);
    let cell = lattice_specs::models::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 4096,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    let size = lattice_specs::volume::MIN_SIZE;
    let volume = json!({"name": "pg", "size_bytes": size, "cell_id": "cell-1"});
    assert_eq!(api.send("POST", "/v1/volumes", Some(volume)).await.0, 201);
    bbs.db
        .set_volume_state(
            "pg",
            "cell-1",
            lattice_specs::models::volume::State::Ready,
            (size, 0),
            "",
        )
        .await
        .unwrap();
    // An app mounting the volume, none of whose instances runs.
    let mut app = lattice_specs::testing::desired_lrp("db", 1);
    app.volume_mounts = vec![lattice_specs::models::VolumeMount {
        driver: "local".into(),
        volume: "pg".into(),
        container_path: "/data".into(),
        ..Default::default()
    }];
    bbs.db.desire_lrp(app).await.unwrap();
    (bbs, dir, api)
}

#[tokio::test]
async fn hooks_are_checked_run_or_skipped_before_the_backup_task_is_desired() {
    let (bbs, _dir, api) = with_volume().await;

    for (hooks, field) in [
        (json!({"app": "db"}), "hooks.app"),
        (json!({"pre": "sync", "timeout_ms": 10}), "hooks.timeout"),
    ] {
        let answer = api
            .send(
                "POST",
                "/v1/backups",
                Some(json!({"volume": "pg", "hooks": hooks})),
            )
            .await;
        let why = assert_error(&answer, 400, ErrorName::InvalidRequest);
        assert!(why.contains(field), "{why}");
    }
    assert_eq!(api.send("GET", "/v1/backups", None).await.1, json!([]));

    // The named app does not run: the backup fails at once, with no task.
    let answer = api
        .send(
            "POST",
            "/v1/backups",
            Some(json!({"volume": "pg", "hooks": {"pre": "sync", "app": "db"}})),
        )
        .await;
    let why = assert_error(&answer, 409, ErrorName::BackupHookFailed);
    assert!(
        why.contains("no running instance of db mounts volume pg"),
        "{why}"
    );
    let (_, all) = api.send("GET", "/v1/backups", None).await;
    let failed = &all[0];
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert_eq!(failed["hook_status"], "pre hook failed", "{failed}");
    let task = failed["task_guid"].as_str().unwrap();
    assert_eq!(
        api.send("GET", &format!("/v1/tasks/{task}"), None).await.0,
        404,
        "no snapshot is taken"
    );

    // No app named and none running: skipped with a warning, and the task is desired
    // on the volume's repository.
    let (status, b) = api
        .send(
            "POST",
            "/v1/backups",
            Some(json!({"volume": "pg", "hooks": {"pre": "sync", "post": "true"}})),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["hook_status"], "hooks skipped", "{b}");
    assert!(
        b["warnings"][0].as_str().unwrap().contains("hooks skipped"),
        "{b}"
    );
    assert_eq!(b["repository"], "pg");
    assert_eq!(b["store"], "default");
    let task = bbs.db.task(b["task_guid"].as_str().unwrap()).await.unwrap();
    let json = serde_json::to_string(&task.definition).unwrap();
    let repo = format!("@{}/v1/repos/pg/", bbs.api_addr);
    assert!(
        json.contains("\"repository\"")
            && json.contains(&repo)
            && json.contains("rest:http://lattice-task:"),
        "{json}"
    );

    // A schedule keeps its hooks.
    let schedule = json!({"every": "daily", "keep": 3, "hooks": {"pre": "sync", "app": "db", "timeout_ms": 5000}});
    assert_eq!(
        api.send("PUT", "/v1/backup_schedules/pg", Some(schedule))
            .await
            .0,
        204
    );
    let (_, listed) = api.send("GET", "/v1/backup_schedules", None).await;
    assert_eq!(
        listed[0]["hooks"],
        json!({"pre": "sync", "post": "", "app": "db", "timeout_ms": 5000}),
        "{listed}"
    );
    bbs.shutdown().await;
}
