//! Standby copies in the store, against both backends: the brain places a volume's
//! copy (a compare-and-swap on its standby cell), the copy's cell reports it made, a
//! refresh is recorded once and settles into the backup the copy holds (or a retry
//! time), only the refresh task mounts the copy and only on its cell, and a failover
//! onto the standby's cell takes the copy over without a refill when it is current.

use std::time::Duration;

use lattice_bbs::db::{Db, Move, Tended};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::volume::{Failover, State as VolumeState};
use lattice_specs::models::*;
use lattice_specs::testing::task_definition;

const MIN: u64 = lattice_specs::volume::MIN_SIZE;

fn mount(volume: &str) -> VolumeMount {
    VolumeMount {
        driver: "local".into(),
        volume: volume.into(),
        container_path: "/data".into(),
        ..Default::default()
    }
}

/// Cells c1, c2, c3; READY volume `pg` on c1 with `--failover standby`; backups pg-1
/// and pg-2 (newer).
async fn a_standby_volume(db: &Db) {
    let lease = db.grant_lease(Duration::from_secs(60)).await.unwrap();
    for id in ["c1", "c2", "c3"] {
        let cell = CellPresence {
            cell_id: id.into(),
            rep_address: "127.0.0.1:1800".into(),
            volume_drivers: vec!["local".into()],
            capacity: Some(CellCapacity::default()),
            ..Default::default()
        };
        db.set_cell_presence(&cell, lease).await.unwrap();
    }
    let mut spec = Volume {
        name: "pg".into(),
        size_bytes: MIN,
        cell_id: "c1".into(),
        ..Default::default()
    };
    spec.set_failover(Failover::Standby);
    db.create_volume_as(spec).await.unwrap();
    db.set_volume_state("pg", "c1", VolumeState::Ready, (MIN, 1 << 20), "")
        .await
        .unwrap();
    for (id, at) in [("pg-1", 1_000), ("pg-2", 2_000)] {
        let mut b = Backup {
            id: id.into(),
            volume: "pg".into(),
            created_at: at,
            ..Default::default()
        };
        b.set_state(BackupState::Completed);
        db.import_backup(&b).await.unwrap();
    }
}

async fn a_standby_copy_is_placed_made_and_refreshed_once(db: Db) {
    a_standby_volume(&db).await;
    // Placed on c2; a stale brain placing it again, or onto the volume's own cell,
    // is refused.
    let placed = db.tend_standby("pg", ("", "c2"), "", "x").await.unwrap();
    assert_eq!(placed, Tended::Placed);
    let err = db
        .tend_standby("pg", ("", "c3"), "", "x")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeAlreadyPlaced, "{err}");
    let err = db
        .tend_standby("pg", ("c2", "c1"), "", "x")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidRequest, "{err}");
    // Not refreshed before its cell made it.
    let err = db
        .tend_standby("pg", ("c2", "c2"), "pg-1", "standby-pg-s1")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeAlreadyPlaced, "{err}");

    // Another cell's report of such a copy changes nothing; c2's makes it ready.
    db.set_volume_state("pg.standby", "c3", VolumeState::Ready, (MIN, 0), "")
        .await
        .unwrap();
    assert!(!db.volume("pg").await.unwrap().standby_ready);
    db.set_volume_state("pg.standby", "c2", VolumeState::Failed, (0, 0), "pool full")
        .await
        .unwrap();
    let v = db.volume("pg").await.unwrap();
    assert!(
        v.standby_reason.contains("pool full"),
        "{}",
        v.standby_reason
    );
    assert!(v.standby_retry_at > 0);
    db.set_volume_state("pg.standby", "c2", VolumeState::Ready, (MIN, 0), "")
        .await
        .unwrap();
    let v = db.volume("pg").await.unwrap();
    assert!(v.standby_ready);
    assert_eq!(
        v.state(),
        VolumeState::Ready,
        "the volume itself is untouched"
    );
    assert_eq!(v.cell_id, "c1");

    let Tended::Refresh(v) = db
        .tend_standby("pg", ("c2", "c2"), "pg-1", "standby-pg-s1")
        .await
        .unwrap()
    else {
        panic!("a refresh")
    };
    assert_eq!(
        (v.standby_task.as_str(), v.standby_task_backup.as_str()),
        ("standby-pg-s1", "pg-1")
    );
    // One refresh at a time.
    let err = db
        .tend_standby("pg", ("c2", "c2"), "pg-2", "standby-pg-s2")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeAlreadyPlaced, "{err}");

    // Only the refresh task mounts the copy, only on c2.
    for guid in ["standby-pg-s1", "other"] {
        let def = TaskDefinition {
            volume_mounts: vec![mount("pg.standby")],
            ..task_definition("/bin/true")
        };
        db.desire_task(guid, "lattice-backups", def).await.unwrap();
    }
    // Apps and other domains' tasks may not even ask for it.
    let lrp = DesiredLrp {
        volume_mounts: vec![mount("pg.standby")],
        ..lattice_specs::testing::desired_lrp("web", 1)
    };
    let err = db.desire_lrp(lrp).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidRequest, "{err}");
    let def = TaskDefinition {
        volume_mounts: vec![mount("pg.standby")],
        ..task_definition("/bin/true")
    };
    let err = db.desire_task("user", "d", def).await.unwrap_err();
    assert!(
        err.to_string().contains("standby copy of volume pg"),
        "{err}"
    );
    let err = db.start_task("standby-pg-s1", "c3").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeFenced, "{err}");
    let err = db.start_task("other", "c2").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeFenced, "{err}");
    assert!(db.start_task("standby-pg-s1", "c2").await.unwrap());

    // A stale task's end changes nothing; the refresh's own settles the copy.
    db.standby_refreshed("pg", "standby-pg-s0", Ok(()))
        .await
        .unwrap();
    assert_eq!(db.volume("pg").await.unwrap().standby_backup, "");
    db.standby_refreshed("pg", "standby-pg-s1", Ok(()))
        .await
        .unwrap();
    let v = db.volume("pg").await.unwrap();
    assert_eq!(
        (v.standby_backup.as_str(), v.standby_task.as_str()),
        ("pg-1", "")
    );
    let current = db
        .tend_standby("pg", ("c2", "c2"), "pg-1", "standby-pg-s2")
        .await
        .unwrap();
    assert_eq!(current, Tended::Current);

    // A failed refresh keeps what the copy held and waits before the next.
    db.tend_standby("pg", ("c2", "c2"), "pg-2", "standby-pg-s3")
        .await
        .unwrap();
    db.standby_refreshed("pg", "standby-pg-s3", Err("download failed"))
        .await
        .unwrap();
    let v = db.volume("pg").await.unwrap();
    assert_eq!(v.standby_backup, "pg-1");
    assert!(
        v.standby_reason.contains("download failed"),
        "{}",
        v.standby_reason
    );
    assert!(v.standby_retry_at > lattice_specs::now_nanos());
}

/// `pg`'s standby copy on c2 holds `holds`, then c1 is lost: the move onto c2 with
/// `newest` as the newest good backup.
async fn fail_over_onto_the_standby(db: &Db, holds: &str, newest: &str) -> Volume {
    a_standby_volume(db).await;
    db.tend_standby("pg", ("", "c2"), "", "x").await.unwrap();
    db.set_volume_state("pg.standby", "c2", VolumeState::Ready, (MIN, 0), "")
        .await
        .unwrap();
    db.tend_standby("pg", ("c2", "c2"), holds, "standby-pg-s1")
        .await
        .unwrap();
    db.standby_refreshed("pg", "standby-pg-s1", Ok(()))
        .await
        .unwrap();
    let m = Move {
        name: "pg",
        from: "c1",
        to: "c2",
        epoch: 0,
        lost_at: 5_000,
    };
    let b = db.backup(newest).await.unwrap();
    db.fail_over_volume(&m, &b, "restore-pg-r1").await.unwrap()
}

async fn a_current_standby_copy_takes_over_without_a_refill(db: Db) {
    let v = fail_over_onto_the_standby(&db, "pg-2", "pg-2").await;
    assert_eq!((v.cell_id.as_str(), v.epoch), ("c2", 1));
    assert_eq!(v.state(), VolumeState::Pending, "c2 takes its copy over");
    assert_eq!(v.failover_restore_task, "", "no refill: {}", v.reason);
    assert!(
        v.reason.contains("standby copy (backup pg-2) takes over"),
        "{}",
        v.reason
    );
    assert_eq!(v.data_loss_window_ns, 3_000);
    assert_eq!(v.standby_cell_id, "", "a new standby is placed next");
    assert!(!v.standby_ready && v.standby_backup.is_empty());
}

async fn a_stale_standby_copy_takes_over_and_is_refilled(db: Db) {
    let v = fail_over_onto_the_standby(&db, "pg-1", "pg-2").await;
    assert_eq!(v.cell_id, "c2");
    assert_eq!(v.failover_restore_task, "restore-pg-r1");
    assert!(
        v.reason.contains("refilled from backup pg-2"),
        "{}",
        v.reason
    );
}

lattice_bbs::both_stores!(|store| Db::new(store);
    a_standby_copy_is_placed_made_and_refreshed_once,
    a_current_standby_copy_takes_over_without_a_refill,
    a_stale_standby_copy_takes_over_and_is_refilled);
