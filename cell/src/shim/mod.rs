//! The shim: one small process per container (containerd's shim, in our shape).
//!
//! The executor writes `shim.json` into the container's directory and starts the shim
//! (`lattice-shim DIR`, or `lattice shim DIR`; the executor's launcher starts it ahead
//! as `--stdin` and hands it DIR on stdin later, see [`crate::launcher`]). The shim, in
//! its own session so the rep may restart without touching it, creates the container
//! with libcontainer (pause as PID 1), runs the action tree with every Run as a process
//! exec'd into the container, sends stdout/stderr lines to the cell's log socket, appends
//! lifecycle events to `events.jsonl`, and on exit or SIGTERM stops everything (SIGTERM,
//! then SIGKILL after the grace period) and deletes the container (cgroups included).
//!
//! libcontainer forks with raw clone(2); doing that from the rep's multi-threaded
//! runtime risks a child deadlocked on a lock some other thread held. The shim runs a
//! single-threaded runtime, so every fork happens from a process with one thread.
//!
//! Its rooms: this module holds the entry point, the configuration and the supervision
//! of one container from creation to deletion; `fds` the descriptors the shim holds
//! and the gate it waits on; `events` the events-file protocol; `container` the
//! container's creation and deletion; `process` Run processes (their spec, start,
//! output and exit); `actions` the action interpreter, logic over a `Steps`
//! trait; `context` the shim's state and the real steps; `users` user lookup.

mod actions;
mod container;
mod context;
mod events;
mod fds;
mod process;
mod pty;
mod repository;
mod session;
mod users;
pub mod wire;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::FutureExt;
use lattice_specs::models;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::inroot::Rooted;
use context::Ctx;
use events::Events;

pub use events::{read_events, ShimEvent};
pub(crate) use process::{exit_watch, pidfd, proc_stat, watch_pidfd};
pub use users::lookup_user;

/// The argument after DIR that makes the shim an exec session's helper.
pub const SESSION_ARG: &str = "--session";

/// The arguments between the program and the shim's own (`shim` for `lattice shim`):
/// the shim runs its repository helper as the same program with these and `--repo`.
static PREFIX_ARGS: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();

/// What the executor tells the shim (`DIR/shim.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// libcontainer's container id (the container handle).
    pub id: String,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The OCI bundle (holds config.json).
    pub bundle: PathBuf,
    /// The container's root directory as the host sees it (downloads, uploads).
    pub rootfs: PathBuf,
    /// Environment every Run gets before its own.
    pub env: Vec<(String, String)>,
    pub action: models::Action,
    /// Source tag of log lines when an action names none (e.g. `APP/0`).
    pub log_source: String,
    /// Where stdout/stderr lines go (a Unix datagram socket of the rep).
    pub log_socket: PathBuf,
    /// From SIGTERM to SIGKILL when stopping.
    pub grace_ms: u64,
    /// The container's memory cgroup path, relative to the hierarchy (OOM detection).
    pub cgroup: String,
    /// Volumes bound into the container: downloads and uploads under their paths go
    /// to the volume, not to the root filesystem below it.
    #[serde(default)]
    pub binds: Vec<crate::bundle::Bind>,
    /// A Task's result file: read when its work succeeds, before the container goes,
    /// and reported with its exit (so a rep that is down then loses no result).
    #[serde(default)]
    pub result_file: String,
    /// CA certificates (PEM) Download and Upload actions trust besides the system's
    /// roots (the cell's `--extra-ca`).
    #[serde(default)]
    pub extra_ca: Vec<String>,
    /// `HOST:PORT` of URLs that Download actions fetch from another address: the
    /// lifecycle file server's name, at the cell's own (see [`crate::fileserver`]).
    #[serde(default)]
    pub redirects: Vec<(String, std::net::SocketAddr)>,
}

impl ShimConfig {
    /// Where the container's `path` is: under the root of the deepest volume bound
    /// over it, or of the container's root filesystem, and whether it is read-only
    /// there. The path is resolved only inside that root (see [`crate::inroot`]).
    pub fn host_path(&self, path: &str) -> (Rooted, bool) {
        let parts = |p: &str| -> Vec<String> {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(String::from)
                .collect()
        };
        let want = parts(path);
        let best = self
            .binds
            .iter()
            .filter(|b| {
                let bp = parts(&b.container_path);
                !want.contains(&"..".to_string()) && want.starts_with(&bp)
            })
            .max_by_key(|b| parts(&b.container_path).len());
        match best {
            Some(b) => {
                let rest = want[parts(&b.container_path).len()..].join("/");
                (Rooted::new(&b.host_path, &rest), b.read_only)
            }
            None => (Rooted::new(&self.rootfs, path), false),
        }
    }
}

/// One line of a container's output, as sent to the log socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The container handle.
    pub handle: String,
    /// e.g. `APP/0`, `CELL`.
    pub source: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
    /// Unix nanoseconds.
    pub time: i64,
}

/// The shim's entry point (`DIR`; `--stdin` to read DIR from stdin when it comes;
/// `DIR --exec RUN_ACTION_JSON` for a command health check run in a container that
/// already exists; `DIR --session` for an exec session, see [`session`]; or `--repo`
/// for the repository helper, see [`crate::repo`]): never returns.
pub fn main(args: &[std::ffi::OsString]) -> ! {
    let Some(dir) = args.first().map(Path::new) else {
        eprintln!(
            "usage: lattice shim CONTAINER_DIR|--stdin [--exec RUN_ACTION_JSON | --session] | --repo < JOB_JSON"
        );
        std::process::exit(2);
    };
    if dir == Path::new(crate::repo::REPO_ARG) {
        crate::repo::main()
    }
    let all: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let _ = PREFIX_ARGS.set(all[..all.len().saturating_sub(args.len())].to_vec());
    if args.get(1).is_some_and(|a| a == SESSION_ARG) {
        session::main(dir)
    }
    if args.get(1).is_some_and(|a| a == "--exec") {
        let code = match exec_once(dir, args.get(2).map(|a| a.to_string_lossy().to_string())) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        };
        std::process::exit(code);
    }
    if dir == Path::new(crate::launcher::STDIN_ARG) {
        // Started ahead by the executor's launcher: the container comes later.
        supervise_main(None)
    }
    supervise_main(Some(dir))
}

/// Runs one Run action in the existing container of `dir` and returns its outcome.
fn exec_once(dir: &Path, action: Option<String>) -> Result<(), String> {
    let action = action.ok_or("--exec needs a Run action as JSON")?;
    let run: models::RunAction =
        serde_json::from_str(&action).map_err(|e| format!("invalid Run action: {e}"))?;
    let cfg: ShimConfig =
        serde_json::from_slice(&std::fs::read(dir.join("shim.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ctx = Ctx::new(cfg, None, false);
    rt.block_on(process::run_process(&ctx, &run, CancellationToken::new()))
        .map_err(|e| e.to_string())
}

/// Supervises the container of `dir`, or (`None`) of the directory that comes on stdin.
fn supervise_main(dir: Option<&Path>) -> ! {
    // Our own session: the rep's death or its terminal's signals do not reach us.
    let _ = nix::unistd::setsid();
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler (no code
    // runs at signal time), and the shim has one thread here, so nothing races it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = match run_shim(dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lattice shim: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run_shim(dir: Option<&Path>) -> anyhow::Result<()> {
    fds::hold_report_fd();
    // Made before the container comes, when a spare waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => match fds::container_from_stdin() {
            Some(dir) => dir,
            // The executor let this spare go.
            None => return Ok(()),
        },
    };
    let dir = dir.as_path();
    let setup = || -> anyhow::Result<(ShimConfig, Events)> {
        let cfg: ShimConfig = serde_json::from_slice(&std::fs::read(dir.join("shim.json"))?)?;
        // The pid, and (apart, as earlier versions read shim.pid) the start time: with
        // both, nobody takes another process for this one.
        let pid = std::process::id();
        let started = proc_stat(pid as i32).map_or(0, |(t, _)| t);
        std::fs::write(dir.join("shim.pid"), pid.to_string())?;
        std::fs::write(dir.join("shim.start"), started.to_string())?;
        Ok((cfg, Events::open(dir)?))
    };
    let (cfg, events) = setup().with_context(|| format!("container {}", dir.display()))?;
    rt.block_on(supervise(cfg, events))
}

/// One container from creation to deletion: creates it, runs its work until it ends or
/// SIGTERM stops it, reports the exit and deletes the container.
async fn supervise(cfg: ShimConfig, events: Events) -> anyhow::Result<()> {
    let ctx = Ctx::new(cfg, Some(events), true);
    // The rootfs and the network namespace are there once the executor says so.
    if let Err(e) = fds::await_gate(crate::launcher::READY) {
        ctx.emit(&ShimEvent::CreateFailed {
            reason: format!("{e:#}"),
        });
        ctx.emit(&ShimEvent::Destroyed);
        return Err(e);
    }

    // A container whose work is one Run runs it as its init (through pause, which
    // passes signals on and reaps): no second process exec'd into it.
    let lone = container::lone_run(&ctx);
    let created = match &lone {
        Some((_, process)) => container::create_running(&ctx, process).map(|(c, s)| (c, Some(s))),
        None => container::create(&ctx.cfg).map(|c| (c, None)),
    };
    let (container, lone_started) = match created {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("failed to create container: {e:#}");
            ctx.emit(&ShimEvent::CreateFailed {
                reason: reason.clone(),
            });
            container::destroy(&ctx.cfg);
            ctx.emit(&ShimEvent::Destroyed);
            anyhow::bail!(reason);
        }
    };
    let init_pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    ctx.emit(&ShimEvent::Created { init_pid });

    let stop = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let action = ctx.cfg.action.clone();
    let work = match (lone, lone_started) {
        (Some((r, _)), Some((started, report))) => {
            let ctx = &ctx;
            let stop = stop.clone();
            async move {
                container::exec_report(report)
                    .await
                    .map_err(|errno| process::exec_error(&r.path, &errno.to_string()))?;
                process::supervise_run(ctx, &r, started, stop).await?;
                Ok(())
            }
            .boxed_local()
        }
        _ => actions::run_action(&ctx, &action, stop.clone()),
    };
    tokio::pin!(work);
    let mut stopped = false;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = term.recv(), if !stopped => {
                stopped = true;
                stop.cancel();
            }
        }
    };
    let (failed, reason, result) = match result {
        Ok(()) if !stopped => match read_result(&ctx.cfg).await {
            Ok(result) => (false, String::new(), result),
            Err(reason) => (true, reason, None),
        },
        Ok(()) => (false, String::new(), None),
        Err(e) => (true, e.to_string(), None),
    };
    ctx.emit(&ShimEvent::Exited {
        failed,
        reason,
        stopped,
        result,
    });
    container::teardown(&ctx.cfg, container, init_pid).await;
    ctx.emit(&ShimEvent::Destroyed);
    Ok(())
}

/// A Task's result file, read once its work succeeded (`None` when it names none); the
/// failure reason when it cannot be read.
async fn read_result(cfg: &ShimConfig) -> Result<Option<String>, String> {
    if cfg.result_file.is_empty() {
        return Ok(None);
    }
    let file = Rooted::new(&cfg.rootfs, &cfg.result_file);
    let max = crate::executor::MAX_RESULT_BYTES;
    match crate::inroot::read_regular(&file, max, crate::executor::RESULT_READ_TIMEOUT).await {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) => Err(format!("reading result file {}: {e}", cfg.result_file)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bind;

    fn config(binds: Vec<Bind>) -> ShimConfig {
        ShimConfig {
            id: "c".into(),
            state_root: "/run/state".into(),
            bundle: "/b".into(),
            rootfs: "/rootfs".into(),
            env: vec![],
            action: models::Action::default(),
            log_source: "APP/0".into(),
            log_socket: "/run/logs".into(),
            grace_ms: 10_000,
            cgroup: "/lattice/c".into(),
            binds,
            result_file: String::new(),
            extra_ca: Vec::new(),
            redirects: Vec::new(),
        }
    }

    fn bind(container: &str, host: &str, read_only: bool) -> Bind {
        Bind {
            container_path: container.into(),
            host_path: host.into(),
            read_only,
        }
    }

    fn at(r: (Rooted, bool)) -> (String, String, bool) {
        let (rooted, read_only) = r;
        (
            rooted.root.display().to_string(),
            rooted.path.display().to_string(),
            read_only,
        )
    }

    #[test]
    fn paths_go_to_the_deepest_volume_over_them() {
        let cfg = config(vec![
            bind("/data", "/v/data", false),
            bind("/data/snap/", "/v/snap", true),
        ]);
        let own = |r: &str, p: &str, ro: bool| (r.to_string(), p.to_string(), ro);
        assert_eq!(at(cfg.host_path("/data/x")), own("/v/data", "/x", false));
        assert_eq!(
            at(cfg.host_path("/data/snap/y")),
            own("/v/snap", "/y", true)
        );
        assert_eq!(at(cfg.host_path("/data")), own("/v/data", "/", false));
        assert_eq!(
            at(cfg.host_path("/database")),
            own("/rootfs", "/database", false)
        );
        assert_eq!(at(cfg.host_path("/app")), own("/rootfs", "/app", false));
        // `..` never selects a volume: the path is the root filesystem's to resolve.
        assert_eq!(
            at(cfg.host_path("/data/../etc")),
            own("/rootfs", "/data/../etc", false)
        );
    }
}
