//! Which backups a volume's backup schedule keeps, and when it verifies one: the pure
//! part of retention and scheduled verification (the brain's scheduler acts on it).
//!
//! **Retention** ([`apply`]) is restic's `forget` policy (as Debian's restic 0.14 applies
//! it; days, ISO weeks and months in UTC) over the volume's *good* scheduled backups —
//! COMPLETED, not being forgotten, and not failed by a verification — plus what restic
//! cannot know:
//! - the newest verified-good backup (`verified == "ok"`) is never removed, whatever the
//!   policy says, nor a backup whose verification is running;
//! - a backup that failed its verification does not count as good: it holds no slot of
//!   the policy, and is treated as a FAILED backup;
//! - FAILED backups (and failed verifications) stay while they are newer than the oldest
//!   backup the policy keeps (the recent history their alerts point at), at most
//!   [`failed_kept`] of them; the older ones go;
//! - RUNNING backups, backups made by hand (no schedule slot) and backups already being
//!   forgotten are never chosen for removal.
//!
//! **Verification** ([`verify_due`], [`verify_target`]): a schedule's `verify_every` cuts
//! time into slots as its `every` does; each slot verifies the volume's newest good
//! backup once (`last_verify_at` is the slot claimed).

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};

use crate::models::{backup::State, Backup, Retention, Schedule};
use crate::schedule::{keep_of, parse_backup_cadence, CadenceError, Step, DEFAULT_KEEP};

/// The verdict of a verification that found the backup good.
pub const VERIFIED_OK: &str = "ok";

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// One of the newest `keep_last`.
    Last,
    /// The newest of one of the newest `keep_daily` days that have one.
    Daily,
    /// The newest of one of the newest `keep_weekly` ISO weeks that have one.
    Weekly,
    /// The newest of one of the newest `keep_monthly` months that have one.
    Monthly,
    /// The newest backup a verification found good.
    NewestVerified,
    /// Its verification is running.
    Verifying,
    /// A failed backup (or failed verification) newer than the oldest kept good one.
    RecentFailure,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Last => "last",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::NewestVerified => "newest verified",
            Reason::Verifying => "verifying",
            Reason::RecentFailure => "recent failure",
        }
    }
}

/// What retention decided for a volume's scheduled backups: the ones kept (newest first,
/// with why) and the ones to remove (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub keep: Vec<(String, Vec<Reason>)>,
    pub remove: Vec<String>,
}

/// A schedule's retention: its `retention`, or keep-last `keep` when that is empty.
pub fn policy_of(s: &Schedule) -> Retention {
    match &s.retention {
        Some(r) if !is_empty(r) => *r,
        _ => Retention {
            keep_last: keep_of(s) as u32,
            ..Default::default()
        },
    }
}

/// Whether a policy keeps nothing by itself.
pub fn is_empty(r: &Retention) -> bool {
    r.keep_last == 0 && r.keep_daily == 0 && r.keep_weekly == 0 && r.keep_monthly == 0
}

/// How many FAILED backups (and failed verifications) a policy keeps at most.
pub fn failed_kept(r: &Retention) -> usize {
    match r.keep_last {
        0 => DEFAULT_KEEP as usize,
        n => n as usize,
    }
}

/// Whether a backup's last verification failed.
pub fn failed_verification(b: &Backup) -> bool {
    !b.verified.is_empty() && b.verified != VERIFIED_OK
}

/// A COMPLETED backup not being forgotten and not failed by a verification.
pub fn is_good(b: &Backup) -> bool {
    b.state() == State::Completed && !b.forgetting && !failed_verification(b)
}

/// The newest backup of `backups` a verification found good (not being forgotten).
pub fn newest_verified(backups: &[Backup]) -> Option<&Backup> {
    backups
        .iter()
        .filter(|b| is_good(b) && b.verified == VERIFIED_OK)
        .max_by_key(|b| (b.created_at, b.id.as_str()))
}

fn at(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(nanos.div_euclid(1_000_000_000), 0).unwrap_or_default()
}

/// restic's buckets: a snapshot is kept by a rule that still has a count when its
/// bucket differs from the last one that rule kept.
fn bucket(reason: Reason, nanos: i64, nr: usize) -> i64 {
    let t = at(nanos);
    match reason {
        Reason::Daily => t.year() as i64 * 10_000 + t.month() as i64 * 100 + t.day() as i64,
        Reason::Weekly => {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }
        Reason::Monthly => t.year() as i64 * 100 + t.month() as i64,
        // keep-last: every snapshot is a bucket of its own.
        _ => nr as i64,
    }
}

/// restic's `forget` over `good` (newest first): the reasons each is kept, if any.
fn restic_policy(r: &Retention, good: &[&Backup]) -> Vec<Vec<Reason>> {
    let mut rules = [
        (Reason::Last, r.keep_last, None),
        (Reason::Daily, r.keep_daily, None),
        (Reason::Weekly, r.keep_weekly, None),
        (Reason::Monthly, r.keep_monthly, None),
    ];
    good.iter()
        .enumerate()
        .map(|(nr, b)| {
            let mut why = vec![];
            for (reason, count, last) in rules.iter_mut() {
                if *count == 0 {
                    continue;
                }
                let val = bucket(*reason, b.created_at, nr);
                if *last != Some(val) {
                    *last = Some(val);
                    *count -= 1;
                    why.push(*reason);
                }
            }
            why
        })
        .collect()
}

/// Retention for the backups of one volume (`backups`: all of them, any state) under
/// policy `r`; `verifying`: ids of backups whose verification task is still running.
/// Only scheduled backups (a slot set) are ever removed.
pub fn apply(r: &Retention, backups: &[Backup], verifying: &HashSet<String>) -> Decision {
    let mut newest_first: Vec<&Backup> = backups.iter().filter(|b| !b.forgetting).collect();
    newest_first.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let scheduled = |b: &&&Backup| !b.slot.is_empty();
    let good: Vec<&Backup> = newest_first
        .iter()
        .filter(scheduled)
        .filter(|b| is_good(b))
        .copied()
        .collect();
    let mut reasons: Vec<(&Backup, Vec<Reason>)> =
        good.iter().copied().zip(restic_policy(r, &good)).collect();
    let protected = newest_verified(backups).map(|b| b.id.as_str());
    for (b, why) in reasons.iter_mut() {
        if Some(b.id.as_str()) == protected {
            why.push(Reason::NewestVerified);
        }
        if verifying.contains(&b.id) {
            why.push(Reason::Verifying);
        }
    }
    let oldest_kept = reasons
        .iter()
        .filter(|(_, why)| !why.is_empty())
        .map(|(b, _)| b.created_at)
        .min();
    let mut decision = Decision::default();
    let mut failed_seen = 0;
    for b in newest_first.iter().filter(scheduled) {
        let why = if b.state() == State::Running {
            continue;
        } else if is_good(b) {
            reasons
                .iter()
                .find(|(g, _)| g.id == b.id)
                .map(|(_, why)| why.clone())
                .unwrap_or_default()
        } else if verifying.contains(&b.id) {
            vec![Reason::Verifying]
        } else {
            failed_seen += 1;
            let recent = oldest_kept.is_none_or(|o| b.created_at > o);
            match recent && failed_seen <= failed_kept(r) {
                true => vec![Reason::RecentFailure],
                false => vec![],
            }
        };
        match why.is_empty() {
            true => decision.remove.push(b.id.clone()),
            false => decision.keep.push((b.id.clone(), why)),
        }
    }
    decision
}

/// The start (Unix seconds) of the verification slot of schedule `s` due at `now`
/// (Unix seconds): when it verifies, is not paused, and has not claimed that slot yet.
pub fn verify_due(s: &Schedule, now: i64) -> Result<Option<i64>, CadenceError> {
    if s.verify_every.is_empty() || s.paused {
        return Ok(None);
    }
    let cadence = parse_backup_cadence(&s.verify_every)?;
    Ok(cadence.slot_start(now).filter(|at| *at > s.last_verify_at))
}

/// The backup a scheduled verification of `volume` checks: its newest COMPLETED
/// backup not being forgotten (a verification that failed before does not stop it
/// from being checked again).
pub fn verify_target<'a>(backups: &'a [Backup], volume: &str) -> Option<&'a Backup> {
    backups
        .iter()
        .filter(|b| b.volume == volume && b.state() == State::Completed && !b.forgetting)
        .max_by_key(|b| (b.created_at, b.id.as_str()))
}

/// What a backup schedule keeps, verifies and alerts on (beside its cadence and hooks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupPolicy {
    /// Empty: keep-last the schedule's `keep`.
    pub retention: Retention,
    /// "" (never), or a backup cadence ("daily", "weekly", "12h", cron).
    pub verify_every: String,
    /// 0: `crate::backup::DEFAULT_SMALLER_RATIO`, `DEFAULT_FASTER_RATIO`.
    pub smaller_ratio: f64,
    pub faster_ratio: f64,
}

impl BackupPolicy {
    /// The policy as schedule `s` holds it.
    pub fn of(s: &Schedule) -> BackupPolicy {
        BackupPolicy {
            retention: s.retention.unwrap_or_default(),
            verify_every: s.verify_every.clone(),
            smaller_ratio: s.smaller_ratio,
            faster_ratio: s.faster_ratio,
        }
    }

    /// Checks it: the field that is wrong and what to do.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.verify_every.is_empty() {
            parse_backup_cadence(&self.verify_every).map_err(|e| ("verify", e.to_string()))?;
        }
        crate::backup::Thresholds::check("smaller_than", self.smaller_ratio)
            .map_err(|e| ("smaller_than", e))?;
        crate::backup::Thresholds::check("faster_than", self.faster_ratio)
            .map_err(|e| ("faster_than", e))?;
        Ok(())
    }

    /// Writes it into schedule `s`.
    pub fn set(&self, s: &mut Schedule) {
        s.retention = Some(self.retention).filter(|r| !is_empty(r));
        s.verify_every = self.verify_every.clone();
        s.smaller_ratio = self.smaller_ratio;
        s.faster_ratio = self.faster_ratio;
    }
}

/// What the scheduler does for backup schedule `s` at `now` (Unix seconds) beside its
/// slots (`crate::schedule::schedule_steps`): claim its verification slot when due, and
/// remove what retention does not keep of its volume's `backups` (`verifying`: ids of
/// backups whose verification task is still running).
pub fn backup_steps(
    s: &Schedule,
    backups: &[Backup],
    verifying: &HashSet<String>,
    now: i64,
) -> Result<Vec<Step>, CadenceError> {
    let mut steps = vec![];
    if let Some(at) = verify_due(s, now)? {
        steps.push(Step::Verify { at });
    }
    let mine: Vec<Backup> = backups
        .iter()
        .filter(|b| b.volume == s.volume)
        .cloned()
        .collect();
    let decision = apply(&policy_of(s), &mine, verifying);
    steps.extend(decision.remove.into_iter().map(|id| Step::Prune { id }));
    Ok(steps)
}

/// The ids of `backups` whose verification task is one of `live` (task guids of tasks
/// pending or running).
pub fn verifying(backups: &[Backup], live: &HashSet<&str>) -> HashSet<String> {
    backups
        .iter()
        .filter(|b| !b.verify_task_guid.is_empty() && live.contains(b.verify_task_guid.as_str()))
        .map(|b| b.id.clone())
        .collect()
}

#[cfg(test)]
mod tests;
