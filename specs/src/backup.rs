//! Backups as Tasks, the pure part: how a finished task settles its backup, the warnings
//! a new backup earns against the previous one, and the names (task domain and guid
//! prefixes, blob names) the BBS and the brain share. Backup schedules are schedules
//! of kind backup (`crate::schedule`). The task
//! definitions themselves (shell scripts) are the BBS's: `lattice_bbs::backup_tasks`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::models::{backup, Backup};
use crate::repo::RepoOutcome;

/// The domain of every backup, restore and verify task.
pub const DOMAIN: &str = "lattice-backups";

/// Task guid prefixes: what a task is for (read and written only through [`Purpose`]).
const BACKUP_TASK: &str = "backup-";
const RESTORE_TASK: &str = "restore-";
const VERIFY_TASK: &str = "verify-";
const FORGET_TASK: &str = "forget-";
const STANDBY_TASK: &str = "standby-";

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
    /// Restores a backup into `volume`'s standby copy on the cell keeping it
    /// (`crate::failover::standby`; guid `standby-VOLUME-SUFFIX`).
    Standby { volume: String, suffix: String },
}

impl Purpose {
    /// The task guid that says this purpose.
    pub fn task_guid(&self) -> String {
        match self {
            Purpose::Backup { id } => format!("{BACKUP_TASK}{id}"),
            Purpose::Restore { volume, suffix } => format!("{RESTORE_TASK}{volume}-{suffix}"),
            Purpose::Verify { id, suffix } => format!("{VERIFY_TASK}{id}-{suffix}"),
            Purpose::Forget { volume, suffix } => format!("{FORGET_TASK}{volume}-{suffix}"),
            Purpose::Standby { volume, suffix } => format!("{STANDBY_TASK}{volume}-{suffix}"),
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
        } else if let Some(rest) = task_guid.strip_prefix(STANDBY_TASK) {
            split(rest).map(|(volume, suffix)| Purpose::Standby { volume, suffix })
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

/// What a repository backup's task leaves in its result file (JSON): the data's
/// manifest (taken from the same snapshot) and the repository helper's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub manifest: String,
    pub outcome: RepoOutcome,
}

/// What a finished backup task means for its backup. A repository backup (its
/// `repository` set) settles from the task's result ([`TaskResult`]): its snapshot,
/// what that held and what it added (`size_bytes` is the added bytes). A legacy
/// archive backup settles from the manifest in its result and the archive's facts from
/// the blob store (`archive`, `None`: the store has no whole blob).
pub fn settle(
    b: &mut Backup,
    failed: bool,
    reason: &str,
    result: &str,
    archive: Option<(u64, String)>,
    now: i64,
) {
    b.finished_at = now;
    let fail = |b: &mut Backup, why: String| {
        b.state = backup::State::Failed as i32;
        b.failure_reason = why;
    };
    if failed {
        return fail(b, reason.to_string());
    }
    if !b.repository.is_empty() {
        return settle_snapshot(b, result);
    }
    let manifest = result.trim();
    match archive {
        None => fail(
            b,
            "the task finished but the blob store has no archive".into(),
        ),
        Some(_) if !is_sha256(manifest) => fail(
            b,
            format!("the task gave no manifest (result {manifest:?})"),
        ),
        Some((size, checksum)) => {
            b.state = backup::State::Completed as i32;
            b.size_bytes = size;
            b.checksum = checksum;
            b.manifest = manifest.to_string();
        }
    }
}

fn settle_snapshot(b: &mut Backup, result: &str) {
    let mut fail = |why: String| {
        b.state = backup::State::Failed as i32;
        b.failure_reason = why;
    };
    let r: TaskResult = match serde_json::from_str(result.trim()) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "the task gave no manifest and outcome ({e}; result {:?})",
                result.trim()
            ))
        }
    };
    if let Some(e) = r.outcome.error {
        return fail(format!("the repository helper failed: {e}"));
    }
    if !is_sha256(&r.manifest) {
        return fail(format!("the task gave no manifest ({:?})", r.manifest));
    }
    if !is_sha256(&r.outcome.snapshot) {
        return fail(format!(
            "the repository helper named no snapshot ({:?})",
            r.outcome.snapshot
        ));
    }
    b.state = backup::State::Completed as i32;
    b.manifest = r.manifest;
    b.snapshot = r.outcome.snapshot;
    b.files = r.outcome.files;
    b.total_bytes = r.outcome.total_bytes;
    b.added_bytes = r.outcome.added_bytes;
    b.size_bytes = r.outcome.added_bytes;
}

/// Whether `b` is a snapshot in a repository (else a legacy archive in the blob store).
pub fn in_repository(b: &Backup) -> bool {
    !b.snapshot.is_empty() || !b.repository.is_empty()
}

/// What a completed backup says the volume held, to compare backups of one kind: a
/// snapshot's total bytes; an archive's (compressed) size.
fn held(b: &Backup) -> (bool, u64) {
    if in_repository(b) {
        (true, b.total_bytes)
    } else {
        (false, b.size_bytes)
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
/// (under `t.smaller` of what the volume held, for a snapshot; of the archive's size,
/// between archives) or far faster (under `t.faster` of a duration of at least 2 s)
/// usually means data went missing.
pub fn warnings(b: &Backup, previous: Option<&Backup>, t: Thresholds) -> Vec<String> {
    let mut w = vec![];
    if b.state != backup::State::Completed as i32 {
        return w;
    }
    let Some(p) = previous else { return w };
    let ((kind, size), (p_kind, p_size)) = (held(b), held(p));
    if kind == p_kind && (size as f64) < p_size as f64 * t.smaller {
        w.push(format!(
            "much smaller than the previous backup {} ({size} vs {p_size} bytes)",
            p.id
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
    fn a_repository_backup_settles_from_its_snapshot_and_a_legacy_one_from_its_archive() {
        let repo_backup = || Backup {
            repository: "pg".into(),
            store: "default".into(),
            ..backup()
        };
        let result = |outcome: RepoOutcome| {
            serde_json::to_string(&TaskResult {
                manifest: "f".repeat(64),
                outcome,
            })
            .unwrap()
        };
        let good = RepoOutcome {
            snapshot: "5".repeat(64),
            files: 12,
            total_bytes: 20_000_000,
            added_bytes: 210_000,
            ..Default::default()
        };
        let mut b = repo_backup();
        // No archive is needed (nor looked at) for a snapshot.
        settle(&mut b, false, "", &result(good.clone()), None, 5);
        assert_eq!(b.state, backup::State::Completed as i32, "{b:?}");
        assert_eq!(b.snapshot, "5".repeat(64));
        assert_eq!(b.manifest, "f".repeat(64));
        assert_eq!(
            (b.files, b.total_bytes, b.added_bytes, b.size_bytes),
            (12, 20_000_000, 210_000, 210_000)
        );
        assert!(in_repository(&b));

        let mut b = repo_backup();
        let failed = RepoOutcome {
            error: Some("the repository refused the cluster's backup key: wrong password".into()),
            ..good.clone()
        };
        settle(&mut b, false, "", &result(failed), None, 5);
        assert_eq!(b.state, backup::State::Failed as i32);
        assert!(b.failure_reason.contains("wrong password"), "{b:?}");
        assert!(b.snapshot.is_empty());

        let mut b = repo_backup();
        let nameless = RepoOutcome {
            snapshot: "../x".into(),
            ..good.clone()
        };
        settle(&mut b, false, "", &result(nameless), None, 5);
        assert!(b.failure_reason.contains("no snapshot"), "{b:?}");
        let mut b = repo_backup();
        settle(&mut b, false, "", &"f".repeat(64), None, 5);
        assert!(
            b.failure_reason.contains("no manifest and outcome"),
            "{b:?}"
        );
        let mut b = repo_backup();
        settle(&mut b, true, "cancelled", &result(good), None, 5);
        assert_eq!(b.failure_reason, "cancelled");

        // A legacy archive backup still settles from the blob store's facts.
        let mut b = backup();
        settle(
            &mut b,
            false,
            "",
            &"f".repeat(64),
            Some((10, "sum".into())),
            5,
        );
        assert_eq!(b.state, backup::State::Completed as i32);
        assert!(!in_repository(&b));
    }

    #[test]
    fn a_snapshot_is_much_smaller_by_what_the_volume_held_not_by_what_it_added() {
        let snap = |id: &str, total: u64, added: u64| Backup {
            id: id.into(),
            state: backup::State::Completed as i32,
            snapshot: "5".repeat(64),
            total_bytes: total,
            added_bytes: added,
            size_bytes: added,
            ..Default::default()
        };
        // An incremental backup adds little: no warning.
        assert!(warnings(
            &snap("b", 1000, 10),
            Some(&snap("a", 1000, 1000)),
            Thresholds::default()
        )
        .is_empty());
        let w = warnings(
            &snap("b", 400, 10),
            Some(&snap("a", 1000, 1000)),
            Thresholds::default(),
        );
        assert!(w[0].contains("400 vs 1000 bytes"), "{w:?}");
        // An archive and a snapshot are not compared by size.
        let archive = Backup {
            id: "old".into(),
            state: backup::State::Completed as i32,
            size_bytes: 1 << 40,
            ..Default::default()
        };
        assert!(warnings(&snap("b", 10, 10), Some(&archive), Thresholds::default()).is_empty());
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
