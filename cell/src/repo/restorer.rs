//! Our restorer: a snapshot's entries written into a directory with bounded memory.
//!
//! rustic_core's restorer reads with 20 threads, a pack each, and queues every blob it
//! has read for writing without a bound: when the disk writes slower than the packs are
//! read, the decrypted data piles up in memory (a 256 MB volume's restore held ~520 MB
//! and was OOM-killed in the repository task's cgroup). Here `WORKERS` workers each read
//! one piece of one file (`PIECE` bytes, through rustic's [`OpenFile`]) and write it
//! before taking the next, from a queue of `2 × WORKERS` pieces: memory stays within
//! what each worker holds of a blob being read (restic's chunks are at most 8 MiB; read,
//! decrypted and decompressed) plus rustic's 32 MB blob cache, ~150 MB whatever the
//! volume's size (`cell/tests/repo_helper.rs` measures it).
//!
//! Entries come already checked (every part a plain name). Each is created new
//! (`create_dir`, `O_CREAT|O_EXCL|O_NOFOLLOW`, `symlink`, `mkfifo`): a name met twice, or
//! a child under a name that is not a directory we made, fails instead of following a
//! link. Owners (numeric), modes, times and extended attributes are set after the
//! contents, directories last and deepest first. All-zero pieces are left as holes.
//! Hard links are restored as separate copies; device nodes and sockets are skipped
//! with a warning (a container could not make them anyway).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::vfs::OpenFile;
use rustic_core::{IndexedFull, Repository};

use super::job::RepoError;

/// Readers and writers at once.
pub const WORKERS: usize = 4;
/// The bytes one worker reads and writes at a time.
pub const PIECE: usize = 1 << 20;

/// What a restore wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries other than directories (files, links, fifos), as a backup counts them.
    pub files: u64,
    pub bytes: u64,
    /// Entries left out (device nodes, sockets), by path.
    pub skipped: Vec<String>,
}

/// One piece of one file to fill.
struct Piece {
    target: Arc<Target>,
    offset: u64,
    len: usize,
}

struct Target {
    path: PathBuf,
    file: File,
    open: OpenFile,
}

/// Restores `entries` (paths relative to the snapshot's data directory) into `dest`,
/// which exists and is empty.
pub fn restore<S: IndexedFull + Sync>(
    repo: &Repository<S>,
    entries: &[(PathBuf, Node)],
    dest: &Path,
) -> Result<Restored, RepoError> {
    let failed: Mutex<Option<RepoError>> = Mutex::new(None);
    let mut done = Restored::default();
    let (tx, rx) = mpsc::sync_channel::<Piece>(2 * WORKERS);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| worker(repo, &rx, &failed));
        }
        let made = make_entries(repo, entries, dest, &tx, &failed, &mut done);
        drop(tx);
        if let Err(e) = made {
            fail(&failed, e);
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    set_metadata(entries, dest)?;
    Ok(done)
}

fn fail(failed: &Mutex<Option<RepoError>>, e: RepoError) {
    let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
    first.get_or_insert(e);
}

fn has_failed(failed: &Mutex<Option<RepoError>>) -> bool {
    failed.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Repository(format!("restore: {what} {}: {e}", path.display()))
}

/// Creates every entry, and queues the pieces of each file's contents.
fn make_entries<S: IndexedFull>(
    repo: &Repository<S>,
    entries: &[(PathBuf, Node)],
    dest: &Path,
    tx: &mpsc::SyncSender<Piece>,
    failed: &Mutex<Option<RepoError>>,
    done: &mut Restored,
) -> Result<(), RepoError> {
    for (rel, node) in entries {
        if has_failed(failed) {
            return Ok(());
        }
        let path = dest.join(rel);
        match &node.node_type {
            NodeType::Dir => fs::create_dir(&path).map_err(|e| io("making", &path, e))?,
            NodeType::Symlink { .. } => {
                std::os::unix::fs::symlink(node.node_type.to_link(), &path)
                    .map_err(|e| io("making the link", &path, e))?;
                done.files += 1;
            }
            NodeType::Fifo => {
                nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
                    .map_err(|e| io("making the fifo", &path, e))?;
                done.files += 1;
            }
            NodeType::File => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io("making", &path, e))?;
                let size = node.meta.size;
                file.set_len(size).map_err(|e| io("sizing", &path, e))?;
                done.files += 1;
                done.bytes += size;
                if size == 0 {
                    continue;
                }
                let open = repo.open_file(node).map_err(RepoError::from)?;
                let target = Arc::new(Target { path, file, open });
                let mut offset = 0;
                while offset < size {
                    let len = (size - offset).min(PIECE as u64) as usize;
                    let piece = Piece {
                        target: target.clone(),
                        offset,
                        len,
                    };
                    if tx.send(piece).is_err() {
                        return Ok(());
                    }
                    offset += len as u64;
                }
            }
            NodeType::Dev { .. } | NodeType::Chardev { .. } | NodeType::Socket => {
                tracing::warn!("restore: {} skipped ({})", rel.display(), node.node_type);
                done.skipped.push(rel.display().to_string());
            }
        }
    }
    Ok(())
}

/// Reads and writes pieces until the queue closes; after a failure, only drains it.
fn worker<S: IndexedFull>(
    repo: &Repository<S>,
    rx: &Mutex<mpsc::Receiver<Piece>>,
    failed: &Mutex<Option<RepoError>>,
) {
    loop {
        let piece = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(p) => p,
            Err(_) => return,
        };
        if has_failed(failed) {
            continue;
        }
        if let Err(e) = fill(repo, &piece) {
            fail(failed, e);
        }
    }
}

fn fill<S: IndexedFull>(repo: &Repository<S>, piece: &Piece) -> Result<(), RepoError> {
    let t = &piece.target;
    let offset = usize::try_from(piece.offset).map_err(|e| io("reading", &t.path, e))?;
    let data = repo
        .read_file_at(&t.open, offset, piece.len)
        .map_err(RepoError::from)?;
    if data.len() != piece.len {
        return Err(io(
            "reading",
            &t.path,
            format!(
                "the repository holds {} bytes at offset {offset}, the snapshot says {}",
                data.len(),
                piece.len
            ),
        ));
    }
    if data.iter().all(|&b| b == 0) {
        return Ok(()); // a hole: the file was sized already
    }
    t.file
        .write_all_at(&data, piece.offset)
        .map_err(|e| io("writing", &t.path, e))
}

/// Owners, modes, times and extended attributes: every non-directory first, then the
/// directories deepest first (so that making their contents is not refused, and their
/// times are not moved by it).
fn set_metadata(entries: &[(PathBuf, Node)], dest: &Path) -> Result<(), RepoError> {
    let (dirs, others): (Vec<_>, Vec<_>) = entries.iter().partition(|(_, n)| n.is_dir());
    for (rel, node) in others.into_iter().chain(dirs.into_iter().rev()) {
        if matches!(
            node.node_type,
            NodeType::Dev { .. } | NodeType::Chardev { .. } | NodeType::Socket
        ) {
            continue;
        }
        let path = dest.join(rel);
        apply(&path, node).map_err(|e| io("setting the metadata of", &path, e))?;
    }
    Ok(())
}

fn apply(path: &Path, node: &Node) -> Result<(), String> {
    let meta = &node.meta;
    let link = node.is_symlink();
    if meta.uid.is_some() || meta.gid.is_some() {
        std::os::unix::fs::lchown(path, meta.uid, meta.gid).map_err(|e| e.to_string())?;
    }
    for x in &meta.extended_attributes {
        set_xattr(path, &x.name, x.value.as_deref().unwrap_or_default())?;
    }
    if let (false, Some(mode)) = (link, meta.mode) {
        fs::set_permissions(path, fs::Permissions::from_mode(unix_mode(mode)))
            .map_err(|e| e.to_string())?;
    }
    if let Some((atime, mtime)) = times(meta) {
        utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|e| e.to_string());
    let (p, n) = (c(path.as_os_str().as_bytes())?, c(name.as_bytes())?);
    // SAFETY: both strings are NUL-terminated and outlive the call; the value's
    // pointer and length describe one live slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "extended attribute {name}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn times(meta: &Metadata) -> Option<(TimeSpec, TimeSpec)> {
    let ts = |t: &rustic_core::jiff::Timestamp| {
        TimeSpec::new(t.as_second(), i64::from(t.subsec_nanosecond()))
    };
    let mtime = meta.mtime.as_ref()?;
    Some((ts(meta.atime.as_ref().unwrap_or(mtime)), ts(mtime)))
}

/// A mode as restic stores it (Go's `os.FileMode`: the permission bits as Unix has
/// them, setuid, setgid and sticky as bits 23, 22 and 20) as a Unix mode.
pub fn unix_mode(go: u32) -> u32 {
    let mut mode = go & 0o777;
    for (go_bit, unix) in [(1 << 23, 0o4000), (1 << 22, 0o2000), (1 << 20, 0o1000)] {
        if go & go_bit != 0 {
            mode |= unix;
        }
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes_become_unix_modes() {
        assert_eq!(unix_mode(0o644), 0o644);
        assert_eq!(unix_mode((1 << 31) | 0o755), 0o755, "a directory's mode");
        assert_eq!(unix_mode((1 << 23) | 0o755), 0o4755, "setuid");
        assert_eq!(unix_mode((1 << 22) | 0o750), 0o2750, "setgid");
        assert_eq!(unix_mode((1 << 31) | (1 << 20) | 0o777), 0o1777, "sticky");
    }
}
