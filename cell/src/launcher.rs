//! Starting the containers' shims. Exec'ing the shim binary (loading it and its
//! libraries, faulting its pages in) takes milliseconds of a core, on the path of every
//! container start. So one shim is started ahead and waits, reading the directory of
//! its container from stdin (`shim --stdin`): a container is handed to that spare at
//! once, and the next spare loads while the container runs.
//!
//! Its stdin stays a [`Gate`], so that the shim and the executor work at the same
//! time: the shim reads its configuration while the executor mounts the rootfs and
//! makes the network namespace, and creates the container (namespaces, cgroups,
//! mounts) once the executor says `ready`; meanwhile the executor finishes what the
//! container's process needs (its network connected, its ports published), and the
//! shim starts that process only once the executor says `go`. When the executor gives
//! up instead, the shim sees EOF, deletes what it created and exits.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;

/// The shim argument that makes it read its container's directory from stdin.
pub const STDIN_ARG: &str = "--stdin";

pub struct Launcher {
    /// The shim command (program and leading arguments).
    command: Vec<OsString>,
    spare: Mutex<Option<Spare>>,
    /// Whether spares load in the idle class (only if they can be taken out of it).
    idle_spares: bool,
    /// Set by [`Launcher::close`]: no more spares.
    closed: std::sync::atomic::AtomicBool,
}

/// A shim started ahead, waiting for its container's directory on its stdin. Dropping
/// it closes that pipe: the shim sees EOF and exits.
struct Spare {
    stdin: std::fs::File,
    pid: u32,
    /// Loading in the idle scheduling class.
    idle: bool,
}

/// Sets the scheduling policy of process `pid` (priority 0).
fn schedule(pid: u32, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on a valid sched_param.
    if unsafe { libc::sched_setscheduler(pid as libc::pid_t, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process may take a process out of the idle class again (root, or
/// CAP_SYS_NICE; a container of the rep may lack it): tried on a thread of its own.
fn can_leave_idle() -> bool {
    std::thread::spawn(|| {
        schedule(0, libc::SCHED_IDLE).is_ok() && schedule(0, libc::SCHED_OTHER).is_ok()
    })
    .join()
    .unwrap_or(false)
}

impl Spare {
    fn hand(mut self, dir: &Path) -> std::io::Result<Launched> {
        let mut line = dir.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        // A line this short goes into the empty pipe whole, or fails with EPIPE when
        // the spare is gone.
        self.stdin.write_all(&line)?;
        if self.idle {
            // Back to the normal class: its container's start is on the clock now. (It
            // reads its pipe, so its pid is still its own.) The container is the shim's
            // now whatever happens here: this must not fail the launch.
            if let Err(e) = schedule(self.pid, libc::SCHED_OTHER) {
                tracing::warn!(
                    pid = self.pid,
                    "a shim stays in the idle scheduling class: {e}"
                );
            }
        }
        Ok(Launched {
            pid: self.pid,
            gate: Gate(self.stdin),
        })
    }
}

/// A shim that has its container.
pub struct Launched {
    pub pid: u32,
    pub gate: Gate,
}

/// Lets a shim start its container's process. Dropped unopened, the shim gives up.
pub struct Gate(std::fs::File);

/// The line that lets the shim create the container: its rootfs and network
/// namespace exist.
pub const READY: &[u8] = b"ready";
/// The line that lets the container's process start.
pub const GO: &[u8] = b"go";

impl Gate {
    fn say(&mut self, word: &[u8]) -> std::io::Result<()> {
        self.0.write_all(&[word, b"\n"].concat())
    }

    /// Lets the shim create the container; fails when the shim is gone.
    pub fn ready(&mut self) -> std::io::Result<()> {
        self.say(READY)
    }

    /// Lets the container's process start; fails when the shim is gone.
    pub fn open(mut self) -> std::io::Result<()> {
        self.say(GO)
    }
}

impl Launcher {
    pub fn new(command: Vec<OsString>) -> Launcher {
        Launcher {
            command,
            spare: Mutex::new(None),
            idle_spares: can_leave_idle(),
            closed: Default::default(),
        }
    }

    /// Starts the shim of the container in `dir`: the spare takes it when there is one,
    /// a new shim otherwise. Must run within a tokio runtime, which reaps the shims.
    pub fn launch(&self, dir: &Path) -> anyhow::Result<Launched> {
        anyhow::ensure!(
            !dir.as_os_str().as_bytes().contains(&b'\n'),
            "the container directory {} contains a newline",
            dir.display()
        );
        let spare = self.spare.lock().unwrap().take();
        match spare.map(|s| s.hand(dir)) {
            Some(Ok(launched)) => Ok(launched),
            // No spare yet, or it died (EPIPE): a new shim.
            _ => self
                .spawn()?
                .hand(dir)
                .context("handing the container to its shim"),
        }
    }

    /// Starts a spare shim for the next container unless one waits already. Called once
    /// a container's start no longer needs the CPU for itself.
    pub fn refill(&self) {
        let mut spare = self.spare.lock().unwrap();
        if spare.is_none() && !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            match self.spawn() {
                Ok(next) => *spare = Some(next),
                Err(e) => tracing::warn!("could not start a spare shim: {e:#}"),
            }
        }
    }

    /// Lets the spare shim go (it exits).
    pub fn close(&self) {
        let mut spare = self.spare.lock().unwrap();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        spare.take();
    }

    /// The pid of the shim waiting for the next container, if one is.
    pub fn spare_pid(&self) -> Option<u32> {
        self.spare.lock().unwrap().as_ref().map(|s| s.pid)
    }

    fn spawn(&self) -> anyhow::Result<Spare> {
        let (program, args) = self
            .command
            .split_first()
            .context("no shim command configured")?;
        let mut child = with_default_signals(&mut tokio::process::Command::new(program))
            .args(args)
            .arg(STDIN_ARG)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting the shim {program:?}"))?;
        let pid = child.id().context("the shim exited at once")?;
        // Loading a spare (its libraries, its pages) runs only on a CPU that has
        // nothing else to do: it must not slow the container starting meanwhile.
        let idle = self.idle_spares && schedule(pid, libc::SCHED_IDLE).is_ok();
        let stdin = child
            .stdin
            .take()
            .context("the shim's stdin")?
            .into_owned_fd()?;
        // tokio reaps the shim when it exits.
        drop(child);
        Ok(Spare {
            stdin: stdin.into(),
            pid,
            idle,
        })
    }
}

/// Gives a shim (and so every container process it starts) default signal
/// dispositions and an empty signal mask, whatever the cell inherited: a cell started
/// in the background by a non-interactive shell ignores SIGINT and SIGQUIT (POSIX), and
/// ignored signals survive exec, so Ctrl-C in `ltc ssh` or an exec session's INT never
/// reached the container's processes.
pub fn with_default_signals(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (signal, sigemptyset, sigprocmask) and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}
