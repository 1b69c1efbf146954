//! How `ltc backup` shows backups (the list's columns, one backup's line) and reads
//! the hook flags of `ltc backup create|schedule`.

use std::time::Duration;

use lattice_specs::receptor::BackupResponse;
use lattice_specs::volume::format_size;

use crate::show;

/// Application-consistent backups: commands run in an app's instance that mounts the
/// volume, before the snapshot and after it.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct HookArgs {
    /// Run `sh -c CMD` before the snapshot (e.g. `sqlite3 /data/db .backup
    /// /data/dump.sqlite`); a non-zero status or a timeout fails the backup.
    #[arg(long = "pre", value_name = "CMD")]
    pub pre: Option<String>,
    /// Run `sh -c CMD` once the snapshot is taken (also when the backup failed after
    /// the pre hook).
    #[arg(long = "post", value_name = "CMD")]
    pub post: Option<String>,
    /// The app whose instance runs the hooks (default: the first app mounting the
    /// volume with a running instance; none: the hooks are skipped with a warning).
    #[arg(long)]
    pub app: Option<String>,
    /// Each hook's timeout.
    #[arg(long, value_parser = crate::app::parse_duration)]
    pub hook_timeout: Option<Duration>,
}

impl HookArgs {
    /// The hooks to send, None when no hook was given.
    pub fn request(&self) -> anyhow::Result<Option<lattice_specs::receptor::BackupHooksRequest>> {
        if self.pre.is_none() && self.post.is_none() {
            anyhow::ensure!(
                self.app.is_none() && self.hook_timeout.is_none(),
                "--app and --hook-timeout are for hooks: give --pre CMD or --post CMD too"
            );
            return Ok(None);
        }
        Ok(Some(lattice_specs::receptor::BackupHooksRequest {
            pre: self.pre.clone().unwrap_or_default(),
            post: self.post.clone().unwrap_or_default(),
            app: self.app.clone().unwrap_or_default(),
            timeout_ms: self.hook_timeout.map_or(0, |d| d.as_millis() as u64),
        }))
    }
}

pub(crate) fn describe(b: &BackupResponse) -> String {
    if !b.snapshot.is_empty() {
        return format!(
            "{} of volume {}: snapshot {} ({} files, {}), {} added to repository {} in {:.1}s",
            b.id,
            b.volume,
            short(&b.snapshot),
            b.files,
            format_size(b.total_bytes),
            format_size(b.added_bytes),
            b.repository,
            b.duration_ms as f64 / 1000.0,
        );
    }
    format!(
        "{} of volume {}: {} in {:.1}s, sha256 {}",
        b.id,
        b.volume,
        format_size(b.size_bytes),
        b.duration_ms as f64 / 1000.0,
        b.checksum
    )
}

/// A snapshot id as restic shows it (its first 8 hex digits).
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A backup's verification: never, or the verdict and how long ago.
fn verified(b: &BackupResponse, now: i64) -> String {
    match (b.verified.as_str(), b.verified_at) {
        ("", _) if !b.verify_task_guid.is_empty() => "running".into(),
        ("", _) => "never".into(),
        (v, 0) => v.into(),
        (v, at) => format!("{v} ({} ago)", show::age(at, now)),
    }
}

pub(crate) fn backups_table(bs: &[BackupResponse], now: i64) -> String {
    if bs.is_empty() {
        return "No backups: `ltc backup create VOLUME` makes one.\n".into();
    }
    let rows: Vec<Vec<String>> = bs
        .iter()
        .map(|b| {
            let done = b.state == "COMPLETED";
            vec![
                b.id.clone(),
                b.volume.clone(),
                format!("{} ago", show::age(b.created_at, now)),
                match (done, b.snapshot.is_empty()) {
                    (true, false) => short(&b.snapshot).to_string(),
                    (true, true) => "archive".into(),
                    (false, _) => "-".into(),
                },
                match (done, b.snapshot.is_empty()) {
                    (true, false) => format!(
                        "{}/{}",
                        format_size(b.added_bytes),
                        format_size(b.total_bytes)
                    ),
                    (true, true) => format_size(b.size_bytes),
                    (false, _) => "-".into(),
                },
                if b.finished_at > 0 {
                    format!("{:.1}s", b.duration_ms as f64 / 1000.0)
                } else {
                    "-".into()
                },
                if b.state == "FAILED" {
                    format!("FAILED: {}", b.failure_reason)
                } else {
                    b.state.clone()
                },
                verified(b, now),
                match (b.hook_status.as_str(), b.hook_instance.as_str()) {
                    ("", _) => "-".into(),
                    (status, "") => status.into(),
                    (status, at) => format!("{status} ({at})"),
                },
                b.warnings.join("; "),
            ]
        })
        .collect();
    show::table(
        &[
            "BACKUP",
            "VOLUME",
            "TAKEN",
            "SNAPSHOT",
            "ADDED/TOTAL",
            "DURATION",
            "STATE",
            "VERIFIED",
            "HOOKS",
            "WARNINGS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BackupCmd;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BackupCmd,
    }

    fn hooks_of(
        args: &[&str],
    ) -> anyhow::Result<Option<lattice_specs::receptor::BackupHooksRequest>> {
        let cli = Cli::try_parse_from(std::iter::once("backup").chain(args.iter().copied()))?;
        match cli.cmd {
            BackupCmd::Create { hooks, .. } | BackupCmd::Schedule { hooks, .. } => hooks.request(),
            _ => unreachable!("only create and schedule take hooks"),
        }
    }

    #[test]
    fn hook_flags_make_the_hooks_and_app_alone_is_refused() {
        let h = hooks_of(&[
            "create",
            "pg",
            "--pre",
            "sqlite3 /data/db .backup /data/d",
            "--post",
            "rm /data/d",
            "--app",
            "db",
            "--hook-timeout",
            "2m",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(h.pre, "sqlite3 /data/db .backup /data/d");
        assert_eq!(
            (h.post.as_str(), h.app.as_str(), h.timeout_ms),
            ("rm /data/d", "db", 120_000)
        );
        let h = hooks_of(&["schedule", "pg", "--every", "daily", "--pre", "sync"])
            .unwrap()
            .unwrap();
        assert_eq!((h.app.as_str(), h.timeout_ms), ("", 0));
        assert_eq!(hooks_of(&["create", "pg"]).unwrap(), None);
        let e = hooks_of(&["create", "pg", "--app", "db"]).unwrap_err();
        assert!(
            e.to_string().contains("give --pre CMD or --post CMD"),
            "{e}"
        );
    }

    #[test]
    fn the_list_shows_snapshot_added_and_total_verification_and_hooks() {
        let s = 1_000_000_000i64;
        let b = BackupResponse {
            id: "pg-1".into(),
            volume: "pg".into(),
            state: "COMPLETED".into(),
            created_at: 100 * s,
            finished_at: 110 * s,
            duration_ms: 10_000,
            snapshot: "4f0a9c3e".repeat(8),
            added_bytes: 2 << 20,
            total_bytes: 1 << 30,
            verified: "ok".into(),
            verified_at: 200 * s,
            hook_status: "hooks ok".into(),
            hook_instance: "db/0".into(),
            ..Default::default()
        };
        let legacy = BackupResponse {
            id: "pg-0".into(),
            snapshot: String::new(),
            size_bytes: 5 << 20,
            verified: String::new(),
            verified_at: 0,
            hook_status: String::new(),
            ..b.clone()
        };
        let t = backups_table(&[legacy, b], 260 * s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("SNAPSHOT")
                && lines[0].contains("ADDED/TOTAL")
                && lines[0].contains("HOOKS"),
            "{t}"
        );
        assert!(
            lines[1].contains("archive") && lines[1].contains("never"),
            "{t}"
        );
        assert!(
            lines[2].contains("4f0a9c3e ") && lines[2].contains("2M/1G"),
            "{t}"
        );
        assert!(
            lines[2].contains("ok (1m0s ago)") && lines[2].contains("hooks ok (db/0)"),
            "{t}"
        );
    }
}
