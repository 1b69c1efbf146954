//! A job's checks, the chroot into its root, and the backend its `repository` names.

use std::sync::Arc;

use lattice_specs::repo::RepoJob;
use rustic_core::{RepositoryBackends, RusticError};

use super::rest::RestBackend;

/// Why the helper failed (the outcome's `error` is its text).
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The job itself is wrong (a field named, with what to do).
    #[error("{0}")]
    Job(String),
    /// The repository's keys do not open with the password.
    #[error("the repository refused the cluster's backup key: wrong password")]
    WrongPassword,
    /// The root could not be entered.
    #[error("entering the root {root}: {error}")]
    Root { root: String, error: String },
    /// The repository could not be reached, read or written.
    #[error("{0}")]
    Repository(String),
    /// A restore's snapshot holds an entry that would leave the target.
    #[error("snapshot {snapshot} holds an unsafe entry {entry:?}: refused")]
    UnsafeEntry { snapshot: String, entry: String },
    /// A restore's target exists and is not empty.
    #[error("restore target {0} exists and is not empty: restore into a new or empty directory")]
    TargetNotEmpty(String),
    /// The repository check found damage.
    #[error("check of snapshot {snapshot}: {findings}")]
    CheckFailed { snapshot: String, findings: String },
}

/// A rustic error, the wrong password told apart.
impl From<Box<RusticError>> for RepoError {
    fn from(e: Box<RusticError>) -> RepoError {
        if e.is_incorrect_password() {
            RepoError::WrongPassword
        } else {
            let log = e.display_log();
            RepoError::Repository(one_line(log.strip_prefix("Error: ").unwrap_or(&log)))
        }
    }
}

/// A multi-line message on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Chroots into `root` and moves to its `/` ("" = stay where we are: tests and
/// benchmarks). Must run before the process starts any thread.
pub(crate) fn enter_root(root: &str) -> Result<(), RepoError> {
    if root.is_empty() {
        return Ok(());
    }
    let fail = |e: nix::Error| RepoError::Root {
        root: root.to_string(),
        error: e.to_string(),
    };
    if !root.starts_with('/') {
        return Err(RepoError::Job(format!(
            "root {root:?}: must be an absolute host path (or empty for none)"
        )));
    }
    // glibc loads its user and group database modules (NSS) on first use, reading
    // nsswitch.conf and dlopen()ing libraries by path: inside a hostile root that would
    // run its code. Loaded now, from the host, they stay (glibc does not reload its NSS
    // configuration after a chroot), and later lookups only read the root's files.
    let _ = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0));
    let _ = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0));
    nix::unistd::chroot(root).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// The job's repository, reachable: its backend for rustic_core, and the REST backend
/// itself (locks are outside rustic's file types) when it is one. Made before the
/// chroot, so that the HTTP client reads the host's CA roots; the one thread it starts
/// shares the process's root and is confined with it.
#[derive(Clone)]
pub struct Reach {
    pub(crate) backends: RepositoryBackends,
    pub(crate) rest: Option<RestBackend>,
}

/// The backend the job's `repository` names: `rest:URL` (restic's REST protocol), or a
/// local directory (inside the root).
pub fn reach(job: &RepoJob) -> Result<Reach, RepoError> {
    let repo = job.repository.trim();
    if repo.is_empty() {
        return Err(RepoError::Job(
            "repository: empty; give `rest:https://…/v1/repos/NAME/` or a local directory".into(),
        ));
    }
    if let Some(url) = repo.strip_prefix("rest:") {
        let rest = RestBackend::new(url, &job.extra_ca_pem, &job.resolve, !job.root.is_empty())?;
        let be: Arc<dyn rustic_core::WriteBackend> = Arc::new(rest.clone());
        return Ok(Reach {
            backends: RepositoryBackends::new(be, None),
            rest: Some(rest),
        });
    }
    if !repo.starts_with('/') {
        return Err(RepoError::Job(format!(
            "repository {repo:?}: expected `rest:URL` or an absolute directory"
        )));
    }
    let local =
        rustic_backend::LocalBackend::new(repo, std::iter::empty()).map_err(RepoError::from)?;
    Ok(Reach {
        backends: RepositoryBackends::new(Arc::new(local), None),
        rest: None,
    })
}
