//! restic's lock files (`locks/ID`, encrypted JSON: time, exclusive, hostname, pid, …).
//! rustic_core takes no locks, but restic does, and a task killed mid-way leaves its
//! lock behind: before each operation the helper removes the stale ones by restic's
//! rule (as `restic unlock`): a lock older than [`STALE_AFTER`] (restic refreshes live
//! ones every 5 minutes), or one taken on this host by a process that is gone.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aes256ctr_poly1305aes::aead::Aead;
use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, Key, Nonce};
use lattice_specs::repo::RepoJob;
use rustic_core::jiff;
use rustic_core::repofile::MasterKey;
use serde::Deserialize;

use super::job::{Reach, RepoError};
use super::rest::RestBackend;

/// restic's age past which any lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// What a lock file says (restic's `Lock`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LockInfo {
    /// RFC 3339.
    pub time: String,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub pid: i64,
}

/// Whether a lock is stale at `now`, for a helper on `host` (`alive`: whether a pid is
/// a running process of this host). A lock whose time does not parse is stale.
pub fn is_stale(lock: &LockInfo, now: SystemTime, host: &str, alive: impl Fn(i64) -> bool) -> bool {
    let Ok(at) = lock.time.parse::<jiff::Timestamp>() else {
        return true;
    };
    let age = jiff::Timestamp::try_from(now)
        .ok()
        .and_then(|now| now.duration_since(at).try_into().ok())
        .unwrap_or(Duration::ZERO);
    if age > STALE_AFTER {
        return true;
    }
    lock.hostname == host && !alive(lock.pid)
}

/// Where a repository keeps its locks.
trait LockDir {
    fn list(&self) -> Result<Vec<String>, String>;
    fn read(&self, name: &str) -> Result<Vec<u8>, String>;
    fn remove(&self, name: &str) -> Result<(), String>;
}

/// A local repository's `locks/`.
struct LocalLocks(PathBuf);

impl LockDir for LocalLocks {
    fn list(&self) -> Result<Vec<String>, String> {
        match std::fs::read_dir(&self.0) {
            Ok(dir) => Ok(dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        std::fs::read(self.0.join(name)).map_err(|e| e.to_string())
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        std::fs::remove_file(self.0.join(name)).map_err(|e| e.to_string())
    }
}

impl LockDir for RestBackend {
    fn list(&self) -> Result<Vec<String>, String> {
        self.list_raw("locks")
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        self.get_raw(&format!("locks/{name}"))
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        self.delete_raw(&format!("locks/{name}"))
    }
}

/// Decrypts a repository file (nonce | ciphertext | MAC) and undoes restic's
/// compression of unpacked files (a leading 2, then zstd).
fn decrypt(key: &MasterKey, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 32 || key.encrypt.len() != 32 || key.mac.k.len() != 16 {
        return None;
    }
    let mut raw = Vec::with_capacity(64);
    raw.extend_from_slice(&key.encrypt);
    raw.extend_from_slice(&key.mac.k);
    raw.extend_from_slice(&key.mac.r);
    let cipher = Aes256CtrPoly1305Aes::new(Key::from_slice(&raw));
    let plain = cipher
        .decrypt(Nonce::from_slice(&data[..16]), &data[16..])
        .ok()?;
    match plain.first() {
        Some(2) => zstd::decode_all(&plain[1..]).ok(),
        _ => Some(plain),
    }
}

/// Whether process `pid` runs on this host.
fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the job's repository's stale locks; how many. A lock that does not open
/// with the repository's key is left alone (it is not ours to judge).
pub(crate) fn remove_stale(
    job: &RepoJob,
    reach: &Reach,
    key: &MasterKey,
) -> Result<u32, RepoError> {
    let local;
    let dir: &dyn LockDir = match &reach.rest {
        Some(rest) => rest,
        None => {
            local = LocalLocks(PathBuf::from(job.repository.trim()).join("locks"));
            &local
        }
    };
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_default();
    let fail = |e: String| RepoError::Repository(format!("listing the repository's locks: {e}"));
    let mut removed = 0;
    for name in dir.list().map_err(fail)? {
        let Ok(data) = dir.read(&name) else { continue };
        let Some(lock) = decrypt(key, &data).and_then(|p| serde_json::from_slice(&p).ok()) else {
            tracing::warn!("lock {name}: does not open with the repository's key; left alone");
            continue;
        };
        if is_stale(&lock, SystemTime::now(), &host, pid_alive) {
            dir.remove(&name)
                .map_err(|e| RepoError::Repository(format!("removing stale lock {name}: {e}")))?;
            tracing::info!(
                "removed stale lock {name} (pid {} on {}, {})",
                lock.pid,
                lock.hostname,
                lock.time
            );
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(time: &str, host: &str, pid: i64) -> LockInfo {
        LockInfo {
            time: time.into(),
            exclusive: false,
            hostname: host.into(),
            pid,
        }
    }

    #[test]
    fn restic_rule_for_stale_locks() {
        let now: SystemTime = "2026-01-01T12:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .into();
        let alive = |pid| pid == 7;
        // Recent, live process here: kept.
        assert!(!is_stale(
            &lock("2026-01-01T11:55:00Z", "h", 7),
            now,
            "h",
            alive
        ));
        // Recent, dead process here: stale.
        assert!(is_stale(
            &lock("2026-01-01T11:55:00Z", "h", 8),
            now,
            "h",
            alive
        ));
        // Recent, another host: we cannot tell, kept.
        assert!(!is_stale(
            &lock("2026-01-01T11:55:00Z", "x", 8),
            now,
            "h",
            alive
        ));
        // Older than 30 minutes, wherever: stale.
        assert!(is_stale(
            &lock("2026-01-01T11:29:00Z", "x", 7),
            now,
            "h",
            alive
        ));
        // restic's nanosecond times with an offset parse.
        assert!(!is_stale(
            &lock("2026-01-01T12:55:00.123456789+01:00", "h", 7),
            now,
            "h",
            alive
        ));
        // Unreadable: stale.
        assert!(is_stale(&lock("yesterday", "h", 7), now, "h", alive));
    }
}
