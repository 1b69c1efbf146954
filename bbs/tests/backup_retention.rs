//! Retention's removals and a backup schedule's policy through a real BBS (embedded
//! store, blob store, its settler running): a repository backup deleted (as retention
//! deletes it) is marked forgetting and one forget task per volume, with a Prune-scoped
//! repository URL, forgets its snapshots; when that task completes the records go, when
//! it fails they stay with the failure noted. `PUT /v1/backup_schedules` takes the
//! retention, verification and thresholds and names a bad field.

mod common;

use std::time::Duration;

use common::client::{As, Auth};
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::backup::{Purpose, DOMAIN};
use lattice_specs::models::{action, backup, Backup, Task};
use serde_json::json;

/// A BBS on loopback with a blob store (the default backup store) and a backup key.
async fn start() -> (RunningBbs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BbsConfig {
        blob_dir: Some(dir.path().join("blobs")),
        backup_key_file: Some(dir.path().join("backup.key")),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("state").join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    (server::start(cfg).await.unwrap(), dir)
}

/// `method` on `path` of the repository at `rest_url` (a task's `rest:` URL), with the
/// credential it carries: the status.
async fn with_credential(rest_url: &str, method: reqwest::Method, path: &str) -> (u16, String) {
    let u = reqwest::Url::parse(rest_url.strip_prefix("rest:").unwrap()).unwrap();
    let mut plain = u.clone();
    plain.set_username("").unwrap();
    plain.set_password(None).unwrap();
    // Its characters are all unreserved: as written, not %-encoded.
    let password = u.password().unwrap().to_string();
    let r = reqwest::Client::new()
        .request(method, plain.join(path).unwrap())
        .basic_auth(u.username(), Some(password))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn repo_backup(id: &str, volume: &str, snapshot: &str) -> Backup {
    Backup {
        id: id.into(),
        volume: volume.into(),
        state: backup::State::Completed as i32,
        snapshot: snapshot.into(),
        slot: "20270101-0000".into(),
        created_at: 1,
        ..Default::default()
    }
}

/// The forget task of `volume`, once the BBS has desired it.
async fn forget_task(db: &lattice_bbs::db::Db, volume: &str) -> Task {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = db.tasks(DOMAIN, "").await.unwrap();
        if let Some(t) = tasks.into_iter().find(|t| {
            matches!(Purpose::of(&t.task_guid), Some(Purpose::Forget { volume: v, .. }) if v == volume)
        }) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no forget task for {volume}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_forgotten_repository_backup_goes_once_its_forget_task_completes() {
    let (bbs, _dir) = start().await;
    let api = As::new(&bbs, Auth::None);
    let db = bbs.db.clone();
    for b in [
        repo_backup("pg-1", "pg", "aaaa"),
        repo_backup("pg-2", "pg", "bbbb"),
        repo_backup("pg-3", "pg", "cccc"),
        repo_backup("web-1", "web", "dddd"),
    ] {
        db.import_backup(&b).await.unwrap();
    }
    for id in ["pg-1", "pg-2", "web-1"] {
        let (status, body) = api.send("DELETE", &format!("/v1/backups/{id}"), None).await;
        assert_eq!(status, 204, "{body}");
        assert!(
            db.backup(id).await.unwrap().forgetting,
            "{id} is kept until forgotten"
        );
    }

    // One task per volume, forgetting all its snapshots with the Prune op.
    let t = forget_task(&db, "pg").await;
    let def = t.definition.clone().unwrap();
    let Some(action::Action::Repository(r)) = def.action.unwrap().action else {
        panic!("not a repository action: {t:?}")
    };
    assert_eq!(r.op, "forget");
    assert_eq!(r.forget, ["aaaa", "bbbb"]);
    assert!(
        r.repository.starts_with("rest:http://lattice-task:")
            && r.repository.ends_with("/v1/repos/pg/"),
        "{}",
        r.repository
    );
    db.start_task(&t.task_guid, "cell-1").await.unwrap();
    // Its credential opens the repository's password and may delete (Prune scope).
    let (status, key) = with_credential(&r.repository, reqwest::Method::GET, "password").await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key.trim().len(), 64, "the cluster's backup key: {key}");
    let (status, body) =
        with_credential(&r.repository, reqwest::Method::DELETE, "snapshots/aaaa").await;
    assert!(status != 401 && status != 403, "{status} {body}");
    db.complete_task(&t.task_guid, "cell-1", false, "", "{}")
        .await
        .unwrap();
    wait_until("the forgotten records go", || async {
        db.backup("pg-1").await.is_err() && db.backup("pg-2").await.is_err()
    })
    .await;
    assert!(!db.backup("pg-3").await.unwrap().forgetting, "not asked");

    // Another volume's has a task of its own.
    let w = forget_task(&db, "web").await;
    assert_ne!(w.task_guid, t.task_guid);
    db.start_task(&w.task_guid, "cell-1").await.unwrap();
    db.complete_task(&w.task_guid, "cell-1", false, "", "")
        .await
        .unwrap();
    wait_until("the web record goes", || async {
        db.backup("web-1").await.is_err()
    })
    .await;
    bbs.shutdown().await;
}

#[tokio::test]
async fn a_failed_forget_task_keeps_the_backup_and_says_why() {
    let (bbs, _dir) = start().await;
    let api = As::new(&bbs, Auth::None);
    let db = bbs.db.clone();
    db.import_backup(&repo_backup("pg-1", "pg", "aaaa"))
        .await
        .unwrap();
    let (status, _) = api.send("DELETE", "/v1/backups/pg-1", None).await;
    assert_eq!(status, 204);
    let t = forget_task(&db, "pg").await;
    db.start_task(&t.task_guid, "cell-1").await.unwrap();
    db.complete_task(&t.task_guid, "cell-1", true, "the repository is locked", "")
        .await
        .unwrap();
    wait_until("the failure is noted", || async {
        db.backup("pg-1")
            .await
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("the repository is locked") && w.contains(&t.task_guid))
    })
    .await;
    let b = db.backup("pg-1").await.unwrap();
    assert!(b.forgetting);
    assert_eq!(b.warnings.len(), 1, "noted once: {:?}", b.warnings);
    // No second forget task while the failed one is there (retried once it expires).
    let forgets = db
        .tasks(DOMAIN, "")
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.task_guid.starts_with("forget-"))
        .count();
    assert_eq!(forgets, 1);
    bbs.shutdown().await;
}

#[tokio::test]
async fn a_backup_schedule_takes_retention_verification_and_thresholds() {
    let (bbs, _dir) = start().await;
    let api = As::new(&bbs, Auth::None);
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
    bbs.db
        .create_volume("pg", lattice_specs::volume::MIN_SIZE, "cell-1")
        .await
        .unwrap();
    let put = |body: serde_json::Value| {
        let api = &api;
        async move { api.send("PUT", "/v1/backup_schedules/pg", Some(body)).await }
    };
    let (status, body) = put(json!({"every": "daily", "keep_daily": 7, "verify": "often"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("verify"),
        "{body}"
    );
    let (status, body) = put(json!({"every": "daily", "keep": 2, "faster_than": 1.5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("faster_than"),
        "{body}"
    );

    let (status, body) = put(json!({
        "every": "hourly", "keep": 2, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6,
        "verify": "daily", "smaller_than": 0.3
    }))
    .await;
    assert_eq!(status, 204, "{body}");
    let s = bbs.db.schedule("pg").await.unwrap();
    let r = s.retention.unwrap();
    assert_eq!(
        (r.keep_last, r.keep_daily, r.keep_weekly, r.keep_monthly),
        (2, 7, 4, 6)
    );
    assert_eq!((s.verify_every.as_str(), s.smaller_ratio), ("daily", 0.3));
    let (_, all) = api.send("GET", "/v1/backup_schedules", None).await;
    assert_eq!(all[0]["keep_weekly"], 4, "{all}");
    assert_eq!(all[0]["verify"], "daily", "{all}");

    // By count only again: the policy by age is gone.
    let (status, _) = put(json!({"every": "hourly", "keep": 3})).await;
    assert_eq!(status, 204);
    let s = bbs.db.schedule("pg").await.unwrap();
    assert_eq!(
        (s.keep, s.retention, s.verify_every.as_str()),
        (3, None, "")
    );
    bbs.shutdown().await;
}
