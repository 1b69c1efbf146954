//! The repository helper (`lattice-shim --repo`, `lattice shim --repo`): one process per
//! [`RepoJob`] (JSON on stdin) that backs a directory up into a restic-format repository,
//! restores a snapshot, forgets snapshots and prunes, or checks a snapshot's data, with
//! rustic_core, and prints one [`RepoOutcome`] line (JSON on stdout; its `error` set and
//! the exit status non-zero when it failed). Progress and warnings go to stderr (the shim
//! streams them into the task's log).
//!
//! A container's volume may be hostile (symlinks, races): when the job names a `root`,
//! the helper chroots into it before it touches any path of the job and before rustic
//! starts its threads, so every path (rustic's reader and restorer threads included)
//! resolves inside it. Only the HTTP client is made before, to read the host's CA roots
//! (its thread shares the process's root, so it is confined too). Afterwards it reads
//! no host file and resolves no name (the job carries the repository host's addresses).
//!
//! Outside any container (benchmarks, tests), with a local directory repository:
//!
//! ```text
//! echo '{"op":"backup","repository":"/srv/repo","password":"KEY","path":"/srv/vol",
//!        "as_path":"/data","host":"vol1"}' | lattice-shim --repo
//! {"op":"backup","snapshot":"3bf0…","files":2,"total_bytes":3000016,"added_bytes":…}
//! ```
//!
//! Rooms: `job` the job's checks and the chroot; `ops` the four operations; `rest` the
//! REST backend (restic's REST protocol v2); `locks` restic's lock files (stale ones
//! removed, as `restic unlock`); `readahead` a backup's files read ahead of rustic's
//! archiver; `restorer` a restore's writing, in bounded memory.

mod job;
mod locks;
mod ops;
mod readahead;
mod rest;
mod restorer;

use std::io::{Read, Write};
use std::time::Instant;

use lattice_specs::repo::{RepoJob, RepoOutcome};

pub use job::{reach, Reach, RepoError};
pub use locks::{is_stale, LockInfo, STALE_AFTER};
pub use ops::run;

/// The argument that makes the shim the repository helper.
pub const REPO_ARG: &str = "--repo";

/// The helper's entry point: reads the job from stdin, chroots, runs it, prints its
/// outcome; never returns.
pub fn main() -> ! {
    let started = Instant::now();
    let mut input = Vec::new();
    let parsed = std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| RepoError::Job(format!("reading the job from stdin: {e}")))
        .and_then(|_| {
            serde_json::from_slice::<RepoJob>(&input)
                .map_err(|e| RepoError::Job(format!("the job on stdin is not a RepoJob: {e}")))
        });
    let outcome = parsed.and_then(|job| {
        let reach = reach(&job)?;
        // Every path resolved from now on, by any thread, resolves inside the root.
        job::enter_root(&job.root)?;
        init_logging();
        run(&job, &reach)
    });
    let mut outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("repository helper: {e}");
            RepoOutcome {
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    let failed = outcome.error.is_some();
    let line = serde_json::to_string(&outcome).unwrap_or_else(|e| {
        format!(r#"{{"error":"the outcome could not be written as JSON: {e}"}}"#)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(if failed { 1 } else { 0 })
}

/// Warnings of rustic_core (it logs through `log`) and our own progress, to stderr.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATTICE_REPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lattice_cell=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
