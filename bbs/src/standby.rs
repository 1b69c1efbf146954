//! Standby copies on the BBS's side (`--failover standby`): the brain's `TendStandby`
//! (the store's compare-and-swap in `db::standby`), the task that restores a backup
//! into a volume's standby copy on the cell keeping it, and the settling of that task.

use lattice_specs::backup as plan;
use lattice_specs::bbs_api::TendStandbyRequest;
use lattice_specs::models::Task;
use lattice_specs::volume::standby_name;

use crate::api::ApiState;
use crate::backup_tasks;
use crate::db::{Db, DbError, Tended};

/// A fresh guid for a task refreshing `volume`'s standby copy.
fn refresh_guid(volume: &str) -> String {
    plan::Purpose::Standby {
        volume: volume.to_string(),
        suffix: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
    }
    .task_guid()
}

/// The brain's `TendStandby`, through `db` (its fenced view); with a public API
/// (`api`), a refresh's task is desired at once (else at the cell's next report).
pub async fn tend(api: Option<&ApiState>, db: &Db, r: &TendStandbyRequest) -> Result<(), DbError> {
    if r.from_cell == r.to_cell {
        let b = db.backup(&r.backup_id).await?;
        if b.volume != r.name || !lattice_specs::failover::good(&b) {
            return Err(DbError::Conflict {
                name: lattice_specs::errors::ErrorName::BackupNotCompleted,
                message: format!("backup {} is not a good backup of volume {}", b.id, r.name),
            });
        }
    }
    let tended = db
        .tend_standby(
            &r.name,
            (&r.from_cell, &r.to_cell),
            &r.backup_id,
            &refresh_guid(&r.name),
        )
        .await?;
    match tended {
        Tended::Placed => {
            crate::metrics::STANDBY.with_label_values(&["placed"]).inc();
            tracing::info!(volume = %r.name, from = %r.from_cell, to = %r.to_cell, "standby copy placed");
        }
        Tended::Refresh(v) => {
            tracing::info!(volume = %v.name, cell = %v.standby_cell_id, backup = %v.standby_task_backup, task = %v.standby_task, "refreshing a standby copy");
            if let Some(api) = api {
                ensure_refresh(api, &r.name).await?;
            }
        }
        Tended::Current => {}
    }
    Ok(())
}

/// Desires the task refreshing volume `name`'s standby copy if one is due and not
/// desired yet. Idempotent: the copy's cell reports it at every sync, so a refresh
/// recorded by a BBS that stopped before desiring its task is desired by the next.
pub async fn ensure_refresh(s: &ApiState, name: &str) -> Result<(), DbError> {
    let v = s.db.volume(name).await?;
    if v.standby_task.is_empty() {
        return Ok(());
    }
    let guid = v.standby_task.clone();
    match s.db.task(&guid).await {
        Err(DbError::NotFound { .. }) => {}
        other => return other.map(|_| ()),
    }
    let desired = async {
        let b = s.db.backup(&v.standby_task_backup).await?;
        let url =
            crate::backups::source_url(s, &b, &guid).map_err(crate::api::ApiError::into_db)?;
        let def = backup_tasks::restore_task(&guid, &b, &url, &standby_name(name));
        match s.db.desire_task(&guid, plan::DOMAIN, def).await {
            Ok(_) | Err(DbError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = desired.await {
        // Nothing will run: the copy keeps what it held, the brain retries later.
        s.db.standby_refreshed(name, &guid, Err(&e.to_string()))
            .await?;
        return Err(e);
    }
    Ok(())
}

/// Settles a finished refresh task `t`: the standby copy holds its backup now, or
/// (failed) keeps what it held and is refreshed again after a while.
pub async fn settle(s: &ApiState, t: &Task) -> Result<(), DbError> {
    let Some(plan::Purpose::Standby { volume, .. }) = plan::Purpose::of(&t.task_guid) else {
        return Ok(());
    };
    let outcome = if t.failed {
        Err(t.failure_reason.as_str())
    } else {
        Ok(())
    };
    s.db.standby_refreshed(&volume, &t.task_guid, outcome)
        .await?;
    let label = if t.failed {
        "refresh_failed"
    } else {
        "refreshed"
    };
    crate::metrics::STANDBY.with_label_values(&[label]).inc();
    match outcome {
        Ok(()) => tracing::info!(volume = %volume, task = %t.task_guid, "standby copy refreshed"),
        Err(why) => {
            tracing::warn!(volume = %volume, reason = %why, "refreshing a standby copy failed: trying again later")
        }
    }
    Ok(())
}
