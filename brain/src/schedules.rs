//! The brain's one scheduler, for periodic Tasks and backup schedules alike: on the
//! active brain, every second, each schedule and its runs are turned into steps
//! (`lattice_specs::schedule::schedule_steps`): the current slot is claimed in the BBS,
//! which starts its run (a Task `NAME-SLOT`, or the slot's backup) or records it
//! skipped while the previous run still goes, and runs beyond the retention are
//! removed. The BBS claims a slot once (compare-and-swap on the schedule), so a slot
//! gets exactly one run however many brains try, across failovers too.
//!
//! Backup schedules also verify and keep by policy (`lattice_specs::retention`): each
//! verification slot (`verify_every`) is claimed in the BBS, which verifies the
//! volume's newest completed backup, and the backups retention does not keep (restic's
//! policy, never the newest verified-good one nor one being verified) are removed
//! (a repository's are forgotten by a forget task the BBS runs).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs_client::{BrainBbs, ClaimedSlot, ScheduledRuns};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::backup::State as BackupState;
use lattice_specs::models::schedule::Kind;
use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::{Backup, Schedule, Task};
use lattice_specs::retention::{backup_steps, verify_due, verifying};
use lattice_specs::schedule::{schedule_steps, Run, RunState, Step};

use crate::auctioneer::{bbs_err, BrainError};

/// How often the active brain looks at the schedules (periods may be 5 s).
pub const TICK: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    pub started: usize,
    pub skipped: usize,
    /// Slots whose run could not be started (recorded as failed).
    pub failed: usize,
    pub pruned: usize,
    /// Verifications started by verification slots.
    pub verifying: usize,
}

/// The runs of schedule `s`: its Tasks (those still being resolved are on their way
/// out and count for nothing), or its volume's scheduled backups.
pub fn runs_of(s: &Schedule, tasks: &[Task], backups: &[Backup]) -> Vec<Run> {
    match s.kind() {
        Kind::Task => tasks
            .iter()
            .filter(|t| t.schedule == s.name && t.state() != TaskState::Resolving)
            .map(|t| Run {
                id: t.task_guid.clone(),
                created_at: t.created_at,
                state: match t.state() {
                    TaskState::Completed if t.failed => RunState::Failed,
                    TaskState::Completed => RunState::Succeeded,
                    _ => RunState::Running,
                },
            })
            .collect(),
        Kind::Backup => backups
            .iter()
            .filter(|b| b.volume == s.volume && !b.slot.is_empty())
            .map(|b| Run {
                id: b.id.clone(),
                created_at: b.created_at,
                state: match b.state() {
                    BackupState::Running => RunState::Running,
                    BackupState::Completed => RunState::Succeeded,
                    _ => RunState::Failed,
                },
            })
            .collect(),
    }
}

fn kind_label(s: &Schedule) -> &'static str {
    match s.kind() {
        Kind::Task => "task",
        Kind::Backup => "backup",
    }
}

fn count(s: &Schedule, outcome: &str) {
    crate::metrics::SCHEDULED_RUNS
        .with_label_values(&[kind_label(s), outcome])
        .inc();
}

/// A full pass at least this often, even when nothing seems to call for one.
pub const FULL_PASS: Duration = Duration::from_secs(30);

/// Whether a pass at `now` has anything to do that the previous pass (which saw the
/// schedules `seen`) did not: a slot to claim, or a schedule changed since (made,
/// paused or resumed, its slot claimed, a run finished) whose retention may now
/// prune. Only then are the runs (every Task) read.
pub fn wants_a_pass(schedules: &[Schedule], seen: &[Schedule], now: i64) -> bool {
    schedules != seen
        || schedules.iter().any(|s| {
            schedule_steps(s, &[], now).is_ok_and(|steps| !steps.is_empty())
                || verify_due(s, now).is_ok_and(|due| due.is_some())
        })
}

/// One pass at `now` (Unix seconds).
pub async fn tick(bbs: &dyn ScheduledRuns, now: i64) -> Result<Done, BrainError> {
    let schedules = bbs.schedules().await.map_err(bbs_err)?;
    pass(bbs, &schedules, now).await
}

/// One pass over `schedules` at `now`.
async fn pass(
    bbs: &dyn ScheduledRuns,
    schedules: &[Schedule],
    now: i64,
) -> Result<Done, BrainError> {
    let mut done = Done::default();
    if schedules.is_empty() {
        return Ok(done);
    }
    let has = |k: Kind| schedules.iter().any(|s| s.kind() == k);
    let tasks = match has(Kind::Task) {
        true => bbs.scheduled_runs().await.map_err(bbs_err)?,
        false => vec![],
    };
    let (backups, backup_tasks) = match has(Kind::Backup) {
        true => (
            bbs.backups().await.map_err(bbs_err)?,
            bbs.backup_tasks().await.map_err(bbs_err)?,
        ),
        false => (vec![], vec![]),
    };
    let live: HashSet<&str> = backup_tasks
        .iter()
        .filter(|t| matches!(t.state(), TaskState::Pending | TaskState::Running))
        .map(|t| t.task_guid.as_str())
        .collect();
    let verifying = verifying(&backups, &live);
    for s in schedules {
        let mut steps = match schedule_steps(s, &runs_of(s, &tasks, &backups), now) {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!(schedule = %s.name, "bad schedule: {e}");
                continue;
            }
        };
        if s.kind() == Kind::Backup {
            match backup_steps(s, &backups, &verifying, now) {
                Ok(more) => steps.extend(more),
                Err(e) => tracing::warn!(schedule = %s.name, "bad verification cadence: {e}"),
            }
        }
        for step in steps {
            step_once(bbs, s, step, &mut done).await?;
        }
    }
    Ok(done)
}

/// A refusal: a lost lock stops the pass; anything else is counted, logged, and
/// retried at the next pass.
fn refused(s: &Schedule, step: &Step, e: lattice_bbs_client::BbsError) -> Result<(), BrainError> {
    let e = bbs_err(e);
    if matches!(e, BrainError::LockLost) {
        return Err(e);
    }
    count(s, "refused");
    tracing::warn!(schedule = %s.name, ?step, "schedule step refused: {e}");
    Ok(())
}

/// Takes one step.
async fn step_once(
    bbs: &dyn ScheduledRuns,
    s: &Schedule,
    step: Step,
    done: &mut Done,
) -> Result<(), BrainError> {
    let claimed = match &step {
        Step::Verify { at } => {
            let claimed = bbs.claim_verify_slot(&s.name, *at).await;
            return verified(s, &step, claimed, done);
        }
        Step::Start(slot) => {
            bbs.claim_schedule_slot(&s.name, slot.at, &slot.label, "")
                .await
        }
        Step::Skip { slot, reason } => {
            bbs.claim_schedule_slot(&s.name, slot.at, &slot.label, reason)
                .await
        }
        Step::Prune { id } => {
            let r = match s.kind() {
                Kind::Task => bbs.remove_run(id).await,
                Kind::Backup => bbs.delete_backup(id).await,
            };
            return match r {
                Ok(()) => {
                    done.pruned += 1;
                    count(s, "pruned");
                    tracing::info!(schedule = %s.name, run = %id, "run pruned (retention)");
                    Ok(())
                }
                // Gone already (another brain, the converger).
                Err(e)
                    if matches!(
                        e.name,
                        Some(ErrorName::TaskNotFound | ErrorName::BackupNotFound)
                    ) =>
                {
                    Ok(())
                }
                Err(e) => refused(s, &step, e),
            };
        }
    };
    match claimed {
        // Handled already: another brain, or an earlier pass.
        Ok(ClaimedSlot::Taken) => {}
        Ok(ClaimedSlot::Skipped) => {
            done.skipped += 1;
            count(s, "skipped");
        }
        Ok(ClaimedSlot::Run(run)) => {
            done.started += 1;
            count(s, "started");
            tracing::info!(schedule = %s.name, %run, "scheduled run started");
        }
        Ok(ClaimedSlot::Failed(why)) => {
            done.failed += 1;
            count(s, "failed");
            tracing::warn!(schedule = %s.name, ?step, "scheduled run not started: {why}");
        }
        Err(e) => refused(s, &step, e)?,
    }
    Ok(())
}

/// What came of claiming a verification slot.
fn verified(
    s: &Schedule,
    step: &Step,
    claimed: Result<ClaimedSlot, lattice_bbs_client::BbsError>,
    done: &mut Done,
) -> Result<(), BrainError> {
    match claimed {
        Ok(ClaimedSlot::Taken) => {}
        Ok(ClaimedSlot::Skipped) => count(s, "verify_skipped"),
        Ok(ClaimedSlot::Run(task)) => {
            done.verifying += 1;
            count(s, "verify_started");
            tracing::info!(schedule = %s.name, %task, "scheduled verification started");
        }
        Ok(ClaimedSlot::Failed(why)) => {
            count(s, "verify_failed");
            tracing::warn!(schedule = %s.name, "scheduled verification not started: {why}");
        }
        Err(e) => refused(s, step, e)?,
    }
    Ok(())
}

/// `tasks` less the completed runs of existing schedules: those are kept (and pruned
/// beyond their schedule's retention by the scheduler), not expired by the converger.
pub fn without_kept_runs(mut tasks: Vec<Task>, schedules: &[Schedule]) -> Vec<Task> {
    let names: HashSet<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    tasks.retain(|t| !(t.state() == TaskState::Completed && names.contains(t.schedule.as_str())));
    tasks
}

/// Looks at the schedules every `interval` and makes a pass when [`wants_a_pass`] (or
/// [`FULL_PASS`] has gone by), until the brain loses its lock.
pub async fn run(bbs: Arc<dyn BrainBbs>, interval: Duration) -> Result<(), BrainError> {
    let mut seen: Vec<Schedule> = vec![];
    let mut last_pass: Option<tokio::time::Instant> = None;
    loop {
        let now = lattice_specs::now_nanos() / 1_000_000_000;
        let passed = async {
            let schedules = bbs.schedules().await.map_err(bbs_err)?;
            let due = last_pass.is_none_or(|t| t.elapsed() >= FULL_PASS);
            if due || wants_a_pass(&schedules, &seen, now) {
                pass(bbs.as_ref(), &schedules, now).await?;
                seen = schedules;
                last_pass = Some(tokio::time::Instant::now());
            }
            Ok::<_, BrainError>(())
        };
        match passed.await {
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "scheduling failed; retrying"),
            Ok(()) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests;
