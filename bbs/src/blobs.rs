//! The blob store: where backup archives live, reachable over HTTP by every cell, each
//! blob with its SHA-256. `PUT /v1/blobs/NAME` (streamed to disk, hashed on the way,
//! checked against `X-Checksum-Sha256` when given; kept only when whole and matching),
//! `GET|HEAD /v1/blobs/NAME` (with its checksum), `DELETE /v1/blobs/NAME`,
//! `GET /v1/blobs` (name, size, sha256, created_at).
//!
//! On disk: `DIR/NAME` and `DIR/NAME.sha256`; a blob counts only once its checksum file
//! exists, which is written last (and removed first), so an upload cut off midway, or a
//! crash, never leaves a blob that looks good.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

/// Names: what is safe as a file name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with('.')
        || name.ends_with(".sha256")
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "blob name {name:?}: use up to 128 letters, digits, '.', '_' and '-', not starting with '.'"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlobInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("checksum mismatch: the request said sha256 {expected}, the body has {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("the upload broke off: {0}")]
    Interrupted(String),
    #[error("storing the blob: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (or makes) the store at `dir`: the directory 0700, every blob 0600 (they
    /// are backups of volumes).
    pub fn open(dir: &Path) -> std::io::Result<BlobStore> {
        crate::private::own_dir(dir)?;
        // What an interrupted put left.
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".put-") {
                let _ = std::fs::remove_file(e.path());
            } else if e.file_type().is_ok_and(|t| t.is_file()) {
                crate::private::restrict(&e.path(), crate::private::FILE_MODE)?;
            }
        }
        Ok(BlobStore {
            dir: dir.to_path_buf(),
        })
    }

    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(name), self.dir.join(format!("{name}.sha256")))
    }

    /// Stores `body` as `name` (replacing any blob of that name), checking `expected`.
    pub async fn put<S, B, E>(
        &self,
        name: &str,
        mut body: S,
        expected: Option<&str>,
    ) -> Result<BlobInfo, PutError>
    where
        S: futures::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let tmp = self
            .dir
            .join(format!(".put-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = crate::private::write_file(&tmp).await?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| PutError::Interrupted(e.to_string()))?;
                hasher.update(chunk.as_ref());
                size += chunk.as_ref().len() as u64;
                file.write_all(chunk.as_ref()).await?;
            }
            file.sync_all().await?;
            let actual = format!("{:x}", hasher.finalize());
            if let Some(e) = expected {
                if !e.trim().eq_ignore_ascii_case(&actual) {
                    return Err(PutError::ChecksumMismatch {
                        expected: e.trim().to_string(),
                        actual,
                    });
                }
            }
            Ok((actual, size))
        }
        .await;
        let (sha256, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let (data, sum) = self.paths(name);
        // The checksum file goes first and comes back last: never a good-looking
        // blob with the wrong bytes.
        let _ = tokio::fs::remove_file(&sum).await;
        tokio::fs::rename(&tmp, &data).await?;
        let sum_tmp = self
            .dir
            .join(format!(".put-{}", uuid::Uuid::new_v4().simple()));
        let mut f = crate::private::write_file(&sum_tmp).await?;
        f.write_all(format!("{sha256}\n").as_bytes()).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&sum_tmp, &sum).await?;
        Ok(BlobInfo {
            name: name.to_string(),
            size,
            sha256,
            created_at: lattice_specs::now_nanos(),
        })
    }

    /// A blob's facts, if it is whole.
    pub fn info(&self, name: &str) -> Option<BlobInfo> {
        let (data, sum) = self.paths(name);
        let sha256 = std::fs::read_to_string(&sum).ok()?.trim().to_string();
        let meta = std::fs::metadata(&data).ok()?;
        let created_at = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Some(BlobInfo {
            name: name.to_string(),
            size: meta.len(),
            sha256,
            created_at,
        })
    }

    /// A whole blob's facts and its file, for reading.
    pub fn get(&self, name: &str) -> Option<(BlobInfo, PathBuf)> {
        self.info(name).map(|i| (i, self.paths(name).0))
    }

    pub fn list(&self) -> std::io::Result<Vec<BlobInfo>> {
        let mut out: Vec<BlobInfo> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let name = n.strip_suffix(".sha256")?;
                self.info(name)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a blob; false if there was none.
    pub fn delete(&self, name: &str) -> std::io::Result<bool> {
        let (data, sum) = self.paths(name);
        if !sum.exists() {
            return Ok(false);
        }
        std::fs::remove_file(&sum)?;
        let _ = std::fs::remove_file(&data);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl futures::Stream<Item = Result<&'static [u8], String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(*p)).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn blobs_are_kept_whole_with_their_checksum_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // "hello"
        let info = store
            .put("b1", chunks(&[b"he", b"llo"]), Some(sum))
            .await
            .unwrap();
        assert_eq!((info.size, info.sha256.as_str()), (5, sum));
        assert_eq!(std::fs::read(store.get("b1").unwrap().1).unwrap(), b"hello");
        assert_eq!(store.list().unwrap().len(), 1);

        // A mismatch keeps nothing (and leaves the old blob of that name alone).
        let e = store
            .put("b2", chunks(&[b"hellO"]), Some(sum))
            .await
            .unwrap_err();
        assert!(matches!(e, PutError::ChecksumMismatch { .. }), "{e}");
        assert!(store.info("b2").is_none());
        // An upload that breaks off keeps nothing either.
        let broken =
            futures::stream::iter(vec![Ok(&b"part"[..]), Err("connection reset".to_string())]);
        let e = store.put("b3", broken, None).await.unwrap_err();
        assert!(e.to_string().contains("broke off"), "{e}");
        assert!(store.info("b3").is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "only b1 and its checksum: {left:?}");

        // A blob without its checksum file (a crash mid-put) does not count.
        std::fs::write(dir.path().join("orphan"), b"x").unwrap();
        assert!(store.info("orphan").is_none());
        assert!(store.delete("b1").unwrap());
        assert!(!store.delete("b1").unwrap());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn names_are_file_safe() {
        check_name("backup-pg-2026-11-22.tar.gz").unwrap();
        for bad in ["", ".hidden", "../x", "a/b", "x.sha256", &"a".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
