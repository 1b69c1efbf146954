//! Standby copies (`--failover standby`), the pure part: where a volume's standby copy
//! is kept and when it is refreshed. The copy lives on another cell than the volume
//! (another zone first) as `NAME.standby` (`crate::volume::standby_name`), made there
//! by that cell, and every new good backup of the volume is restored into it by a task
//! (`crate::backup::Purpose::Standby`). When the volume's cell is lost, the failover
//! ([`super::decide`]) moves the volume onto the standby's cell, whose copy becomes the
//! volume: a switch, not a restore (a refill follows only if the copy was not current).

use super::{newest_good, target, View};
use crate::models::volume::{Failover, State as VolumeState};
use crate::models::Volume;

/// How long after a failed refresh (or a copy its cell could not make) the next is tried.
pub const RETRY_NS: i64 = 30_000_000_000;

/// One thing to do for a standby copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyStep {
    /// Keep `volume`'s standby copy on cell `to` from now on (it was on `from`, "" when
    /// it had none).
    Place {
        volume: String,
        from: String,
        to: String,
    },
    /// Restore `backup` into `volume`'s standby copy on `cell`.
    Refresh {
        volume: String,
        cell: String,
        backup: String,
    },
}

/// Whether volume `v` keeps a standby copy now: it asks for one, its copy was made
/// on a cell that is present, and no failover is refilling it.
fn keeps_standby(v: &Volume, view: &View) -> bool {
    v.failover() == Failover::Standby
        && v.state() == VolumeState::Ready
        && v.failover_restore_task.is_empty()
        && view.cells.iter().any(|c| c.cell_id == v.cell_id)
}

/// Whether `v`'s standby cell is gone long enough to keep the copy elsewhere: absent
/// now and lost for the volume's grace period (or never seen by this brain).
fn standby_cell_gone(v: &Volume, view: &View) -> bool {
    let id = &v.standby_cell_id;
    if view.cells.iter().any(|c| &c.cell_id == id) {
        return false;
    }
    view.lost
        .get(id)
        .is_none_or(|l| view.now - l.since >= super::grace_ns(v))
}

/// The steps for the standby copies in `view`: a volume with none (or whose standby
/// cell is gone, or is the volume's own cell) gets one on another cell; a copy its
/// cell made and that is not refreshing gets the volume's newest good backup when it
/// holds an older one (not before its retry time after a failure).
pub fn tend(view: &View) -> Vec<StandbyStep> {
    let mut steps = vec![];
    let mut placed: Vec<Volume> = view.volumes.to_vec();
    let mut wanting: Vec<&Volume> = view
        .volumes
        .iter()
        .filter(|v| keeps_standby(v, view))
        .collect();
    wanting.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    for v in wanting {
        let needs_cell = v.standby_cell_id.is_empty()
            || v.standby_cell_id == v.cell_id
            || standby_cell_gone(v, view);
        if needs_cell {
            let zone = view
                .cells
                .iter()
                .find(|c| c.cell_id == v.cell_id)
                .map(|c| c.zone.clone())
                .unwrap_or_default();
            if let Some(to) = target(view.cells, &placed, v, &zone) {
                if to.cell_id != v.standby_cell_id {
                    // The copy counts as held bytes on its cell for the next choices.
                    placed.push(Volume {
                        name: crate::volume::standby_name(&v.name),
                        cell_id: to.cell_id.clone(),
                        size_bytes: v.size_bytes,
                        ..Default::default()
                    });
                    steps.push(StandbyStep::Place {
                        volume: v.name.clone(),
                        from: v.standby_cell_id.clone(),
                        to: to.cell_id.clone(),
                    });
                }
            }
            continue;
        }
        let away = !view.cells.iter().any(|c| c.cell_id == v.standby_cell_id);
        if away || !v.standby_ready || !v.standby_task.is_empty() || view.now < v.standby_retry_at {
            continue;
        }
        if let Some(b) = newest_good(view.backups, &v.name) {
            if b.id != v.standby_backup {
                steps.push(StandbyStep::Refresh {
                    volume: v.name.clone(),
                    cell: v.standby_cell_id.clone(),
                    backup: b.id.clone(),
                });
            }
        }
    }
    steps
}

/// Whether volume `v` (lost with its cell) can be taken over by its standby copy:
/// kept on a present cell and filled from a backup at least once.
pub fn takes_over(v: &Volume, view: &View) -> bool {
    v.failover() == Failover::Standby
        && !v.standby_backup.is_empty()
        && !v.standby_cell_id.is_empty()
        && v.standby_cell_id != v.cell_id
        && view.cells.iter().any(|c| c.cell_id == v.standby_cell_id)
}

/// Whether the standby copy of `v`, taken over with `backup` as the newest good
/// backup, needs no refill: it holds that backup and no refresh was running into it
/// (one interrupted could have left it half-swapped).
pub fn current(v: &Volume, backup: &str) -> bool {
    v.standby_backup == backup && v.standby_task.is_empty()
}

#[cfg(test)]
mod tests;
