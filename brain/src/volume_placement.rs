//! Placing volumes: the BBS records a volume without a cell when none was asked
//! for, and the active brain picks one (`auction::volumes`) and records it with
//! the BBS's compare-and-swap `PlaceVolume`, under its fence.
//!
//! It places as soon as it learns of such a volume: on the BBS event that
//! announces it, when the auction needs the cell of a volume work mounts, and on
//! every pass of its own loop, the first one as the brain takes the lead (so a
//! new leader places what its predecessor left).

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs_client::BrainBbs;
use lattice_specs::errors::ErrorName;
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::Volume;
use tokio::sync::Notify;

use crate::auction::volumes::{place_volumes, waits_for_a_cell};
use crate::auctioneer::{bbs_err, BrainError};

/// Whether BBS event `e` announces a volume that waits for a cell.
pub fn announces_unplaced_volume(e: &Kind) -> bool {
    match e {
        Kind::VolumeChanged(c) => c.after.as_ref().is_some_and(waits_for_a_cell),
        _ => false,
    }
}

/// Whether BBS event `e` shows a volume become usable where it was not: READY, and
/// not waiting for a refill, on a cell where it was not so before (a new volume, or one
/// a failover moved). Work that mounts it waits in the auctioneer's queue while its
/// cell is gone, with a backoff of up to seconds: it is tried again at once instead.
pub fn announces_usable_volume(e: &Kind) -> bool {
    let Kind::VolumeChanged(c) = e else {
        return false;
    };
    let usable = |v: &Volume| {
        v.state() == lattice_specs::models::volume::State::Ready
            && v.failover_restore_task.is_empty()
    };
    c.after.as_ref().is_some_and(|a| {
        usable(a)
            && !c
                .before
                .as_ref()
                .is_some_and(|b| usable(b) && b.cell_id == a.cell_id)
    })
}

/// Gives every volume of `volumes` that waits for a cell one: `volumes` as they
/// are afterwards. A volume that moved on meanwhile (removed, or placed by a
/// call that raced this one) keeps what the BBS says of it.
pub async fn place_waiting(
    bbs: &dyn BrainBbs,
    mut volumes: Vec<Volume>,
) -> Result<Vec<Volume>, BrainError> {
    if !volumes.iter().any(waits_for_a_cell) {
        return Ok(volumes);
    }
    let cells = bbs.cells().await.map_err(bbs_err)?;
    let choices = place_volumes(&cells, &volumes);
    if choices.is_empty() {
        tracing::info!("volumes wait for a cell with the local volume driver");
    }
    let mut moved_on = false;
    for (name, cell) in choices {
        match bbs.place_volume(&name, &cell).await {
            Ok(()) => {
                tracing::info!(volume = %name, %cell, "volume placed");
                for v in volumes.iter_mut().filter(|v| v.name == name) {
                    v.cell_id = cell.clone();
                }
            }
            Err(e) if e.name == Some(ErrorName::VolumeAlreadyPlaced) || e.is_not_found() => {
                moved_on = true;
            }
            Err(e) => return Err(bbs_err(e)),
        }
    }
    if moved_on {
        volumes = bbs.volumes("").await.map_err(bbs_err)?;
    }
    Ok(volumes)
}

/// Places waiting volumes now, whenever `place_now` is notified, and every
/// `every`, until the lock is lost. A failed pass is tried again at the next.
pub async fn run(
    bbs: Arc<dyn BrainBbs>,
    place_now: Arc<Notify>,
    every: Duration,
) -> Result<(), BrainError> {
    loop {
        let r = match bbs.volumes("").await {
            Ok(volumes) => place_waiting(bbs.as_ref(), volumes).await.map(|_| ()),
            Err(e) => Err(bbs_err(e)),
        };
        match r {
            Ok(()) => {}
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "placing volumes failed; retrying"),
        }
        tokio::select! {
            _ = place_now.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::{Leases, Reads};
    use lattice_specs::events::VolumeChangedEvent;
    use lattice_specs::models::{CellCapacity, CellPresence};

    const SIZE: u64 = lattice_specs::volume::MIN_SIZE;

    /// A BBS with cells `a` and `b` (both with the local driver), `a` holding a
    /// volume already, and volume `new` recorded without a cell.
    async fn a_volume_waits() -> FakeBbs {
        let bbs = FakeBbs::start().await;
        let lease = bbs.grant_lease(60).await.unwrap();
        for id in ["a", "b"] {
            let cell = CellPresence {
                cell_id: id.into(),
                rep_address: "127.0.0.1:1800".into(),
                volume_drivers: vec!["local".into()],
                capacity: Some(CellCapacity {
                    memory_mb: 1024,
                    disk_mb: 4096,
                    containers: 10,
                }),
                ..Default::default()
            };
            bbs.db().set_cell_presence(&cell, lease).await.unwrap();
        }
        bbs.db().create_volume("old", SIZE, "a").await.unwrap();
        let v = bbs.db().create_volume("new", SIZE, "").await.unwrap();
        assert_eq!(v.cell_id, "");
        bbs
    }

    async fn cell_of(bbs: &FakeBbs, name: &str) -> String {
        bbs.db().volume(name).await.unwrap().cell_id
    }

    #[tokio::test]
    async fn a_volume_without_a_cell_gets_the_emptiest_one() {
        let bbs = a_volume_waits().await;
        let volumes = bbs.volumes("").await.unwrap();
        let after = place_waiting(&bbs, volumes).await.unwrap();
        assert_eq!(cell_of(&bbs, "new").await, "b");
        let new = after.iter().find(|v| v.name == "new").unwrap();
        assert_eq!(new.cell_id, "b", "the answer says where it went");
    }

    #[tokio::test]
    async fn a_volume_placed_meanwhile_keeps_its_cell() {
        let bbs = a_volume_waits().await;
        // What this brain read is stale: another call placed `new` on `a`.
        let stale = bbs.volumes("").await.unwrap();
        bbs.db().place_volume("new", "a").await.unwrap();
        let after = place_waiting(&bbs, stale).await.unwrap();
        assert_eq!(cell_of(&bbs, "new").await, "a");
        let new = after.iter().find(|v| v.name == "new").unwrap();
        assert_eq!(new.cell_id, "a");
    }

    #[tokio::test]
    async fn a_brain_whose_lock_moved_on_places_nothing() {
        let bbs = a_volume_waits().await;
        let fenced = bbs.superseded("brain").await;
        let volumes = bbs.volumes("").await.unwrap();
        let r = place_waiting(fenced.as_ref(), volumes).await;
        assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
        assert_eq!(cell_of(&bbs, "new").await, "");
    }

    #[tokio::test]
    async fn the_loop_places_a_waiting_volume_as_it_starts() {
        let bbs = a_volume_waits().await;
        let runner = tokio::spawn(run(
            Arc::new(bbs.clone()),
            Arc::new(Notify::new()),
            Duration::from_secs(3600),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while cell_of(&bbs, "new").await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never placed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runner.abort();
        assert_eq!(cell_of(&bbs, "new").await, "b");
    }

    #[test]
    fn only_a_volume_waiting_for_a_cell_is_announced() {
        let v = |cell_id: &str| Volume {
            name: "v".into(),
            cell_id: cell_id.into(),
            state: lattice_specs::models::volume::State::Pending as i32,
            ..Default::default()
        };
        let change = |before: Option<Volume>, after: Option<Volume>| {
            Kind::VolumeChanged(VolumeChangedEvent { before, after })
        };
        assert!(announces_unplaced_volume(&change(None, Some(v("")))));
        assert!(!announces_unplaced_volume(&change(None, Some(v("a")))));
        assert!(!announces_unplaced_volume(&change(
            Some(v("")),
            Some(v("a"))
        )));
        assert!(!announces_unplaced_volume(&change(Some(v("")), None)));
    }

    #[test]
    fn a_volume_usable_on_a_new_cell_is_announced_once() {
        use lattice_specs::models::volume::State;
        let v = |cell_id: &str, state: State, refill: &str| Volume {
            name: "pg".into(),
            cell_id: cell_id.into(),
            state: state as i32,
            failover_restore_task: refill.into(),
            ..Default::default()
        };
        let change = |before: Volume, after: Volume| {
            announces_usable_volume(&Kind::VolumeChanged(VolumeChangedEvent {
                before: Some(before),
                after: Some(after),
            }))
        };
        let ready = |cell| v(cell, State::Ready, "");
        // Made by its cell.
        assert!(change(v("a", State::Pending, ""), ready("a")));
        // Moved by a failover, then the standby copy promoted.
        assert!(!change(ready("a"), v("b", State::Pending, "")));
        assert!(change(v("b", State::Pending, ""), ready("b")));
        // Refilled from a backup: usable once the refill is done, not before.
        assert!(!change(
            v("b", State::Pending, "t"),
            v("b", State::Ready, "t")
        ));
        assert!(change(v("b", State::Ready, "t"), ready("b")));
        // Its usage reported again: nothing new.
        assert!(!change(ready("b"), ready("b")));
        assert!(!change(ready("b"), v("b", State::Removing, "")));
        assert!(!announces_usable_volume(&Kind::VolumeChanged(
            VolumeChangedEvent {
                before: Some(ready("b")),
                after: None
            }
        )));
    }
}
