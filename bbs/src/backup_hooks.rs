//! Application-consistent backups, the BBS's part: a backup with hooks is recorded
//! RUNNING without its task; [`start`] runs the pre hook in an instance mounting the
//! volume, then desires the task (or fails the backup, `BackupHookFailed`, and no
//! snapshot is taken); [`post`] runs the post hook once the task has taken its
//! snapshot (the settler calls it when the task is RUNNING or finished). Which
//! instance, and what a run means, is `lattice_specs::backup_hooks`'; a hook runs
//! through [`HookExec`]: [`RepExec`] opens an exec session on the instance's rep, as
//! `ltc ssh` does through the API (the BBS's cell client, mutual TLS).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use lattice_specs::backup_hooks::{self as plan, HookEnd, HookStatus, HookTarget, NoInstance};
use lattice_specs::exec::{Control, ExecRequest, Frame, REP_EXEC};
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::{Backup, BackupHooks, TaskDefinition};
use lattice_specs::now_nanos;
use tokio_tungstenite::tungstenite::Message;

use crate::cell_client::{CellClient, RepSocket};
use crate::db::{Db, DbError};

/// Runs one command (`sh -c COMMAND`) in an instance, within a timeout: how it ended
/// and its output (stdout and stderr, bounded to `plan::HOOK_OUTPUT_LIMIT`).
pub trait HookExec: Send + Sync + 'static {
    fn run(
        &self,
        target: &HookTarget,
        command: &str,
        timeout: Duration,
    ) -> BoxFuture<'static, (HookEnd, String)>;
}

/// [`HookExec`] over the rep's exec WebSocket.
#[derive(Clone)]
pub struct RepExec {
    pub db: Db,
    pub cells: CellClient,
}

impl HookExec for RepExec {
    fn run(
        &self,
        target: &HookTarget,
        command: &str,
        timeout: Duration,
    ) -> BoxFuture<'static, (HookEnd, String)> {
        let (me, target, command) = (self.clone(), target.clone(), command.to_string());
        Box::pin(async move {
            let mut out = plan::BoundedOutput::new(plan::HOOK_OUTPUT_LIMIT);
            let end = match me.open(&target).await {
                Ok(ws) => session(ws, &command, timeout, &mut out).await,
                Err(why) => HookEnd::Broken(why),
            };
            (end, out.text())
        })
    }
}

impl RepExec {
    /// An exec WebSocket to the instance's container on its cell.
    async fn open(&self, t: &HookTarget) -> Result<RepSocket, String> {
        let cells = self.db.cells().await.map_err(|e| e.to_string())?;
        let cell = cells
            .iter()
            .find(|c| c.cell_id == t.cell_id)
            .ok_or_else(|| format!("cell {} is not present", t.cell_id))?;
        let base = self
            .cells
            .base_url(&cell.cell_id, &cell.rep_address)
            .ok_or_else(|| format!("cell {} cannot be asked", t.cell_id))?;
        let path = REP_EXEC.replace("{handle}", &lattice_specs::path_segment(&t.instance_guid));
        self.cells
            .websocket(&format!("{base}{path}"))
            .await
            .map_err(|e| e.to_string())
    }
}

/// One exec session: the request, stdin closed, then the output until the exit status
/// (or the timeout: the process is killed).
async fn session(
    mut ws: RepSocket,
    command: &str,
    timeout: Duration,
    out: &mut plan::BoundedOutput,
) -> HookEnd {
    let request = ExecRequest {
        command: vec!["sh".into(), "-c".into(), command.into()],
        who: plan::HOOK_WHO.into(),
        ..Default::default()
    };
    let json = serde_json::to_string(&request).expect("an exec request serializes");
    let eof = Frame::Control(Control::Eof).encode();
    if let Err(e) = async {
        ws.send(Message::text(json)).await?;
        ws.send(Message::binary(eof)).await
    }
    .await
    {
        return HookEnd::Broken(format!("sending the command: {e}"));
    }
    let end = tokio::time::timeout(timeout, read_until_exit(&mut ws, out)).await;
    let end = end.unwrap_or(HookEnd::TimedOut(timeout));
    if matches!(end, HookEnd::TimedOut(_)) {
        let kill = Frame::Control(Control::Signal {
            signal: "KILL".into(),
        });
        let _ = ws.send(Message::binary(kill.encode())).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    end
}

async fn read_until_exit(ws: &mut RepSocket, out: &mut plan::BoundedOutput) -> HookEnd {
    while let Some(msg) = ws.next().await {
        let bytes = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => return HookEnd::Broken(format!("the session broke: {e}")),
        };
        match Frame::decode(&bytes) {
            Ok(Frame::Stdout(b) | Frame::Stderr(b)) => out.push(&b),
            Ok(Frame::Control(Control::Exit { status, .. })) => return HookEnd::Exited(status),
            Ok(Frame::Control(Control::Error { name, message })) => {
                return HookEnd::Broken(format!("{name}: {message}"))
            }
            Ok(_) => {}
            Err(e) => return HookEnd::Broken(e.to_string()),
        }
    }
    HookEnd::Broken("the session closed before the hook's exit status came".into())
}

/// The instance that runs `volume`'s hooks now.
async fn instance(
    db: &Db,
    volume: &str,
    app: &str,
) -> Result<Result<HookTarget, NoInstance>, DbError> {
    let apps = db.desired_lrps("").await?;
    let instances = db.actual_lrps("", "", app, None).await?;
    Ok(plan::choose_instance(volume, app, &apps, &instances))
}

/// One hook's run, recorded in the metrics: Ok, or why it failed; its output; the
/// instance (label) it ran in.
async fn run_hook(
    exec: &dyn HookExec,
    which: &str,
    t: &HookTarget,
    command: &str,
    hooks: &BackupHooks,
) -> (Result<(), String>, String) {
    let (end, output) = exec.run(t, command, plan::timeout(hooks)).await;
    let verdict = plan::verdict(which, &t.label(), &end);
    let outcome = if verdict.is_ok() { "ok" } else { "failed" };
    crate::metrics::BACKUP_HOOKS
        .with_label_values(&[which, outcome])
        .inc();
    (verdict, output)
}

/// Fails RUNNING backup `id` before its task was desired (`why`), with the hooks'
/// state `status` and, when a hook ran, its output and instance.
async fn fail(
    db: &Db,
    id: &str,
    why: &str,
    status: HookStatus,
    ran: Option<(&str, &str, &str)>,
) -> Result<(), DbError> {
    let done = db
        .modify_backup(id, |b| {
            if b.state() != BackupState::Running {
                return false;
            }
            b.state = BackupState::Failed as i32;
            b.failure_reason = why.to_string();
            b.finished_at = now_nanos();
            b.hook_status = status.as_str().into();
            if let Some((which, instance, output)) = ran {
                b.hook_instance = instance.into();
                b.hook_output = plan::append_output(&b.hook_output, which, output);
            }
            true
        })
        .await?;
    crate::metrics::BACKUPS.with_label_values(&["FAILED"]).inc();
    crate::metrics::BACKUP_ALERTS
        .with_label_values(&[&done.volume, "failed"])
        .inc();
    tracing::warn!(backup = %id, reason = %why, "backup failed before its snapshot");
    Ok(())
}

/// Runs backup `b`'s pre hook (it is recorded RUNNING, hooks `PreRunning`), then
/// desires its task `def` through `db` (its owner's). Err: why the backup failed
/// (recorded on it; a post hook still to run has run).
pub async fn start(
    exec: Arc<dyn HookExec>,
    db: Db,
    b: Backup,
    def: TaskDefinition,
) -> Result<(), String> {
    let hooks = b.hooks.clone().unwrap_or_default();
    let store = |e: DbError| format!("recording the backup's hooks: {e}");
    let mut next = if hooks.post.is_empty() {
        HookStatus::Ok
    } else {
        HookStatus::PostPending
    };
    let mut ran: Option<(String, String)> = None;
    let mut warning = None;
    if !hooks.pre.is_empty() {
        match instance(&db, &b.volume, &hooks.app).await.map_err(store)? {
            Err(NoInstance::Fail(why)) => {
                crate::metrics::BACKUP_HOOKS
                    .with_label_values(&["pre", "failed"])
                    .inc();
                fail(&db, &b.id, &why, HookStatus::PreFailed, None)
                    .await
                    .map_err(store)?;
                return Err(why);
            }
            Err(NoInstance::Skip(w)) => {
                crate::metrics::BACKUP_HOOKS
                    .with_label_values(&["pre", "skipped"])
                    .inc();
                tracing::warn!(backup = %b.id, "{w}");
                (next, warning) = (HookStatus::Skipped, Some(w));
            }
            Ok(t) => {
                let (verdict, output) = run_hook(&*exec, "pre", &t, &hooks.pre, &hooks).await;
                if let Err(why) = verdict {
                    let ran = Some(("pre", t.label(), output));
                    let ran = ran.as_ref().map(|(w, i, o)| (*w, i.as_str(), o.as_str()));
                    fail(&db, &b.id, &why, HookStatus::PreFailed, ran)
                        .await
                        .map_err(store)?;
                    return Err(why);
                }
                ran = Some((t.label(), output));
            }
        }
    }
    db.modify_backup(&b.id, |r| {
        r.hook_status = next.as_str().into();
        if let Some((instance, output)) = &ran {
            r.hook_instance = instance.clone();
            r.hook_output = plan::append_output(&r.hook_output, "pre", output);
        }
        r.warnings.extend(warning.clone());
        true
    })
    .await
    .map_err(store)?;
    if let Err(e) = db
        .desire_task(&b.task_guid, lattice_specs::backup::DOMAIN, def)
        .await
    {
        let why = format!("its task could not be desired: {e}");
        fail(&db, &b.id, &why, next, None).await.map_err(store)?;
        if next == HookStatus::PostPending {
            post(&*exec, &db, &b.id).await.map_err(store)?;
        }
        return Err(why);
    }
    tracing::info!(backup = %b.id, task = %b.task_guid, hooks = next.as_str(), "backup task desired after its pre hook");
    Ok(())
}

/// Runs backup `id`'s post hook, once: when its hooks are `PostPending` (the task took
/// its snapshot, or the backup failed after the pre hook). A failed post hook is a
/// warning on the backup: its snapshot is as good as it was.
pub async fn post(exec: &dyn HookExec, db: &Db, id: &str) -> Result<(), DbError> {
    let pending = HookStatus::PostPending.as_str();
    let b = db
        .modify_backup(id, |b| {
            if b.hook_status != pending {
                return false;
            }
            b.hook_status = HookStatus::PostRunning.as_str().into();
            true
        })
        .await?;
    if b.hook_status != HookStatus::PostRunning.as_str() {
        return Ok(());
    }
    let hooks = b.hooks.clone().unwrap_or_default();
    let (status, warning, ran) = match instance(db, &b.volume, &hooks.app).await? {
        Ok(t) => {
            let (verdict, output) = run_hook(exec, "post", &t, &hooks.post, &hooks).await;
            match verdict {
                Ok(()) => (HookStatus::Ok, None, Some((t.label(), output))),
                Err(why) => (HookStatus::PostFailed, Some(why), Some((t.label(), output))),
            }
        }
        Err(NoInstance::Fail(why) | NoInstance::Skip(why)) => {
            crate::metrics::BACKUP_HOOKS
                .with_label_values(&["post", "failed"])
                .inc();
            (HookStatus::PostFailed, Some(why), None)
        }
    };
    if let Some(w) = &warning {
        tracing::warn!(backup = %id, "post hook: {w}");
    }
    db.modify_backup(id, |b| {
        b.hook_status = status.as_str().into();
        if let Some((instance, output)) = &ran {
            b.hook_instance = instance.clone();
            b.hook_output = plan::append_output(&b.hook_output, "post", output);
        }
        if let Some(w) = &warning {
            b.warnings.push(format!("post hook: {w}"));
        }
        true
    })
    .await?;
    Ok(())
}

/// Whether RUNNING backup `b`, whose task does not exist, is still in its pre hook
/// (which may take its timeout, and some to desire the task) rather than lost.
pub fn in_pre_hook(b: &Backup, now: i64) -> bool {
    let timeout = plan::timeout(&b.hooks.clone().unwrap_or_default());
    b.hook_status == HookStatus::PreRunning.as_str()
        && now < b.created_at + (timeout + Duration::from_secs(30)).as_nanos() as i64
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use lattice_specs::models::{ActualLrpNetInfo, DesiredLrp, VolumeMount};
    use lattice_specs::testing::{desired_lrp, instance_key};

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    /// Records each run and answers the next canned end and output.
    #[derive(Default)]
    struct FakeExec {
        runs: Mutex<Vec<(String, String)>>,
        answers: Mutex<VecDeque<(HookEnd, String)>>,
    }

    impl FakeExec {
        fn answering(answers: &[(HookEnd, &str)]) -> Arc<FakeExec> {
            Arc::new(FakeExec {
                answers: Mutex::new(
                    answers
                        .iter()
                        .map(|(e, o)| (e.clone(), o.to_string()))
                        .collect(),
                ),
                ..Default::default()
            })
        }

        fn runs(&self) -> Vec<(String, String)> {
            self.runs.lock().unwrap().clone()
        }
    }

    impl HookExec for FakeExec {
        fn run(
            &self,
            target: &HookTarget,
            command: &str,
            _timeout: Duration,
        ) -> BoxFuture<'static, (HookEnd, String)> {
            self.runs
                .lock()
                .unwrap()
                .push((target.label(), command.to_string()));
            let answer = self.answers.lock().unwrap().pop_front();
            Box::pin(async move { answer.expect("a canned answer for every run") })
        }
    }

    /// A store with volume `pg` READY on cell-a; `running`: app `db` mounting it runs
    /// instance 0 there.
    async fn cluster(running: bool) -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("bbs.db")).unwrap();
        let db = Db::new(Arc::new(store));
        let lease = db.grant_lease(Duration::from_secs(60)).await.unwrap();
        let cell = lattice_specs::models::CellPresence {
            rep_address: "127.0.0.1:1".into(),
            capacity: Some(lattice_specs::models::CellCapacity {
                memory_mb: 1024,
                disk_mb: 1024,
                containers: 10,
            }),
            ..lattice_specs::testing::cell_presence("cell-a", &["local"])
        };
        db.set_cell_presence(&cell, lease).await.unwrap();
        db.create_volume("pg", 1 << 30, "cell-a").await.unwrap();
        db.set_volume_state(
            "pg",
            "cell-a",
            lattice_specs::models::volume::State::Ready,
            (1 << 30, 0),
            "",
        )
        .await
        .unwrap();
        let d = DesiredLrp {
            volume_mounts: vec![VolumeMount {
                driver: "local".into(),
                volume: "pg".into(),
                container_path: "/data".into(),
                ..Default::default()
            }],
            ..desired_lrp("db", 1)
        };
        db.desire_lrp(d).await.unwrap();
        if running {
            let ik = instance_key("db-i0", "cell-a");
            db.claim_actual_lrp("db", 0, &ik, 1).await.unwrap();
            db.start_actual_lrp("db", 0, &ik, ActualLrpNetInfo::default())
                .await
                .unwrap();
        }
        (db, dir)
    }

    /// Backup `pg-1` recorded RUNNING with `hooks`, as `backups::start_backup` does,
    /// and its task's definition.
    async fn recorded(db: &Db, hooks: BackupHooks) -> (Backup, TaskDefinition) {
        let b = Backup {
            id: "pg-1".into(),
            task_guid: "backup-pg-1".into(),
            volume: "pg".into(),
            repository: "pg".into(),
            state: BackupState::Running as i32,
            created_at: now_nanos(),
            hooks: Some(hooks),
            hook_status: HookStatus::PreRunning.as_str().into(),
            ..Default::default()
        };
        db.record_backup(&b).await.unwrap();
        let def = crate::backup_tasks::backup_task(
            &b,
            "rest:http://lattice-task:s.backup-pg-1@127.0.0.1:1/v1/repos/pg/",
        );
        (b, def)
    }

    fn hooks(pre: &str, post: &str, app: &str) -> BackupHooks {
        BackupHooks {
            pre: pre.into(),
            post: post.into(),
            app: app.into(),
            timeout_ns: 0,
        }
    }

    #[tokio::test]
    async fn a_pre_hook_that_succeeds_desires_the_task_and_the_post_hook_runs_once() {
        let (db, _dir) = cluster(true).await;
        let (b, def) = recorded(&db, hooks("sqlite3 db .backup dump", "rm dump", "")).await;
        let exec = FakeExec::answering(&[
            (HookEnd::Exited(0), "dumped 3 tables\n"),
            (HookEnd::Exited(0), "removed\n"),
        ]);
        start(exec.clone(), db.clone(), b, def).await.unwrap();
        db.task("backup-pg-1")
            .await
            .expect("the task is desired after the pre hook");
        let r = db.backup("pg-1").await.unwrap();
        assert_eq!(r.hook_status, HookStatus::PostPending.as_str());
        assert_eq!(r.hook_instance, "db/0");
        assert!(
            r.hook_output.contains("[pre hook]\ndumped 3 tables"),
            "{r:?}"
        );

        post(&*exec, &db, "pg-1").await.unwrap();
        post(&*exec, &db, "pg-1").await.unwrap();
        let r = db.backup("pg-1").await.unwrap();
        assert_eq!(r.hook_status, HookStatus::Ok.as_str());
        assert!(r.hook_output.contains("[post hook]\nremoved"), "{r:?}");
        assert_eq!(
            exec.runs(),
            [
                ("db/0".to_string(), "sqlite3 db .backup dump".to_string()),
                ("db/0".to_string(), "rm dump".to_string())
            ],
            "each hook once, in the instance mounting the volume"
        );
        assert_eq!(
            r.state(),
            BackupState::Running,
            "the task settles the backup"
        );
    }

    #[tokio::test]
    async fn a_failing_or_hanging_pre_hook_fails_the_backup_with_its_output_and_no_task() {
        for (end, why) in [
            (HookEnd::Exited(1), "exited with status 1"),
            (
                HookEnd::TimedOut(Duration::from_secs(2)),
                "did not finish within 2s",
            ),
        ] {
            let (db, _dir) = cluster(true).await;
            let (b, def) = recorded(&db, hooks("lock-db", "unlock-db", "db")).await;
            let exec = FakeExec::answering(&[(end, "database is locked\n")]);
            let e = start(exec.clone(), db.clone(), b, def).await.unwrap_err();
            assert!(e.contains(why), "{e}");
            let r = db.backup("pg-1").await.unwrap();
            assert_eq!(r.state(), BackupState::Failed);
            assert!(r.failure_reason.contains(why), "{r:?}");
            assert!(r.hook_output.contains("database is locked"), "{r:?}");
            assert_eq!(r.hook_status, HookStatus::PreFailed.as_str());
            assert!(r.finished_at > 0);
            assert!(
                matches!(db.task("backup-pg-1").await, Err(DbError::NotFound { .. })),
                "no snapshot is taken"
            );
            post(&*exec, &db, "pg-1").await.unwrap();
            assert_eq!(exec.runs().len(), 1, "no post hook after a failed pre hook");
        }
    }

    #[tokio::test]
    async fn without_a_running_instance_the_hooks_are_skipped_or_fail_when_the_app_was_named() {
        let (db, _dir) = cluster(false).await;
        let (b, def) = recorded(&db, hooks("sync", "", "")).await;
        let exec = FakeExec::answering(&[]);
        start(exec.clone(), db.clone(), b, def).await.unwrap();
        let r = db.backup("pg-1").await.unwrap();
        assert_eq!(r.hook_status, HookStatus::Skipped.as_str());
        assert!(r.warnings[0].contains("hooks skipped"), "{r:?}");
        db.task("backup-pg-1")
            .await
            .expect("a crash-consistent backup still");

        let (db, _dir) = cluster(false).await;
        let (b, def) = recorded(&db, hooks("sync", "", "db")).await;
        let e = start(exec.clone(), db.clone(), b, def).await.unwrap_err();
        assert!(
            e.contains("no running instance of db mounts volume pg"),
            "{e}"
        );
        assert_eq!(
            db.backup("pg-1").await.unwrap().state(),
            BackupState::Failed
        );
        assert!(exec.runs().is_empty());
    }

    #[tokio::test]
    async fn a_failing_post_hook_is_a_warning_and_a_backup_waits_for_its_pre_hook() {
        let (db, _dir) = cluster(true).await;
        let (b, def) = recorded(&db, hooks("", "unlock-db", "")).await;
        assert!(in_pre_hook(&b, b.created_at + 1));
        assert!(
            !in_pre_hook(&b, b.created_at + 91_000_000_000),
            "60 s + 30 s at most"
        );
        let exec = FakeExec::answering(&[(HookEnd::Exited(2), "no lock held\n")]);
        start(exec.clone(), db.clone(), b, def).await.unwrap();
        assert!(exec.runs().is_empty(), "no pre hook to run");
        post(&*exec, &db, "pg-1").await.unwrap();
        let r = db.backup("pg-1").await.unwrap();
        assert_eq!(r.hook_status, HookStatus::PostFailed.as_str());
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("post hook: the post hook exited with status 2")),
            "{r:?}"
        );
        assert_ne!(r.state(), BackupState::Failed);
    }
}
