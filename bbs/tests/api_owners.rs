//! Ownership over real HTTP: a developer token acts only on the apps, tasks, volumes,
//! backups and backup schedules it owns (403 naming the owner), reads the others with
//! their secrets hidden, and an admin acts on everything.

mod common;

use std::time::Duration;

use common::client::{assert_error, make_token, record, start, As, Auth};
use lattice_bbs::server::RunningBbs;
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::DEBUG_LOG_GUID;
use serde_json::{json, Value};

fn bearer(bbs: &RunningBbs, token: String) -> As {
    As::new(bbs, Auth::Bearer(token))
}

fn with_secret(mut v: Value, secret: &str) -> Value {
    v["env"] = json!([{"name": "SECRET", "value": secret}]);
    v
}

/// A refusal for not owning the object: 403 Forbidden naming the token, what it
/// asked and the owner.
async fn refused_not_owner(answer: (u16, Value), want: &str) {
    let why = assert_error(&answer, 403, ErrorName::Forbidden);
    assert!(why.contains(want), "want {want:?} in {why:?}");
}

/// `who` makes something (201).
async fn made(who: &As, path: &str, body: Value) {
    let (status, body) = who.send("POST", path, Some(body)).await;
    assert_eq!(status, 201, "{path}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_acts_only_on_the_apps_and_tasks_it_owns() {
    let (bbs, _dir) = start(None, false).await;
    let local = As::new(&bbs, Auth::None);
    let token_b = make_token(&local, "dev-b", "developer").await;
    let dev_a = bearer(&bbs, make_token(&local, "dev-a", "developer").await);
    let dev_b = bearer(&bbs, token_b.clone());
    let admin = bearer(&bbs, make_token(&local, "ada", "admin").await);

    // dev-b follows the events: another's secrets are hidden there, its own are not.
    let mut events = reqwest::Client::new()
        .get(format!("http://{}/v1/events", bbs.api_addr))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    made(
        &dev_a,
        "/v1/desired_lrps",
        with_secret(common::lrp("web", 1), "a-app-secret"),
    )
    .await;
    made(
        &dev_b,
        "/v1/desired_lrps",
        with_secret(common::lrp("api", 1), "b-app-secret"),
    )
    .await;
    made(
        &dev_a,
        "/v1/tasks",
        with_secret(common::task("job"), "a-task-secret"),
    )
    .await;
    made(&local, "/v1/desired_lrps", common::lrp("sys", 1)).await;

    let mut seen = String::new();
    while !(seen.contains("\"web\"") && seen.contains("\"api\"") && seen.contains("\"job\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("the events within 10 s")
            .unwrap()
            .expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(events);
    assert!(seen.contains("b-app-secret"), "its own app whole: {seen}");
    assert!(
        !seen.contains("a-app-secret") && !seen.contains("a-task-secret"),
        "{seen}"
    );

    // dev-b may not change, scale, stop or delete dev-a's app, nor cancel its task…
    let scale = json!({"instances": 3});
    for (method, path, body, want) in [
        (
            "PUT",
            "/v1/desired_lrps/web",
            Some(scale.clone()),
            "token dev-b may not change app web: it belongs to dev-a",
        ),
        (
            "DELETE",
            "/v1/desired_lrps/web",
            None,
            "token dev-b may not delete app web: it belongs to dev-a",
        ),
        (
            "DELETE",
            "/v1/actual_lrps/web/index/0",
            None,
            "may not stop an instance of app web",
        ),
        (
            "POST",
            "/v1/tasks/job/cancel",
            None,
            "token dev-b may not cancel task job: it belongs to dev-a",
        ),
        ("DELETE", "/v1/tasks/job", None, "may not delete task job"),
    ] {
        refused_not_owner(dev_b.send(method, path, body).await, want).await;
    }
    // … nor the admins' app.
    refused_not_owner(
        dev_a.send("DELETE", "/v1/desired_lrps/sys", None).await,
        "may not delete app sys: it belongs to the admins (ask an admin)",
    )
    .await;
    // What does not exist is a 404, not a refusal.
    assert_error(
        &dev_b.send("DELETE", "/v1/desired_lrps/nope", None).await,
        404,
        ErrorName::DesiredLRPNotFound,
    );

    // It reads them, with their secrets hidden; the owner reads them whole.
    for path in [
        "/v1/desired_lrps",
        "/v1/desired_lrps/web",
        "/v1/tasks",
        "/v1/tasks/job",
    ] {
        let (status, body) = dev_b.send("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains("a-app-secret") && !text.contains("a-task-secret"),
            "{path}: {text}"
        );
        assert!(text.contains("[hidden]"), "{path}: {text}");
    }
    let (_, list) = dev_b.send("GET", "/v1/desired_lrps", None).await;
    assert!(
        list.to_string().contains("b-app-secret"),
        "its own app whole: {list}"
    );
    let (_, web) = dev_a.send("GET", "/v1/desired_lrps/web", None).await;
    assert_eq!(web["env"][0]["value"], "a-app-secret");
    // Answers name each owner (none: the admins').
    let owner_of = |list: &Value, guid: &str| {
        let item = list
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["process_guid"] == guid);
        item.unwrap().get("owner").cloned()
    };
    assert_eq!(web["owner"], "dev-a");
    assert_eq!(owner_of(&list, "api"), Some(json!("dev-b")));
    assert_eq!(owner_of(&list, "sys"), None);
    let (_, tasks) = dev_b.send("GET", "/v1/tasks", None).await;
    assert_eq!(tasks[0]["owner"], "dev-a", "{tasks}");
    let (_, job) = dev_a.send("GET", "/v1/tasks/job", None).await;
    assert_eq!(job["env"][0]["value"], "a-task-secret");

    // The owner and an admin act on it.
    assert_eq!(
        dev_a
            .send("PUT", "/v1/desired_lrps/web", Some(scale.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        dev_b
            .send("PUT", "/v1/desired_lrps/api", Some(scale.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        admin
            .send("PUT", "/v1/desired_lrps/web", Some(scale))
            .await
            .0,
        204
    );
    assert_eq!(
        dev_a.send("POST", "/v1/tasks/job/cancel", None).await.0,
        204
    );

    // Its owner goes with the app: a namesake belongs to whoever makes it.
    assert_eq!(
        admin.send("DELETE", "/v1/desired_lrps/web", None).await.0,
        204
    );
    made(&dev_b, "/v1/desired_lrps", common::lrp("web", 1)).await;
    assert_eq!(
        dev_b.send("DELETE", "/v1/desired_lrps/web", None).await.0,
        204
    );

    // Refusals change nothing, leave no audit line and are counted.
    let audit: Vec<String> = bbs
        .logs
        .recent(DEBUG_LOG_GUID)
        .into_iter()
        .filter(|m| m.source == "AUDIT")
        .map(|m| m.message)
        .collect();
    assert!(
        !audit
            .iter()
            .any(|l| l.contains("token=dev-b") && l.contains("object=/v1/tasks/job")),
        "{audit:#?}"
    );
    let (_, metrics) = local.send("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("bbs_api_not_owner_total{kind=\"app\"}"),
        "{metrics}"
    );
    bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_backups_and_schedules_belong_to_the_volumes_owner() {
    let (bbs, _dir) = start(None, true).await;
    let local = As::new(&bbs, Auth::None);
    let dev_a = bearer(&bbs, make_token(&local, "dev-a", "developer").await);
    let dev_b = bearer(&bbs, make_token(&local, "dev-b", "developer").await);
    let cell = lattice_specs::models::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    let size = lattice_specs::volume::MIN_SIZE;
    let volume = json!({"name": "pg", "size_bytes": size, "cell_id": "cell-1"});
    assert_eq!(dev_a.send("POST", "/v1/volumes", Some(volume)).await.0, 201);
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

    // dev-b may not grow, remove, schedule, back up or mount dev-a's volume, not
    // even through a new generation of an app of its own.
    let mine = common::lrp("mine", 1);
    let made = dev_b
        .send("POST", "/v1/desired_lrps", Some(mine.clone()))
        .await;
    assert_eq!(made.0, 201, "{made:?}");
    let mut remount = mine;
    remount["volume_mounts"] = json!([{"volume": "pg", "container_path": "/data"}]);
    let mut mounting = common::task("peek");
    mounting["volume_mounts"] = json!([{"volume": "pg", "container_path": "/data"}]);
    let schedule = json!({"every": "1h", "keep": 3});
    for (method, path, body, want) in [
        (
            "PUT",
            "/v1/volumes/pg",
            Some(json!({"size_bytes": 2 * size})),
            "token dev-b may not grow volume pg: it belongs to dev-a",
        ),
        ("DELETE", "/v1/volumes/pg", None, "may not delete volume pg"),
        (
            "PUT",
            "/v1/backup_schedules/pg",
            Some(schedule.clone()),
            "may not set the backup schedule of volume pg: it belongs to dev-a",
        ),
        (
            "POST",
            "/v1/backups",
            Some(json!({"volume": "pg"})),
            "may not back up volume pg",
        ),
        (
            "POST",
            "/v1/tasks",
            Some(mounting.clone()),
            "may not mount volume pg",
        ),
        (
            "POST",
            "/v1/desired_lrps/mine/generations",
            Some(json!({ "definition": remount })),
            "may not mount volume pg",
        ),
    ] {
        refused_not_owner(dev_b.send(method, path, body).await, want).await;
    }
    assert_error(
        &dev_b.send("GET", "/v1/tasks/peek", None).await,
        404,
        ErrorName::TaskNotFound,
    );

    // Its owner may; its backup and the backup's task are dev-a's.
    assert_eq!(
        dev_a
            .send("PUT", "/v1/backup_schedules/pg", Some(schedule))
            .await
            .0,
        204
    );
    let (status, backup) = dev_a
        .send("POST", "/v1/backups", Some(json!({"volume": "pg"})))
        .await;
    assert_eq!(status, 201, "{backup}");
    let (id, task) = (
        backup["id"].as_str().unwrap(),
        backup["task_guid"].as_str().unwrap(),
    );
    for (method, path, want) in [
        (
            "POST",
            format!("/v1/backups/{id}/verify"),
            format!("may not verify backup {id}: it belongs to dev-a"),
        ),
        (
            "POST",
            format!("/v1/tasks/{task}/cancel"),
            format!("may not cancel task {task}"),
        ),
        (
            "GET",
            format!("/v1/blobs/backup-{id}.tgz"),
            format!("may not read backup {id}"),
        ),
        (
            "PUT",
            format!("/v1/blobs/backup-{id}.tgz"),
            format!("may not write backup {id}"),
        ),
    ] {
        refused_not_owner(dev_b.send(method, &path, None).await, &want).await;
    }

    // A scheduled backup of dev-a's volume (started as the brain's schedule does) and
    // its task are dev-a's.
    let scheduled = lattice_bbs::backups::start_backup(
        &bbs.api,
        &bbs.db,
        "pg",
        Some("pg-slot-1".into()),
        "slot-1",
        None,
    )
    .await
    .unwrap()
    .backup;
    let cancel = format!("/v1/tasks/{}/cancel", scheduled.task_guid);
    refused_not_owner(
        dev_b.send("POST", &cancel, None).await,
        "it belongs to dev-a",
    )
    .await;
    assert_eq!(dev_a.send("POST", &cancel, None).await.0, 204);

    // A backup an admin imported for dev-a's volume is dev-a's to use too, not dev-b's.
    let put = reqwest::Client::new()
        .put(format!("http://{}/v1/blobs/backup-old.tgz", bbs.api_addr))
        .body(&b"old archive"[..])
        .send()
        .await
        .unwrap();
    let sum = put.headers()["x-checksum-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = local
        .send("POST", "/v1/backups/import", Some(record("old", &sum)))
        .await;
    assert_eq!(status, 201, "{body}");
    refused_not_owner(
        dev_b.send("POST", "/v1/backups/old/verify", None).await,
        "may not verify backup old: it belongs to the admins",
    )
    .await;
    let (status, started) = dev_a.send("POST", "/v1/backups/old/verify", None).await;
    assert_eq!(status, 201, "{started}");
    let verify = started["task_guid"].as_str().unwrap();
    assert_eq!(
        dev_a
            .send("POST", &format!("/v1/tasks/{verify}/cancel"), None)
            .await
            .0,
        204
    );
    let (status, archive) = dev_a.send("GET", "/v1/blobs/backup-old.tgz", None).await;
    assert_eq!(
        (status, archive),
        (200, Value::String("old archive".into()))
    );

    // Other blobs are no one's: developers write and read them as before.
    assert_eq!(
        reqwest::Client::new()
            .put(format!("http://{}/v1/blobs/app.tgz", bbs.api_addr))
            .bearer_auth(match &dev_b.auth {
                Auth::Bearer(t) => t.clone(),
                _ => unreachable!(),
            })
            .body(&b"files"[..])
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(dev_a.send("GET", "/v1/blobs/app.tgz", None).await.0, 200);
    assert_eq!(
        dev_a
            .send("DELETE", "/v1/backup_schedules/pg", None)
            .await
            .0,
        204
    );
    bbs.shutdown().await;
}

/// Updates, rollbacks and promotions of an app are its owner's; its history is
/// readable by other developers with the secrets hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_rolls_out_only_its_own_apps() {
    let (bbs, _dir) = start(None, false).await;
    let local = As::new(&bbs, Auth::None);
    let a = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "dev-a", "developer").await),
    );
    let b = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "dev-b", "developer").await),
    );
    let mut app = common::lrp("web", 1);
    app["env"] = json!([{"name": "SECRET", "value": "s3cr3t"}]);
    assert_eq!(
        a.send("POST", "/v1/desired_lrps", Some(app.clone()))
            .await
            .0,
        201
    );
    let mut v2 = app.clone();
    v2["rootfs"] = json!("docker:///nginx");
    for (path, body) in [
        (
            "/v1/desired_lrps/web/generations",
            Some(json!({"definition": v2.clone()})),
        ),
        ("/v1/desired_lrps/web/rollback", None),
        ("/v1/desired_lrps/web/promote", None),
    ] {
        let why = assert_error(&b.send("POST", path, body).await, 403, ErrorName::Forbidden);
        assert!(why.contains("it belongs to dev-a"), "{path}: {why}");
    }
    let (s, d) = a
        .send(
            "POST",
            "/v1/desired_lrps/web/generations",
            Some(json!({"definition": v2})),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let (s, h) = b
        .send("GET", "/v1/desired_lrps/web/generations", None)
        .await;
    assert_eq!(s, 200);
    assert!(!h.to_string().contains("s3cr3t"), "{h}");
    let (_, h) = a
        .send("GET", "/v1/desired_lrps/web/generations", None)
        .await;
    assert!(h.to_string().contains("s3cr3t"), "{h}");
    bbs.shutdown().await;
}
