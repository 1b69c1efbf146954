//! Volume backups (recorded with the task that makes them).

use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::volume::State as VolumeState;
use lattice_specs::models::{Backup, Task, TaskDefinition, Volume};
use lattice_specs::validation;
use lattice_specs::{now_nanos, task as task_sm};
use prost::Message;

use super::txn::{Attempts, Write};
use super::{task_key, Db, DbError, Result, BACKUP, VOLUME};
use crate::store::{Compare, Op, Txn};

impl Db {
    /// Records backup `b` and creates the task that makes it, both or neither. A
    /// backup with the same id (a schedule's slot already filled) is AlreadyExists.
    pub async fn create_backup(&self, b: &Backup, def: TaskDefinition) -> Result<Task> {
        validation::validate_task(&b.task_guid, lattice_specs::backup::DOMAIN, &def)?;
        let (bk, tk) = (format!("{BACKUP}{}", b.id), task_key(&b.task_guid));
        // The volume's record changes as its cell reports its use: retry then.
        let mut attempts = Attempts::on(&bk);
        loop {
            attempts.next()?;
            let (v, vrev) = self
                .get::<Volume>(&format!("{VOLUME}{}", b.volume))
                .await?
                .ok_or_else(|| DbError::volume_not_found(&b.volume))?;
            if v.state() != VolumeState::Ready {
                return Err(DbError::Conflict {
                    name: ErrorName::VolumeNotReady,
                    message: format!(
                        "volume {} is {}: only a READY volume can be backed up",
                        b.volume,
                        lattice_specs::volume::state_name(v.state())
                    ),
                });
            }
            let task = task_sm::new_task(
                b.task_guid.clone(),
                lattice_specs::backup::DOMAIN.into(),
                def.clone(),
                now_nanos(),
            );
            let r = self
                .txn(
                    Txn::new()
                        .when(Compare::absent(&bk))
                        .when(Compare::absent(&tk))
                        // The volume still is as we saw it (not being removed meanwhile).
                        .when(Compare::ModRevision(format!("{VOLUME}{}", b.volume), vrev))
                        .then(Op::put(&bk, b.encode_to_vec()))
                        .then(Op::put(&tk, task.encode_to_vec())),
                )
                .await?;
            if !r.succeeded {
                if self.store.get(&bk).await?.is_some() {
                    return Err(DbError::AlreadyExists {
                        name: ErrorName::BackupAlreadyExists,
                        message: format!("backup {} already exists", b.id),
                    });
                }
                continue;
            }
            return Ok(task);
        }
    }

    /// Records backup `b` without its task (desired later: after its pre hook), when
    /// its volume is READY. A backup with the same id is AlreadyExists.
    pub async fn record_backup(&self, b: &Backup) -> Result<()> {
        let v = self.volume(&b.volume).await?;
        if v.state() != VolumeState::Ready {
            return Err(DbError::Conflict {
                name: ErrorName::VolumeNotReady,
                message: format!(
                    "volume {} is {}: only a READY volume can be backed up",
                    b.volume,
                    lattice_specs::volume::state_name(v.state())
                ),
            });
        }
        self.import_backup(b).await
    }

    pub async fn backups(&self) -> Result<Vec<Backup>> {
        self.list(BACKUP).await
    }

    pub async fn backup(&self, id: &str) -> Result<Backup> {
        self.get(&format!("{BACKUP}{id}"))
            .await?
            .map(|(b, _)| b)
            .ok_or_else(|| DbError::backup_not_found(id))
    }

    /// Read-modify-write a backup record (`f` returns whether it changed it).
    pub async fn modify_backup(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Backup) -> bool,
    ) -> Result<Backup> {
        self.modify(&format!("{BACKUP}{id}"), |cur: Option<Backup>| {
            let mut b = cur.ok_or_else(|| DbError::backup_not_found(id))?;
            let changed = f(&mut b);
            Ok((
                if changed {
                    Write::Put(b.clone())
                } else {
                    Write::Nothing
                },
                b,
            ))
        })
        .await
    }

    /// Records an imported backup (its archive already in the blob store).
    pub async fn import_backup(&self, b: &Backup) -> Result<()> {
        if self
            .create(&format!("{BACKUP}{}", b.id), b.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(DbError::AlreadyExists {
                name: ErrorName::BackupAlreadyExists,
                message: format!("backup {} already exists", b.id),
            });
        }
        Ok(())
    }

    /// Forgets a backup that is not running (its archive is the caller's to delete).
    pub async fn delete_backup(&self, id: &str) -> Result<Backup> {
        self.modify(&format!("{BACKUP}{id}"), |cur: Option<Backup>| {
            let b = cur.ok_or_else(|| DbError::backup_not_found(id))?;
            if b.state() == BackupState::Running {
                return Err(DbError::Conflict {
                    name: ErrorName::BackupRunning,
                    message: format!(
                        "backup {id} is still running (task {}): cancel it with `ltc cancel-task {}`",
                        b.task_guid, b.task_guid
                    ),
                });
            }
            Ok((Write::Delete, b))
        })
        .await
    }
}
