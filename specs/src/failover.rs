//! Stateful failover: the pure decision the active brain takes for volumes whose cell
//! is gone (`Volume.failover`), and the rules every side shares about a volume's copies.
//!
//! A volume with `--failover restore` whose cell has been absent longer than its grace
//! period is **moved**: recorded on another cell (another zone first, then the same
//! zone; a cell with the `local` volume driver and room in its pool), its epoch bumped,
//! and filled from its newest good backup (COMPLETED and not failed verification) by a
//! restore task; until that task has finished nothing else mounts it. The grace period
//! is longer than the cell's presence TTL plus the time the cell takes to fence itself
//! (it stops its containers mounting failover volumes once its presence lapses), so the
//! old copy is no longer mounted when the new one is.
//!
//! A volume with `--failover standby` keeps a copy on another cell, refreshed from
//! every new good backup ([`standby`]); it moves onto that cell, whose copy becomes the
//! volume at once when it holds the newest good backup (refilled otherwise).

use std::collections::HashMap;

pub mod standby;

use crate::errors::ErrorName;
use crate::models::volume::{Failover, State as VolumeState};
use crate::models::{backup::State as BackupState, Backup, CellPresence, Volume};

/// The grace period of a volume that says none (`failover_grace_ns` = 0).
pub const DEFAULT_GRACE_NS: i64 = 60_000_000_000;

/// What a cell needs between its presence lapsing and its containers mounting
/// failover volumes being stopped: the grace period must cover the TTL and this.
pub const FENCE_MARGIN_NS: i64 = 10_000_000_000;

/// The volume driver whose volumes live on one cell.
const LOCAL_DRIVER: &str = "local";

/// A volume's grace period in nanoseconds.
pub fn grace_ns(v: &Volume) -> i64 {
    if v.failover_grace_ns > 0 {
        v.failover_grace_ns
    } else {
        DEFAULT_GRACE_NS
    }
}

/// Checks a requested grace period against the cells' presence TTL: it must cover the
/// TTL and the self-fence margin, or two copies could be mounted at once.
pub fn check_grace(grace_ns: i64, presence_ttl_ns: i64) -> Result<(), String> {
    let least = presence_ttl_ns + FENCE_MARGIN_NS;
    if grace_ns != 0 && grace_ns < least {
        return Err(format!(
            "failover grace {}s is shorter than the cells' presence TTL plus the fence margin ({}s): use at least {}s",
            grace_ns / 1_000_000_000,
            least / 1_000_000_000,
            (least + 999_999_999) / 1_000_000_000
        ));
    }
    Ok(())
}

/// The cells' presence TTL unless they are started with another (`lattice cell`).
pub const DEFAULT_PRESENCE_TTL_NS: i64 = 15_000_000_000;

/// The name of a failover mode as `ltc` and the JSON API spell it.
pub fn mode_name(f: Failover) -> &'static str {
    match f {
        Failover::None => "none",
        Failover::Restore => "restore",
        Failover::Standby => "standby",
    }
}

/// Parses `none`, `restore` or `standby`.
pub fn parse_mode(s: &str) -> Result<Failover, String> {
    match s {
        "" | "none" => Ok(Failover::None),
        "restore" => Ok(Failover::Restore),
        "standby" => Ok(Failover::Standby),
        _ => Err(format!("failover {s:?}: use restore, standby or none")),
    }
}

/// A cell the brain saw and no longer sees: since when, its zone then, and the
/// presence TTL it said it had (0: never seen, or not said).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostCell {
    pub since: i64,
    pub zone: String,
    pub lease_ttl_ns: i64,
}

/// How long volume `v` waits once `lost` is gone: its grace period (checked against
/// the default presence TTL when it was set), but never less than the lost cell's
/// own TTL plus the fence margin when it said one: a cell started with a longer
/// `--lease-ttl` fences itself later.
pub fn wait_ns(v: &Volume, lost: &LostCell) -> i64 {
    match lost.lease_ttl_ns {
        ttl if ttl > 0 => grace_ns(v).max(ttl.saturating_add(FENCE_MARGIN_NS)),
        _ => grace_ns(v),
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Record `volume` (now on `from`, at `epoch`) on cell `to` and restore `backup`
    /// into it; `from` was lost at `lost_at`.
    Move {
        volume: String,
        from: String,
        to: String,
        epoch: u64,
        backup: String,
        lost_at: i64,
    },
    /// `volume` waits for a failover but cannot have one (why), logged and counted.
    Stuck { volume: String, why: String },
}

/// What the decision looks at.
pub struct View<'a> {
    pub volumes: &'a [Volume],
    /// The cells present now.
    pub cells: &'a [CellPresence],
    /// Cells seen before and absent now.
    pub lost: &'a HashMap<String, LostCell>,
    pub backups: &'a [Backup],
    pub now: i64,
}

/// Whether backup `b` may fill a failed-over volume: completed and not failed
/// verification.
pub fn good(b: &Backup) -> bool {
    b.state() == BackupState::Completed && !b.verified.starts_with("failed")
}

/// The newest good backup of `volume`.
pub fn newest_good<'a>(backups: &'a [Backup], volume: &str) -> Option<&'a Backup> {
    backups
        .iter()
        .filter(|b| b.volume == volume && good(b))
        .max_by_key(|b| (b.created_at, b.id.clone()))
}

/// Whether volume `v` asks for failover and may move (not being removed, placed).
fn may_fail_over(v: &Volume) -> bool {
    v.failover() != Failover::None
        && !v.cell_id.is_empty()
        && matches!(v.state(), VolumeState::Ready | VolumeState::Pending)
        // A volume never made on its cell holds no data to lose: only a copy that was
        // made once (READY), or one already being refilled by a failover, moves.
        && (v.state() == VolumeState::Ready || v.epoch > 0)
}

/// The cell volume `v` goes to: a present cell with the local driver whose pool has
/// room for what `v` held, in another zone than `lost_zone` first, then the one whose
/// volumes (`volumes`) hold the fewest bytes, then the smallest id.
fn target<'a>(
    cells: &'a [CellPresence],
    volumes: &[Volume],
    v: &Volume,
    lost_zone: &str,
) -> Option<&'a CellPresence> {
    let held = |id: &str| -> u64 {
        volumes
            .iter()
            .filter(|o| o.cell_id == id)
            .map(|o| o.size_bytes)
            .sum()
    };
    let room = |c: &CellPresence| {
        // (a cell that reports no pool figures is not judged by them)
        c.volume_pool_bytes == 0
            || c.volume_pool_bytes.max(c.volume_pool_max_bytes)
                >= c.volume_pool_used_bytes + v.used_bytes
    };
    cells
        .iter()
        .filter(|c| c.cell_id != v.cell_id)
        .filter(|c| c.volume_drivers.iter().any(|d| d == LOCAL_DRIVER))
        .filter(|c| room(c))
        .min_by_key(|c| {
            (
                !lost_zone.is_empty() && c.zone == lost_zone,
                held(&c.cell_id),
                c.cell_id.clone(),
            )
        })
}

/// The steps for `view`: each volume asking for failover whose cell has been lost
/// longer than its grace period moves (or is stuck, saying why). Volumes moved in this
/// decision count for the choice of the next ones' cells.
pub fn decide(view: &View) -> Vec<Step> {
    let mut steps = vec![];
    let mut placed: Vec<Volume> = view.volumes.to_vec();
    let mut due: Vec<&Volume> = view
        .volumes
        .iter()
        .filter(|v| may_fail_over(v))
        .filter(|v| !view.cells.iter().any(|c| c.cell_id == v.cell_id))
        .filter(|v| {
            view.lost
                .get(&v.cell_id)
                .is_some_and(|l| view.now - l.since >= wait_ns(v, l))
        })
        .collect();
    due.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    for v in due {
        let lost = &view.lost[&v.cell_id];
        let Some(b) = newest_good(view.backups, &v.name) else {
            steps.push(Step::Stuck {
                volume: v.name.clone(),
                why: format!(
                    "cell {} is lost and volume {} has no good backup to restore from",
                    v.cell_id, v.name
                ),
            });
            continue;
        };
        let to = if standby::takes_over(v, view) {
            view.cells.iter().find(|c| c.cell_id == v.standby_cell_id)
        } else {
            target(view.cells, &placed, v, &lost.zone)
        };
        let Some(to) = to else {
            steps.push(Step::Stuck {
                volume: v.name.clone(),
                why: format!(
                    "cell {} is lost and no other cell with the local volume driver has room for volume {}",
                    v.cell_id, v.name
                ),
            });
            continue;
        };
        for p in placed.iter_mut().filter(|p| p.name == v.name) {
            p.cell_id = to.cell_id.clone();
        }
        steps.push(Step::Move {
            volume: v.name.clone(),
            from: v.cell_id.clone(),
            to: to.cell_id.clone(),
            epoch: v.epoch,
            backup: b.id.clone(),
            lost_at: lost.since,
        });
    }
    steps
}

/// The data-loss window of a failover from `backup` after the cell was lost at
/// `lost_at`: what was written between the backup and the loss (never negative).
pub fn data_loss_window_ns(backup: &Backup, lost_at: i64) -> i64 {
    (lost_at - backup.created_at).max(0)
}

/// What a cell does with its local copy of a volume given the volume's record
/// (`None`: the BBS knows no such volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFate {
    /// The copy is the volume (or the BBS does not know it: left alone).
    Keep,
    /// The volume lives elsewhere now, or this copy is of an older epoch: rename it
    /// aside, never mount it, report it.
    Fence,
}

/// What cell `cell` does with its copy of a volume, made at `copy_epoch`, given the
/// volume's record.
pub fn copy_fate(record: Option<&Volume>, cell: &str, copy_epoch: u64) -> CopyFate {
    match record {
        None => CopyFate::Keep,
        Some(v) if v.cell_id != cell || v.epoch > copy_epoch => CopyFate::Fence,
        Some(_) => CopyFate::Keep,
    }
}

/// Why work `work` (a task guid or an app's process guid) may not start mounting
/// volume `v` on cell `cell` (None: it may). Off the volume's cell it would mount a
/// fenced or stale copy; while a failover refills the volume only the refilling task
/// mounts it.
pub fn mount_refusal(v: &Volume, cell: &str, work: &str) -> Option<(ErrorName, String)> {
    if v.cell_id.is_empty() || v.cell_id != cell {
        return Some((
            ErrorName::VolumeFenced,
            format!(
                "volume {} lives on cell {:?} (epoch {}): cell {cell} may not mount it",
                v.name, v.cell_id, v.epoch
            ),
        ));
    }
    if !v.failover_restore_task.is_empty() && v.failover_restore_task != work {
        return Some((
            ErrorName::VolumeNotReady,
            format!(
                "volume {} is being refilled from backup {} after cell {} was lost: it is mounted again once task {} finished",
                v.name, v.failed_over_backup, v.failed_over_from, v.failover_restore_task
            ),
        ));
    }
    None
}

/// The name a fenced copy is kept under: the volume, the epoch it was made at and
/// when it was fenced (seconds), never a name a volume can have (`@`).
pub fn fenced_name(volume: &str, copy_epoch: u64, at_secs: i64) -> String {
    format!("{volume}@fenced-e{copy_epoch}-{at_secs}")
}

#[cfg(test)]
mod tests;
