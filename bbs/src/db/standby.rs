//! Standby copies in the store (decided by `lattice_specs::failover::standby`): the
//! brain's placing and refreshing of a volume's standby copy (compare-and-swap on its
//! standby cell), its cell's report that the copy is made, the end of the task that
//! refreshed it, and who may mount it (only that task, on that cell).

use lattice_specs::errors::ErrorName;
use lattice_specs::failover::standby::RETRY_NS;
use lattice_specs::models::volume::{Failover, State as VolumeState};
use lattice_specs::models::Volume;
use lattice_specs::now_nanos;

use super::txn::Write;
use super::{Db, DbError, Result, VOLUME};

/// What a tend of a standby copy did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tended {
    /// The copy is kept on another cell now (its cell makes it empty).
    Placed,
    /// Task `standby_task` of the volume (returned) is to restore its
    /// `standby_task_backup` into the copy.
    Refresh(Box<Volume>),
    /// The copy holds that backup already.
    Current,
}

fn moved_on(v: &Volume, why: &str) -> DbError {
    DbError::Conflict {
        name: ErrorName::VolumeAlreadyPlaced,
        message: format!(
            "volume {} ({} on cell {:?}, standby on {:?}) {why}",
            v.name,
            lattice_specs::volume::state_name(v.state()),
            v.cell_id,
            v.standby_cell_id
        ),
    }
}

/// Clears what volume `v` knew of a standby copy (it has none now).
pub(super) fn forget_standby(v: &mut Volume) {
    v.standby_cell_id.clear();
    v.standby_backup.clear();
    v.standby_ready = false;
    v.standby_task.clear();
    v.standby_task_backup.clear();
    v.standby_reason.clear();
    v.standby_retry_at = 0;
}

impl Db {
    /// The brain's `TendStandby` on volume `name`, whose standby copy it found on
    /// `from`: keep the copy on `to` from now on (`to` ≠ `from`), or have task `task`
    /// restore `backup` into the copy (made by its cell, no refresh running).
    /// `VolumeAlreadyPlaced` when the volume moved on meanwhile.
    pub async fn tend_standby(
        &self,
        name: &str,
        (from, to): (&str, &str),
        backup: &str,
        task: &str,
    ) -> Result<Tended> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.failover() != Failover::Standby
                || v.state() != VolumeState::Ready
                || !v.failover_restore_task.is_empty()
            {
                return Err(moved_on(&v, "keeps no standby copy now"));
            }
            if v.standby_cell_id != from {
                return Err(moved_on(&v, "moved its standby copy on"));
            }
            if to != from {
                if to == v.cell_id || to.is_empty() {
                    return Err(DbError::Conflict {
                        name: ErrorName::InvalidRequest,
                        message: format!(
                            "volume {name}'s standby copy goes to another cell than its own, not {to:?}"
                        ),
                    });
                }
                forget_standby(&mut v);
                v.standby_cell_id = to.to_string();
                v.updated_at = now_nanos();
                return Ok((Write::Put(v), Tended::Placed));
            }
            if v.standby_backup == backup {
                return Ok((Write::Nothing, Tended::Current));
            }
            if !v.standby_ready || !v.standby_task.is_empty() {
                return Err(moved_on(
                    &v,
                    "has a standby copy not made yet, or one being refreshed",
                ));
            }
            v.standby_task = task.to_string();
            v.standby_task_backup = backup.to_string();
            v.updated_at = now_nanos();
            Ok((Write::Put(v.clone()), Tended::Refresh(Box::new(v))))
        })
        .await
    }

    /// Cell `cell` reports volume `name`'s standby copy made (`Ok`) or not (why): the
    /// copy may be refreshed once made; a failure waits [`RETRY_NS`].
    pub async fn standby_made(
        &self,
        name: &str,
        cell: &str,
        made: std::result::Result<(), &str>,
    ) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let Some(mut v) = cur else {
                return Ok((Write::Nothing, ()));
            };
            if v.standby_cell_id != cell {
                return Ok((Write::Nothing, ()));
            }
            let before = v.clone();
            match made {
                Ok(()) => {
                    v.standby_ready = true;
                    if v.standby_task.is_empty() && v.standby_reason.starts_with("making") {
                        v.standby_reason.clear();
                    }
                }
                Err(why) => {
                    v.standby_ready = false;
                    v.standby_reason =
                        format!("making the standby copy on cell {cell} failed: {why}");
                    if before.standby_reason != v.standby_reason {
                        v.standby_retry_at = now_nanos() + RETRY_NS;
                    }
                }
            }
            if v == before {
                return Ok((Write::Nothing, ()));
            }
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }

    /// Task `task` refreshing volume `name`'s standby copy finished: the copy holds
    /// the task's backup (`Ok`), or not (why; the next refresh waits [`RETRY_NS`]).
    pub async fn standby_refreshed(
        &self,
        name: &str,
        task: &str,
        outcome: std::result::Result<(), &str>,
    ) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let Some(mut v) = cur else {
                return Ok((Write::Nothing, ()));
            };
            if v.standby_task != task {
                return Ok((Write::Nothing, ()));
            }
            match outcome {
                Ok(()) => {
                    v.standby_backup = std::mem::take(&mut v.standby_task_backup);
                    v.standby_reason.clear();
                    v.standby_retry_at = 0;
                }
                Err(why) => {
                    v.standby_reason = format!(
                        "refreshing the standby copy from backup {} failed: {why}",
                        v.standby_task_backup
                    );
                    v.standby_task_backup.clear();
                    v.standby_retry_at = now_nanos() + RETRY_NS;
                }
            }
            v.standby_task.clear();
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }
}

/// Why work `work` may not mount `volume`'s standby copy on cell `cell` (None: it
/// may): only the task refreshing it, on the cell keeping it.
pub(super) fn standby_mount_refusal(v: &Volume, cell: &str, work: &str) -> Option<DbError> {
    if v.standby_cell_id == cell && !v.standby_task.is_empty() && v.standby_task == work {
        return None;
    }
    Some(DbError::Conflict {
        name: ErrorName::VolumeFenced,
        message: format!(
            "the standby copy of volume {} (on cell {:?}) is mounted only by the task refreshing it, not by {work} on cell {cell}",
            v.name, v.standby_cell_id
        ),
    })
}
