//! The `sftp` subsystem (what today's `scp` and `sftp` speak; Diego's sshd served it
//! too): `diego-sshd` runs itself as `diego-sshd --lattice-sftp-server` for the
//! session, a child with the session's user, environment and home as its directory,
//! speaking SFTP v3 (`russh_sftp`'s protocol) on its stdin and stdout. The files are
//! the container's, with the daemon's user's rights, as a shell's would be.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The argument that makes `diego-sshd` the SFTP server of one session.
pub const SFTP_MODE: &str = "--lattice-sftp-server";

/// Handles one client may hold open at once.
const MAX_HANDLES: usize = 256;
/// The most one READ returns (OpenSSH asks for 32 KiB at a time; its messages are at
/// most 256 KiB, headers included).
const MAX_READ: u32 = 255 * 1024;
/// Directory entries per READDIR answer.
const DIR_BATCH: usize = 128;

enum Open {
    File(tokio::fs::File),
    Dir(tokio::fs::ReadDir),
}

/// One client's files, relative paths taken from `home`.
pub struct Files {
    home: PathBuf,
    handles: HashMap<String, Open>,
    next: u64,
}

/// An I/O error as SFTP names it, with the error's text.
fn reply(e: std::io::Error) -> StatusReply {
    let code = match e.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    StatusReply::new(code).with_message(e.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

/// `path` made absolute against `home` and cleaned of `.` and `..` by name (as
/// OpenSSH's realpath does for paths that do not exist yet).
pub fn absolute(home: &Path, path: &str) -> PathBuf {
    let joined = if path.is_empty() {
        home.to_path_buf()
    } else {
        home.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Files {
    pub fn new(home: PathBuf) -> Files {
        Files {
            home,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        absolute(&self.home, p)
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusReply::new(StatusCode::Failure)
                .with_message(format!("more than {MAX_HANDLES} open handles")));
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn file(&mut self, handle: &str) -> Result<&mut tokio::fs::File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(StatusReply::new(StatusCode::Failure).with_message("no such file handle")),
        }
    }
}

/// The access and modification times `a` carries, when it carries both.
fn times_of(a: &FileAttributes) -> Option<std::fs::FileTimes> {
    let at = |secs: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs));
    Some(
        std::fs::FileTimes::new()
            .set_accessed(at(a.atime?))
            .set_modified(at(a.mtime?)),
    )
}

/// Sets what `a` carries (size, mode, owner, times) on the open file `f`.
async fn set_attrs(f: &tokio::fs::File, a: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = a.size {
        f.set_len(size).await?;
    }
    if let Some(mode) = a.permissions {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
            .await?;
    }
    let std = f.try_clone().await?.into_std().await;
    if a.uid.is_some() || a.gid.is_some() {
        std::os::unix::fs::fchown(&std, a.uid, a.gid)?;
    }
    if let Some(times) = times_of(a) {
        std.set_times(times)?;
    }
    Ok(())
}

/// What `a` carries, set on the file at `path` by name (a directory or a FIFO too:
/// nothing is opened but to truncate).
async fn set_path_attrs(path: &Path, a: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = a.size {
        tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await?
            .set_len(size)
            .await?;
    }
    if let Some(mode) = a.permissions {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).await?;
    }
    if a.uid.is_some() || a.gid.is_some() {
        std::os::unix::fs::chown(path, a.uid, a.gid)?;
    }
    if let (Some(atime), Some(mtime)) = (a.atime, a.mtime) {
        let ts = |secs: u32| libc::timespec {
            tv_sec: libc::time_t::from(secs),
            tv_nsec: 0,
        };
        let times = [ts(atime), ts(mtime)];
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
        if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl russh_sftp::server::Handler for Files {
    type Error = StatusReply;

    fn unimplemented(&self) -> StatusReply {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, StatusReply> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, StatusReply> {
        let path = self.path(&filename);
        let mut o = tokio::fs::OpenOptions::new();
        o.read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        if pflags.contains(OpenFlags::EXCLUDE) {
            o.create_new(true);
        } else if pflags.contains(OpenFlags::CREATE) {
            o.create(true);
        }
        let f = o.open(&path).await.map_err(reply)?;
        let handle = self.add(Open::File(f))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, StatusReply> {
        match self.handles.remove(&handle) {
            Some(Open::File(mut f)) => {
                f.flush().await.map_err(reply)?;
                Ok(ok(id))
            }
            Some(Open::Dir(_)) => Ok(ok(id)),
            None => Err(StatusReply::new(StatusCode::Failure).with_message("no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusReply> {
        let f = self.file(&handle)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(reply)?;
        let mut data = vec![0u8; len.min(MAX_READ) as usize];
        let mut filled = 0;
        while filled < data.len() {
            let n = f.read(&mut data[filled..]).await.map_err(reply)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 && !data.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, StatusReply> {
        let f = self.file(&handle)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(reply)?;
        f.write_all(&data).await.map_err(reply)?;
        // tokio hands the write to a thread: done (or failed) before it is answered.
        f.flush().await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        let m = tokio::fs::symlink_metadata(self.path(&path))
            .await
            .map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        let m = tokio::fs::metadata(self.path(&path)).await.map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, StatusReply> {
        let f = self.file(&handle)?;
        f.flush().await.map_err(reply)?;
        let m = f.metadata().await.map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&m),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        set_path_attrs(&self.path(&path), &attrs)
            .await
            .map_err(reply)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        let f = self.file(&handle)?;
        f.flush().await.map_err(reply)?;
        set_attrs(f, &attrs).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusReply> {
        let dir = tokio::fs::read_dir(self.path(&path)).await.map_err(reply)?;
        let handle = self.add(Open::Dir(dir))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, StatusReply> {
        let Some(Open::Dir(dir)) = self.handles.get_mut(&handle) else {
            return Err(
                StatusReply::new(StatusCode::Failure).with_message("no such directory handle")
            );
        };
        let mut files = Vec::new();
        while files.len() < DIR_BATCH {
            let Some(e) = dir.next_entry().await.map_err(reply)? else {
                break;
            };
            // An entry removed since it was listed is left out.
            let Ok(m) = tokio::fs::symlink_metadata(e.path()).await else {
                continue;
            };
            files.push(File::new(
                e.file_name().to_string_lossy(),
                FileAttributes::from(&m),
            ));
        }
        if files.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, StatusReply> {
        tokio::fs::remove_file(self.path(&filename))
            .await
            .map_err(reply)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        let p = self.path(&path);
        tokio::fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o777, |m| m & 0o7777))
            .create(&p)
            .await
            .map_err(reply)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, StatusReply> {
        tokio::fs::remove_dir(self.path(&path))
            .await
            .map_err(reply)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, StatusReply> {
        let p = self.path(&path);
        // Symlinks resolved where the path exists; as named where it does not yet.
        let real = tokio::fs::canonicalize(&p).await.unwrap_or(p);
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, StatusReply> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        // SFTP v3: renaming onto an existing name fails (OpenSSH's server does so too).
        if tokio::fs::symlink_metadata(&to).await.is_ok() {
            return Err(StatusReply::new(StatusCode::Failure)
                .with_message(format!("{} exists", to.display())));
        }
        tokio::fs::rename(from, to).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, StatusReply> {
        let target = tokio::fs::read_link(self.path(&path))
            .await
            .map_err(reply)?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, StatusReply> {
        // OpenSSH's client and server put the target first and the new link second
        // (the reverse of the draft's order, which names the fields): as OpenSSH.
        let (target, link) = (linkpath, targetpath);
        tokio::fs::symlink(&target, self.path(&link))
            .await
            .map_err(reply)?;
        Ok(ok(id))
    }
}

/// Tells when the client's side of the stream ends (russh_sftp's loop gives no sign).
struct EndOnEof<R> {
    inner: R,
    ended: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EndOnEof<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(res) = &r {
            if res.is_err() || buf.filled().len() == before {
                if let Some(tx) = self.ended.take() {
                    let _ = tx.send(());
                }
            }
        }
        r
    }
}

/// `diego-sshd --lattice-sftp-server`: SFTP on stdin and stdout, relative paths from
/// the working directory, until the client closes its side. The exit status.
pub fn serve_stdio() -> i32 {
    let home = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sftp: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let (tx, ended) = tokio::sync::oneshot::channel();
        let stdin = EndOnEof {
            inner: tokio::io::stdin(),
            ended: Some(tx),
        };
        let stream = tokio::io::join(stdin, tokio::io::stdout());
        russh_sftp::server::run(stream, Files::new(home)).await;
        let _ = ended.await;
        // The last answer is written before the next read finds the end.
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_absolute_from_home_and_cleaned_by_name() {
        let home = Path::new("/home/vcap");
        for (asked, want) in [
            ("", "/home/vcap"),
            (".", "/home/vcap"),
            ("app/x.txt", "/home/vcap/app/x.txt"),
            ("../../etc/passwd", "/etc/passwd"),
            ("/tmp/./a/../b", "/tmp/b"),
            ("/..", "/"),
        ] {
            assert_eq!(absolute(home, asked), PathBuf::from(want), "{asked}");
        }
    }

    #[test]
    fn io_errors_keep_their_sftp_names() {
        let e = reply(std::io::Error::from(ErrorKind::NotFound));
        assert_eq!(e.status_code, StatusCode::NoSuchFile);
        let e = reply(std::io::Error::from(ErrorKind::PermissionDenied));
        assert_eq!(e.status_code, StatusCode::PermissionDenied);
        let e = reply(std::io::Error::other("disk on fire"));
        assert_eq!(e.status_code, StatusCode::Failure);
        assert!(e.error_message.unwrap().contains("disk on fire"));
    }
}
