//! Backups as Tasks, the pure part: how a finished task settles its backup, the warnings
//! a new backup earns against the previous one, backup schedules, and the names (task
//! domain and guid prefixes, blob names) the BBS and the brain share. The task
//! definitions themselves (shell scripts) are the BBS's: `lattice_bbs::backup_tasks`.

use std::time::Duration;

use crate::models::{backup, Backup};

/// The domain of every backup, restore and verify task.
pub const DOMAIN: &str = "lattice-backups";

/// Task guid prefixes: what a task is for (read and written only through [`Purpose`]).
const BACKUP_TASK: &str = "backup-";
const RESTORE_TASK: &str = "restore-";
const VERIFY_TASK: &str = "verify-";

/// What a task of the backup [`DOMAIN`] is for. Its guid carries it (so a task
/// record needs no field of its own and old records read the same); this type is
/// the one place that writes and reads that encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Archives a snapshot of a volume into backup `id` (guid `backup-ID`).
    Backup { id: String },
    /// Restores a backup into `volume` (guid `restore-VOLUME-SUFFIX`).
    Restore { volume: String, suffix: String },
    /// Restores backup `id` into a scratch directory and checks it
    /// (guid `verify-ID-SUFFIX`).
    Verify { id: String, suffix: String },
}

impl Purpose {
    /// The task guid that says this purpose.
    pub fn task_guid(&self) -> String {
        match self {
            Purpose::Backup { id } => format!("{BACKUP_TASK}{id}"),
            Purpose::Restore { volume, suffix } => format!("{RESTORE_TASK}{volume}-{suffix}"),
            Purpose::Verify { id, suffix } => format!("{VERIFY_TASK}{id}-{suffix}"),
        }
    }

    /// What the task `task_guid` is for, if it is a backup, restore or verify task.
    /// A restore's or verify's suffix is what follows its last `-`.
    pub fn of(task_guid: &str) -> Option<Purpose> {
        let split = |rest: &str| {
            rest.rsplit_once('-')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        };
        if let Some(id) = task_guid.strip_prefix(BACKUP_TASK) {
            Some(Purpose::Backup { id: id.into() })
        } else if let Some(rest) = task_guid.strip_prefix(VERIFY_TASK) {
            split(rest).map(|(id, suffix)| Purpose::Verify { id, suffix })
        } else if let Some(rest) = task_guid.strip_prefix(RESTORE_TASK) {
            split(rest).map(|(volume, suffix)| Purpose::Restore { volume, suffix })
        } else {
            None
        }
    }
}

/// The blob a backup's archive is stored as.
pub fn blob_name(id: &str) -> String {
    format!("backup-{id}.tgz")
}

/// Whether `s` is a lowercase hex sha256 (what may go into a task's shell script).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a finished backup task means for its backup: the manifest from its result
/// and the archive's facts from the blob store (`None`: the store has no whole blob).
pub fn settle(
    b: &mut Backup,
    failed: bool,
    reason: &str,
    result: &str,
    archive: Option<(u64, String)>,
    now: i64,
) {
    b.finished_at = now;
    let manifest = result.trim();
    match archive {
        _ if failed => {
            b.state = backup::State::Failed as i32;
            b.failure_reason = reason.to_string();
        }
        None => {
            b.state = backup::State::Failed as i32;
            b.failure_reason = "the task finished but the blob store has no archive".into();
        }
        Some(_) if !is_sha256(manifest) => {
            b.state = backup::State::Failed as i32;
            b.failure_reason = format!("the task gave no manifest (result {manifest:?})");
        }
        Some((size, checksum)) => {
            b.state = backup::State::Completed as i32;
            b.size_bytes = size;
            b.checksum = checksum;
            b.manifest = manifest.to_string();
        }
    }
}

/// A completed backup's duration.
pub fn duration(b: &Backup) -> Duration {
    Duration::from_nanos((b.finished_at - b.created_at).max(0) as u64)
}

/// Warnings for `b` against the previous completed backup of its volume: far smaller
/// (under half the size) or far faster (under a fifth of a duration of at least 2 s)
/// usually means data went missing.
pub fn warnings(b: &Backup, previous: Option<&Backup>) -> Vec<String> {
    let mut w = vec![];
    if b.state != backup::State::Completed as i32 {
        return w;
    }
    let Some(p) = previous else { return w };
    if b.size_bytes * 2 < p.size_bytes {
        w.push(format!(
            "much smaller than the previous backup {} ({} vs {} bytes)",
            p.id, b.size_bytes, p.size_bytes
        ));
    }
    let (d, pd) = (duration(b), duration(p));
    if pd >= Duration::from_secs(2) && d * 5 < pd {
        w.push(format!(
            "much faster than the previous backup {} ({:.1}s vs {:.1}s)",
            p.id,
            d.as_secs_f64(),
            pd.as_secs_f64()
        ));
    }
    w
}

/// The state's name in the JSON API.
pub fn state_name(s: backup::State) -> &'static str {
    match s {
        backup::State::Invalid => "INVALID",
        backup::State::Running => "RUNNING",
        backup::State::Completed => "COMPLETED",
        backup::State::Failed => "FAILED",
    }
}

// ------------------------------------------------------------------ schedules

/// How often a schedule takes a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// A fixed period (at least a minute), slots aligned on the Unix epoch.
    Period(Duration),
    Daily,
    Weekly,
    Monthly,
}

/// Parses `hourly`, `daily`, `weekly`, `monthly`, or a period like `1h`, `30m`, `2d`.
pub fn parse_every(s: &str) -> Result<Every, String> {
    let s = s.trim();
    let err = || {
        format!("--every {s:?}: use hourly, daily, weekly, monthly or a period like 1h, 30m, 2d (at least 1m)")
    };
    Ok(match s {
        "hourly" => Every::Period(Duration::from_secs(3600)),
        "daily" => Every::Daily,
        "weekly" => Every::Weekly,
        "monthly" => Every::Monthly,
        _ => {
            let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
            let n: u64 = n.parse().map_err(|_| err())?;
            let secs = match unit {
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return Err(err()),
            };
            if n == 0 {
                return Err(err());
            }
            Every::Period(Duration::from_secs(n * secs))
        }
    })
}

/// The slot `now` (Unix seconds, UTC) falls in, as it is written in backup ids:
/// `20261122-0500` (periods), `20261122` (daily), `2026w47` (weekly, ISO weeks),
/// `202611` (monthly).
pub fn slot(every: Every, now: i64) -> String {
    use chrono::{DateTime, Datelike};
    let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    match every {
        Every::Period(d) => {
            let p = d.as_secs().max(60) as i64;
            at(now.div_euclid(p) * p).format("%Y%m%d-%H%M").to_string()
        }
        Every::Daily => at(now).format("%Y%m%d").to_string(),
        Every::Weekly => {
            let w = at(now).iso_week();
            format!("{}w{:02}", w.year(), w.week())
        }
        Every::Monthly => at(now).format("%Y%m").to_string(),
    }
}

/// The id of the backup that fills a schedule's slot: the same for every brain that
/// computes it, so creating it twice fails the second time (exactly once per slot).
pub fn scheduled_id(volume: &str, slot: &str) -> String {
    format!("{volume}-{slot}")
}

/// What a brain should do for one schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleStep {
    /// Take the backup for this slot (id from [`scheduled_id`]).
    Start { id: String, slot: String },
    /// Drop this scheduled backup (beyond the retention).
    Prune { id: String },
}

/// The steps for schedule `s` given every backup of the cluster: the current slot's
/// backup when it does not exist yet, and pruning of the schedule's finished backups
/// beyond the `keep` newest completed ones (failed ones older than those go too).
pub fn schedule_steps(
    s: &crate::models::BackupSchedule,
    backups: &[Backup],
    now: i64,
) -> Result<Vec<ScheduleStep>, String> {
    let every = parse_every(&s.every)?;
    let current = slot(every, now);
    let mut steps = vec![];
    let mine: Vec<&Backup> = {
        let mut v: Vec<&Backup> = backups
            .iter()
            .filter(|b| b.volume == s.volume && !b.slot.is_empty())
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        v
    };
    let id = scheduled_id(&s.volume, &current);
    if !backups.iter().any(|b| b.id == id) {
        steps.push(ScheduleStep::Start { id, slot: current });
    }
    let keep = s.keep.max(1) as usize;
    let completed: Vec<&&Backup> = mine
        .iter()
        .filter(|b| b.state == backup::State::Completed as i32)
        .collect();
    if let Some(oldest_kept) = completed.get(keep - 1) {
        for b in &mine {
            if b.created_at < oldest_kept.created_at && b.state != backup::State::Running as i32 {
                steps.push(ScheduleStep::Prune { id: b.id.clone() });
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purpose_reads_back_from_the_guid_it_writes() {
        for p in [
            Purpose::Backup {
                id: "pg-2026-12-05".into(),
            },
            Purpose::Restore {
                volume: "pg-data".into(),
                suffix: "a1b2c3d4".into(),
            },
            Purpose::Verify {
                id: "pg-1".into(),
                suffix: "0f0f0f0f".into(),
            },
        ] {
            assert_eq!(Purpose::of(&p.task_guid()), Some(p.clone()), "{p:?}");
        }
        assert_eq!(Purpose::Backup { id: "x".into() }.task_guid(), "backup-x");
        assert_eq!(
            Purpose::of("verify-pg-1-0f0f0f0f"),
            Some(Purpose::Verify {
                id: "pg-1".into(),
                suffix: "0f0f0f0f".into()
            })
        );
        assert_eq!(Purpose::of("verify-nosuffix"), None);
        assert_eq!(Purpose::of("my-task"), None);
    }

    use crate::testing::backup;

    #[test]
    fn settling() {
        let mut b = backup();
        b.created_at = 0;
        settle(&mut b, true, "cancelled", "", Some((1, "x".into())), 5);
        assert_eq!(b.state, backup::State::Failed as i32);
        assert_eq!(b.failure_reason, "cancelled");
        let mut b = backup();
        settle(&mut b, false, "", &"f".repeat(64), None, 5);
        assert!(b.failure_reason.contains("no archive"));
        let mut b = backup();
        settle(&mut b, false, "", "garbage", Some((1, "x".into())), 5);
        assert!(b.failure_reason.contains("no manifest"));
        let mut b = backup();
        settle(
            &mut b,
            false,
            "",
            &format!("{}\n", "f".repeat(64)),
            Some((10, "sum".into())),
            5,
        );
        assert_eq!(b.state, backup::State::Completed as i32);
        assert_eq!((b.size_bytes, b.checksum.as_str()), (10, "sum"));
        assert_eq!(b.manifest, "f".repeat(64));
    }

    #[test]
    fn every_and_slots() {
        assert_eq!(
            parse_every("1h"),
            Ok(Every::Period(Duration::from_secs(3600)))
        );
        assert_eq!(parse_every("hourly"), parse_every("60m"));
        assert_eq!(parse_every("daily"), Ok(Every::Daily));
        for bad in ["", "0h", "5s", "h", "1w", "often"] {
            assert!(
                parse_every(bad).unwrap_err().contains("hourly, daily"),
                "{bad}"
            );
        }
        // 2026-11-22 05:17:09 UTC, a Sunday of ISO week 47.
        let t = 1_795_324_629;
        assert_eq!(
            slot(Every::Period(Duration::from_secs(3600)), t),
            "20261122-0500"
        );
        assert_eq!(
            slot(Every::Period(Duration::from_secs(900)), t),
            "20261122-0515"
        );
        assert_eq!(slot(Every::Daily, t), "20261122");
        assert_eq!(slot(Every::Weekly, t), "2026w47");
        assert_eq!(slot(Every::Monthly, t), "202611");
        let id = scheduled_id("pg", &slot(Every::Weekly, t));
        let mut e = crate::validation::ValidationErrors::default();
        crate::validation::check_guid(&mut e, "id", &Purpose::Backup { id }.task_guid());
        assert!(e.0.is_empty(), "{e}");
    }

    /// A day of an hourly schedule with a fake clock, one tick a minute: one backup
    /// per slot, however many ticks (or brains) see the slot; three kept.
    #[test]
    fn an_hourly_schedule_over_a_day() {
        let s = crate::models::BackupSchedule {
            volume: "pg".into(),
            every: "1h".into(),
            keep: 3,
            created_at: 0,
        };
        let start = 1_795_305_600; // 2026-11-22 00:00 UTC
        let mut backups: Vec<Backup> = vec![];
        let mut started = vec![];
        for minute in 0..24 * 60 {
            let now = start + minute * 60;
            // Two brains (a failover) see the same world at the same tick.
            for _brain in 0..2 {
                for step in schedule_steps(&s, &backups, now).unwrap() {
                    match step {
                        ScheduleStep::Start { id, slot } => {
                            // The store refuses a second create of the same id.
                            if backups.iter().any(|b| b.id == id) {
                                continue;
                            }
                            started.push(slot.clone());
                            backups.push(Backup {
                                id,
                                volume: "pg".into(),
                                slot,
                                created_at: now * 1_000_000_000,
                                state: backup::State::Running as i32,
                                ..Default::default()
                            });
                        }
                        ScheduleStep::Prune { id } => backups.retain(|b| b.id != id),
                    }
                }
            }
            // Backups finish within the minute; the one at 13:00 fails.
            for b in &mut backups {
                if b.state == backup::State::Running as i32 {
                    b.state = if b.slot == "20261122-1300" {
                        backup::State::Failed as i32
                    } else {
                        backup::State::Completed as i32
                    };
                }
            }
        }
        assert_eq!(started.len(), 24, "one per hour: {started:?}");
        assert_eq!(started[0], "20261122-0000");
        assert_eq!(started[23], "20261122-2300");
        let kept: Vec<&str> = backups.iter().map(|b| b.slot.as_str()).collect();
        assert_eq!(kept, ["20261122-2100", "20261122-2200", "20261122-2300"]);
        // Backups not made by a schedule are never pruned by it.
        backups.push(Backup {
            id: "manual".into(),
            volume: "pg".into(),
            state: backup::State::Completed as i32,
            ..Default::default()
        });
        let steps = schedule_steps(&s, &backups, start + 86400 - 1).unwrap();
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn warnings_against_the_previous_backup() {
        let s = 1_000_000_000i64;
        let done = |id: &str, size: u64, secs: i64| Backup {
            id: id.into(),
            state: backup::State::Completed as i32,
            size_bytes: size,
            created_at: 0,
            finished_at: secs * s,
            ..Default::default()
        };
        assert!(warnings(&done("b", 100, 10), None).is_empty());
        assert!(warnings(&done("b", 100, 10), Some(&done("a", 150, 12))).is_empty());
        let w = warnings(&done("b", 40, 10), Some(&done("a", 100, 10)));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("much smaller than the previous backup a"),
            "{w:?}"
        );
        let w = warnings(&done("b", 100, 1), Some(&done("a", 100, 10)));
        assert!(w[0].contains("much faster"), "{w:?}");
        // Short backups are too noisy to judge by time.
        assert!(warnings(&done("b", 100, 0), Some(&done("a", 100, 1))).is_empty());
    }
}
