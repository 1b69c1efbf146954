//! The narrow seam every backup store sits behind ([`RepoStore`]: put-if-absent, get
//! with a range, head, list, delete, keyed by restic's local layout) and the in-memory
//! fake the unit tests use ([`MemStore`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// A body streamed into or out of a store.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoStoreError {
    /// The store cannot be reached or refused the call (S3 down, disk full…).
    #[error("the backup store is unavailable: {0}")]
    Unavailable(String),
    /// The request's body broke off or was too large.
    #[error("the upload broke off: {0}")]
    Interrupted(String),
}

impl From<std::io::Error> for RepoStoreError {
    fn from(e: std::io::Error) -> Self {
        RepoStoreError::Unavailable(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, RepoStoreError>;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// The key existed: nothing was written.
    Existed,
}

/// A byte range of an object: `start`, and `len` bytes (None: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: Option<u64>,
}

/// An object being read: its whole size, the range served and its bytes.
pub struct Read {
    pub size: u64,
    pub start: u64,
    pub len: u64,
    pub body: ByteStream,
}

/// Objects keyed by `REPO/config`, `REPO/TYPE/NAME`, `REPO/data/XX/NAME` (restic's
/// local layout, see [`super::layout`]).
#[async_trait]
pub trait RepoStore: Send + Sync + 'static {
    /// The store as errors and logs name it (`dir /srv/b`, `s3://bk/prefix`).
    fn describe(&self) -> String;
    /// restic's `-r` for repository `repo` opened directly, not through the BBS.
    fn restic_location(&self, repo: &str) -> String;
    /// Makes what an empty repository needs (directories for a directory store).
    async fn create_repo(&self, repo: &str) -> StoreResult<()>;
    /// The object's size, None when it does not exist.
    async fn head(&self, key: &str) -> StoreResult<Option<u64>>;
    /// The object's bytes in `range` (None: all), None when it does not exist.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<Read>>;
    /// Stores `body` at `key` unless something is there already; a body that breaks
    /// off leaves nothing.
    async fn put_new(&self, key: &str, body: ByteStream) -> StoreResult<Put>;
    /// Every object under `prefix` (which ends with `/`), at any depth: its last path
    /// segment and its size.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>>;
    /// Removes the object; false when it was not there.
    async fn delete(&self, key: &str) -> StoreResult<bool>;
}

/// Clamps `range` to an object of `size` bytes: (start, len).
pub fn clamp(range: Option<ByteRange>, size: u64) -> (u64, u64) {
    match range {
        None => (0, size),
        Some(r) => {
            let start = r.start.min(size);
            let len = r.len.unwrap_or(u64::MAX).min(size - start);
            (start, len)
        }
    }
}

/// A store in memory (unit tests).
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemStore {
    /// The keys it holds.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl RepoStore for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn restic_location(&self, repo: &str) -> String {
        format!("memory:{repo}")
    }

    async fn create_repo(&self, _repo: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|b| b.len() as u64))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<Read>> {
        let Some(all) = self.objects.lock().unwrap().get(key).cloned() else {
            return Ok(None);
        };
        let size = all.len() as u64;
        let (start, len) = clamp(range, size);
        let part = all.slice(start as usize..(start + len) as usize);
        Ok(Some(Read {
            size,
            start,
            len,
            body: futures::stream::iter([Ok(part)]).boxed(),
        }))
    }

    async fn put_new(&self, key: &str, mut body: ByteStream) -> StoreResult<Put> {
        if self.objects.lock().unwrap().contains_key(key) {
            return Ok(Put::Existed);
        }
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.map_err(|e| RepoStoreError::Interrupted(e.to_string()))?);
        }
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(key) {
            return Ok(Put::Existed);
        }
        objects.insert(key.to_string(), all.into());
        Ok(Put::Created)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| {
                let name = k.rsplit('/').next().unwrap_or_default().to_string();
                (name, v.len() as u64)
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        Ok(self.objects.lock().unwrap().remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(b: &'static [u8]) -> ByteStream {
        futures::stream::iter([Ok(Bytes::from_static(b))]).boxed()
    }

    #[test]
    fn ranges_are_clamped_to_the_object() {
        assert_eq!(clamp(None, 10), (0, 10));
        let r = |start, len| Some(ByteRange { start, len });
        assert_eq!(clamp(r(2, Some(3)), 10), (2, 3));
        assert_eq!(clamp(r(8, Some(5)), 10), (8, 2));
        assert_eq!(clamp(r(4, None), 10), (4, 6));
        assert_eq!(clamp(r(12, None), 10), (10, 0));
    }

    #[tokio::test]
    async fn the_fake_never_overwrites_and_lists_at_any_depth() {
        let s = MemStore::default();
        assert_eq!(
            s.put_new("r/data/ab/x", body(b"one")).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            s.put_new("r/data/ab/x", body(b"two")).await.unwrap(),
            Put::Existed
        );
        assert_eq!(s.head("r/data/ab/x").await.unwrap(), Some(3));
        s.put_new("r/keys/k", body(b"key")).await.unwrap();
        assert_eq!(s.list("r/data/").await.unwrap(), vec![("x".to_string(), 3)]);
        let read = s
            .get(
                "r/data/ab/x",
                Some(ByteRange {
                    start: 1,
                    len: Some(1),
                }),
            )
            .await
            .unwrap()
            .unwrap();
        let got: Vec<_> = read.body.collect().await;
        assert_eq!(got[0].as_ref().unwrap().as_ref(), b"n");
        assert!(s.delete("r/data/ab/x").await.unwrap());
        assert!(!s.delete("r/data/ab/x").await.unwrap());
    }
}
