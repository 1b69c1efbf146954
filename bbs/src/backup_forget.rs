//! Retention's removal of backups that live in a repository: a backup removed (by its
//! schedule's retention, or `DELETE /v1/backups/ID`) is first marked `forgetting`
//! (`Db::mark_forgetting`); [`pass`] then desires, per volume, one **forget task**
//! ([`forget_task`]: a RepositoryAction `forget` with the Prune-scoped credential of
//! `ApiState::repo_url`) that forgets those snapshots and prunes the repository. When
//! it completes, [`settle`] deletes the records it forgot; when it fails they stay
//! (the failure noted on them) and a later pass tries again, once the failed task has
//! expired. Legacy backups (a tgz blob, no snapshot) are deleted at once as before
//! (`backups::delete`).

use lattice_specs::backup::{Purpose, DOMAIN};
use lattice_specs::models::{
    action, task::State as TaskState, Action, Backup, RepositoryAction, Task, TaskDefinition,
};
use lattice_specs::repo::RepoOp;

use crate::api::ApiState;
use crate::db::{DbError, OwnedKind};

/// Where the forget task's helper writes its outcome (the task's result).
const RESULT_FILE: &str = "/tmp/lattice-forget.json";

/// The task that forgets `snapshots` from the repository at `repository` (a `rest:` URL
/// with the task's Prune credential) and prunes it.
pub fn forget_task(task_guid: &str, repository: &str, snapshots: &[String]) -> TaskDefinition {
    TaskDefinition {
        rootfs: crate::backup_tasks::ROOTFS.into(),
        action: Some(Action {
            action: Some(action::Action::Repository(RepositoryAction {
                op: RepoOp::Forget.as_str().into(),
                repository: repository.into(),
                forget: snapshots.to_vec(),
                log_source: "BACKUP".into(),
                outcome_file: RESULT_FILE.into(),
                ..Default::default()
            })),
        }),
        // Pruning reads the repository's whole index.
        memory_mb: 512,
        cpu_weight: 50,
        log_guid: task_guid.into(),
        log_source: "BACKUP".into(),
        result_file: RESULT_FILE.into(),
        ..Default::default()
    }
}

/// The snapshots forget task `t` forgets.
fn forgotten(t: &Task) -> &[String] {
    let a = t.definition.as_ref().and_then(|d| d.action.as_ref());
    match a.and_then(|a| a.action.as_ref()) {
        Some(action::Action::Repository(r)) => &r.forget,
        _ => &[],
    }
}

fn forget_volume(t: &Task) -> Option<String> {
    match Purpose::of(&t.task_guid) {
        Some(Purpose::Forget { volume, .. }) if t.domain == DOMAIN => Some(volume),
        _ => None,
    }
}

/// The forget tasks due: per volume with backups being forgotten and no forget task
/// (in any state: a failed one is retried once it has expired), the volume and the
/// snapshots to forget (sorted).
pub fn forgets_due(backups: &[Backup], tasks: &[Task]) -> Vec<(String, Vec<String>)> {
    let busy: Vec<String> = tasks.iter().filter_map(forget_volume).collect();
    let mut due: Vec<(String, Vec<String>)> = vec![];
    for b in backups
        .iter()
        .filter(|b| b.forgetting && !b.snapshot.is_empty())
    {
        if busy.contains(&b.volume) {
            continue;
        }
        match due.iter_mut().find(|(v, _)| *v == b.volume) {
            Some((_, snaps)) => snaps.push(b.snapshot.clone()),
            None => due.push((b.volume.clone(), vec![b.snapshot.clone()])),
        }
    }
    for (_, snaps) in &mut due {
        snaps.sort();
        snaps.dedup();
    }
    due.sort();
    due
}

/// Desires the forget tasks due (`tasks`: the backup domain's).
pub async fn pass(s: &ApiState, tasks: &[Task]) -> Result<(), DbError> {
    let backups = s.db.backups().await?;
    for (volume, snapshots) in forgets_due(&backups, tasks) {
        let guid = Purpose::Forget {
            volume: volume.clone(),
            suffix: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        }
        .task_guid();
        let url = match s.repo_url(&volume, &guid, RepoOp::Forget) {
            Ok(url) => url,
            Err(e) => {
                crate::metrics::BACKUP_FORGETS
                    .with_label_values(&["refused"])
                    .inc();
                tracing::warn!(%volume, "cannot forget backups of this volume: {e:?}");
                continue;
            }
        };
        // It belongs to the volume's owner, as the backups do.
        let db = match s.db.owner(OwnedKind::Volume, &volume).await? {
            Some(owner) => s.db.created_by(owner),
            None => s.db.clone(),
        };
        let def = forget_task(&guid, &url, &snapshots);
        match db.desire_task(&guid, DOMAIN, def).await {
            Ok(_) => {
                tracing::info!(%volume, task = %guid, snapshots = ?snapshots, "forgetting backups");
                crate::metrics::BACKUP_FORGETS
                    .with_label_values(&["started"])
                    .inc();
            }
            Err(e @ DbError::Fenced { .. }) => return Err(e),
            Err(e) => tracing::warn!(%volume, task = %guid, "forget task refused: {e}"),
        }
    }
    Ok(())
}

/// A finished forget task: on success the records of the snapshots it forgot go; on
/// failure they stay, with the failure noted (once) on each.
pub async fn settle(s: &ApiState, t: &Task) -> Result<(), DbError> {
    let Some(volume) = forget_volume(t) else {
        return Ok(());
    };
    if !matches!(t.state(), TaskState::Completed | TaskState::Resolving) {
        return Ok(());
    }
    let snapshots = forgotten(t);
    let mine: Vec<Backup> =
        s.db.backups()
            .await?
            .into_iter()
            .filter(|b| b.volume == volume && b.forgetting && snapshots.contains(&b.snapshot))
            .collect();
    for b in mine {
        if t.failed {
            let note = format!(
                "forget task {} failed (retried later): {}",
                t.task_guid, t.failure_reason
            );
            let mut noted = false;
            s.db.modify_backup(&b.id, |b| {
                // Per attempt: a lost compare-and-swap is tried again.
                noted = !b.warnings.contains(&note);
                if noted {
                    b.warnings.push(note.clone());
                }
                noted
            })
            .await?;
            if noted {
                crate::metrics::BACKUP_FORGETS
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(backup = %b.id, "{note}");
            }
            continue;
        }
        match s.db.delete_backup(&b.id).await {
            Ok(_) => {
                crate::metrics::BACKUP_FORGETS
                    .with_label_values(&["forgotten"])
                    .inc();
                tracing::info!(backup = %b.id, snapshot = %b.snapshot, task = %t.task_guid, "backup forgotten");
            }
            Err(DbError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::validation::validate_task;

    fn b(id: &str, volume: &str, snapshot: &str, forgetting: bool) -> Backup {
        Backup {
            id: id.into(),
            volume: volume.into(),
            snapshot: snapshot.into(),
            forgetting,
            ..Default::default()
        }
    }

    #[test]
    fn one_forget_task_per_volume_with_all_its_forgotten_snapshots() {
        let backups = [
            b("pg-1", "pg", "aaaa", true),
            b("pg-2", "pg", "bbbb", false),
            b("pg-3", "pg", "cccc", true),
            b("web-1", "web", "dddd", true),
            b("old-1", "old", "", true),
            b("busy-1", "busy", "eeee", true),
        ];
        let running = Task {
            task_guid: Purpose::Forget {
                volume: "busy".into(),
                suffix: "12345678".into(),
            }
            .task_guid(),
            domain: DOMAIN.into(),
            state: TaskState::Completed as i32,
            ..Default::default()
        };
        assert_eq!(
            forgets_due(&backups, &[running]),
            [
                (
                    "pg".to_string(),
                    vec!["aaaa".to_string(), "cccc".to_string()]
                ),
                ("web".to_string(), vec!["dddd".to_string()]),
            ]
        );
    }

    #[test]
    fn the_forget_task_is_a_valid_task_that_forgets_what_it_says() {
        let guid = "forget-pg-12345678";
        let url = "rest:http://lattice-task:s.forget-pg-12345678@10.0.0.1:8888/v1/repos/pg/";
        let def = forget_task(guid, url, &["aaaa".into(), "cccc".into()]);
        validate_task(guid, DOMAIN, &def).unwrap();
        let t = Task {
            task_guid: guid.into(),
            domain: DOMAIN.into(),
            definition: Some(def),
            ..Default::default()
        };
        assert_eq!(forgotten(&t), ["aaaa", "cccc"]);
        assert_eq!(forget_volume(&t).as_deref(), Some("pg"));
        let a = t.definition.unwrap().action.unwrap().action.unwrap();
        let action::Action::Repository(r) = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            RepoOp::parse(&r.op).map(RepoOp::scope),
            Some(lattice_specs::repo::RepoScope::Prune)
        );
        assert_eq!(r.repository, url);
    }
}
