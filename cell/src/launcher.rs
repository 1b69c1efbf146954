//! Starting the containers' shims. Exec'ing the shim binary (loading it and its
//! libraries, faulting its pages in) takes milliseconds of a core, on the path of every
//! container start. So one shim is started ahead and waits, reading the directory of
//! its container from stdin (`shim --stdin`): a container is handed to that spare at
//! once, and the next spare loads while the container starts.

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
}

/// A shim started ahead, waiting for its container's directory on its stdin. Dropping
/// it closes that pipe: the shim sees EOF and exits.
struct Spare {
    stdin: std::fs::File,
    pid: u32,
}

impl Spare {
    fn hand(mut self, dir: &Path) -> std::io::Result<u32> {
        let mut line = dir.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        // A line this short goes into the empty pipe whole, or fails with EPIPE when
        // the spare is gone.
        self.stdin.write_all(&line)?;
        Ok(self.pid)
    }
}

impl Launcher {
    pub fn new(command: Vec<OsString>) -> Launcher {
        Launcher {
            command,
            spare: Mutex::new(None),
        }
    }

    /// Starts the shim of the container in `dir`: the spare takes it when there is one
    /// (a new shim otherwise), then the next spare starts. Returns the shim's pid. Must
    /// run within a tokio runtime, which reaps the shims.
    pub fn launch(&self, dir: &Path) -> anyhow::Result<u32> {
        anyhow::ensure!(
            !dir.as_os_str().as_bytes().contains(&b'\n'),
            "the container directory {} contains a newline",
            dir.display()
        );
        let spare = self.spare.lock().unwrap().take();
        let pid = match spare.map(|s| s.hand(dir)) {
            Some(Ok(pid)) => pid,
            // No spare yet, or it died (EPIPE): a new shim.
            _ => self
                .spawn()?
                .hand(dir)
                .context("handing the container to its shim")?,
        };
        match self.spawn() {
            Ok(next) => *self.spare.lock().unwrap() = Some(next),
            Err(e) => tracing::warn!("could not start a spare shim: {e:#}"),
        }
        Ok(pid)
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
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .arg(STDIN_ARG)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting the shim {program:?}"))?;
        let pid = child.id().context("the shim exited at once")?;
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
        })
    }
}
