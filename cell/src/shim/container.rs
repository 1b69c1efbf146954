//! The container itself: its creation with libcontainer (pause as PID 1, or a lone Run
//! as its init), and its deletion (processes, cgroups, libcontainer state).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Context as _;
use lattice_specs::models::{self, action::Action as A};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::context::Ctx;
use super::fds::{await_gate, null_fd, pipe_pair, pipe_receiver, REPORT_FD, REPORT_FD_HELD};
use super::process::{run_spec, Started};
use super::ShimConfig;

/// Stops whatever the container's work left behind and deletes the container: its
/// processes, its cgroups and its libcontainer state.
pub(super) async fn teardown(cfg: &ShimConfig, mut container: Container, init_pid: i32) {
    // Whatever the action tree left behind (daemons it started) goes now. Killing PID 1
    // of the namespace takes every process in it down with it, without freezing the
    // cgroup (which costs every CPU a kernel text patch, twice).
    if init_pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(init_pid), Signal::SIGKILL);
        reap_all(init_pid, Duration::from_secs(5)).await;
    } else if let Err(e) = container.kill(Signal::SIGKILL, true) {
        eprintln!("lattice shim: killing the processes of {}: {e}", cfg.id);
    }
    // A process libcontainer forked to start a Run and that had not yet entered the
    // namespace when the stop came is in the cgroup only.
    crate::cgroup::thaw_and_drain(&cfg.cgroup);
    // Deleting the container: what libcontainer's delete does for ours (its cgroup
    // directories, its state), without reading the mount table once per controller
    // (a dozen times); libcontainer's delete, which retries, if a directory stays.
    let state = cfg.state_root.join(&cfg.id);
    if crate::cgroup::remove(&cfg.cgroup) {
        if let Err(e) = std::fs::remove_dir_all(&state) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lattice shim: removing {}: {e}", state.display());
            }
        }
    } else if let Err(e) = container.delete(true) {
        eprintln!("lattice shim: deleting container {}: {e}", cfg.id);
        destroy(cfg);
    }
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

pub(super) fn create(cfg: &ShimConfig) -> anyhow::Result<Container> {
    let making = making_under_parent();
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
    drop(making);
    await_gate(crate::launcher::GO)?;
    container.start()?;
    Ok(container)
}

/// Held while libcontainer makes the container's cgroups, so that no closing cell
/// removes their parent meanwhile (see [`crate::cgroup::PARENT_LOCK`]).
fn making_under_parent() -> Option<nix::fcntl::Flock<std::fs::File>> {
    crate::cgroup::making_under_parent(std::path::Path::new(crate::cgroup::PARENT_LOCK))
}

/// The Run and its process spec when the container's whole work is one Run action
/// (and the report descriptor is held); such a Run becomes the container's init.
pub(super) fn lone_run(ctx: &Ctx) -> Option<(models::RunAction, oci_spec::runtime::Process)> {
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
pub(super) fn create_running(
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
    let making = making_under_parent();
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
    drop(making);
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
pub(super) async fn exec_report(report: OwnedFd) -> Result<(), std::io::Error> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    pipe_receiver(report)?.read_to_end(&mut buf).await?;
    match <[u8; 4]>::try_from(buf.as_slice()) {
        Ok(errno) => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))),
        Err(_) => Ok(()),
    }
}

/// Removes what a failed create may have left (libcontainer state, cgroup).
pub(super) fn destroy(cfg: &ShimConfig) {
    if let Ok(mut c) = Container::load(cfg.state_root.join(&cfg.id)) {
        let _ = c.kill(Signal::SIGKILL, true);
        crate::cgroup::thaw_and_drain(&cfg.cgroup);
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(cfg.state_root.join(&cfg.id));
    crate::cgroup::remove(&cfg.cgroup);
}
