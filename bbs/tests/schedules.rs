//! Schedules: the `/v1/schedules` API over real HTTP (create, list, show, pause,
//! resume, remove, what is refused and that a refusal stores nothing, who may), backup
//! schedules as schedules of kind backup, and against both stores the claim of a slot
//! (racing brains make one run) and the migration of old backup schedules.

mod common;

use common::client::{assert_error, make_token, start, As, Auth};
use lattice_bbs::db::{Claim, Db};
use lattice_bbs::store::{Op, Txn};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::schedule::{Kind, RunResult};
use lattice_specs::models::{BackupSchedule, Schedule};
use prost::Message;
use serde_json::{json, Value};

fn schedule(name: &str, every: &str) -> Value {
    json!({"name": name, "every": every, "keep": 3, "task": common::task("ignored")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_and_removed() {
    let (bbs, _dir) = start(None, false).await;
    let api = As::new(&bbs, Auth::None);
    let (status, made) = api
        .send("POST", "/v1/schedules", Some(schedule("report", "15m")))
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["name"], "report");
    assert_eq!(made["kind"], "task");
    assert_eq!(made["every"], "15m");
    assert_eq!(made["keep"], 3);
    assert_eq!(made["paused"], false);
    assert_eq!(made["last_result"], "none");
    assert_eq!(made["task"]["domain"], "apps");
    assert_eq!(made["task"]["action"]["run"]["path"], "/bin/true");
    // The next slot: within the next 15 minutes, on a 15-minute boundary.
    let now = lattice_specs::now_nanos();
    let next = made["next_run_at"].as_i64().unwrap();
    assert!(next > now && next <= now + 900_000_000_000, "{made}");
    assert_eq!((next / 1_000_000_000) % 900, 0, "{made}");

    let (status, _) = api
        .send(
            "POST",
            "/v1/schedules",
            Some(schedule("nightly", "0 3 * * *")),
        )
        .await;
    assert_eq!(status, 201);
    let again = api
        .send("POST", "/v1/schedules", Some(schedule("report", "1h")))
        .await;
    assert_error(&again, 409, ErrorName::ScheduleAlreadyExists);

    let (status, all) = api.send("GET", "/v1/schedules", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly", "report"]);

    let (status, paused) = api.send("POST", "/v1/schedules/report/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (paused["paused"].as_bool(), paused["next_run_at"].as_i64()),
        (Some(true), Some(0))
    );
    let (_, shown) = api.send("GET", "/v1/schedules/report", None).await;
    assert_eq!(shown["paused"], true);
    let (status, resumed) = api.send("POST", "/v1/schedules/report/resume", None).await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)));

    let (status, _) = api.send("DELETE", "/v1/schedules/report", None).await;
    assert_eq!(status, 204);
    for (method, path) in [
        ("GET", "/v1/schedules/report"),
        ("DELETE", "/v1/schedules/report"),
        ("POST", "/v1/schedules/report/pause"),
    ] {
        let gone = api.send(method, path, None).await;
        assert_error(&gone, 404, ErrorName::ScheduleNotFound);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schedule_is_named_and_nothing_is_stored() {
    let (bbs, _dir) = start(None, false).await;
    let api = As::new(&bbs, Auth::None);
    for (every, want) in [
        ("often", "every \"often\": use hourly, daily"),
        ("2s", "at least 5s"),
        ("0 25 * * *", "cron field 2 (hour) \"25\""),
        ("* * * *", "five fields"),
    ] {
        let answer = api
            .send("POST", "/v1/schedules", Some(schedule("bad", every)))
            .await;
        let why = assert_error(&answer, 400, ErrorName::InvalidRequest);
        assert!(
            why.contains("every") && why.contains(want),
            "{every}: {why}"
        );
    }
    let mut no_rootfs = schedule("bad", "1h");
    no_rootfs["task"]["rootfs"] = json!("");
    let answer = api.send("POST", "/v1/schedules", Some(no_rootfs)).await;
    let why = assert_error(&answer, 400, ErrorName::InvalidRequest);
    assert!(why.contains("task.rootfs"), "{why}");
    let answer = api
        .send("POST", "/v1/schedules", Some(schedule("Bad Name!", "1h")))
        .await;
    let why = assert_error(&answer, 400, ErrorName::InvalidRequest);
    assert!(why.contains("name"), "{why}");
    assert!(bbs.db.schedules().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_and_developers_change_only_their_schedules() {
    let (bbs, _dir) = start(None, false).await;
    let local = As::new(&bbs, Auth::None);
    let dev_a = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "dev-a", "developer").await),
    );
    let dev_b = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "dev-b", "developer").await),
    );
    let viewer = As::new(
        &bbs,
        Auth::Bearer(make_token(&local, "eve", "viewer").await),
    );

    let (status, made) = dev_a
        .send("POST", "/v1/schedules", Some(schedule("report", "1h")))
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["owner"], "dev-a");
    let refused = viewer
        .send("POST", "/v1/schedules", Some(schedule("mine", "1h")))
        .await;
    assert_error(&refused, 403, ErrorName::Forbidden);
    let (status, all) = viewer.send("GET", "/v1/schedules", None).await;
    assert_eq!((status, all.as_array().unwrap().len()), (200, 1));
    for (method, path) in [
        ("POST", "/v1/schedules/report/pause"),
        ("DELETE", "/v1/schedules/report"),
    ] {
        let why = assert_error(
            &dev_b.send(method, path, None).await,
            403,
            ErrorName::Forbidden,
        );
        assert!(
            why.contains("schedule report") && why.contains("dev-a"),
            "{why}"
        );
        assert_error(
            &viewer.send(method, path, None).await,
            403,
            ErrorName::Forbidden,
        );
    }
    let (status, _) = dev_a.send("POST", "/v1/schedules/report/pause", None).await;
    assert_eq!(status, 200);
    let (status, _) = dev_a
        .send("POST", "/v1/schedules/report/resume", None)
        .await;
    assert_eq!(status, 200);

    // Its runs are its owner's too.
    let s = bbs.db.schedule("report").await.unwrap();
    let Claim::Task(run) = bbs
        .db
        .claim_schedule_slot("report", s.last_slot_at + 3600, "20300101-000000", "")
        .await
        .unwrap()
    else {
        panic!("no run")
    };
    let cancel = format!("/v1/tasks/{}/cancel", run.task_guid);
    assert_error(
        &dev_b.send("POST", &cancel, None).await,
        403,
        ErrorName::Forbidden,
    );
    assert_eq!(dev_a.send("POST", &cancel, None).await.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_schedules_are_schedules_of_kind_backup() {
    let (bbs, _dir) = start(None, true).await;
    let api = As::new(&bbs, Auth::None);
    let cell = lattice_specs::models::CellPresence {
        rep_address: "127.0.0.1:1".into(),
        capacity: Some(lattice_specs::models::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..lattice_specs::testing::cell_presence("cell-1", &["local"])
    };
    bbs.db.set_cell_presence(&cell, 0).await.unwrap();
    bbs.db
        .create_volume("pg", lattice_specs::volume::MIN_SIZE, "cell-1")
        .await
        .unwrap();
    let set = |every: &str| json!({"volume": "pg", "every": every, "keep": 2});
    let (status, body) = api
        .send("PUT", "/v1/backup_schedules/pg", Some(set("daily")))
        .await;
    assert_eq!(status, 204, "{body}");
    let bad = api
        .send("PUT", "/v1/backup_schedules/pg", Some(set("30s")))
        .await;
    let why = assert_error(&bad, 400, ErrorName::InvalidRequest);
    assert!(why.contains("at least 1m"), "{why}");
    let (_, listed) = api.send("GET", "/v1/backup_schedules", None).await;
    assert_eq!(
        listed,
        json!([{"volume": "pg", "every": "daily", "keep": 2}])
    );
    let (_, shown) = api.send("GET", "/v1/schedules/pg", None).await;
    assert_eq!(
        (shown["kind"].as_str(), shown["volume"].as_str()),
        (Some("backup"), Some("pg"))
    );
    assert!(shown.get("task").is_none(), "{shown}");
    // One namespace: a task schedule may not take the volume's name.
    let taken = api
        .send("POST", "/v1/schedules", Some(schedule("pg", "1h")))
        .await;
    assert_error(&taken, 409, ErrorName::ScheduleAlreadyExists);
    let (status, _) = api.send("DELETE", "/v1/backup_schedules/pg", None).await;
    assert_eq!(status, 204);
    let gone = api.send("DELETE", "/v1/backup_schedules/pg", None).await;
    let why = assert_error(&gone, 404, ErrorName::ScheduleNotFound);
    assert!(why.contains("volume pg has no backup schedule"), "{why}");
}

// ------------------------------------------------------------ both stores

fn task_schedule(name: &str) -> Schedule {
    Schedule {
        name: name.into(),
        every: "5s".into(),
        domain: "jobs".into(),
        task: Some(lattice_specs::testing::task_definition("/bin/true")),
        ..Default::default()
    }
}

/// Eight brains claim the same slot at once: one run, and the slot recorded once.
async fn racing_claims_make_one_run(db: Db) {
    let s = db.create_schedule(task_schedule("tick")).await.unwrap();
    let slot_at = s.last_slot_at + 5;
    let label = lattice_specs::schedule::slot_label(slot_at);
    let claims = (0..8).map(|_| {
        let db = db.clone();
        let label = label.clone();
        tokio::spawn(async move { db.claim_schedule_slot("tick", slot_at, &label, "").await })
    });
    let mut runs = vec![];
    for c in claims {
        match c.await.unwrap().unwrap() {
            Claim::Task(t) => runs.push(t.task_guid),
            Claim::Taken => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(runs, [format!("tick-{label}")]);
    let tasks = db.tasks("jobs", "").await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].schedule, "tick");
    let s = db.schedule("tick").await.unwrap();
    assert_eq!(
        (s.last_slot_at, s.last_result()),
        (slot_at, RunResult::Running)
    );
    // An older slot, or the same one again, is taken; a skip records its reason.
    assert_eq!(
        db.claim_schedule_slot("tick", slot_at, &label, "")
            .await
            .unwrap(),
        Claim::Taken
    );
    let next = lattice_specs::schedule::slot_label(slot_at + 5);
    let skipped = db
        .claim_schedule_slot(
            "tick",
            slot_at + 5,
            &next,
            "the previous run is still running",
        )
        .await
        .unwrap();
    assert_eq!(skipped, Claim::Skipped);
    let s = db.schedule("tick").await.unwrap();
    assert_eq!(s.last_result(), RunResult::Skipped);
    assert_eq!(s.last_run, "");
    assert_eq!(db.tasks("jobs", "").await.unwrap().len(), 1);
    // A task already holding the next run's guid: that slot fails, saying why.
    let (at, label) = (
        slot_at + 10,
        lattice_specs::schedule::slot_label(slot_at + 10),
    );
    let guid = format!("tick-{label}");
    let def = lattice_specs::testing::task_definition("/bin/true");
    db.desire_task(&guid, "jobs", def).await.unwrap();
    let failed = db
        .claim_schedule_slot("tick", at, &label, "")
        .await
        .unwrap();
    let Claim::Failed(why) = failed else {
        panic!("{failed:?}")
    };
    assert!(
        why.contains(&guid) && why.contains("already exists"),
        "{why}"
    );
    let s = db.schedule("tick").await.unwrap();
    assert_eq!((s.last_slot_at, s.last_result()), (at, RunResult::Failed));
    // Paused after a brain decided to start a slot: the claim starts nothing.
    db.pause_schedule("tick", true).await.unwrap();
    let later = lattice_specs::schedule::slot_label(slot_at + 15);
    assert_eq!(
        db.claim_schedule_slot("tick", slot_at + 15, &later, "")
            .await
            .unwrap(),
        Claim::Taken
    );
    assert_eq!(db.tasks("jobs", "").await.unwrap().len(), 2);
    assert!(db.task(&format!("tick-{later}")).await.is_err());
}

/// A backup schedule of the old layout becomes a schedule of kind backup, once.
async fn old_backup_schedules_are_migrated(db: Db) {
    let old = BackupSchedule {
        volume: "pg".into(),
        every: "daily".into(),
        keep: 4,
        created_at: 42,
    };
    let key = format!("{}pg", lattice_bbs::db::SCHEDULE);
    db.store()
        .txn(Txn::new().then(Op::put(&key, old.encode_to_vec())))
        .await
        .unwrap();
    assert_eq!(db.migrate_backup_schedules().await.unwrap(), 1);
    let s = db.schedule("pg").await.unwrap();
    assert_eq!(s.kind(), Kind::Backup);
    assert_eq!(
        (s.volume.as_str(), s.every.as_str(), s.keep, s.created_at),
        ("pg", "daily", 4, 42)
    );
    assert!(db.store().get(&key).await.unwrap().is_none());
    assert_eq!(db.migrate_backup_schedules().await.unwrap(), 0);
}

lattice_bbs::both_stores!(|store| Db::new(store);
    racing_claims_make_one_run,
    old_backup_schedules_are_migrated);
