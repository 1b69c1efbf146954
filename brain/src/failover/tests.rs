use super::*;
use lattice_bbs_client::fake::FakeBbs;
use lattice_bbs_client::{Leases, VolumePlacement};
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::volume::State as VolumeState;
use lattice_specs::models::{Backup, CellCapacity};

const S: i64 = 1_000_000_000;
const SIZE: u64 = lattice_specs::volume::MIN_SIZE;

fn presence(id: &str, zone: &str) -> CellPresence {
    CellPresence {
        lease_ttl_ns: 7_000_000_000,
        cell_id: id.into(),
        zone: zone.into(),
        rep_address: "127.0.0.1:1800".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    }
}

/// A BBS with cells `a` (zone z1, holding READY volume `pg` with `--failover
/// restore`, backed up once) and `b` (zone z2): the lease of `a` is returned.
async fn a_failover_volume() -> (FakeBbs, i64) {
    a_volume_failing_over_by(Failover::Restore).await
}

/// [`a_failover_volume`] with failover `mode`.
async fn a_volume_failing_over_by(mode: Failover) -> (FakeBbs, i64) {
    let bbs = FakeBbs::start().await;
    let mut lease_a = 0;
    for (id, zone) in [("a", "z1"), ("b", "z2")] {
        let lease = bbs.grant_lease(60).await.unwrap();
        bbs.db()
            .set_cell_presence(&presence(id, zone), lease)
            .await
            .unwrap();
        if id == "a" {
            lease_a = lease;
        }
    }
    let mut spec = Volume {
        name: "pg".into(),
        size_bytes: SIZE,
        cell_id: "a".into(),
        ..Default::default()
    };
    spec.set_failover(mode);
    bbs.db().create_volume_as(spec).await.unwrap();
    bbs.db()
        .set_volume_state("pg", "a", VolumeState::Ready, (SIZE, 1 << 20), "")
        .await
        .unwrap();
    let mut b = Backup {
        id: "pg-1".into(),
        volume: "pg".into(),
        cell_id: "a".into(),
        created_at: 5 * S,
        ..Default::default()
    };
    b.set_state(BackupState::Completed);
    bbs.db().import_backup(&b).await.unwrap();
    (bbs, lease_a)
}

#[tokio::test]
async fn a_lost_cells_failover_volume_moves_after_the_grace_to_be_refilled() {
    let (bbs, lease_a) = a_failover_volume().await;
    let mut t = Tracker::new(0);
    assert_eq!(pass(&bbs, &mut t, 10 * S).await.unwrap(), 0);
    bbs.revoke_lease(lease_a).await.unwrap();
    // Cell a is seen gone at 20 s: nothing moves within the 60 s grace.
    assert_eq!(pass(&bbs, &mut t, 20 * S).await.unwrap(), 0);
    assert_eq!(pass(&bbs, &mut t, 79 * S).await.unwrap(), 0);
    assert_eq!(bbs.db().volume("pg").await.unwrap().cell_id, "a");
    assert_eq!(pass(&bbs, &mut t, 80 * S).await.unwrap(), 1);
    let v = bbs.db().volume("pg").await.unwrap();
    assert_eq!(v.cell_id, "b");
    assert_eq!(v.epoch, 1);
    assert_eq!(v.state(), VolumeState::Pending, "its new cell makes it");
    assert_eq!(v.failed_over_from, "a");
    assert_eq!(v.failed_over_backup, "pg-1");
    assert_eq!(v.data_loss_window_ns, 15 * S, "from the backup to the loss");
    assert!(
        v.failover_restore_task.starts_with("restore-pg-"),
        "{}",
        v.failover_restore_task
    );
    // Deciding again moves nothing.
    assert_eq!(pass(&bbs, &mut t, 81 * S).await.unwrap(), 0);
    assert_eq!(bbs.db().volume("pg").await.unwrap().epoch, 1);
}

#[tokio::test]
async fn a_brain_whose_lock_moved_on_moves_nothing() {
    let (bbs, lease_a) = a_failover_volume().await;
    bbs.revoke_lease(lease_a).await.unwrap();
    let fenced = bbs.superseded("brain").await;
    let mut t = Tracker::new(0);
    let r = pass(fenced.as_ref(), &mut t, 1000 * S).await;
    assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
    assert_eq!(bbs.db().volume("pg").await.unwrap().cell_id, "a");
}

#[tokio::test]
async fn a_stale_move_is_refused_by_the_compare_and_swap() {
    let (bbs, lease_a) = a_failover_volume().await;
    bbs.revoke_lease(lease_a).await.unwrap();
    let req = FailOverVolumeRequest {
        name: "pg".into(),
        from_cell: "a".into(),
        to_cell: "b".into(),
        epoch: 0,
        backup_id: "pg-1".into(),
        lost_at: 0,
    };
    bbs.fail_over_volume(&req).await.unwrap();
    let again = bbs.fail_over_volume(&req).await.unwrap_err();
    assert_eq!(again.name, Some(ErrorName::VolumeAlreadyPlaced));
    let v = bbs.db().volume("pg").await.unwrap();
    assert_eq!((v.cell_id.as_str(), v.epoch), ("b", 1));
}

#[test]
fn cells_are_lost_from_when_they_went_or_from_the_lead() {
    let mut t = Tracker::new(100);
    let on = |cell: &str| Volume {
        name: "v".into(),
        cell_id: cell.into(),
        ..Default::default()
    };
    t.observe(&[presence("a", "z1"), presence("b", "z2")], &[on("x")], 110);
    assert_eq!(
        t.lost().get("x"),
        Some(&LostCell {
            since: 100,
            ..Default::default()
        }),
        "never seen: lost since the lead"
    );
    t.observe(&[presence("b", "z2")], &[on("x")], 120);
    assert_eq!(
        t.lost().get("a"),
        Some(&LostCell {
            since: 120,
            zone: "z1".into(),
            lease_ttl_ns: 7_000_000_000,
        }),
        "its zone and lease as last seen"
    );
    t.observe(&[presence("b", "z2")], &[on("x")], 130);
    assert_eq!(
        t.lost()["a"].since,
        120,
        "lost since it went, not since each pass"
    );
    t.observe(&[presence("a", "z1"), presence("b", "z2")], &[], 140);
    assert!(!t.lost().contains_key("a"), "back");
}

#[tokio::test]
async fn a_standby_copy_is_placed_refreshed_and_takes_over() {
    let (bbs, lease_a) = a_volume_failing_over_by(Failover::Standby).await;
    let db = bbs.db();
    let mut t = Tracker::new(0);
    assert_eq!(pass(&bbs, &mut t, 10 * S).await.unwrap(), 0);
    let v = db.volume("pg").await.unwrap();
    assert_eq!(v.standby_cell_id, "b", "placed on the other zone's cell");
    // Its cell made it: the newest good backup is restored into it, once.
    db.set_volume_state("pg.standby", "b", VolumeState::Ready, (SIZE, 0), "")
        .await
        .unwrap();
    pass(&bbs, &mut t, 11 * S).await.unwrap();
    let v = db.volume("pg").await.unwrap();
    assert!(v.standby_task.starts_with("standby-pg-"), "{v:?}");
    assert_eq!(v.standby_task_backup, "pg-1");
    let task = v.standby_task.clone();
    pass(&bbs, &mut t, 12 * S).await.unwrap();
    assert_eq!(db.volume("pg").await.unwrap().standby_task, task);
    db.standby_refreshed("pg", &task, Ok(())).await.unwrap();
    pass(&bbs, &mut t, 13 * S).await.unwrap();
    let v = db.volume("pg").await.unwrap();
    assert_eq!(
        (v.standby_backup.as_str(), v.standby_task.as_str()),
        ("pg-1", "")
    );

    // Cell a is lost: after the grace the volume moves onto b's copy, no refill.
    bbs.revoke_lease(lease_a).await.unwrap();
    assert_eq!(pass(&bbs, &mut t, 20 * S).await.unwrap(), 0);
    assert_eq!(pass(&bbs, &mut t, 80 * S).await.unwrap(), 1);
    let v = db.volume("pg").await.unwrap();
    assert_eq!((v.cell_id.as_str(), v.epoch), ("b", 1));
    assert_eq!(v.failover_restore_task, "", "{}", v.reason);
    // The next copy has no other cell to go to (a is gone): none is placed.
    db.set_volume_state("pg", "b", VolumeState::Ready, (SIZE, 1 << 20), "")
        .await
        .unwrap();
    assert_eq!(pass(&bbs, &mut t, 81 * S).await.unwrap(), 0);
    assert_eq!(db.volume("pg").await.unwrap().standby_cell_id, "");
}
