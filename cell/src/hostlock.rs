//! Lock files the cell's processes on one host share (under `/run/lattice`): made if
//! missing, root's alone (0600), since anyone who could take one could hold up what it
//! guards (containers being made, every cell's firewall).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// `path` (and its directory) made if missing, locked as `how`; released when the
/// returned lock is dropped. A non-blocking lock that is held elsewhere is
/// `ErrorKind::WouldBlock`.
pub fn lock(path: &Path, how: FlockArg) -> std::io::Result<Flock<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    Flock::lock(file, how).map_err(|(_, e)| std::io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_lock_file_is_made_root_only_and_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lattice/x.lock");
        let held = lock(&path, FlockArg::LockExclusive).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = lock(&path, FlockArg::LockExclusiveNonblock).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::WouldBlock);
        drop(held);
        lock(&path, FlockArg::LockSharedNonblock).unwrap();
    }
}
