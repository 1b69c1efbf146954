//! Application-consistent backups, the pure part: a backup's `pre` and `post` hooks
//! (`ltc backup create|schedule VOLUME --pre CMD --post CMD [--app APP]`) run with
//! `sh -c CMD` in a RUNNING instance of an app that mounts the volume, bounded by a
//! timeout, their output kept (bounded). This module decides which instance, what a
//! hook's run means for its backup, and how far a backup's hooks have got
//! ([`HookStatus`]); the BBS (`lattice_bbs::backup_hooks`) does the exec.
//!
//! Rules: the pre hook runs before the backup's task is desired; a pre hook that exits
//! non-zero, times out or cannot run fails the backup (`BackupHookFailed`, with its
//! output) and no snapshot is taken. The post hook runs once the task has taken its
//! snapshot (it is RUNNING) or, at the latest, when it finished, failed included. When
//! no running instance mounts the volume: the backup fails when `--app` named the app
//! (the user asked for consistency there), else the hooks are skipped with a warning.

use std::time::Duration;

use crate::models::actual_lrp::{Presence, State};
use crate::models::{ActualLrp, BackupHooks, DesiredLrp};

/// A hook's timeout when its hooks set none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of a hook's output (stdout and stderr together) a backup keeps.
pub const HOOK_OUTPUT_LIMIT: usize = 8 * 1024;
/// Who the rep's log says opened a hook's exec session.
pub const HOOK_WHO: &str = "lattice-backup-hooks";

/// Whether `h` has anything to run.
pub fn any(h: Option<&BackupHooks>) -> bool {
    h.is_some_and(|h| !h.pre.is_empty() || !h.post.is_empty())
}

/// Each of `h`'s hooks' timeout.
pub fn timeout(h: &BackupHooks) -> Duration {
    if h.timeout_ns > 0 {
        Duration::from_nanos(h.timeout_ns as u64)
    } else {
        DEFAULT_HOOK_TIMEOUT
    }
}

/// Checks hooks as a request gives them (what to fix, naming the field).
pub fn check(h: &BackupHooks) -> Result<(), String> {
    if h.pre.is_empty() && h.post.is_empty() && !h.app.is_empty() {
        return Err(
            "hooks.app names the app whose instance runs the hooks: give --pre or --post too"
                .into(),
        );
    }
    if h.timeout_ns < 0 || (h.timeout_ns > 0 && h.timeout_ns < 1_000_000_000) {
        return Err("hooks.timeout must be at least 1s".into());
    }
    if h.timeout_ns > 3600 * 1_000_000_000 {
        return Err("hooks.timeout must be at most 1h".into());
    }
    for (field, cmd) in [("hooks.pre", &h.pre), ("hooks.post", &h.post)] {
        if cmd.len() > 4096 || cmd.contains('\0') {
            return Err(format!(
                "{field} must be a shell command line of at most 4096 bytes, without NUL"
            ));
        }
    }
    Ok(())
}

/// How far a backup's hooks have got (its `hook_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStatus {
    /// It has no hooks.
    None,
    PreRunning,
    /// The pre hook succeeded (or there is none); the post hook is still to run.
    PostPending,
    PostRunning,
    /// Every hook it has succeeded.
    Ok,
    PreFailed,
    PostFailed,
    /// No running instance mounts the volume (a warning on the backup says so).
    Skipped,
}

impl HookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStatus::None => "",
            HookStatus::PreRunning => "pre hook running",
            HookStatus::PostPending => "post hook pending",
            HookStatus::PostRunning => "post hook running",
            HookStatus::Ok => "hooks ok",
            HookStatus::PreFailed => "pre hook failed",
            HookStatus::PostFailed => "post hook failed",
            HookStatus::Skipped => "hooks skipped",
        }
    }

    pub fn parse(s: &str) -> HookStatus {
        [
            HookStatus::PreRunning,
            HookStatus::PostPending,
            HookStatus::PostRunning,
            HookStatus::Ok,
            HookStatus::PreFailed,
            HookStatus::PostFailed,
            HookStatus::Skipped,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
        .unwrap_or(HookStatus::None)
    }
}

/// The instance a backup's hooks run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookTarget {
    pub process_guid: String,
    pub index: i32,
    /// The container's handle on its cell.
    pub instance_guid: String,
    pub cell_id: String,
}

impl HookTarget {
    /// How the backup names it (`hook_instance`): `APP/INDEX`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.process_guid, self.index)
    }
}

/// Why the hooks have no instance to run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoInstance {
    /// The backup fails with this reason (the named app does not run).
    Fail(String),
    /// The hooks are skipped; this is the backup's warning.
    Skip(String),
}

/// The instance that runs `volume`'s hooks: a RUNNING instance (an ordinary record
/// first, then the lowest index) of `app` when named, else of the first app (by
/// process guid) mounting the volume that has one running.
pub fn choose_instance(
    volume: &str,
    app: &str,
    apps: &[DesiredLrp],
    instances: &[ActualLrp],
) -> Result<HookTarget, NoInstance> {
    let mut mounting: Vec<&str> = apps
        .iter()
        .filter(|d| d.volume_mounts.iter().any(|m| m.volume == volume))
        .map(|d| d.process_guid.as_str())
        .collect();
    mounting.sort();
    if !app.is_empty() && !mounting.contains(&app) {
        return Err(NoInstance::Fail(format!(
            "app {app} does not mount volume {volume}: name an app that does (--app), or none"
        )));
    }
    let candidates: Vec<&str> = if app.is_empty() { mounting } else { vec![app] };
    for guid in candidates {
        let running = instances
            .iter()
            .filter(|a| a.state() == State::Running && !a.draining)
            .filter_map(|a| {
                let key = a.key.as_ref()?;
                let ik = a.instance_key.as_ref()?;
                (key.process_guid == guid && !ik.cell_id.is_empty()).then_some((a, key, ik))
            })
            .min_by_key(|(a, key, _)| (a.presence() != Presence::Ordinary, key.index));
        if let Some((_, key, ik)) = running {
            return Ok(HookTarget {
                process_guid: guid.to_string(),
                index: key.index,
                instance_guid: ik.instance_guid.clone(),
                cell_id: ik.cell_id.clone(),
            });
        }
    }
    if app.is_empty() {
        Err(NoInstance::Skip(format!(
            "hooks skipped: no running instance of an app mounts volume {volume} (the backup is crash-consistent only)"
        )))
    } else {
        Err(NoInstance::Fail(format!(
            "no running instance of {app} mounts volume {volume}: the hooks cannot run"
        )))
    }
}

/// How one hook's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEnd {
    /// The command exited with this status (a shell's: 128+N for signal N).
    Exited(i32),
    /// It did not finish within its timeout (it was killed).
    TimedOut(Duration),
    /// The session could not be opened or broke.
    Broken(String),
}

/// What one hook's run means: Ok when it exited 0, else why the hook failed (one
/// line; the output is kept beside it).
pub fn verdict(which: &str, target: &str, end: &HookEnd) -> Result<(), String> {
    match end {
        HookEnd::Exited(0) => Ok(()),
        HookEnd::Exited(n) => Err(format!(
            "the {which} hook exited with status {n} in instance {target}"
        )),
        HookEnd::TimedOut(t) => Err(format!(
            "the {which} hook did not finish within {}s in instance {target} (killed)",
            t.as_secs()
        )),
        HookEnd::Broken(why) => Err(format!(
            "the {which} hook could not run in instance {target}: {why}"
        )),
    }
}

/// A hook's output as it arrives, keeping at most a limit of it: its head, and a note
/// of how much was cut.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    buf: Vec<u8>,
    limit: usize,
    cut: u64,
}

impl BoundedOutput {
    pub fn new(limit: usize) -> BoundedOutput {
        BoundedOutput {
            buf: Vec::new(),
            limit,
            cut: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        let take = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        self.cut += (bytes.len() - take) as u64;
    }

    /// The kept output (lossy UTF-8), with a note when some was cut.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut > 0 {
            s.push_str(&format!("\n[… {} more bytes of output not kept]", self.cut));
        }
        s
    }
}

/// A backup's `hook_output` after hook `which` printed `output` (each hook's under a
/// header line; the whole bounded by twice the limit).
pub fn append_output(current: &str, which: &str, output: &str) -> String {
    let mut s = current.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&format!("[{which} hook]\n{output}"));
    if s.len() > 2 * HOOK_OUTPUT_LIMIT {
        let mut end = 2 * HOOK_OUTPUT_LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ActualLrpInstanceKey, ActualLrpKey, VolumeMount};

    fn app(guid: &str, volume: &str) -> DesiredLrp {
        DesiredLrp {
            process_guid: guid.into(),
            volume_mounts: vec![VolumeMount {
                volume: volume.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn instance(guid: &str, index: i32, state: State, presence: Presence) -> ActualLrp {
        ActualLrp {
            key: Some(ActualLrpKey {
                process_guid: guid.into(),
                index,
                ..Default::default()
            }),
            instance_key: Some(ActualLrpInstanceKey {
                instance_guid: format!("{guid}-{index}-{}", presence as i32),
                cell_id: "cell-a".into(),
            }),
            state: state as i32,
            presence: presence as i32,
            ..Default::default()
        }
    }

    #[test]
    fn the_hooks_run_in_a_running_instance_of_an_app_mounting_the_volume() {
        let apps = [app("web", "other"), app("db", "pg"), app("worker", "pg")];
        let instances = [
            instance("db", 0, State::Crashed, Presence::Ordinary),
            instance("db", 1, State::Running, Presence::Evacuating),
            instance("db", 2, State::Running, Presence::Ordinary),
            instance("worker", 0, State::Running, Presence::Ordinary),
            instance("web", 0, State::Running, Presence::Ordinary),
        ];
        let t = choose_instance("pg", "", &apps, &instances).unwrap();
        assert_eq!((t.process_guid.as_str(), t.index), ("db", 2), "{t:?}");
        assert_eq!(t.label(), "db/2");
        assert_eq!(t.cell_id, "cell-a");
        let t = choose_instance("pg", "worker", &apps, &instances).unwrap();
        assert_eq!(t.label(), "worker/0");
        // Only the evacuating copy runs: it is used.
        let t = choose_instance("pg", "db", &apps, &instances[..2]).unwrap();
        assert_eq!(t.label(), "db/1");

        // Named but not mounting, or not running: fail; unnamed and none: skip.
        match choose_instance("pg", "web", &apps, &instances) {
            Err(NoInstance::Fail(m)) => assert!(m.contains("does not mount volume pg"), "{m}"),
            other => panic!("{other:?}"),
        }
        match choose_instance("pg", "db", &apps, &instances[..1]) {
            Err(NoInstance::Fail(m)) => {
                assert!(
                    m.contains("no running instance of db mounts volume pg"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match choose_instance("pg", "", &apps, &instances[..1]) {
            Err(NoInstance::Skip(m)) => assert!(m.contains("hooks skipped"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            choose_instance("nothing", "", &apps, &instances),
            Err(NoInstance::Skip(_))
        ));
    }

    #[test]
    fn a_hook_fails_on_a_non_zero_status_a_timeout_or_a_broken_session() {
        assert_eq!(verdict("pre", "db/0", &HookEnd::Exited(0)), Ok(()));
        let e = verdict("pre", "db/0", &HookEnd::Exited(3)).unwrap_err();
        assert!(
            e.contains("pre hook exited with status 3 in instance db/0"),
            "{e}"
        );
        let e = verdict("post", "db/0", &HookEnd::TimedOut(Duration::from_secs(5))).unwrap_err();
        assert!(e.contains("within 5s"), "{e}");
        let e = verdict("pre", "db/0", &HookEnd::Broken("the rep refused".into())).unwrap_err();
        assert!(
            e.contains("could not run") && e.contains("the rep refused"),
            "{e}"
        );
    }

    #[test]
    fn output_is_bounded_and_says_what_it_cut() {
        let mut o = BoundedOutput::new(10);
        o.push(b"hello ");
        assert_eq!(o.text(), "hello ");
        o.push(b"world, and more");
        assert_eq!(o.text(), "hello worl\n[… 11 more bytes of output not kept]");
        let all = append_output("", "pre", "dumped\n");
        assert_eq!(all, "[pre hook]\ndumped\n");
        let all = append_output(&all, "post", "unlocked");
        assert_eq!(all, "[pre hook]\ndumped\n[post hook]\nunlocked");
        let big = append_output("", "pre", &"é".repeat(HOOK_OUTPUT_LIMIT * 2));
        assert!(big.len() <= 2 * HOOK_OUTPUT_LIMIT);
    }

    #[test]
    fn statuses_read_back_and_bad_hooks_are_refused_by_field() {
        for s in [
            HookStatus::None,
            HookStatus::PreRunning,
            HookStatus::PostPending,
            HookStatus::PostRunning,
            HookStatus::Ok,
            HookStatus::PreFailed,
            HookStatus::PostFailed,
            HookStatus::Skipped,
        ] {
            assert_eq!(HookStatus::parse(s.as_str()), s);
        }
        let h = |pre: &str, app: &str, timeout_ns: i64| BackupHooks {
            pre: pre.into(),
            app: app.into(),
            timeout_ns,
            ..Default::default()
        };
        assert_eq!(check(&h("sync", "db", 0)), Ok(()));
        assert!(check(&h("", "db", 0)).unwrap_err().contains("hooks.app"));
        assert!(check(&h("x", "", 1000))
            .unwrap_err()
            .contains("hooks.timeout"));
        assert!(check(&h(&"x".repeat(5000), "", 0))
            .unwrap_err()
            .contains("hooks.pre"));
        assert_eq!(timeout(&h("x", "", 0)), DEFAULT_HOOK_TIMEOUT);
        assert_eq!(timeout(&h("x", "", 2_000_000_000)), Duration::from_secs(2));
        assert!(any(Some(&h("x", "", 0))));
        assert!(!any(Some(&h("", "", 0))));
        assert!(!any(None));
    }
}
