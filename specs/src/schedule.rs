//! Periodic runs, the pure part: cadences (`15m`, `hourly`, `daily`, `weekly`,
//! `monthly`, five-field cron expressions in UTC), the slots they cut time into, and
//! what the brain's one scheduler does for a schedule at a moment
//! ([`schedule_steps`]): start the current slot's run, skip it while the previous run
//! still goes (Kubernetes' `concurrencyPolicy: Forbid`), and prune runs beyond the
//! retention. A slot is handled once: the BBS claims it with compare-and-swap on the
//! schedule's `last_slot_at`, so after downtime only the newest missed slot runs, and
//! two brains never both run one.
//!
//! Task schedules name their runs `NAME-SLOT` ([`slot_label`], to the second); backup
//! schedules keep the backup ids they always had ([`backup_slot_label`]).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

use crate::models::{schedule, Schedule};

/// The shortest period of a task schedule.
pub const MIN_PERIOD_SECS: u64 = 5;
/// The shortest period of a backup schedule (its backup ids count minutes).
pub const MIN_BACKUP_PERIOD_SECS: u64 = 60;
/// Completed runs kept when a schedule says 0.
pub const DEFAULT_KEEP: u32 = 5;

/// The five fields of a cron expression, as errors name them.
const CRON_FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// How often a schedule runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// Every this many seconds, slots aligned on the Unix epoch (`hourly` is 3600).
    Period(u64),
    /// At 00:00 UTC.
    Daily,
    /// Mondays at 00:00 UTC (ISO weeks).
    Weekly,
    /// The first of the month at 00:00 UTC.
    Monthly,
    /// A standard five-field cron expression, in UTC.
    Cron(Box<croner::Cron>),
}

/// A cadence that does not parse: the expression and why (naming the field of a cron
/// expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("every {every:?}: {reason}")]
pub struct CadenceError {
    pub every: String,
    pub reason: String,
}

fn cadence_error(every: &str, reason: impl Into<String>) -> CadenceError {
    CadenceError {
        every: every.into(),
        reason: reason.into(),
    }
}

/// Parses a task schedule's `every`: `30s`, `15m`, `2h`, `1d` (at least 5s), `hourly`,
/// `daily`, `weekly`, `monthly`, or five cron fields (`"*/5 * * * *"`, UTC).
pub fn parse_cadence(every: &str) -> Result<Cadence, CadenceError> {
    parse_with_minimum(every, MIN_PERIOD_SECS)
}

/// Parses a backup schedule's `every`: as [`parse_cadence`], periods of at least a minute.
pub fn parse_backup_cadence(every: &str) -> Result<Cadence, CadenceError> {
    parse_with_minimum(every, MIN_BACKUP_PERIOD_SECS)
}

/// Parses `every` for a schedule of `kind`.
pub fn parse_for(kind: schedule::Kind, every: &str) -> Result<Cadence, CadenceError> {
    match kind {
        schedule::Kind::Task => parse_cadence(every),
        schedule::Kind::Backup => parse_backup_cadence(every),
    }
}

fn parse_with_minimum(every: &str, min_secs: u64) -> Result<Cadence, CadenceError> {
    let s = every.trim();
    if s.split_whitespace().count() > 1 {
        return parse_cron(s);
    }
    let min = if min_secs.is_multiple_of(60) {
        format!("{}m", min_secs / 60)
    } else {
        format!("{min_secs}s")
    };
    let usage = || {
        cadence_error(
            every,
            format!(
                "use hourly, daily, weekly, monthly, a period like 30s, 15m, 2h, 1d (at least {min}) \
                 or a five-field cron expression like \"*/5 * * * *\""
            ),
        )
    };
    Ok(match s {
        "hourly" => Cadence::Period(3600),
        "daily" => Cadence::Daily,
        "weekly" => Cadence::Weekly,
        "monthly" => Cadence::Monthly,
        _ => {
            let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
            let (n, unit) = s.split_at(split);
            let n: u64 = n.parse().map_err(|_| usage())?;
            let unit_secs = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return Err(usage()),
            };
            let secs = n.checked_mul(unit_secs).ok_or_else(usage)?;
            if secs < min_secs {
                return Err(usage());
            }
            Cadence::Period(secs)
        }
    })
}

/// Five cron fields; an error names the field that is wrong.
fn parse_cron(s: &str) -> Result<Cadence, CadenceError> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(cadence_error(
            s,
            format!(
                "a cron expression has five fields ({}), this one has {}",
                CRON_FIELDS.join(", "),
                fields.len()
            ),
        ));
    }
    match s.parse::<croner::Cron>() {
        Ok(c) => Ok(Cadence::Cron(Box::new(c))),
        Err(e) => {
            // Which field: the first that fails alone, every other field `*`.
            let bad = (0..5).find(|&i| {
                let mut alone = ["*"; 5];
                alone[i] = fields[i];
                alone.join(" ").parse::<croner::Cron>().is_err()
            });
            Err(cadence_error(
                s,
                match bad {
                    Some(i) => format!(
                        "cron field {} ({}) {:?} is invalid: {e}",
                        i + 1,
                        CRON_FIELDS[i],
                        fields[i]
                    ),
                    None => format!("invalid cron expression: {e}"),
                },
            ))
        }
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn midnight(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default()
}

impl Cadence {
    /// The start (Unix seconds) of the slot `now` falls in: the latest slot start at
    /// or before it. None: a cron expression that never matched before `now`.
    pub fn slot_start(&self, now: i64) -> Option<i64> {
        let day = at(now).date_naive();
        Some(match self {
            Cadence::Period(p) => {
                let p = (*p).max(1) as i64;
                now.div_euclid(p) * p
            }
            Cadence::Daily => midnight(day),
            Cadence::Weekly => {
                midnight(day - Days::new(day.weekday().num_days_from_monday() as u64))
            }
            Cadence::Monthly => midnight(day.with_day(1)?),
            Cadence::Cron(c) => c.find_previous_occurrence(&at(now), true).ok()?.timestamp(),
        })
    }

    /// The start of the first slot after `now` (what `ltc schedules` shows as next).
    pub fn next_slot(&self, now: i64) -> Option<i64> {
        let day = at(now).date_naive();
        Some(match self {
            Cadence::Period(p) => self.slot_start(now)? + (*p).max(1) as i64,
            Cadence::Daily => midnight(day + Days::new(1)),
            Cadence::Weekly => {
                midnight(day + Days::new(7 - day.weekday().num_days_from_monday() as u64))
            }
            Cadence::Monthly => midnight(day.with_day(1)? + Months::new(1)),
            Cadence::Cron(c) => c.find_next_occurrence(&at(now), false).ok()?.timestamp(),
        })
    }
}

/// A task schedule's slot as run guids carry it: the slot's start, UTC, to the second
/// (`20261122-051500`).
pub fn slot_label(slot_at: i64) -> String {
    at(slot_at).format("%Y%m%d-%H%M%S").to_string()
}

/// A backup schedule's slot as its backup ids have always carried it: `20261122-0500`
/// (periods and cron), `20261122` (daily), `2026w47` (weekly, ISO weeks), `202611`
/// (monthly).
pub fn backup_slot_label(cadence: &Cadence, slot_at: i64) -> String {
    let t = at(slot_at);
    match cadence {
        Cadence::Period(_) | Cadence::Cron(_) => t.format("%Y%m%d-%H%M").to_string(),
        Cadence::Daily => t.format("%Y%m%d").to_string(),
        Cadence::Weekly => {
            let w = t.iso_week();
            format!("{}w{:02}", w.year(), w.week())
        }
        Cadence::Monthly => t.format("%Y%m").to_string(),
    }
}

/// The guid of a task schedule's run for a slot: the same for every brain.
pub fn run_guid(name: &str, label: &str) -> String {
    format!("{name}-{label}")
}

/// The label a schedule of this kind gives the slot starting at `slot_at`.
pub fn label_for(kind: schedule::Kind, cadence: &Cadence, slot_at: i64) -> String {
    match kind {
        schedule::Kind::Task => slot_label(slot_at),
        schedule::Kind::Backup => backup_slot_label(cadence, slot_at),
    }
}

/// How many completed runs a schedule keeps.
pub fn keep_of(s: &Schedule) -> usize {
    if s.keep == 0 {
        DEFAULT_KEEP as usize
    } else {
        s.keep as usize
    }
}

/// One run of a schedule as the scheduler sees it (a Task, or a backup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The Task's guid, or the backup's id.
    pub id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub state: RunState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
}

/// One slot: its start (Unix seconds) and its label ([`label_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub at: i64,
    pub label: String,
}

/// What the scheduler does for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Claim the slot and start its run.
    Start(Slot),
    /// Claim the slot and record it as skipped, saying why.
    Skip { slot: Slot, reason: String },
    /// Remove this finished run (beyond the retention).
    Prune { id: String },
    /// Claim the verification slot starting at `at` (Unix seconds) of a backup
    /// schedule and verify its volume's newest backup (`crate::retention`).
    Verify { at: i64 },
}

/// The steps for `s` at `now` (Unix seconds) given its runs: the current slot, unless
/// already handled (`last_slot_at`) or the schedule is paused, is started, or skipped
/// while a run still goes; a task schedule's finished runs beyond its `keep` newest
/// are pruned. A backup schedule's retention and verification are
/// `crate::retention::backup_steps`'.
pub fn schedule_steps(s: &Schedule, runs: &[Run], now: i64) -> Result<Vec<Step>, CadenceError> {
    let cadence = parse_for(s.kind(), &s.every)?;
    let mut steps = vec![];
    let slot_at = cadence.slot_start(now);
    if let Some(slot_at) = slot_at.filter(|a| !s.paused && *a > s.last_slot_at) {
        let slot = Slot {
            at: slot_at,
            label: label_for(s.kind(), &cadence, slot_at),
        };
        let running = runs
            .iter()
            .filter(|r| r.state == RunState::Running)
            .max_by_key(|r| r.created_at);
        steps.push(match running {
            Some(r) => Step::Skip {
                slot,
                reason: format!("the previous run {} is still running", r.id),
            },
            None => Step::Start(slot),
        });
    }
    if s.kind() == schedule::Kind::Task {
        let mut finished: Vec<&Run> = runs
            .iter()
            .filter(|r| r.state != RunState::Running)
            .collect();
        finished.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        for r in finished.iter().skip(keep_of(s)) {
            steps.push(Step::Prune { id: r.id.clone() });
        }
    }
    Ok(steps)
}

/// When the next run is due (Unix seconds) as `ltc schedules` shows it; None while
/// paused or when the cadence does not parse.
pub fn next_run_at(s: &Schedule, now: i64) -> Option<i64> {
    if s.paused {
        return None;
    }
    let cadence = parse_for(s.kind(), &s.every).ok()?;
    match cadence.slot_start(now) {
        // The current slot is still to be handled: due now.
        Some(current) if current > s.last_slot_at => Some(current),
        _ => cadence.next_slot(now),
    }
}

#[cfg(test)]
mod tests;
