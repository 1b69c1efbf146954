//! Tasks: desire, list, and every transition, checked by `lattice_specs::task`.

use lattice_specs::errors::ErrorName;
use lattice_specs::models::task::State;
use lattice_specs::models::{Task, TaskDefinition};
use lattice_specs::{now_nanos, task as task_sm, validation, ModelError};
use prost::Message;

use super::txn::Write;
use super::{task_key, Db, DbError, Result, TASK};

impl Db {
    pub async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        def: TaskDefinition,
    ) -> Result<Task> {
        validation::validate_task(task_guid, domain, &def)?;
        let copies = domain == lattice_specs::backup::DOMAIN;
        self.check_mounts_of(&def.volume_mounts, copies).await?;
        let task = task_sm::new_task(task_guid.into(), domain.into(), def, now_nanos());
        let key = task_key(task_guid);
        if self.create(&key, task.encode_to_vec(), 0).await?.is_none() {
            return Err(DbError::AlreadyExists {
                name: ErrorName::TaskGuidAlreadyExists,
                message: format!("task {task_guid} already exists"),
            });
        }
        Ok(task)
    }

    pub async fn tasks(&self, domain: &str, cell_id: &str) -> Result<Vec<Task>> {
        let all: Vec<Task> = self.list(TASK).await?;
        Ok(all
            .into_iter()
            .filter(|t| {
                (domain.is_empty() || t.domain == domain)
                    && (cell_id.is_empty() || t.cell_id == cell_id)
            })
            .collect())
    }

    pub async fn task(&self, guid: &str) -> Result<Task> {
        self.get(&task_key(guid))
            .await?
            .map(|(t, _)| t)
            .ok_or_else(|| DbError::task_not_found(guid))
    }

    pub(super) async fn modify_task<R>(
        &self,
        guid: &str,
        mut f: impl FnMut(&mut Task) -> std::result::Result<R, ModelError>,
    ) -> Result<(Task, R)> {
        let mut completed_now = false;
        let out = self
            .modify(&task_key(guid), |cur: Option<Task>| {
                let mut t = cur.ok_or_else(|| DbError::task_not_found(guid))?;
                let before = t.clone();
                let r = f(&mut t)?;
                if t == before {
                    return Ok((Write::Nothing, (t, r)));
                }
                completed_now = before.state() != State::Completed && t.state() == State::Completed;
                Ok((Write::Put(t.clone()), (t, r)))
            })
            .await?;
        // A scheduled run's schedule says how its latest run went.
        if completed_now && !out.0.schedule.is_empty() {
            self.schedule_run_completed(&out.0).await;
        }
        Ok(out)
    }

    /// Returns whether the cell should run the task (false: it already does).
    /// A task mounting a volume that lives on another cell, or that a failover is
    /// refilling (unless it is the refill), is refused (`VolumeFenced`,
    /// `VolumeNotReady`).
    pub async fn start_task(&self, guid: &str, cell_id: &str) -> Result<bool> {
        let t = self.task(guid).await?;
        if t.state() == State::Pending {
            if let Some(d) = &t.definition {
                self.check_mount_cell(&d.volume_mounts, cell_id, guid)
                    .await?;
            }
        }
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::start(t, cell_id, now))
            .await?
            .1)
    }

    pub async fn cancel_task(&self, guid: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self.modify_task(guid, |t| task_sm::cancel(t, now)).await?.0)
    }

    pub async fn fail_task(&self, guid: &str, reason: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::fail(t, reason, now))
            .await?
            .0)
    }

    pub async fn reject_task(&self, guid: &str, reason: &str) -> Result<Task> {
        let now = now_nanos();
        let max = self.max_task_retries;
        Ok(self
            .modify_task(guid, |t| task_sm::reject(t, reason, max, now))
            .await?
            .0)
    }

    pub async fn complete_task(
        &self,
        guid: &str,
        cell_id: &str,
        failed: bool,
        reason: &str,
        result: &str,
    ) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| {
                task_sm::complete(t, cell_id, failed, reason, result, now)
            })
            .await?
            .0)
    }

    pub async fn resolving_task(&self, guid: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::resolving(t, now))
            .await?
            .0)
    }

    pub async fn delete_task(&self, guid: &str) -> Result<()> {
        self.modify(&task_key(guid), |cur: Option<Task>| {
            let t = cur.ok_or_else(|| DbError::task_not_found(guid))?;
            task_sm::check_delete(&t)?;
            Ok((Write::Delete, ()))
        })
        .await
    }
}
