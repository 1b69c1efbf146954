//! Run processes: a Run action's process spec, its start as a process exec'd into the
//! container, its output sent to the log, its stop when cancelled and its exit; and
//! the pidfd waits the shim and the executor watch processes with.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use lattice_specs::models;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::context::{forward_lines, Ctx};
use super::events::ShimEvent;
use super::fds::{null_fd, pipe_pair};
use super::users::lookup_user;

/// Why a Run failed; its text is the failure reason the rep reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RunError {
    /// The process could not be specified or prepared (an unknown user, an unreadable
    /// container spec, no pipe), as the cause says it.
    #[error("{0}")]
    Setup(String),
    /// Its command is not in the image.
    #[error("{path}: command not found in the image")]
    NotFound { path: String },
    /// It could not start for another reason.
    #[error("failed to start {path}: {error}")]
    Start { path: String, error: String },
    /// It was stopped, and exited with this status.
    #[error("cancelled (exited with status {0})")]
    Cancelled(i32),
    /// The kernel killed it for want of memory (status 137).
    #[error("exited with status {0}: out of memory")]
    OutOfMemory(i32),
    /// It exited with this status (not 0).
    #[error("exited with status {0}")]
    Exited(i32),
}

/// What a process exec'd into the container is made of (a Run action's, or an exec
/// session's): enough for its spec.
pub(super) struct ProcessParams<'a> {
    /// The user to run as (empty: root).
    pub(super) user: &'a str,
    pub(super) args: Vec<String>,
    /// Over the image's and the instance's environment.
    pub(super) env: Vec<(String, String)>,
    /// The working directory (empty: `/`).
    pub(super) dir: &'a str,
    pub(super) nofile: u64,
    /// On a terminal (the console socket hands its master over).
    pub(super) terminal: bool,
}

/// The process spec of a Run action (see [`process_spec`]).
pub(super) fn run_spec(
    ctx: &Ctx,
    r: &models::RunAction,
) -> Result<oci_spec::runtime::Process, String> {
    let mut args = vec![r.path.clone()];
    args.extend(r.args.iter().cloned());
    process_spec(
        ctx,
        ProcessParams {
            user: &r.user,
            args,
            env: r
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            dir: &r.dir,
            nofile: run_nofile(r),
            terminal: false,
        },
    )
}

/// A Run action's open-files limit.
pub(super) fn run_nofile(r: &models::RunAction) -> u64 {
    r.resource_limits
        .as_ref()
        .and_then(|l| l.nofile)
        .unwrap_or(crate::bundle::DEFAULT_NOFILE)
}

/// A process spec: its command, environment (the image's and the request's over a
/// default PATH, HOME and USER), directory, user and open-files limit, with the
/// capabilities and no_new_privs the container grants.
pub(super) fn process_spec(
    ctx: &Ctx,
    p: ProcessParams,
) -> Result<oci_spec::runtime::Process, String> {
    let (uid, gid) = lookup_user(&ctx.cfg.rootfs, p.user)?;
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
        if p.user.is_empty() {
            "root".into()
        } else {
            p.user.to_string()
        },
    );
    for (k, v) in ctx.cfg.env.iter().chain(p.env.iter()) {
        env.insert(k.clone(), v.clone());
    }
    let init_process = ctx.init_process.as_ref().map_err(Clone::clone)?;
    let mut builder = oci_spec::runtime::ProcessBuilder::default()
        .no_new_privileges(init_process.no_new_privileges().unwrap_or(true))
        .terminal(p.terminal);
    if let Some(caps) = init_process.capabilities() {
        builder = builder.capabilities(caps.clone());
    }
    builder
        .args(p.args)
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(if p.dir.is_empty() {
            "/".to_string()
        } else {
            p.dir.to_string()
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
            .hard(p.nofile)
            .soft(p.nofile)
            .build()
            .map_err(|e| e.to_string())?])
        .build()
        .map_err(|e| e.to_string())
}

/// How long a Run's output may keep arriving after the Run exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);

/// A started Run: its pid and the read ends of its stdout and stderr.
pub(super) struct Started {
    pub(super) pid: Pid,
    pub(super) out: OwnedFd,
    pub(super) err: OwnedFd,
}

/// Execs a process into a container under the container's seccomp profile. (The
/// tenant builder keeps the container's namespaces, capabilities and no_new_privs,
/// but not its seccomp filter: without this, every process but the init would run
/// unfiltered.) The filter goes on last, right before the exec.
#[derive(Clone)]
pub(super) struct Confined {
    pub(super) seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
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
pub(super) async fn run_process(
    ctx: &Ctx,
    r: &models::RunAction,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let process = run_spec(ctx, r).map_err(RunError::Setup)?;
    let process_file = ctx
        .cfg
        .bundle
        .join(format!("process-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &process_file,
        serde_json::to_vec(&process).map_err(|e| RunError::Setup(e.to_string()))?,
    )
    .map_err(|e| RunError::Setup(format!("cannot write process spec: {e}")))?;

    let (out_r, out_w) = pipe_pair().map_err(|e| RunError::Setup(e.to_string()))?;
    let (err_r, err_w) = pipe_pair().map_err(|e| RunError::Setup(e.to_string()))?;
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
pub(super) async fn supervise_run(
    ctx: &Ctx,
    r: &models::RunAction,
    started: Started,
    cancel: CancellationToken,
) -> Result<(), RunError> {
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
        return Err(RunError::Cancelled(code));
    }
    if code == 137 && crate::cgroup::oom_kills(&ctx.cfg.cgroup) > 0 {
        return Err(RunError::OutOfMemory(code));
    }
    Err(RunError::Exited(code))
}

/// libcontainer's error for an exec that could not start, made readable.
pub(super) fn exec_error(path: &str, err: &str) -> RunError {
    if err.contains("No such file") || err.contains("ENOENT") || err.contains("not found") {
        RunError::NotFound {
            path: path.to_string(),
        }
    } else {
        RunError::Start {
            path: path.to_string(),
            error: err.to_string(),
        }
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
    // SAFETY: pidfd_open takes a pid and flags, no pointers; it returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by pidfd_open: open, and owned by nothing else.
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
pub(super) async fn wait_exit(pid: Pid) -> i32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_shell_reports_them() {
        let pid = Pid::from_raw(42);
        assert_eq!(shell_status(Ok(WaitStatus::Exited(pid, 3))), Some(3));
        assert_eq!(
            shell_status(Ok(WaitStatus::Signaled(pid, Signal::SIGKILL, false))),
            Some(137)
        );
        assert_eq!(shell_status(Ok(WaitStatus::StillAlive)), None);
        assert_eq!(
            shell_status(Ok(WaitStatus::Stopped(pid, Signal::SIGSTOP))),
            None
        );
        assert_eq!(shell_status(Err(nix::errno::Errno::ECHILD)), Some(255));
    }

    #[test]
    fn a_command_missing_from_the_image_says_so() {
        for err in [
            "No such file or directory",
            "ENOENT",
            "executable not found",
        ] {
            assert_eq!(
                exec_error("/bin/app", err).to_string(),
                "/bin/app: command not found in the image"
            );
        }
        assert_eq!(
            exec_error("/bin/app", "permission denied").to_string(),
            "failed to start /bin/app: permission denied"
        );
    }

    #[test]
    fn run_failures_read_as_before() {
        assert_eq!(RunError::Exited(1).to_string(), "exited with status 1");
        assert_eq!(
            RunError::OutOfMemory(137).to_string(),
            "exited with status 137: out of memory"
        );
        assert_eq!(
            RunError::Cancelled(143).to_string(),
            "cancelled (exited with status 143)"
        );
        assert_eq!(
            RunError::Setup("unknown user".into()).to_string(),
            "unknown user"
        );
    }
}
