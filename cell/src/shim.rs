//! The shim: one small process per container (containerd's shim, in our shape).
//!
//! The executor writes `shim.json` into the container's directory and starts the shim
//! (`lattice-shim DIR`, or `lattice shim DIR`; the executor's launcher starts it ahead
//! as `--stdin` and hands it DIR on stdin later, see [`crate::launcher`]). The shim, in
//! its own session so the rep may restart without touching it, creates the container
//! with libcontainer (pause as PID 1), runs the action tree with every Run as a process
//! exec'd into the container, sends stdout/stderr lines to the cell's log socket, appends lifecycle events to
//! `events.jsonl`, and on exit or SIGTERM stops everything (SIGTERM, then SIGKILL after
//! the grace period) and deletes the container (cgroups included).
//!
//! libcontainer forks with raw clone(2); doing that from the rep's multi-threaded
//! runtime risks a child deadlocked on a lock some other thread held. The shim runs a
//! single-threaded runtime, so every fork happens from a process with one thread.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use lattice_specs::models::{self, action::Action as A};

use crate::inroot::Rooted;

mod users;
use crate::loglines::{dropped_message, Admit, LineSplitter, LogSender, RateLimit, ReadPace};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
pub use users::lookup_user;

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

/// A lifecycle event, one JSON line each in `DIR/events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ShimEvent {
    /// The container exists and its init runs.
    Created { init_pid: i32 },
    /// A Run action's process started.
    RunStarted { path: String, pid: i32 },
    /// An EmitProgress message.
    Progress { message: String },
    /// The action tree finished (or was stopped); the container is being deleted.
    Exited {
        failed: bool,
        reason: String,
        /// Whether it was stopped (SIGTERM to the shim) rather than finishing.
        stopped: bool,
        /// The result file's content, when the work succeeded and names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// The container is gone: cgroups, processes and libcontainer state.
    Destroyed,
    /// The container could not be created.
    CreateFailed { reason: String },
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

/// The shim's entry point (`DIR`; `--stdin` to read DIR from stdin when it comes; or
/// `DIR --exec RUN_ACTION_JSON` for a command health check run in a container that
/// already exists): never returns.
pub fn main(args: &[std::ffi::OsString]) -> ! {
    let Some(dir) = args.first().map(Path::new) else {
        eprintln!("usage: lattice shim CONTAINER_DIR|--stdin [--exec RUN_ACTION_JSON]");
        std::process::exit(2);
    };
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

/// Whether the shim waits for the executor's word on stdin before creating the
/// container and before starting its process (a shim started ahead, see
/// [`crate::launcher`]).
static GATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line from stdin, byte by byte (nothing past it is taken from the pipe); `None`
/// at EOF.
fn stdin_line() -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(0, &mut byte) {
            Ok(1) if byte[0] == b'\n' => return Some(line),
            Ok(1) => line.push(byte[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Waits for the container's directory on stdin; `None` at EOF: the executor dropped
/// this spare. Then stderr goes to the container's `shim.log`.
fn container_from_stdin() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let dir = PathBuf::from(std::ffi::OsString::from_vec(stdin_line()?));
    GATED.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Ok(log) = std::fs::File::create(dir.join("shim.log")) {
        let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    }
    Some(dir)
}

/// Waits for the executor's `word` (a line of the launcher's gate), when it said it
/// would send one: `ready` before the container is created (its rootfs and network
/// namespace exist), `go` before its process starts (then stdin goes back to
/// /dev/null). EOF instead: the executor gave up on the container.
fn await_gate(word: &[u8]) -> anyhow::Result<()> {
    if !GATED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let line = stdin_line();
    anyhow::ensure!(
        line.as_deref() == Some(word),
        "the cell gave up on this container before it was {}",
        if word == crate::launcher::GO {
            "started"
        } else {
            "created"
        }
    );
    if word == crate::launcher::GO {
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(null.as_raw_fd(), 0)?;
    }
    Ok(())
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
    rt.block_on(run_process(&ctx, &run, CancellationToken::new()))
}

/// Supervises the container of `dir`, or (`None`) of the directory that comes on stdin.
fn supervise_main(dir: Option<&Path>) -> ! {
    // Our own session: the rep's death or its terminal's signals do not reach us.
    let _ = nix::unistd::setsid();
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

/// The descriptor a lone Run's init reports a failed exec on (pause.c's fd 3):
/// libcontainer passes descriptors on by number, from 3.
const REPORT_FD: i32 = 3;

/// Whether fd 3 is held (on /dev/null) for [`REPORT_FD`], so that nothing else of the
/// shim's lands there.
static REPORT_FD_HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes fd 3 for the report pipe, first thing, before the shim opens anything else.
/// Descriptors inherited by mistake (a parent's, without close-on-exec, e.g. a build
/// tool's jobserver pipe) are not the shim's: they are closed, so fd 3 is free and the
/// shim runs the same way whoever started it.
fn hold_report_fd() {
    use std::os::fd::IntoRawFd;
    // SAFETY: nothing of the shim's is open beyond stdin, stdout and stderr yet.
    unsafe { libc::syscall(libc::SYS_close_range, REPORT_FD as u32, u32::MAX, 0u32) };
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    if null.into_raw_fd() == REPORT_FD {
        REPORT_FD_HELD.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn run_shim(dir: Option<&Path>) -> anyhow::Result<()> {
    hold_report_fd();
    // Made before the container comes, when a spare waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => match container_from_stdin() {
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

struct Events {
    file: std::fs::File,
}

impl Events {
    fn open(dir: &Path) -> anyhow::Result<Events> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))?;
        Ok(Events { file })
    }

    fn emit(&self, e: &ShimEvent) {
        let mut line = serde_json::to_vec(e).expect("events serialize");
        line.push(b'\n');
        let _ = (&self.file).write_all(&line);
    }
}

/// Reads the events a shim wrote, from byte `offset`; returns them and the new offset
/// (a trailing partial line is left for next time).
pub fn read_events(dir: &Path, offset: u64) -> std::io::Result<(Vec<ShimEvent>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(dir.join("events.jsonl")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let events = buf[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((events, offset + complete as u64))
}

struct Ctx {
    cfg: ShimConfig,
    /// None for `--exec` runs, which report only their exit status.
    events: Option<Events>,
    logs: Option<tokio::sync::Mutex<LogSender>>,
    /// The container's log rate (shared by its stdout and stderr).
    rate: std::sync::Mutex<RateLimit>,
    /// How fast its output is read at all (shared too).
    pace: std::sync::Mutex<ReadPace>,
    grace: Duration,
    /// The container's own process spec (capabilities, no_new_privs), read once:
    /// exec'd processes get what it grants, not the runtime's defaults.
    init_process: Result<oci_spec::runtime::Process, String>,
    /// The container's seccomp profile: libcontainer drops it for exec'd processes,
    /// so [`Confined`] applies it to each of them.
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl Ctx {
    fn new(cfg: ShimConfig, events: Option<Events>, logs: bool) -> Ctx {
        let spec = oci_spec::runtime::Spec::load(cfg.bundle.join("config.json"))
            .map_err(|e| format!("cannot read the container spec: {e}"));
        let seccomp = spec
            .as_ref()
            .ok()
            .and_then(|s| s.linux().as_ref()?.seccomp().clone());
        let init_process = spec.map(|spec| spec.process().clone().unwrap_or_default());
        Ctx {
            grace: Duration::from_millis(cfg.grace_ms),
            logs: logs.then(|| tokio::sync::Mutex::new(LogSender::new(&cfg.log_socket))),
            rate: std::sync::Mutex::new(RateLimit::new(std::time::Instant::now())),
            pace: std::sync::Mutex::new(ReadPace::new(std::time::Instant::now())),
            cfg,
            events,
            init_process,
            seccomp,
        }
    }

    fn emit(&self, e: &ShimEvent) {
        if let Some(ev) = &self.events {
            ev.emit(e);
        }
    }

    /// Sends a line to the rep, within the container's log rate; past it the line is
    /// dropped, and the next line sent is preceded by one saying how many were.
    async fn log(&self, source: &str, stream: &str, line: &str) {
        let Some(logs) = &self.logs else { return };
        match self.admit(line.len()) {
            Admit::Drop => return,
            Admit::SendAfterDropped(n) => {
                self.send_line(logs, source, "stderr", &dropped_message(n))
                    .await
            }
            Admit::Send => {}
        }
        self.send_line(logs, source, stream, line).await;
    }

    fn admit(&self, len: usize) -> Admit {
        self.rate
            .lock()
            .unwrap()
            .admit(len, std::time::Instant::now())
    }

    /// Says how many lines the rate limit dropped since the last one sent, if any.
    async fn log_dropped(&self, source: &str) {
        let n = self.rate.lock().unwrap().take_dropped();
        if let (Some(logs), true) = (&self.logs, n > 0) {
            self.send_line(logs, source, "stderr", &dropped_message(n))
                .await;
        }
    }

    async fn send_line(
        &self,
        logs: &tokio::sync::Mutex<LogSender>,
        source: &str,
        stream: &str,
        line: &str,
    ) {
        let msg = |stream: &str, line: String| LogLine {
            handle: self.cfg.id.clone(),
            source: source.to_string(),
            stream: stream.to_string(),
            line,
            time: lattice_specs::now_nanos(),
        };
        let Ok(bytes) = serde_json::to_vec(&msg(stream, line.to_string())) else {
            return;
        };
        let mut sender = logs.lock().await;
        if let Ok(lost) = sender.send(&bytes).await {
            if lost > 0 {
                let note = format!("lattice: {lost} log line(s) lost while the cell was down");
                if let Ok(b) = serde_json::to_vec(&msg("stderr", note)) {
                    let _ = sender.send(&b).await;
                }
            }
        }
    }

    fn source<'a>(&'a self, own: &'a str) -> &'a str {
        if own.is_empty() {
            &self.cfg.log_source
        } else {
            own
        }
    }
}

async fn supervise(cfg: ShimConfig, events: Events) -> anyhow::Result<()> {
    let ctx = Ctx::new(cfg, Some(events), true);
    // The rootfs and the network namespace are there once the executor says so.
    if let Err(e) = await_gate(crate::launcher::READY) {
        ctx.emit(&ShimEvent::CreateFailed {
            reason: format!("{e:#}"),
        });
        ctx.emit(&ShimEvent::Destroyed);
        return Err(e);
    }

    // A container whose work is one Run runs it as its init (through pause, which
    // passes signals on and reaps): no second process exec'd into it.
    let lone = lone_run(&ctx);
    let created = match &lone {
        Some((_, process)) => create_running(&ctx, process).map(|(c, s)| (c, Some(s))),
        None => create(&ctx.cfg).map(|c| (c, None)),
    };
    let (mut container, lone_started) = match created {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("failed to create container: {e:#}");
            ctx.emit(&ShimEvent::CreateFailed {
                reason: reason.clone(),
            });
            destroy(&ctx.cfg);
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
                exec_report(report)
                    .await
                    .map_err(|errno| exec_error(&r.path, &errno.to_string()))?;
                supervise_run(ctx, &r, started, stop).await
            }
            .boxed_local()
        }
        _ => run_action(&ctx, &action, stop.clone()),
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
    let (mut failed, mut reason) = match result {
        Ok(()) => (false, String::new()),
        Err(e) => (true, e),
    };
    let mut result = None;
    if !failed && !stopped && !ctx.cfg.result_file.is_empty() {
        let file = Rooted::new(&ctx.cfg.rootfs, &ctx.cfg.result_file);
        let max = crate::executor::MAX_RESULT_BYTES;
        match crate::inroot::read_regular(&file, max, crate::executor::RESULT_READ_TIMEOUT).await {
            Ok(b) => result = Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                failed = true;
                reason = format!("reading result file {}: {e}", ctx.cfg.result_file);
            }
        }
    }
    ctx.emit(&ShimEvent::Exited {
        failed,
        reason,
        stopped,
        result,
    });

    // Whatever the action tree left behind (daemons it started) goes now. Killing PID 1
    // of the namespace takes every process in it down with it, without freezing the
    // cgroup (which costs every CPU a kernel text patch, twice).
    if init_pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), Signal::SIGKILL);
        reap_all(init_pid, Duration::from_secs(5)).await;
    } else if let Err(e) = container.kill(Signal::SIGKILL, true) {
        eprintln!("lattice shim: killing the processes of {}: {e}", ctx.cfg.id);
    }
    // A process libcontainer forked to start a Run and that had not yet entered the
    // namespace when the stop came is in the cgroup only.
    crate::cgroup::thaw_and_drain(&ctx.cfg.cgroup);
    // Deleting the container: what libcontainer's delete does for ours (its cgroup
    // directories, its state), without reading the mount table once per controller
    // (a dozen times); libcontainer's delete, which retries, if a directory stays.
    let state = ctx.cfg.state_root.join(&ctx.cfg.id);
    if crate::cgroup::remove(&ctx.cfg.cgroup) {
        if let Err(e) = std::fs::remove_dir_all(&state) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lattice shim: removing {}: {e}", state.display());
            }
        }
    } else if let Err(e) = container.delete(true) {
        eprintln!("lattice shim: deleting container {}: {e}", ctx.cfg.id);
        destroy(&ctx.cfg);
    }
    ctx.emit(&ShimEvent::Destroyed);
    Ok(())
}

/// Reaps every child until `init` is reaped (or `limit` passes). A namespace's init
/// is only reaped once every other process of the namespace is, and an exec that failed
/// leaves a child whose pid libcontainer never returned: reap those too.
async fn reap_all(init: i32, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    // Woken by each child's exit rather than polling. (Not init's pidfd: init exits
    // only once every process of its namespace is reaped, some of which are ours.)
    let mut child_exits =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if status.pid().map(|p| p.as_raw()) == Some(init) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("lattice shim: init {init} did not exit within {limit:?}");
            return;
        }
        match &mut child_exits {
            Some(s) => {
                let _ = tokio::time::timeout_at(deadline, s.recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn null_fd() -> anyhow::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

fn create(cfg: &ShimConfig) -> anyhow::Result<Container> {
    let mut container = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&cfg.state_root)?
        .with_stdin(null_fd()?)
        .with_stdout(null_fd()?)
        .with_stderr(null_fd()?)
        .validate_id()?
        .as_init(&cfg.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()?;
    await_gate(crate::launcher::GO)?;
    container.start()?;
    Ok(container)
}

/// The Run and its process spec when the container's whole work is one Run action
/// (and the report descriptor is held); such a Run becomes the container's init.
fn lone_run(ctx: &Ctx) -> Option<(models::RunAction, oci_spec::runtime::Process)> {
    let Some(A::Run(r)) = &ctx.cfg.action.action else {
        return None;
    };
    if !REPORT_FD_HELD.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // A Run that cannot even be specified (an unknown user) fails as it does otherwise.
    let process = run_spec(ctx, r).ok()?;
    Some((r.clone(), process))
}

/// Creates the container with `process` as its work, under pause as PID 1; returns
/// the running Run and the read end of its exec report (see [`exec_report`]).
fn create_running(
    ctx: &Ctx,
    process: &oci_spec::runtime::Process,
) -> anyhow::Result<(Container, (Started, OwnedFd))> {
    let cfg = &ctx.cfg;
    let config = cfg.bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&config)?;
    let mut process = process.clone();
    let mut args = vec![crate::bundle::PAUSE_PATH.to_string()];
    args.extend(process.args().clone().unwrap_or_default());
    process.set_args(Some(args));
    spec.set_process(Some(process));
    spec.save(&config)?;

    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let (report_r, report_w) = pipe_pair()?;
    // The write end goes to the init as its fd 3 (dup2 leaves it inheritable); the
    // shim keeps none, so the read end sees EOF once the command is exec'd.
    nix::unistd::dup2(report_w.as_raw_fd(), REPORT_FD)?;
    drop(report_w);
    let built = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&cfg.state_root)
        .and_then(|b| {
            b.with_stdin(null_fd().expect("/dev/null"))
                .with_stdout(out_w)
                .with_stderr(err_w)
                .with_preserved_fds(1)
                .validate_id()
        })
        .and_then(|b| {
            b.as_init(&cfg.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    // Back to /dev/null, closing the shim's copy of the write end.
    let null = null_fd()?;
    nix::unistd::dup2(null.as_raw_fd(), REPORT_FD)?;
    nix::fcntl::fcntl(
        REPORT_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let mut container = built?;
    await_gate(crate::launcher::GO)?;
    container.start()?;
    let pid = container.pid().context("the container's init has no pid")?;
    Ok((
        container,
        (
            Started {
                pid,
                out: out_r,
                err: err_r,
            },
            report_r,
        ),
    ))
}

/// Waits for a lone Run's command to be exec'd: EOF on the report pipe; the errno
/// pause wrote there when the exec failed.
async fn exec_report(report: OwnedFd) -> Result<(), std::io::Error> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    pipe_receiver(report)?.read_to_end(&mut buf).await?;
    match <[u8; 4]>::try_from(buf.as_slice()) {
        Ok(errno) => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        Err(_) => Ok(()),
    }
}

/// Removes what a failed create may have left (libcontainer state, cgroup).
fn destroy(cfg: &ShimConfig) {
    if let Ok(mut c) = Container::load(cfg.state_root.join(&cfg.id)) {
        let _ = c.kill(Signal::SIGKILL, true);
        crate::cgroup::thaw_and_drain(&cfg.cgroup);
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(cfg.state_root.join(&cfg.id));
    crate::cgroup::remove(&cfg.cgroup);
}

type ActionResult = Result<(), String>;

fn run_action<'a>(
    ctx: &'a Ctx,
    action: &'a models::Action,
    cancel: CancellationToken,
) -> LocalBoxFuture<'a, ActionResult> {
    async move {
        let Some(a) = &action.action else {
            return Err("empty action".to_string());
        };
        if cancel.is_cancelled() {
            return Err("cancelled".to_string());
        }
        match a {
            A::Run(r) => run_process(ctx, r, cancel).await,
            A::Serial(s) => {
                for a in &s.actions {
                    run_action(ctx, a, cancel.clone()).await?;
                }
                Ok(())
            }
            A::Parallel(p) => {
                let all = futures::future::join_all(
                    p.actions.iter().map(|a| run_action(ctx, a, cancel.clone())),
                )
                .await;
                let errors: Vec<String> = all.into_iter().filter_map(|r| r.err()).collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            }
            A::Codependent(c) => {
                if c.actions.is_empty() {
                    return Ok(());
                }
                let group = cancel.child_token();
                let running: Vec<LocalBoxFuture<'_, ActionResult>> = c
                    .actions
                    .iter()
                    .map(|a| run_action(ctx, a, group.clone()))
                    .collect();
                let (first, _, rest) = futures::future::select_all(running).await;
                // The first to finish ends the group: stop the others and wait for them.
                group.cancel();
                futures::future::join_all(rest).await;
                match first {
                    Ok(()) => Err("codependent step exited".to_string()),
                    Err(e) => Err(e),
                }
            }
            A::Try(t) => {
                if let Some(inner) = &t.action {
                    if let Err(e) = run_action(ctx, inner, cancel.clone()).await {
                        ctx.log(
                            ctx.source(&t.log_source),
                            "stderr",
                            &format!("try: {e} (ignored)"),
                        )
                        .await;
                    }
                }
                if cancel.is_cancelled() {
                    return Err("cancelled".to_string());
                }
                Ok(())
            }
            A::Timeout(t) => {
                let inner = t.action.as_deref().ok_or("timeout without an action")?;
                let limit = Duration::from_nanos(t.timeout.max(0) as u64);
                let group = cancel.child_token();
                let fut = run_action(ctx, inner, group.clone());
                tokio::pin!(fut);
                tokio::select! {
                    r = &mut fut => r,
                    _ = tokio::time::sleep(limit) => {
                        group.cancel();
                        let _ = fut.await;
                        Err(format!("timed out after {}", humantime(limit)))
                    }
                }
            }
            A::EmitProgress(e) => {
                if !e.start_message.is_empty() {
                    ctx.emit(&ShimEvent::Progress {
                        message: e.start_message.clone(),
                    });
                    ctx.log(ctx.source(&e.log_source), "stdout", &e.start_message)
                        .await;
                }
                let inner = e
                    .action
                    .as_deref()
                    .ok_or("emit_progress without an action")?;
                match run_action(ctx, inner, cancel).await {
                    Ok(()) => {
                        if !e.success_message.is_empty() {
                            ctx.emit(&ShimEvent::Progress {
                                message: e.success_message.clone(),
                            });
                            ctx.log(ctx.source(&e.log_source), "stdout", &e.success_message)
                                .await;
                        }
                        Ok(())
                    }
                    Err(err) => {
                        let msg = if e.failure_message_prefix.is_empty() {
                            err
                        } else {
                            format!("{}: {err}", e.failure_message_prefix)
                        };
                        ctx.log(ctx.source(&e.log_source), "stderr", &msg).await;
                        Err(msg)
                    }
                }
            }
            A::Download(d) => {
                let (dest, read_only) = ctx.cfg.host_path(&d.to);
                if read_only {
                    return Err(format!(
                        "download into {}: it is on a read-only volume",
                        d.to
                    ));
                }
                let fut = crate::transfer::download(dest, &ctx.cfg.rootfs, d);
                tokio::select! {
                    r = fut => r.map_err(|e| format!("download {} failed: {e:#}", d.from)),
                    _ = cancel.cancelled() => Err("cancelled".to_string()),
                }
            }
            A::Upload(u) => {
                let fut = crate::transfer::upload(ctx.cfg.host_path(&u.from).0, u);
                tokio::select! {
                    r = fut => r.map_err(|e| format!("upload {} failed: {e:#}", u.from)),
                    _ = cancel.cancelled() => Err("cancelled".to_string()),
                }
            }
        }
    }
    .boxed_local()
}

fn humantime(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A process's start time (clock ticks after boot: with the pid, it names one process
/// for good) and whether it is a zombie; `None` when there is no such process.
pub(crate) fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state (field 3) … starttime (field 22).
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    let started = rest.nth(18)?.parse().ok()?;
    Some((started, state == "Z"))
}

/// A pidfd for `pid`: readable once the process has exited.
pub(crate) fn pidfd(pid: Pid) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd of process `pid` registered with the runtime: readable once the process has
/// exited (a zombie counts). `None` when it cannot be opened (the process is gone) or
/// registered.
pub(crate) fn exit_watch(pid: Pid) -> Option<AsyncFd<OwnedFd>> {
    watch_pidfd(pidfd(pid).ok()?)
}

/// A pidfd just opened, registered with the runtime (`None` when it cannot be).
pub(crate) fn watch_pidfd(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: the pidfd is ours alone (just opened, owned by the AsyncFd from here on).
    unsafe { AsyncFd::register(fd) }.ok()
}

/// Waits for a child to exit; returns its status as a shell would (128+signal).
async fn wait_exit(pid: Pid) -> i32 {
    let Some(fd) = exit_watch(pid) else {
        return wait_blocking(pid);
    };
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            status => {
                if let Some(code) = shell_status(status) {
                    return code;
                }
            }
        }
        match fd.readable().await {
            Ok(mut g) => g.clear_ready(),
            Err(_) => return wait_blocking(pid),
        }
    }
}

fn wait_blocking(pid: Pid) -> i32 {
    loop {
        if let Some(code) = shell_status(waitpid(pid, None)) {
            return code;
        }
    }
}

/// An exit as a shell reports it (128 + signal when killed); `None` while the process
/// has not ended (stopped, continued). A failed wait counts as 255.
fn shell_status(status: nix::Result<WaitStatus>) -> Option<i32> {
    match status {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) => None,
        Err(_) => Some(255),
    }
}

fn pipe_pair() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// The read end of a pipe, non-blocking and registered with tokio. (Only this end: the
/// write end belongs to a process that expects a blocking stdout.)
fn pipe_receiver(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

/// Sends a process's output to the log, line by line (lines cut at
/// [`crate::loglines::MAX_LINE`], held to the container's log rate, read no faster
/// than [`crate::loglines::READ_BYTES_PER_SEC`]); `quiet` reads and discards it.
async fn forward_lines(ctx: &Ctx, fd: OwnedFd, source: &str, stream: &str, quiet: bool) {
    use tokio::io::AsyncReadExt as _;
    let Ok(mut rx) = pipe_receiver(fd) else {
        return;
    };
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    // What is admitted; `true` for a dropped-lines notice (it goes to stderr).
    let mut lines: Vec<(bool, String)> = Vec::new();
    let take = |rate: &mut RateLimit,
                now: std::time::Instant,
                l: &[u8],
                lines: &mut Vec<(bool, String)>| {
        if quiet {
            return;
        }
        // Dropped lines are only counted: no copy of a flood is made.
        match rate.admit(l.len(), now) {
            Admit::Drop => {}
            Admit::Send => lines.push((false, String::from_utf8_lossy(l).into_owned())),
            Admit::SendAfterDropped(n) => {
                lines.push((true, dropped_message(n)));
                lines.push((false, String::from_utf8_lossy(l).into_owned()));
            }
        }
    };
    loop {
        // A flood that stops is reported within a second, not at the next line.
        let n = match tokio::time::timeout(Duration::from_secs(1), rx.read(&mut buf)).await {
            Err(_) => {
                ctx.log_dropped(source).await;
                continue;
            }
            Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        // One clock read and one lock per chunk, not per line (a flood of short lines
        // is millions a second).
        let now = std::time::Instant::now();
        let mut count = 0;
        {
            let mut rate = ctx.rate.lock().unwrap();
            let mut each = |l: &[u8]| {
                count += 1;
                take(&mut rate, now, l, &mut lines)
            };
            if n == 0 {
                splitter.finish(&mut each);
            } else {
                splitter.push(&buf[..n], &mut each);
            }
        }
        if let Some(logs) = &ctx.logs {
            for (notice, line) in lines.drain(..) {
                let to = if notice { "stderr" } else { stream };
                ctx.send_line(logs, source, to, &line).await;
            }
        }
        if n == 0 {
            break;
        }
        let pause = ctx.pace.lock().unwrap().read(n, count, now);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    ctx.log_dropped(source).await;
}

/// The process spec of a Run action: its command, environment (the image's and the
/// request's over a default PATH, HOME and USER), directory, user and open-files
/// limit, with the capabilities and no_new_privs the container grants.
fn run_spec(ctx: &Ctx, r: &models::RunAction) -> Result<oci_spec::runtime::Process, String> {
    let (uid, gid) = lookup_user(&ctx.cfg.rootfs, &r.user)?;
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert(
        "HOME".into(),
        if uid == 0 {
            "/root".into()
        } else {
            "/home/vcap".into()
        },
    );
    env.insert(
        "USER".into(),
        if r.user.is_empty() {
            "root".into()
        } else {
            r.user.clone()
        },
    );
    for (k, v) in &ctx.cfg.env {
        env.insert(k.clone(), v.clone());
    }
    for e in &r.env {
        env.insert(e.name.clone(), e.value.clone());
    }
    let mut args = vec![r.path.clone()];
    args.extend(r.args.iter().cloned());
    let nofile = r
        .resource_limits
        .as_ref()
        .and_then(|l| l.nofile)
        .unwrap_or(crate::bundle::DEFAULT_NOFILE);
    let init_process = ctx.init_process.as_ref().map_err(Clone::clone)?;
    let mut builder = oci_spec::runtime::ProcessBuilder::default()
        .no_new_privileges(init_process.no_new_privileges().unwrap_or(true));
    if let Some(caps) = init_process.capabilities() {
        builder = builder.capabilities(caps.clone());
    }
    builder
        .args(args)
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(if r.dir.is_empty() {
            "/".to_string()
        } else {
            r.dir.clone()
        })
        .user(
            oci_spec::runtime::UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .rlimits(vec![oci_spec::runtime::PosixRlimitBuilder::default()
            .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(|e| e.to_string())?])
        .build()
        .map_err(|e| e.to_string())
}

/// How long a Run's output may keep arriving after the Run exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);

/// A started Run: its pid and the read ends of its stdout and stderr.
struct Started {
    pid: Pid,
    out: OwnedFd,
    err: OwnedFd,
}

/// Execs a process into a container under the container's seccomp profile. (The
/// tenant builder keeps the container's namespaces, capabilities and no_new_privs,
/// but not its seccomp filter: without this, every process but the init would run
/// unfiltered.) The filter goes on last, right before the exec.
#[derive(Clone)]
struct Confined {
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl libcontainer::workload::Executor for Confined {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        if let Some(profile) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(profile).map_err(|e| {
                libcontainer::workload::ExecutorError::Other(format!("seccomp: {e}"))
            })?;
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Runs one Run action as a process exec'd into the container.
async fn run_process(ctx: &Ctx, r: &models::RunAction, cancel: CancellationToken) -> ActionResult {
    let process = run_spec(ctx, r)?;
    let process_file = ctx
        .cfg
        .bundle
        .join(format!("process-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &process_file,
        serde_json::to_vec(&process).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot write process spec: {e}"))?;

    let (out_r, out_w) = pipe_pair().map_err(|e| e.to_string())?;
    let (err_r, err_w) = pipe_pair().map_err(|e| e.to_string())?;
    let built = ContainerBuilder::new(ctx.cfg.id.clone(), SyscallType::default())
        .with_executor(Confined {
            seccomp: ctx.seccomp.clone(),
        })
        .with_root_path(&ctx.cfg.state_root)
        .map(|b| {
            b.with_stdin(null_fd().expect("/dev/null"))
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
                .build()
        });
    let _ = std::fs::remove_file(&process_file);
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) | Err(e) => {
            return Err(exec_error(&r.path, &e.to_string()));
        }
    };
    let started = Started {
        pid,
        out: out_r,
        err: err_r,
    };
    supervise_run(ctx, r, started, cancel).await
}

/// Follows a started Run to its end: forwards its output, stops it when cancelled
/// (SIGTERM, then SIGKILL after the grace period) and turns its exit into a result.
async fn supervise_run(
    ctx: &Ctx,
    r: &models::RunAction,
    started: Started,
    cancel: CancellationToken,
) -> ActionResult {
    let pid = started.pid;
    ctx.emit(&ShimEvent::RunStarted {
        path: r.path.clone(),
        pid: pid.as_raw(),
    });
    let source = ctx.source(&r.log_source).to_string();
    let quiet = r.suppress_log_output;
    let output = futures::future::join(
        forward_lines(ctx, started.out, &source, "stdout", quiet),
        forward_lines(ctx, started.err, &source, "stderr", quiet),
    );
    let exit = async {
        let waiting = wait_exit(pid);
        tokio::pin!(waiting);
        tokio::select! {
            code = &mut waiting => return code,
            _ = cancel.cancelled() => {}
        }
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        tokio::select! {
            code = &mut waiting => code,
            _ = tokio::time::sleep(ctx.grace) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                waiting.await
            }
        }
    };
    // The exit ends the Run, not the end of its output: a daemon it started may hold
    // its stdout open for ever. What is already written gets a moment to arrive.
    tokio::pin!(exit);
    tokio::pin!(output);
    let mut output_done = false;
    let code = loop {
        tokio::select! {
            code = &mut exit => break code,
            _ = &mut output, if !output_done => output_done = true,
        }
    };
    if !output_done {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut output).await;
    }
    if code == 0 {
        return Ok(());
    }
    if cancel.is_cancelled() {
        return Err(format!("cancelled (exited with status {code})"));
    }
    if code == 137 && crate::cgroup::oom_kills(&ctx.cfg.cgroup) > 0 {
        return Err(format!("exited with status {code}: out of memory"));
    }
    Err(format!("exited with status {code}"))
}

/// libcontainer's error for an exec that could not start, made readable.
fn exec_error(path: &str, err: &str) -> String {
    if err.contains("No such file") || err.contains("ENOENT") || err.contains("not found") {
        format!("{path}: command not found in the image")
    } else {
        format!("failed to start {path}: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_incrementally() {
        let dir = std::env::temp_dir().join(format!("events-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ev = Events::open(&dir).unwrap();
        ev.emit(&ShimEvent::Created { init_pid: 7 });
        let (got, off) = read_events(&dir, 0).unwrap();
        assert_eq!(got, vec![ShimEvent::Created { init_pid: 7 }]);
        ev.emit(&ShimEvent::Destroyed);
        let (got, _) = read_events(&dir, off).unwrap();
        assert_eq!(got, vec![ShimEvent::Destroyed]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
