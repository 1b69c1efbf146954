//! Stateful failover on the BBS's side: the brain's move of a volume (the store's
//! compare-and-swap in `db::failover`), the restore task that refills the moved
//! volume from its backup once its new cell made it, and the settling of that task
//! (the volume is mounted again, or refilled again by a fresh task).

use lattice_specs::backup as plan;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::volume::State as VolumeState;
use lattice_specs::models::{Task, Volume};

use crate::api::ApiState;
use crate::backup_tasks;
use crate::db::{Db, DbError, Move};

/// A fresh guid for the task refilling `volume`.
fn refill_guid(volume: &str) -> String {
    plan::Purpose::Restore {
        volume: volume.to_string(),
        suffix: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
    }
    .task_guid()
}

/// Moves volume `m.name` to `m.to` to be refilled from backup `backup_id` (the
/// brain's `FailOverVolume`), through `db` (the brain's fenced view). Needs a BBS
/// that keeps the backups (`keeps_backups`).
pub async fn fail_over(
    db: &Db,
    keeps_backups: bool,
    m: &Move<'_>,
    backup_id: &str,
) -> Result<Volume, DbError> {
    if !keeps_backups {
        return Err(DbError::Conflict {
            name: ErrorName::BlobStoreUnavailable,
            message: "this BBS keeps no backups: a volume cannot be refilled from one".into(),
        });
    }
    let b = db.backup(backup_id).await?;
    let v = db.fail_over_volume(m, &b, &refill_guid(m.name)).await?;
    crate::metrics::FAILOVERS
        .with_label_values(&[&v.name])
        .inc();
    tracing::warn!(
        volume = %v.name, from = %m.from, to = %m.to, backup = %b.id, epoch = v.epoch,
        data_loss_window_s = v.data_loss_window_ns / 1_000_000_000,
        "volume failed over"
    );
    Ok(v)
}

/// Desires the task refilling volume `name` once its new cell made it (READY), if
/// a failover waits for one and it is not desired yet. Idempotent: cells report
/// their volumes at every sync.
pub async fn refill(s: &ApiState, name: &str) -> Result<(), DbError> {
    let v = s.db.volume(name).await?;
    if v.failover_restore_task.is_empty() || v.state() != VolumeState::Ready {
        return Ok(());
    }
    let guid = v.failover_restore_task.clone();
    match s.db.task(&guid).await {
        Err(DbError::NotFound { .. }) => {}
        other => return other.map(|_| ()),
    }
    let b = s.db.backup(&v.failed_over_backup).await?;
    // The snapshot's repository (or, a legacy archive, its blob).
    let url = crate::backups::source_url(s, &b, &guid).map_err(crate::api::ApiError::into_db)?;
    let def = backup_tasks::restore_task(&guid, &b, &url, &v.name);
    match s.db.desire_task(&guid, plan::DOMAIN, def).await {
        Ok(_) | Err(DbError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    tracing::info!(volume = %v.name, backup = %b.id, task = %guid, "refilling a failed-over volume");
    Ok(())
}

/// Settles a finished refill task `t`: its volume is mounted again, or (failed)
/// gets a fresh task, desired when its cell next reports the volume READY.
pub async fn settle(s: &ApiState, t: &Task) -> Result<(), DbError> {
    let Some(plan::Purpose::Restore { volume, .. }) = plan::Purpose::of(&t.task_guid) else {
        return Ok(());
    };
    let Ok(v) = s.db.volume(&volume).await else {
        return Ok(());
    };
    if v.failover_restore_task != t.task_guid {
        return Ok(());
    }
    if t.failed {
        let retry = refill_guid(&volume);
        s.db.failover_refilled(&volume, &t.task_guid, Err((&t.failure_reason, &retry)))
            .await?;
        // Desired at the cell's next report of the volume (its sync interval paces
        // the retries).
        tracing::warn!(volume = %volume, reason = %t.failure_reason, "refilling a failed-over volume failed: trying again");
        Ok(())
    } else {
        s.db.failover_refilled(&volume, &t.task_guid, Ok(()))
            .await?;
        tracing::info!(volume = %volume, "failed-over volume refilled: its apps may mount it");
        Ok(())
    }
}
