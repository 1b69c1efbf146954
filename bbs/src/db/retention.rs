//! What backup retention and scheduled verification write: a backup schedule's policy
//! (`lattice_specs::retention::BackupPolicy`), the claim of a verification slot
//! (compare-and-swap on the schedule's `last_verify_at`, so a slot verifies once however
//! many brains try), and backups marked as being forgotten from their repository.

use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::schedule::Kind;
use lattice_specs::models::{Backup, Schedule};
use lattice_specs::retention::BackupPolicy;
use lattice_specs::validation::{self, ValidationErrors};

use super::schedules::schedule_key;
use super::txn::Write;
use super::{Db, DbError, Result, BACKUP};

fn no_backup_schedule(volume: &str) -> DbError {
    DbError::NotFound {
        name: ErrorName::ScheduleNotFound,
        message: format!(
            "volume {volume} has no backup schedule: set one with `ltc backup schedule {volume} --every daily`"
        ),
    }
}

impl Db {
    /// Sets the retention, verification and alert thresholds of `volume`'s backup
    /// schedule (which must exist).
    pub async fn set_backup_policy(&self, volume: &str, p: &BackupPolicy) -> Result<Schedule> {
        p.check().map_err(|(field, message)| {
            DbError::Invalid(ValidationErrors(vec![validation::FieldError {
                field: field.into(),
                message,
            }]))
        })?;
        self.modify(&schedule_key(volume), |cur: Option<Schedule>| {
            let mut s = cur
                .filter(|s| s.kind() == Kind::Backup)
                .ok_or_else(|| no_backup_schedule(volume))?;
            if BackupPolicy::of(&s) == *p {
                return Ok((Write::Nothing, s));
            }
            p.set(&mut s);
            Ok((Write::Put(s.clone()), s))
        })
        .await
    }

    /// Claims verification slot `slot_at` (Unix seconds) of backup schedule `name`:
    /// the schedule when this call claimed it, None when it was claimed before (or the
    /// schedule is paused, no longer verifies, or is gone).
    pub async fn claim_verify_slot(&self, name: &str, slot_at: i64) -> Result<Option<Schedule>> {
        self.modify(&schedule_key(name), |cur: Option<Schedule>| {
            let Some(mut s) = cur.filter(|s| {
                s.kind() == Kind::Backup
                    && !s.paused
                    && !s.verify_every.is_empty()
                    && slot_at > s.last_verify_at
            }) else {
                return Ok((Write::Nothing, None));
            };
            s.last_verify_at = slot_at;
            Ok((Write::Put(s.clone()), Some(s)))
        })
        .await
    }

    /// Marks backup `id` as being forgotten (its snapshot is removed from its repository
    /// by a forget task, and then the record goes). A running backup is refused as
    /// [`Db::delete_backup`] refuses it.
    pub async fn mark_forgetting(&self, id: &str) -> Result<Backup> {
        self.modify(&format!("{BACKUP}{id}"), |cur: Option<Backup>| {
            let mut b = cur.ok_or_else(|| DbError::backup_not_found(id))?;
            if b.state() == BackupState::Running {
                return Err(DbError::Conflict {
                    name: ErrorName::BackupRunning,
                    message: format!(
                        "backup {id} is still running (task {}): cancel it with `ltc cancel-task {}`",
                        b.task_guid, b.task_guid
                    ),
                });
            }
            if b.forgetting {
                return Ok((Write::Nothing, b));
            }
            b.forgetting = true;
            Ok((Write::Put(b.clone()), b))
        })
        .await
    }
}
