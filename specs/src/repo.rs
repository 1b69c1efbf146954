//! Backups in restic-format repositories: the contract between the BBS (which serves
//! each volume's repository over restic's REST protocol, from a backup store), the
//! cell's repository helper (rustic_core, confined to a container's root) and `ltc`.
//!
//! - **Stores.** The operator names backup stores (`--backup-store [NAME=]URL`, the
//!   first one is the default): [`StoreUrl`]. A volume's repository is `VOLUME` inside
//!   its store (the volume's `backup_store`, or the default), laid out exactly as restic
//!   lays out a local repository (`config`, `keys/`, `locks/`, `snapshots/`, `index/`,
//!   `data/XX/`), so `restic -r STORE_DIR/VOLUME` opens it where it lies.
//! - **REST.** The BBS serves every repository at [`rest_path`] (restic's REST protocol,
//!   v2, as rest-server does). A task's credential (`lattice_bbs::backup_tasks`) is
//!   scoped by its [`RepoOp`]: [`RepoScope::Append`] adds and reads but never deletes
//!   or overwrites (but stale locks, as rest-server's `--append-only` allows);
//!   [`RepoScope::Prune`] may delete, and only a forget task holds it.
//! - **Key.** Every repository's password is the cluster's backup key, fetched by the
//!   helper's caller from [`password_path`] with the task's credential (never in a task
//!   definition); `ltc backup key export` prints it to an admin.
//! - **Helper.** The cell runs one process per [`RepoJob`] (JSON on stdin), which
//!   chroots into the job's `root` before it starts any thread, and prints one
//!   [`RepoOutcome`] (JSON on stdout).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One operation on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoOp {
    /// Back up `path` (initialising the repository when it has none).
    Backup,
    /// Restore `snapshot` into `path`.
    Restore,
    /// Forget the snapshots `forget`, then prune what nothing uses any more.
    Forget,
    /// Check the repository's structure, and read every pack `snapshot` uses.
    Check,
}

impl RepoOp {
    pub fn parse(s: &str) -> Option<RepoOp> {
        Some(match s {
            "backup" => RepoOp::Backup,
            "restore" => RepoOp::Restore,
            "forget" => RepoOp::Forget,
            "check" => RepoOp::Check,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RepoOp::Backup => "backup",
            RepoOp::Restore => "restore",
            RepoOp::Forget => "forget",
            RepoOp::Check => "check",
        }
    }

    /// What a task doing this op may do to its repository.
    pub fn scope(self) -> RepoScope {
        match self {
            RepoOp::Forget => RepoScope::Prune,
            _ => RepoScope::Append,
        }
    }
}

/// What a credential may do to a repository over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoScope {
    /// Read anything; create files that do not exist yet; delete only locks.
    Append,
    /// Everything, deleting included.
    Prune,
}

/// Where the BBS serves repository `name` over restic's REST protocol (with a
/// trailing slash, as restic's `rest:` URLs have it).
pub fn rest_path(name: &str) -> String {
    format!("/v1/repos/{name}/")
}

/// Where a task's credential fetches its repository's password (text/plain).
pub fn password_path(name: &str) -> String {
    format!("/v1/repos/{name}/password")
}

/// A backup store as the operator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `blob`: the BBS's own blob store directory (`BLOB_DIR/restic/VOLUME`).
    Blob,
    /// `dir:/PATH` (or an absolute path): `PATH/VOLUME`.
    Dir(std::path::PathBuf),
    /// `s3://BUCKET[/PREFIX]`: keys `PREFIX/VOLUME/…`; the endpoint, region and keys
    /// come from the BBS's environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    /// Parses `blob`, `dir:/PATH`, `/PATH` or `s3://BUCKET[/PREFIX]`.
    pub fn parse(s: &str) -> Result<StoreUrl, String> {
        let bad = || {
            format!(
                "backup store {s:?}: expected `blob`, `dir:/ABSOLUTE/PATH` or `s3://BUCKET[/PREFIX]`"
            )
        };
        if s == "blob" {
            return Ok(StoreUrl::Blob);
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad());
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        let path = s.strip_prefix("dir:").unwrap_or(s);
        if path.starts_with('/') {
            return Ok(StoreUrl::Dir(path.into()));
        }
        Err(bad())
    }
}

/// `[NAME=]URL`: a named store (`default` when unnamed).
pub fn parse_named_store(s: &str) -> Result<(String, StoreUrl), String> {
    match s.split_once('=') {
        Some((name, url)) if !name.is_empty() && !name.contains(['/', ':']) => {
            Ok((name.to_string(), StoreUrl::parse(url)?))
        }
        _ => Ok(("default".to_string(), StoreUrl::parse(s)?)),
    }
}

/// One job for the cell's repository helper (fields left out are empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepoJob {
    pub op: Option<RepoOp>,
    /// `rest:https://USER:PASS@HOST:PORT/v1/repos/NAME/`, or a local directory (tests
    /// and benchmarks; a local directory is opened after the chroot, so inside `root`).
    pub repository: String,
    pub password: String,
    /// The host directory the helper chroots into before anything else ("" = none:
    /// tests and benchmarks only).
    pub root: String,
    /// backup: the directory backed up; restore: the directory restored into. Inside
    /// `root`.
    pub path: String,
    /// backup: the path the snapshot records instead of `path` (the container's path,
    /// e.g. `/data`, as restic's `--stdin-filename`/rustic's `--as-path`); "" = `path`.
    pub as_path: String,
    pub snapshot: String,
    pub forget: Vec<String>,
    pub host: String,
    pub tags: Vec<String>,
    /// PEM certificates trusted for the repository's HTTPS, beside the system's roots
    /// (read by the caller: after the chroot there is no host file to read).
    pub extra_ca_pem: Vec<String>,
    /// The repository host's addresses, resolved by the caller.
    pub resolve: Vec<(String, SocketAddr)>,
}

/// What the helper did (the JSON it prints; `error` set when it failed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepoOutcome {
    pub op: Option<RepoOp>,
    /// backup: the new snapshot's id (restic's, hex).
    #[serde(default)]
    pub snapshot: String,
    /// backup, restore: files and bytes the snapshot holds.
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub total_bytes: u64,
    /// backup: bytes of new data added to the repository (after dedup, compressed).
    #[serde(default)]
    pub added_bytes: u64,
    /// forget: snapshots removed and bytes the prune freed.
    #[serde(default)]
    pub forgotten: Vec<String>,
    #[serde(default)]
    pub removed_bytes: u64,
    /// Stale locks (of killed tasks) removed before the operation.
    #[serde(default)]
    pub stale_locks_removed: u32,
    #[serde(default)]
    pub duration_ms: u64,
    /// Why it failed (the whole chain, one line), `None` when it did not.
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse() {
        assert_eq!(StoreUrl::parse("blob"), Ok(StoreUrl::Blob));
        assert_eq!(
            StoreUrl::parse("dir:/srv/b"),
            Ok(StoreUrl::Dir("/srv/b".into()))
        );
        assert_eq!(
            StoreUrl::parse("/srv/b"),
            Ok(StoreUrl::Dir("/srv/b".into()))
        );
        assert_eq!(
            StoreUrl::parse("s3://bk/lattice/"),
            Ok(StoreUrl::S3 {
                bucket: "bk".into(),
                prefix: "lattice".into()
            })
        );
        assert!(StoreUrl::parse("s3://").is_err());
        assert!(StoreUrl::parse("srv/b").unwrap_err().contains("expected"));
        assert_eq!(
            parse_named_store("nas=dir:/mnt/nas"),
            Ok(("nas".into(), StoreUrl::Dir("/mnt/nas".into())))
        );
        assert_eq!(
            parse_named_store("s3://b"),
            Ok((
                "default".into(),
                StoreUrl::S3 {
                    bucket: "b".into(),
                    prefix: "".into()
                }
            ))
        );
        assert_eq!(
            RepoOp::parse("forget").map(RepoOp::scope),
            Some(RepoScope::Prune)
        );
        assert_eq!(
            RepoOp::parse("backup").map(RepoOp::scope),
            Some(RepoScope::Append)
        );
    }
}
