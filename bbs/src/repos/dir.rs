//! [`DirStore`]: repositories in a directory, laid out exactly as restic's local
//! backend lays them out (`ROOT/REPO/config`, `keys/`, `locks/`, `snapshots/`,
//! `index/`, `data/XX/`), so `restic -r ROOT/REPO` opens one where it lies. A file is
//! written to `ROOT/.incoming/`, synced, then hard-linked into place (which fails when
//! the name exists: nothing is overwritten) and the directory synced; files 0600,
//! directories 0700.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::rules::Kind;
use super::store::{
    clamp, ByteRange, ByteStream, Put, Read, RepoStore, RepoStoreError, StoreResult,
};
use crate::private;

const INCOMING: &str = ".incoming";

#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Opens (or makes) the store at `root` (0700), removing what interrupted puts left.
    pub fn open(root: &Path) -> std::io::Result<DirStore> {
        private::own_dir(root)?;
        let incoming = root.join(INCOMING);
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        private::own_dir(&incoming)?;
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `body` to a new temporary file in `dir`, synced; its path.
async fn write_temp(dir: &Path, mut body: ByteStream) -> StoreResult<PathBuf> {
    let tmp = dir.join(format!("put-{}", uuid::Uuid::new_v4()));
    let mut f = private::write_file(&tmp).await?;
    let written = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RepoStoreError::Interrupted(e.to_string()))?;
            f.write_all(&chunk).await?;
        }
        f.sync_all().await?;
        Ok::<_, RepoStoreError>(())
    }
    .await;
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

#[async_trait]
impl RepoStore for DirStore {
    fn describe(&self) -> String {
        format!("dir {}", self.root.display())
    }

    fn restic_location(&self, repo: &str) -> String {
        self.root.join(repo).display().to_string()
    }

    async fn create_repo(&self, repo: &str) -> StoreResult<()> {
        let base = self.root.join(repo);
        let dirs: Vec<PathBuf> = Kind::ALL
            .iter()
            .map(|k| base.join(k.as_str()))
            .chain((0..=255u8).map(|b| base.join("data").join(format!("{b:02x}"))))
            .collect();
        tokio::task::spawn_blocking(move || {
            dirs.iter().try_for_each(|d| private::create_dir_all(d))
        })
        .await
        .map_err(|e| RepoStoreError::Unavailable(e.to_string()))??;
        Ok(())
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<Read>> {
        let mut f = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = f.metadata().await?.len();
        let (start, len) = clamp(range, size);
        f.seek(SeekFrom::Start(start)).await?;
        let body = tokio_util::io::ReaderStream::new(f.take(len)).boxed();
        Ok(Some(Read {
            size,
            start,
            len,
            body,
        }))
    }

    async fn put_new(&self, key: &str, body: ByteStream) -> StoreResult<Put> {
        let target = self.path(key);
        if tokio::fs::try_exists(&target).await? {
            return Ok(Put::Existed);
        }
        let tmp = write_temp(&self.root.join(INCOMING), body).await?;
        let placed = tokio::task::spawn_blocking(move || {
            let parent = target.parent().expect("a key has a directory");
            private::create_dir_all(parent)?;
            let linked = match std::fs::hard_link(&tmp, &target) {
                Ok(()) => Ok(Put::Created),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Put::Existed),
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&tmp);
            let put = linked?;
            sync_dir(parent)?;
            Ok::<_, std::io::Error>(put)
        })
        .await
        .map_err(|e| RepoStoreError::Unavailable(e.to_string()))??;
        Ok(placed)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        let dir = self.path(prefix.trim_end_matches('/'));
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            list_into(&dir, &mut out)?;
            Ok(out)
        })
        .await
        .map_err(|e| RepoStoreError::Unavailable(e.to_string()))?
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The files under `dir` at any depth (a missing directory holds none), hidden ones
/// left out.
fn list_into(dir: &Path, out: &mut Vec<(String, u64)>) -> StoreResult<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let meta = e.metadata()?;
        if meta.is_dir() {
            list_into(&e.path(), out)?;
        } else if meta.is_file() {
            out.push((name, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use bytes::Bytes;

    use super::*;
    use crate::repos::rules::{key, File};

    const ID: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    fn body(b: &'static [u8]) -> ByteStream {
        futures::stream::iter([Ok(Bytes::from_static(b))]).boxed()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn files_land_in_restics_layout_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        s.create_repo("pg").await.unwrap();
        for sub in ["keys", "locks", "snapshots", "index", "data/00", "data/ff"] {
            assert!(dir.path().join("pg").join(sub).is_dir(), "{sub}");
        }
        let k = key("pg", File::Named(Kind::Data, ID));
        assert_eq!(s.put_new(&k, body(b"pack")).await.unwrap(), Put::Created);
        let on_disk = dir.path().join("pg/data/ab").join(ID);
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"pack");
        assert_eq!(mode(&on_disk), 0o600);
        assert_eq!(mode(&dir.path().join("pg/data/ab")), 0o700);
        assert_eq!(s.put_new(&k, body(b"evil")).await.unwrap(), Put::Existed);
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"pack", "kept as it was");
        assert_eq!(s.list("pg/data/").await.unwrap(), vec![(ID.to_string(), 4)]);
        assert_eq!(s.list("pg/keys/").await.unwrap(), vec![]);
        assert_eq!(s.head(&k).await.unwrap(), Some(4));
        let r = s
            .get(
                &k,
                Some(ByteRange {
                    start: 1,
                    len: Some(2),
                }),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.size, r.start, r.len), (4, 1, 2));
        let got: Vec<u8> = r.body.map(|c| c.unwrap().to_vec()).concat().await;
        assert_eq!(got, b"ac");
        assert!(s.delete(&k).await.unwrap());
        assert_eq!(s.head(&k).await.unwrap(), None);
        assert!(s.get(&k, None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        let broken = futures::stream::iter([
            Ok(Bytes::from_static(b"half")),
            Err(std::io::Error::other("connection reset")),
        ])
        .boxed();
        let k = key("pg", File::Named(Kind::Snapshots, ID));
        let e = s.put_new(&k, broken).await.unwrap_err();
        assert!(matches!(e, RepoStoreError::Interrupted(_)), "{e}");
        assert_eq!(s.head(&k).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join(INCOMING))
                .unwrap()
                .count(),
            0,
            "no temporary file left"
        );
    }
}
