//! Schedules (`/lattice/v1/schedules/NAME`): periodic Tasks and volumes' backup
//! schedules, one record each, and the claim of a slot that makes a slot's run happen
//! exactly once however many brains try (compare-and-swap on the record, the run's
//! Task created in the same transaction). The cadences and the decisions are
//! `lattice_specs::schedule`'s.

use lattice_specs::errors::ErrorName;
use lattice_specs::models::schedule::{Kind, RunResult};
use lattice_specs::models::{BackupSchedule, Schedule, Task};
use lattice_specs::schedule as plan;
use lattice_specs::validation::{self, ValidationErrors};
use lattice_specs::{now_nanos, task as task_sm};
use prost::Message;

use super::txn::{Attempts, Write};
use super::{task_key, Db, DbError, OwnedKind, Result, SCHEDULE};
use crate::store::{Compare, Op, Txn};

pub const SCHEDULES: &str = "/lattice/v1/schedules/";

pub fn schedule_key(name: &str) -> String {
    format!("{SCHEDULES}{name}")
}

/// What claiming a slot did.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The slot was handled already (by another brain, or an earlier pass).
    Taken,
    /// Recorded as skipped.
    Skipped,
    /// The run's Task was created (task schedules).
    Task(Task),
    /// The slot was recorded as failed, for this reason (its run could not be made).
    Failed(String),
    /// The slot is the caller's: it starts the backup (backup schedules).
    Backup(Schedule),
}

fn invalid(field: &str, message: String) -> DbError {
    DbError::Invalid(ValidationErrors(vec![validation::FieldError {
        field: field.into(),
        message,
    }]))
}

fn not_found(name: &str) -> DbError {
    DbError::NotFound {
        name: ErrorName::ScheduleNotFound,
        message: format!("schedule {name} not found: `ltc schedules` lists them"),
    }
}

fn already_exists(name: &str) -> DbError {
    DbError::AlreadyExists {
        name: ErrorName::ScheduleAlreadyExists,
        message: format!(
            "schedule {name} already exists: remove it first (`ltc schedule remove {name}`) or choose another name"
        ),
    }
}

impl Db {
    /// Checks a new task schedule (its name, cadence and Task) and stores it;
    /// `ScheduleAlreadyExists` if the name is taken (by a backup schedule too). Its
    /// first run is the first slot that starts after now.
    pub async fn create_schedule(&self, mut s: Schedule) -> Result<Schedule> {
        s.set_kind(Kind::Task);
        let mut e = ValidationErrors::default();
        validation::check_guid(&mut e, "name", &s.name);
        if !e.0.is_empty() {
            return Err(e.into());
        }
        let cadence = plan::parse_cadence(&s.every).map_err(|c| invalid("every", c.to_string()))?;
        let def = s.task.clone().unwrap_or_default();
        // The longest guid a run of this name gets.
        let guid = plan::run_guid(&s.name, &plan::slot_label(0));
        validation::validate_task(&guid, &s.domain, &def).map_err(|mut e| {
            for f in &mut e.0 {
                f.field = match f.field.as_str() {
                    "task_guid" => "name (with -YYYYMMDD-HHMMSS, each run's task guid)".into(),
                    field => format!("task.{field}"),
                };
            }
            DbError::Invalid(e)
        })?;
        self.check_mounts(&def.volume_mounts).await?;
        let now = now_nanos();
        s.last_slot_at = cadence.slot_start(now / 1_000_000_000).unwrap_or_default();
        s.created_at = now;
        if self
            .create(&schedule_key(&s.name), s.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(already_exists(&s.name));
        }
        Ok(s)
    }

    /// Sets the backup schedule of `volume` (the schedule named after it), keeping
    /// what it has handled when it existed. A task schedule of that name is
    /// `ScheduleAlreadyExists`.
    pub async fn set_backup_schedule(&self, volume: &str, every: &str, keep: u32) -> Result<()> {
        plan::parse_backup_cadence(every).map_err(|c| invalid("every", c.to_string()))?;
        if keep == 0 {
            return Err(invalid("keep", "must be at least 1".into()));
        }
        self.volume(volume).await?;
        self.modify(&schedule_key(volume), |cur: Option<Schedule>| {
            let mut s = match cur {
                Some(s) if s.kind() == Kind::Task => return Err(already_exists(volume)),
                Some(s) => s,
                None => Schedule {
                    name: volume.into(),
                    kind: Kind::Backup as i32,
                    volume: volume.into(),
                    created_at: now_nanos(),
                    ..Default::default()
                },
            };
            s.every = every.into();
            s.keep = keep;
            Ok((Write::Put(s), ()))
        })
        .await
    }

    /// Sets (or, None, clears) the hooks of `volume`'s backup schedule.
    pub async fn set_backup_hooks(
        &self,
        volume: &str,
        hooks: Option<lattice_specs::models::BackupHooks>,
    ) -> Result<()> {
        self.modify(&schedule_key(volume), |cur: Option<Schedule>| {
            let mut s = cur
                .filter(|s| s.kind() == Kind::Backup)
                .ok_or_else(|| not_found(volume))?;
            s.hooks = hooks.clone();
            Ok((Write::Put(s), ()))
        })
        .await
    }

    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.list(SCHEDULES).await
    }

    pub async fn schedule(&self, name: &str) -> Result<Schedule> {
        self.get(&schedule_key(name))
            .await?
            .map(|(s, _)| s)
            .ok_or_else(|| not_found(name))
    }

    /// Removes a schedule (of `kind`, when given: a volume's backup schedule is
    /// removed only as such). Its runs are left to expire as other Tasks do.
    pub async fn remove_schedule(&self, name: &str, kind: Option<Kind>) -> Result<Schedule> {
        self.modify(&schedule_key(name), |cur: Option<Schedule>| {
            let s = cur
                .filter(|s| kind.is_none_or(|k| s.kind() == k))
                .ok_or_else(|| not_found(name))?;
            Ok((Write::Delete, s))
        })
        .await
    }

    /// Pauses or resumes a schedule. Resuming does not run the slots missed while
    /// paused: only the current one, if it was not handled.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<Schedule> {
        self.modify(&schedule_key(name), |cur: Option<Schedule>| {
            let mut s = cur.ok_or_else(|| not_found(name))?;
            if s.paused == paused {
                return Ok((Write::Nothing, s));
            }
            s.paused = paused;
            Ok((Write::Put(s.clone()), s))
        })
        .await
    }

    /// Claims slot `slot_at` (labelled `label`) of schedule `name`, once: a slot not
    /// after the last one handled is [`Claim::Taken`]. A skip is recorded with its
    /// reason; a task schedule's run (Task `NAME-LABEL`, owned by the schedule's owner)
    /// is created in the same transaction; a backup schedule's slot is recorded and
    /// handed back for the caller to start the backup ([`Db::record_schedule_run`]).
    pub async fn claim_schedule_slot(
        &self,
        name: &str,
        slot_at: i64,
        label: &str,
        skip_reason: &str,
    ) -> Result<Claim> {
        let key = schedule_key(name);
        let creator = match self.owner(OwnedKind::Schedule, name).await? {
            Some(owner) => self.created_by(owner),
            None => self.clone(),
        };
        let mut attempts = Attempts::on(&key);
        loop {
            attempts.next()?;
            let (mut s, rev) = self
                .get::<Schedule>(&key)
                .await?
                .ok_or_else(|| not_found(name))?;
            // Paused since the brain decided (or handled already): nothing to do. The
            // check is in the claim's compare-and-swap, so no run starts after a pause.
            if slot_at <= s.last_slot_at || s.paused {
                return Ok(Claim::Taken);
            }
            let now = now_nanos();
            s.last_slot_at = slot_at;
            s.last_slot = label.into();
            s.last_run_at = now;
            let mut txn = Txn::new().when(Compare::ModRevision(key.clone(), rev));
            let claim = if !skip_reason.is_empty() {
                s.last_run.clear();
                s.set_last_result(RunResult::Skipped);
                s.last_reason = skip_reason.into();
                Claim::Skipped
            } else if s.kind() == Kind::Backup {
                s.last_run = plan::run_guid(&s.volume, label);
                s.set_last_result(RunResult::Running);
                s.last_reason.clear();
                Claim::Backup(s.clone())
            } else {
                let guid = plan::run_guid(name, label);
                let def = s.task.clone().unwrap_or_default();
                let mut task = task_sm::new_task(guid.clone(), s.domain.clone(), def, now);
                task.schedule = name.into();
                let tk = task_key(&guid);
                txn = txn
                    .when(Compare::absent(&tk))
                    .then(Op::put(&tk, task.encode_to_vec()));
                s.last_run = guid;
                s.set_last_result(RunResult::Running);
                s.last_reason.clear();
                Claim::Task(task)
            };
            let txn = txn.then(Op::put(&key, s.encode_to_vec()));
            if creator.txn(txn).await?.succeeded {
                return Ok(claim);
            }
            if let Claim::Task(t) = &claim {
                if self.store.get(&task_key(&t.task_guid)).await?.is_some() {
                    // Someone made a task of the run's guid: the slot fails, once.
                    let why = format!(
                        "task {} already exists (not made by this schedule)",
                        t.task_guid
                    );
                    s.set_last_result(RunResult::Failed);
                    s.last_reason = why.clone();
                    let txn = Txn::new()
                        .when(Compare::ModRevision(key.clone(), rev))
                        .then(Op::put(&key, s.encode_to_vec()));
                    if self.txn(txn).await?.succeeded {
                        return Ok(Claim::Failed(why));
                    }
                }
            }
        }
    }

    /// Records how the run of the slot last claimed went, when it still is that slot's
    /// (a backup that could not start; a Task that completed).
    pub async fn record_schedule_run(
        &self,
        name: &str,
        run: &str,
        result: RunResult,
        reason: &str,
    ) -> Result<()> {
        self.modify(&schedule_key(name), |cur: Option<Schedule>| {
            let Some(mut s) = cur.filter(|s| s.last_run == run) else {
                return Ok((Write::Nothing, ()));
            };
            s.set_last_result(result);
            s.last_reason = reason.into();
            Ok((Write::Put(s), ()))
        })
        .await
    }

    /// A scheduled Task completed: its schedule says how (a schedule since removed or
    /// moved on to a newer run is left as it is).
    pub(super) async fn schedule_run_completed(&self, t: &Task) {
        let (result, reason) = if t.failed {
            (RunResult::Failed, t.failure_reason.as_str())
        } else {
            (RunResult::Succeeded, "")
        };
        if let Err(e) = self
            .record_schedule_run(&t.schedule, &t.task_guid, result, reason)
            .await
        {
            tracing::warn!(schedule = %t.schedule, task = %t.task_guid, "run's result not recorded: {e}");
        }
    }

    /// Turns every backup schedule of the old layout (`/lattice/v1/schedule/VOLUME`)
    /// into a schedule of kind backup named after its volume (unless one exists), each
    /// in one transaction. Returns how many it moved.
    pub async fn migrate_backup_schedules(&self) -> Result<usize> {
        let mut moved = 0;
        for kv in self.store.list(SCHEDULE).await? {
            let old = super::txn::decode::<BackupSchedule>(&kv)?;
            let s = Schedule {
                name: old.volume.clone(),
                kind: Kind::Backup as i32,
                volume: old.volume.clone(),
                every: old.every,
                keep: old.keep,
                created_at: old.created_at,
                ..Default::default()
            };
            let new = schedule_key(&s.name);
            let txn = Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .when(Compare::absent(&new))
                .then(Op::put(&new, s.encode_to_vec()))
                .then(Op::delete(&kv.key));
            if self.txn(txn).await?.succeeded {
                moved += 1;
                tracing::info!(volume = %old.volume, "backup schedule moved to the schedules");
            } else {
                // A schedule of that name exists: it stays, the old record goes.
                tracing::warn!(volume = %old.volume, "backup schedule not moved: a schedule of that name exists");
                self.txn(
                    Txn::new()
                        .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                        .then(Op::delete(&kv.key)),
                )
                .await?;
            }
        }
        Ok(moved)
    }
}
