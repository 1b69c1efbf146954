//! The descriptors the shim holds: stdin (the container's directory and the launcher's
//! gate come on it), fd 3 for a lone Run's exec report, /dev/null and pipes.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

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
pub(super) fn container_from_stdin() -> Option<PathBuf> {
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
pub(super) fn await_gate(word: &[u8]) -> anyhow::Result<()> {
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

/// The descriptor a lone Run's init reports a failed exec on (pause.c's fd 3):
/// libcontainer passes descriptors on by number, from 3.
pub(super) const REPORT_FD: i32 = 3;

/// Whether fd 3 is held (on /dev/null) for [`REPORT_FD`], so that nothing else of the
/// shim's lands there.
pub(super) static REPORT_FD_HELD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Takes fd 3 for the report pipe, first thing, before the shim opens anything else.
/// Descriptors inherited by mistake (a parent's, without close-on-exec, e.g. a build
/// tool's jobserver pipe) are not the shim's: they are closed, so fd 3 is free and the
/// shim runs the same way whoever started it.
pub(super) fn hold_report_fd() {
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

/// /dev/null, open for reading and writing (a container's stdin, or output it drops).
pub(super) fn null_fd() -> anyhow::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// A pipe (read end, write end), both close-on-exec.
pub(super) fn pipe_pair() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// The read end of a pipe, non-blocking and registered with tokio. (Only this end: the
/// write end belongs to a process that expects a blocking stdout.)
pub(super) fn pipe_receiver(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    // SAFETY: F_GETFL and F_SETFL only read and set the status flags of a descriptor
    // we own (`fd`, open for the whole call); no memory is passed to the kernel.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}
