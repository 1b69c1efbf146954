//! File work inside a container's root, with the kernel's guarantee that no path
//! escapes it.
//!
//! A container is hostile: any path it names (a Task's result file, a download's
//! destination, an upload's source, its own `/etc/passwd`) may be a chain of symlinks
//! that points at the host. Resolving such a path by hand and handing the result to the
//! host's `open()` is a race at best and, past a hop limit, an escape. Instead the work
//! runs on a thread of its own whose root directory is the container's
//! (`unshare(CLONE_FS)`, then `chroot`): every path it opens and every symlink it
//! follows is resolved by the kernel inside that root, and a loop fails with `ELOOP`.
//! The thread ends with the work, and its root with it; no other thread of the process
//! is affected.

use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// A path as a container names it, and the host directory that is its root (the
/// container's root filesystem, or a volume bound into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rooted {
    pub root: PathBuf,
    /// Absolute inside `root`.
    pub path: PathBuf,
}

impl Rooted {
    pub fn new(root: impl Into<PathBuf>, path: &str) -> Rooted {
        Rooted {
            root: root.into(),
            path: Path::new("/").join(path.trim_start_matches('/')),
        }
    }

    /// Runs `f` with the path, on a thread rooted at `root`; see [`spawn`].
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> io::Result<InRoot<T>> {
        let path = self.path.clone();
        spawn(&self.root, move || f(&path))
    }

    /// [`Rooted::spawn`], waited for.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> io::Result<T> {
        self.spawn(f)?.await
    }

    /// Runs `f` with the path on a thread rooted at `root`, blocking the calling thread
    /// until it is done (usable inside an async runtime's own thread, for short work).
    pub fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> io::Result<T> {
        let (root, path) = (self.root.clone(), self.path.clone());
        std::thread::Builder::new()
            .name("in-root".into())
            .spawn(move || enter(&root).map(|()| f(&path)))?
            .join()
            .unwrap_or_else(|_| Err(died()))
    }
}

/// The result of work running inside a root, as a future.
pub struct InRoot<T>(oneshot::Receiver<io::Result<T>>);

impl<T> Future for InRoot<T> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(died())))
    }
}

fn died() -> io::Error {
    io::Error::other("the in-root worker thread died")
}

/// Starts `f` on a new thread whose root directory (and working directory) is `root`.
/// Fails if the thread cannot be made or cannot enter `root`; `f` never runs outside it.
pub fn spawn<T: Send + 'static>(
    root: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<InRoot<T>> {
    let (tx, rx) = oneshot::channel();
    let root = root.to_path_buf();
    std::thread::Builder::new()
        .name("in-root".into())
        .spawn(move || {
            let _ = tx.send(enter(&root).map(|()| f()));
        })?;
    Ok(InRoot(rx))
}

/// Gives this thread a root directory of its own: `root`.
fn enter(root: &Path) -> io::Result<()> {
    // The thread's filesystem context (root, cwd, umask) stops being shared with the
    // rest of the process; chroot then changes this thread's root only.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
    nix::unistd::chroot(root).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("entering {}: {e}", root.display()),
        )
    })?;
    nix::unistd::chdir("/").map_err(io::Error::from)
}

/// Opens `path` for reading if it is a regular file. Never blocks on a FIFO or a
/// device: it is opened non-blocking and refused unless regular.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file ({})",
                path.display(),
                kind_name(kind)
            ),
        ));
    }
    // Back to blocking reads for the caller (a regular file never blocks for long).
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: `fd` is the open file `f` owns for the whole block; F_GETFL/F_SETFL
    // only read and set its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok(f)
}

/// Reads up to `max` bytes of the regular file at `file`, inside its root, off the
/// async runtime and within `timeout`.
pub async fn read_regular(
    file: &Rooted,
    max: u64,
    timeout: std::time::Duration,
) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let read = file.run(move |p| -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        open_regular(p)?.take(max).read_to_end(&mut buf)?;
        Ok(buf)
    });
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))?
        .and_then(|r| r)
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_chain(links: usize, target: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        for i in 1..links {
            std::os::unix::fs::symlink(
                format!("/tmp/l{}", i + 1),
                dir.path().join(format!("tmp/l{i}")),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(target, dir.path().join(format!("tmp/l{links}"))).unwrap();
        dir
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let dir = root_with_chain(3, "/etc/shadow");
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "inside").unwrap();
        let r = Rooted::new(dir.path(), "/tmp/l1");
        let got = r.blocking(|p| std::fs::read_to_string(p)).unwrap().unwrap();
        assert_eq!(got, "inside");
        // `..` above the root stays at the root.
        let r = Rooted::new(dir.path(), "../../../etc/shadow");
        let got = r.blocking(|p| std::fs::read_to_string(p)).unwrap().unwrap();
        assert_eq!(got, "inside");
    }

    #[test]
    fn a_chain_past_the_kernels_limit_fails_closed() {
        // 41 links: past the kernel's 40, the last one naming a host file.
        let dir = root_with_chain(41, "/etc/hostname");
        let r = Rooted::new(dir.path(), "/tmp/l1");
        let err = r
            .blocking(|p| std::fs::read_to_string(p))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let r = Rooted::new(dir.path(), "fifo");
        let err = r.blocking(|p| open_regular(p).map(|_| ())).unwrap();
        let err = err.unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn other_threads_keep_the_hosts_root() {
        let dir = tempfile::tempdir().unwrap();
        Rooted::new(dir.path(), "/").blocking(|_| ()).unwrap();
        assert!(Path::new("/proc/self").exists());
    }
}
