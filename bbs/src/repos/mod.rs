//! Backup repositories: the BBS serves every volume's restic-format repository over
//! restic's REST protocol v2 (`rest`, at `lattice_specs::repo::rest_path`), from the
//! volume's backup store ([`Stores`]: the blob store's [`DirStore`] at
//! `BLOB_DIR/restic`, a directory, or S3 through `object_store`), behind the narrow
//! [`RepoStore`] seam (`store`). Who may do what is `rules::allows` (a credential's
//! `RepoScope`) and `grant::task_scope` (a backup task's own credential); the
//! repositories' password is the cluster's [`BackupKey`] (`key`).

mod dir;
pub mod grant;
mod key;
mod rest;
pub mod rules;
mod s3;
mod store;

use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::http::StatusCode;
use lattice_specs::errors::ErrorName;
use lattice_specs::repo::StoreUrl;
use prometheus::{IntCounterVec, Opts};

pub use dir::DirStore;
pub use key::BackupKey;
pub(crate) use rest::{no_key, routes, RepoAccess};
pub use s3::{S3Settings, S3Store, PART as S3_PART};
pub use store::{
    ByteRange, ByteStream, MemStore, Put, Read, RepoStore, RepoStoreError, StoreResult,
};

use crate::api::ApiError;

/// The blob store's repositories: `BLOB_DIR/restic/VOLUME`.
pub const BLOB_SUBDIR: &str = "restic";

/// The name of the store the first unnamed `--backup-store` (or the blob store) gets.
pub const DEFAULT_STORE: &str = "default";

/// `bbs_repo_requests_total{method,type,code}`: REST requests on repositories.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "bbs_repo_requests_total",
            "Requests on backup repositories over restic's REST protocol, by HTTP method, file type (config, data, keys, locks, snapshots, index, password, repo) and status code.",
        ),
        &["method", "type", "code"],
    )
    .unwrap();
    crate::metrics::REGISTRY
        .register(Box::new(c.clone()))
        .unwrap();
    c
});

/// `bbs_repo_bytes_total{direction}`: bytes stored into (`in`) and read from (`out`)
/// repositories.
pub static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "bbs_repo_bytes_total",
            "Bytes written to (in) and served from (out) backup repositories.",
        ),
        &["direction"],
    )
    .unwrap();
    crate::metrics::REGISTRY
        .register(Box::new(c.clone()))
        .unwrap();
    c
});

/// `bbs_repo_credentials_total{op}`: repository credentials handed to tasks.
pub static CREDENTIALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "bbs_repo_credentials_total",
            "Repository URLs with a task credential made, by the task's operation (backup, restore, forget, check).",
        ),
        &["op"],
    )
    .unwrap();
    crate::metrics::REGISTRY
        .register(Box::new(c.clone()))
        .unwrap();
    c
});

/// The cluster's named backup stores; the first is the default (a volume with no
/// `backup_store` uses it).
#[derive(Clone, Default)]
pub struct Stores {
    named: Arc<Vec<(String, Arc<dyn RepoStore>)>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.named
                    .iter()
                    .map(|(n, s)| format!("{n}={}", s.describe())),
            )
            .finish()
    }
}

impl Stores {
    /// The stores as the operator named them (`--backup-store [NAME=]URL`); with none
    /// and a blob store, the blob store's directory is the default.
    /// S3 stores reach S3 with `s3`.
    pub fn open(
        named: &[(String, StoreUrl)],
        blob_dir: Option<&Path>,
        s3: &S3Settings,
    ) -> anyhow::Result<Stores> {
        let defaulted;
        let named = match (named.is_empty(), blob_dir) {
            (true, Some(_)) => {
                defaulted = [(DEFAULT_STORE.to_string(), StoreUrl::Blob)];
                &defaulted[..]
            }
            _ => named,
        };
        let mut out: Vec<(String, Arc<dyn RepoStore>)> = Vec::new();
        for (name, url) in named {
            anyhow::ensure!(
                out.iter().all(|(n, _)| n != name),
                "--backup-store: two stores are named {name:?}: name them NAME=URL"
            );
            let store: Arc<dyn RepoStore> = match url {
                StoreUrl::Blob => {
                    let Some(blobs) = blob_dir else {
                        anyhow::bail!("--backup-store {name}=blob: this BBS keeps no blobs: start it with --blob-dir DIR, or name a dir: or s3:// store");
                    };
                    Arc::new(DirStore::open(&blobs.join(BLOB_SUBDIR))?)
                }
                StoreUrl::Dir(d) => Arc::new(DirStore::open(d).map_err(|e| {
                    anyhow::anyhow!("--backup-store {name}=dir:{}: {e}", d.display())
                })?),
                StoreUrl::S3 { bucket, prefix } => Arc::new(
                    S3Store::new(bucket, prefix, s3)
                        .map_err(|e| anyhow::anyhow!("--backup-store {name}: {e}"))?,
                ),
            };
            tracing::info!(store = %name, at = %store.describe(), "backup store");
            out.push((name.clone(), store));
        }
        Ok(Stores {
            named: Arc::new(out),
        })
    }

    /// Stores made elsewhere (tests).
    pub fn from_stores(named: Vec<(String, Arc<dyn RepoStore>)>) -> Stores {
        Stores {
            named: Arc::new(named),
        }
    }

    /// The names, the default first.
    pub fn names(&self) -> Vec<String> {
        self.named.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Each store's name and restic's `-r` for repository `repo` in it.
    pub fn locations(&self, repo: &str) -> Vec<lattice_specs::repo::BackupStoreInfo> {
        self.named
            .iter()
            .map(|(name, s)| lattice_specs::repo::BackupStoreInfo {
                name: name.clone(),
                restic: s.restic_location(repo),
            })
            .collect()
    }

    /// The store named `name` ("" = the default); BackupStoreNotFound naming the
    /// configured ones otherwise.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn RepoStore>, ApiError> {
        let found = match name {
            "" => self.named.first(),
            n => self.named.iter().find(|(s, _)| s == n),
        };
        found.map(|(_, s)| s).ok_or_else(|| {
            let message = if self.named.is_empty() {
                "this BBS has no backup store: start it with --backup-store [NAME=]URL (blob, dir:/PATH, s3://BUCKET/PREFIX) or --blob-dir DIR".to_string()
            } else {
                format!(
                    "no backup store {name:?}: this BBS has {}",
                    self.names().join(", ")
                )
            };
            ApiError::new(StatusCode::NOT_FOUND, ErrorName::BackupStoreNotFound, message)
        })
    }
}

/// A store's failure as the API answers it: 503 BackupStoreUnavailable with the reason
/// (an upload that broke off: 400).
pub fn store_error(e: RepoStoreError) -> ApiError {
    match e {
        RepoStoreError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorName::BackupStoreUnavailable,
            e.to_string(),
        ),
        RepoStoreError::Interrupted(_) => ApiError::invalid_request(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_store_is_the_default_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Stores::open(&[], Some(dir.path()), &S3Settings::default()).unwrap();
        assert_eq!(s.names(), vec![DEFAULT_STORE.to_string()]);
        assert!(s.get("").unwrap().describe().ends_with("/restic"));
        assert!(dir.path().join(BLOB_SUBDIR).is_dir());
        let Err(e) = s.get("nas") else {
            panic!("no store nas")
        };
        assert!(format!("{e:?}").contains("BackupStoreNotFound"), "{e:?}");
        assert!(Stores::open(&[], None, &S3Settings::default())
            .unwrap()
            .names()
            .is_empty());
        let e = Stores::open(
            &[("x".into(), StoreUrl::Blob)],
            None,
            &S3Settings::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--blob-dir"), "{e}");
        let nas = dir.path().join("nas");
        let two = [
            ("nas".to_string(), StoreUrl::Dir(nas.clone())),
            ("nas".to_string(), StoreUrl::Blob),
        ];
        assert!(Stores::open(&two, Some(dir.path()), &S3Settings::default()).is_err());
        let s = Stores::open(&two[..1], Some(dir.path()), &S3Settings::default()).unwrap();
        assert_eq!(
            s.names(),
            vec!["nas".to_string()],
            "named stores replace the blob default"
        );
        assert!(s.get("").is_ok() && s.get("nas").is_ok());
    }
}
