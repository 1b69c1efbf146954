//! Backups as Tasks, the pure part: how a finished task settles its backup, the warnings
//! a new backup earns against the previous one, and the names (task domain and guid
//! prefixes, blob names) the BBS and the brain share. Backup schedules are schedules
//! of kind backup (`crate::schedule`). The task
//! definitions themselves (shell scripts) are the BBS's: `lattice_bbs::backup_tasks`.

use std::time::Duration;

use crate::models::{backup, Backup};

/// The domain of every backup, restore and verify task.
pub const DOMAIN: &str = "lattice-backups";

/// Task guid prefixes: what a task is for (read and written only through [`Purpose`]).
const BACKUP_TASK: &str = "backup-";
const RESTORE_TASK: &str = "restore-";
const VERIFY_TASK: &str = "verify-";
const FORGET_TASK: &str = "forget-";

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
    /// Forgets snapshots of `volume`'s repository and prunes it: retention's removal
    /// of repository backups (guid `forget-VOLUME-SUFFIX`).
    Forget { volume: String, suffix: String },
}

impl Purpose {
    /// The task guid that says this purpose.
    pub fn task_guid(&self) -> String {
        match self {
            Purpose::Backup { id } => format!("{BACKUP_TASK}{id}"),
            Purpose::Restore { volume, suffix } => format!("{RESTORE_TASK}{volume}-{suffix}"),
            Purpose::Verify { id, suffix } => format!("{VERIFY_TASK}{id}-{suffix}"),
            Purpose::Forget { volume, suffix } => format!("{FORGET_TASK}{volume}-{suffix}"),
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
        } else if let Some(rest) = task_guid.strip_prefix(FORGET_TASK) {
            split(rest).map(|(volume, suffix)| Purpose::Forget { volume, suffix })
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

/// The "much smaller" and "much faster" alert thresholds: a backup under `smaller`
/// times the previous one's size, or taking under `faster` times its duration (of at
/// least 2 s), earns a warning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub smaller: f64,
    pub faster: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            smaller: DEFAULT_SMALLER_RATIO,
            faster: DEFAULT_FASTER_RATIO,
        }
    }
}

/// The default "much smaller" ratio.
pub const DEFAULT_SMALLER_RATIO: f64 = 0.5;
/// The default "much faster" ratio.
pub const DEFAULT_FASTER_RATIO: f64 = 0.2;

impl Thresholds {
    /// A backup schedule's thresholds (0: the default); the defaults without one.
    pub fn of(s: Option<&crate::models::Schedule>) -> Thresholds {
        let pick = |v: f64, d: f64| if v > 0.0 { v } else { d };
        match s {
            Some(s) => Thresholds {
                smaller: pick(s.smaller_ratio, DEFAULT_SMALLER_RATIO),
                faster: pick(s.faster_ratio, DEFAULT_FASTER_RATIO),
            },
            None => Thresholds::default(),
        }
    }

    /// Checks ratios as a request gives them (0: the default): each in [0, 1).
    pub fn check(field: &str, v: f64) -> Result<(), String> {
        if !(0.0..1.0).contains(&v) {
            return Err(format!(
                "{field} {v} must be a ratio from 0 to 1 (e.g. 0.5: under half the previous backup's); 0 for the default"
            ));
        }
        Ok(())
    }
}

/// Warnings for `b` against the previous completed backup of its volume: far smaller
/// (under `t.smaller` of its size) or far faster (under `t.faster` of a duration of at
/// least 2 s) usually means data went missing.
pub fn warnings(b: &Backup, previous: Option<&Backup>, t: Thresholds) -> Vec<String> {
    let mut w = vec![];
    if b.state != backup::State::Completed as i32 {
        return w;
    }
    let Some(p) = previous else { return w };
    if (b.size_bytes as f64) < p.size_bytes as f64 * t.smaller {
        w.push(format!(
            "much smaller than the previous backup {} ({} vs {} bytes)",
            p.id, b.size_bytes, p.size_bytes
        ));
    }
    let (d, pd) = (duration(b), duration(p));
    if pd >= Duration::from_secs(2) && d.as_secs_f64() < pd.as_secs_f64() * t.faster {
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
            Purpose::Forget {
                volume: "pg-data".into(),
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
        let t = Thresholds::default();
        assert!(warnings(&done("b", 100, 10), None, t).is_empty());
        assert!(warnings(&done("b", 100, 10), Some(&done("a", 150, 12)), t).is_empty());
        let w = warnings(&done("b", 40, 10), Some(&done("a", 100, 10)), t);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("much smaller than the previous backup a"),
            "{w:?}"
        );
        let w = warnings(&done("b", 100, 1), Some(&done("a", 100, 10)), t);
        assert!(w[0].contains("much faster"), "{w:?}");
        // Short backups are too noisy to judge by time.
        assert!(warnings(&done("b", 100, 0), Some(&done("a", 100, 1)), t).is_empty());
        // A schedule's own thresholds: 40 of 100 passes at 0.3, 80 of 100 fails at 0.9.
        let s = crate::models::Schedule {
            smaller_ratio: 0.3,
            faster_ratio: 0.05,
            ..Default::default()
        };
        let own = Thresholds::of(Some(&s));
        assert!(warnings(&done("b", 40, 1), Some(&done("a", 100, 10)), own).is_empty());
        let strict = Thresholds::of(Some(&crate::models::Schedule {
            smaller_ratio: 0.9,
            ..Default::default()
        }));
        assert_eq!(strict.faster, DEFAULT_FASTER_RATIO);
        assert_eq!(
            warnings(&done("b", 80, 10), Some(&done("a", 100, 10)), strict).len(),
            1
        );
        assert!(Thresholds::check("smaller_than", 0.5).is_ok());
        assert!(Thresholds::check("smaller_than", 1.5)
            .unwrap_err()
            .contains("smaller_than 1.5"));
    }
}
