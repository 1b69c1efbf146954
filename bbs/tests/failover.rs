//! Stateful failover in the store, against both backends: work mounts a volume only
//! on the volume's cell (VolumeFenced elsewhere), a failed-over volume is mounted only
//! by its refill until that finished, the move is a compare-and-swap, and fenced
//! copies are listed once.

use std::time::Duration;

use lattice_bbs::db::{Db, Move};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::volume::{Failover, State as VolumeState};
use lattice_specs::models::*;
use lattice_specs::testing::{desired_lrp, instance_key, task_definition};

const MIN: u64 = lattice_specs::volume::MIN_SIZE;

fn mount() -> VolumeMount {
    VolumeMount {
        driver: "local".into(),
        volume: "pg".into(),
        container_path: "/data".into(),
        ..Default::default()
    }
}

/// Cells c1 and c2, READY volume `pg` on c1 with `--failover restore` and a backup
/// of it, app `web` and task `job` mounting it.
async fn a_failover_volume_in_use(db: &Db) {
    let lease = db.grant_lease(Duration::from_secs(60)).await.unwrap();
    for id in ["c1", "c2"] {
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
        failover_grace_ns: 30_000_000_000,
        ..Default::default()
    };
    spec.set_failover(Failover::Restore);
    let v = db.create_volume_as(spec).await.unwrap();
    assert_eq!(
        (v.failover(), v.failover_grace_ns),
        (Failover::Restore, 30_000_000_000)
    );
    db.set_volume_state("pg", "c1", VolumeState::Ready, (MIN, 1 << 20), "")
        .await
        .unwrap();
    let mut b = Backup {
        id: "pg-1".into(),
        volume: "pg".into(),
        created_at: 1_000,
        ..Default::default()
    };
    b.set_state(BackupState::Completed);
    db.import_backup(&b).await.unwrap();
    db.desire_lrp(DesiredLrp {
        volume_mounts: vec![mount()],
        ..desired_lrp("web", 1)
    })
    .await
    .unwrap();
    for guid in ["job", "job2"] {
        let def = TaskDefinition {
            volume_mounts: vec![mount()],
            ..task_definition("/bin/true")
        };
        db.desire_task(guid, "d", def).await.unwrap();
    }
}

async fn work_mounts_a_volume_only_on_its_cell(db: Db) {
    a_failover_volume_in_use(&db).await;
    let err = db
        .claim_actual_lrp("web", 0, &instance_key("i-2", "c2"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeFenced, "{err}");
    let err = db.start_task("job", "c2").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeFenced, "{err}");
    assert_eq!(
        db.task("job").await.unwrap().state(),
        task::State::Pending,
        "nothing written"
    );
    db.claim_actual_lrp("web", 0, &instance_key("i-1", "c1"), 1)
        .await
        .unwrap();
    assert!(db.start_task("job", "c1").await.unwrap());
}

async fn a_failed_over_volume_is_mounted_by_its_refill_alone_until_it_finished(db: Db) {
    a_failover_volume_in_use(&db).await;
    let m = Move {
        name: "pg",
        from: "c1",
        to: "c2",
        epoch: 0,
        lost_at: 5_000,
    };
    let b = db.backup("pg-1").await.unwrap();
    let refill = "restore-pg-r1";
    let v = db.fail_over_volume(&m, &b, refill).await.unwrap();
    assert_eq!((v.cell_id.as_str(), v.epoch), ("c2", 1));
    assert_eq!(v.state(), VolumeState::Pending);
    assert_eq!(
        (v.failed_over_from.as_str(), v.failed_over_backup.as_str()),
        ("c1", "pg-1")
    );
    assert_eq!(v.data_loss_window_ns, 4_000);
    // The same move again (a stale brain): it moved on.
    let err = db
        .fail_over_volume(&m, &b, "restore-pg-r2")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeAlreadyPlaced);
    assert_eq!(db.volume("pg").await.unwrap().failover_restore_task, refill);

    // The old cell may not mount it any more; the new one only for the refill.
    let err = db
        .claim_actual_lrp("web", 0, &instance_key("i-1", "c1"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeFenced);
    let err = db
        .claim_actual_lrp("web", 0, &instance_key("i-2", "c2"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeNotReady, "{err}");
    let err = db.start_task("job", "c2").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeNotReady);
    let def = TaskDefinition {
        volume_mounts: vec![mount()],
        ..task_definition("/bin/true")
    };
    db.desire_task(refill, "lattice-backups", def)
        .await
        .unwrap();
    assert!(db.start_task(refill, "c2").await.unwrap());

    // A failed refill gets a fresh task; a finished one frees the volume.
    db.failover_refilled("pg", refill, Err(("download failed", "restore-pg-r3")))
        .await
        .unwrap();
    let v = db.volume("pg").await.unwrap();
    assert_eq!(v.failover_restore_task, "restore-pg-r3");
    assert!(v.reason.contains("download failed"), "{}", v.reason);
    db.failover_refilled("pg", "restore-pg-r3", Ok(()))
        .await
        .unwrap();
    assert_eq!(db.volume("pg").await.unwrap().failover_restore_task, "");
    db.claim_actual_lrp("web", 0, &instance_key("i-2", "c2"), 1)
        .await
        .unwrap();
    assert!(db.start_task("job2", "c2").await.unwrap());

    // The old cell's copy, fenced, is listed once however often it says so.
    for _ in 0..2 {
        db.volume_fenced("pg", "c1", "/var/lattice/volumes/fenced/pg@fenced-e0-1.img")
            .await
            .unwrap();
    }
    assert_eq!(
        db.volume("pg").await.unwrap().fenced_copies,
        vec!["c1:/var/lattice/volumes/fenced/pg@fenced-e0-1.img".to_string()]
    );
}

lattice_bbs::both_stores!(|store| Db::new(store);
    work_mounts_a_volume_only_on_its_cell,
    a_failed_over_volume_is_mounted_by_its_refill_alone_until_it_finished);
