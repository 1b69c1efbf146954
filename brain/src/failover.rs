//! Stateful failover, the runner: on the active brain, every pass, it notes which
//! cells it has seen go (since when, and their zone), asks the pure
//! `lattice_specs::failover::decide` what to do with the failover volumes of lost
//! cells, and asks the BBS to move each one (`FailOverVolume`, a compare-and-swap on
//! the volume's cell and epoch, under the brain's fence). The BBS then has the new cell
//! make the volume, refills it from the backup, and only then lets work mount it.
//!
//! Volumes with `--failover standby` have their standby copy placed on another cell
//! and refreshed from each new good backup (`lattice_specs::failover::standby::tend`,
//! the BBS's `TendStandby`).
//!
//! A cell the brain has never seen (lost before it took the lead) counts as lost
//! since the brain took the lead: a new leader waits a whole grace period.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs_client::BrainBbs;
use lattice_specs::bbs_api::{FailOverVolumeRequest, TendStandbyRequest};
use lattice_specs::errors::ErrorName;
use lattice_specs::failover::standby::{self, StandbyStep};
use lattice_specs::failover::{decide, LostCell, Step, View};
use lattice_specs::models::volume::Failover;
use lattice_specs::models::{CellPresence, Volume};
use tokio::sync::Notify;

use crate::auctioneer::{bbs_err, BrainError};

/// How often the active brain looks for volumes to fail over.
pub const TICK: Duration = Duration::from_secs(1);

/// What the brain remembers of cells between passes.
#[derive(Debug, Default)]
pub struct Tracker {
    /// When this brain took the lead (ns).
    since: i64,
    /// Present cells as last seen: their zone and presence TTL (the lost record).
    seen: HashMap<String, LostCell>,
    lost: HashMap<String, LostCell>,
    /// Stuck volumes already reported, with why (reported again when why changes).
    stuck: HashSet<(String, String)>,
}

impl Tracker {
    pub fn new(now: i64) -> Tracker {
        Tracker {
            since: now,
            ..Default::default()
        }
    }

    /// Notes the cells present at `now`: cells seen before and gone now are lost
    /// since now; cells that volumes name and that were never seen are lost since
    /// the brain took the lead; cells back are no longer lost.
    pub fn observe(&mut self, cells: &[CellPresence], volumes: &[Volume], now: i64) {
        let present: HashSet<&str> = cells.iter().map(|c| c.cell_id.as_str()).collect();
        self.lost.retain(|id, _| !present.contains(id.as_str()));
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            let last = self.seen.remove(&id).unwrap_or_default();
            self.lost.insert(id, LostCell { since: now, ..last });
        }
        for c in cells {
            let seen = LostCell {
                since: 0,
                zone: c.zone.clone(),
                lease_ttl_ns: c.lease_ttl_ns,
            };
            self.seen.insert(c.cell_id.clone(), seen);
        }
        for v in volumes {
            if !v.cell_id.is_empty()
                && !present.contains(v.cell_id.as_str())
                && !self.lost.contains_key(&v.cell_id)
            {
                let since = self.since;
                self.lost.insert(
                    v.cell_id.clone(),
                    LostCell {
                        since,
                        ..Default::default()
                    },
                );
            }
        }
    }

    pub fn lost(&self) -> &HashMap<String, LostCell> {
        &self.lost
    }
}

fn count(outcome: &str) {
    crate::metrics::VOLUME_FAILOVERS
        .with_label_values(&[outcome])
        .inc();
}

/// One pass at `now` (ns): how many volumes it moved. Standby copies are tended in
/// passes that moved none (a move changes what they would be decided on).
pub async fn pass(bbs: &dyn BrainBbs, t: &mut Tracker, now: i64) -> Result<usize, BrainError> {
    let cells = bbs.cells().await.map_err(bbs_err)?;
    let volumes = bbs.volumes("").await.map_err(bbs_err)?;
    t.observe(&cells, &volumes, now);
    let waiting = volumes
        .iter()
        .any(|v| v.failover() != Failover::None && t.lost.contains_key(&v.cell_id));
    let standby = volumes.iter().any(|v| v.failover() == Failover::Standby);
    if !waiting {
        t.stuck.clear();
        if !standby {
            return Ok(0);
        }
    }
    let backups = bbs.backups().await.map_err(bbs_err)?;
    let view = View {
        volumes: &volumes,
        cells: &cells,
        lost: &t.lost,
        backups: &backups,
        now,
    };
    let (moved, stuck) = if waiting {
        move_volumes(bbs, &t.stuck, decide(&view)).await?
    } else {
        (0, HashSet::new())
    };
    if moved == 0 && standby {
        tend_standby(bbs, standby::tend(&view)).await?;
    }
    if waiting {
        t.stuck = stuck;
    }
    Ok(moved)
}

/// Asks the BBS for each move of `steps`; reports stuck volumes not in `reported`.
/// Returns how many moved and the stuck ones.
async fn move_volumes(
    bbs: &dyn BrainBbs,
    reported: &HashSet<(String, String)>,
    steps: Vec<Step>,
) -> Result<(usize, HashSet<(String, String)>), BrainError> {
    let mut moved = 0;
    let mut stuck = HashSet::new();
    for step in steps {
        match step {
            Step::Move {
                volume,
                from,
                to,
                epoch,
                backup,
                lost_at,
            } => {
                let req = FailOverVolumeRequest {
                    name: volume.clone(),
                    from_cell: from.clone(),
                    to_cell: to.clone(),
                    epoch,
                    backup_id: backup.clone(),
                    lost_at,
                };
                match bbs.fail_over_volume(&req).await {
                    Ok(()) => {
                        count("moved");
                        moved += 1;
                        tracing::warn!(%volume, %from, %to, %backup, "volume failed over");
                    }
                    Err(e) if e.name == Some(ErrorName::VolumeAlreadyPlaced) => {}
                    Err(e) if e.is_lock_lost() => return Err(BrainError::LockLost),
                    Err(e) => {
                        count("refused");
                        tracing::warn!(%volume, error = %e.message, "failing a volume over was refused; retrying");
                    }
                }
            }
            Step::Stuck { volume, why } => {
                if !reported.contains(&(volume.clone(), why.clone())) {
                    count("stuck");
                    tracing::warn!(%volume, "{why}");
                }
                stuck.insert((volume, why));
            }
        }
    }
    Ok((moved, stuck))
}

/// Asks the BBS to place or refresh each standby copy of `steps`.
async fn tend_standby(bbs: &dyn BrainBbs, steps: Vec<StandbyStep>) -> Result<(), BrainError> {
    for step in steps {
        let req = match step {
            StandbyStep::Place { volume, from, to } => TendStandbyRequest {
                name: volume,
                from_cell: from,
                to_cell: to,
                backup_id: String::new(),
            },
            StandbyStep::Refresh {
                volume,
                cell,
                backup,
            } => TendStandbyRequest {
                name: volume,
                from_cell: cell.clone(),
                to_cell: cell,
                backup_id: backup,
            },
        };
        match bbs.tend_standby(&req).await {
            Ok(()) => {}
            Err(e) if e.name == Some(ErrorName::VolumeAlreadyPlaced) => {}
            Err(e) if e.is_lock_lost() => return Err(BrainError::LockLost),
            Err(e) => {
                tracing::warn!(volume = %req.name, error = %e.message, "tending a standby copy was refused; retrying");
            }
        }
    }
    Ok(())
}

/// Runs passes every `every` until the lock is lost; a move wakes the converger
/// (`moved`), whose work waits for the volume.
pub async fn run(
    bbs: Arc<dyn BrainBbs>,
    every: Duration,
    moved: Arc<Notify>,
) -> Result<(), BrainError> {
    let mut t = Tracker::new(lattice_specs::now_nanos());
    loop {
        match pass(bbs.as_ref(), &mut t, lattice_specs::now_nanos()).await {
            Ok(0) => {}
            Ok(_) => moved.notify_one(),
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "failover pass failed; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests;
