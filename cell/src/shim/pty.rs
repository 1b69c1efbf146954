//! Terminals for exec sessions: the console socket libcontainer hands a new
//! process's pseudo-terminal master over (SCM_RIGHTS), the master as an async
//! reader and writer, and its window size.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A console socket: libcontainer connects to it and sends the terminal's master.
/// Its file (and the link libcontainer makes to it in the container's state
/// directory) is removed on drop.
pub(super) struct ConsoleSocket {
    listener: UnixListener,
    pub(super) path: PathBuf,
    /// The container's libcontainer state directory, where the links go.
    state_dir: PathBuf,
}

impl ConsoleSocket {
    /// Listens at `path` (in the container's directory).
    pub(super) fn bind(path: PathBuf, state_dir: PathBuf) -> io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket {
            listener,
            path,
            state_dir,
        })
    }

    /// The master of the terminal the started process got (it has connected and sent
    /// it by the time libcontainer's build returned).
    pub(super) fn receive_master(&self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener.set_nonblocking(true)?;
        let (conn, _) = self.listener.accept()?;
        conn.set_nonblocking(false)?;
        let mut name = [0u8; 64];
        let mut iov = [io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed `fd` in our table for us
                    // (SCM_RIGHTS); nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(io::Error::other("the console socket sent no terminal"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        remove_links_to(&self.state_dir, &self.path);
    }
}

/// Removes the symlinks in `dir` that point at `target` (libcontainer links the
/// console socket into the container's state directory and leaves the link).
fn remove_links_to(dir: &Path, target: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|t| t == target) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A terminal's master, non-blocking, for the runtime.
pub(super) struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    pub(super) fn new(master: OwnedFd) -> io::Result<Pty> {
        let flags = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the master is ours alone (owned by the AsyncFd from here on).
        Ok(Pty(unsafe {
            AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE)
        }?))
    }

    /// Reads what the process wrote; 0 once its side is closed (EIO on a master).
    pub(super) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub(super) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.0.writable().await?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's size (the foreground process group gets SIGWINCH).
    pub(super) fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        resize(self.0.get_ref().as_raw_fd(), cols, rows)
    }
}

/// TIOCSWINSZ on a terminal; a zero size is left alone.
pub(super) fn resize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    if cols == 0 || rows == 0 {
        return Ok(());
    }
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at a live
    // local for the whole call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_is_seen_on_the_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        resize(pty.master.as_raw_fd(), 120, 40).unwrap();
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into the live local.
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_col, size.ws_row), (120, 40));
        // Zero leaves it.
        resize(pty.master.as_raw_fd(), 0, 0).unwrap();
    }

    #[test]
    fn only_links_to_the_socket_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("exec.sock");
        std::os::unix::fs::symlink(&target, dir.path().join("tenant-tty-1.sock")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", dir.path().join("other")).unwrap();
        remove_links_to(dir.path(), &target);
        assert!(!dir.path().join("tenant-tty-1.sock").exists());
        assert!(std::fs::symlink_metadata(dir.path().join("other")).is_ok());
    }
}
