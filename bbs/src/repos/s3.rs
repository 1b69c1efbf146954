//! [`S3Store`]: repositories in an S3-compatible object store (the `object_store`
//! crate), keyed `PREFIX/REPO/…` in restic's layout, so `restic -r
//! s3:ENDPOINT/BUCKET/PREFIX/REPO` opens one there. A body up to [`PART`] is put at once
//! with a conditional create (`If-None-Match: *`); a larger one streams as a multipart
//! upload of [`PART`]-sized parts after a check that the name is free (restic names
//! such files by their content's hash: a racing writer writes the same bytes). Every
//! failure of the store is `Unavailable` with its reason; calls are retried twice and
//! bounded in time, so an unreachable store fails a request within seconds.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use super::store::{
    clamp, ByteRange, ByteStream, Put, Read, RepoStore, RepoStoreError, StoreResult,
};

/// The largest body put in one request, and a multipart upload's part size.
pub const PART: usize = 8 * 1024 * 1024;

/// How the BBS reaches S3: from its environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), or given (tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Empty: AWS itself.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Settings {
    pub fn from_env() -> S3Settings {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        S3Settings {
            endpoint: var("AWS_ENDPOINT_URL"),
            region: var("AWS_REGION"),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        }
    }
}

/// Whether `endpoint` is plain HTTP to this host (the only plain HTTP allowed).
fn loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug)]
pub struct S3Store {
    s3: AmazonS3,
    bucket: String,
    prefix: String,
    endpoint: String,
}

/// The store's error with its causes (down to "Connection refused"), one line.
fn unavailable(e: object_store::Error) -> RepoStoreError {
    let mut why = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !why.contains(&more) {
            why = format!("{why}: {more}");
        }
        cause = c.source();
    }
    RepoStoreError::Unavailable(why)
}

impl S3Store {
    /// A store in `bucket` under `prefix` ("" = the bucket's root).
    pub fn new(bucket: &str, prefix: &str, s: &S3Settings) -> anyhow::Result<S3Store> {
        anyhow::ensure!(
            !s.endpoint.starts_with("http://") || loopback_http(&s.endpoint),
            "AWS_ENDPOINT_URL {}: plain http only to this host (loopback); use https://",
            s.endpoint
        );
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(if s.region.is_empty() {
                "us-east-1"
            } else {
                &s.region
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(loopback_http(&s.endpoint))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
            });
        if !s.endpoint.is_empty() {
            b = b.with_endpoint(&s.endpoint);
        }
        if !s.access_key_id.is_empty() {
            b = b
                .with_access_key_id(&s.access_key_id)
                .with_secret_access_key(&s.secret_access_key);
        }
        let s3 = b
            .build()
            .map_err(|e| anyhow::anyhow!("the S3 store s3://{bucket}/{prefix}: {e}"))?;
        Ok(S3Store {
            s3,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            endpoint: s.endpoint.trim_end_matches('/').into(),
        })
    }

    fn path(&self, key: &str) -> Path {
        match self.prefix.as_str() {
            "" => Path::from(key),
            p => Path::from(format!("{p}/{key}")),
        }
    }

    /// Streams a body larger than one part as a multipart upload (`first` read).
    async fn put_multipart(
        &self,
        at: &Path,
        first: Vec<u8>,
        mut rest: ByteStream,
    ) -> StoreResult<()> {
        let upload = self.s3.put_multipart(at).await.map_err(unavailable)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        w.write(&first);
        let streamed = async {
            while let Some(chunk) = rest.next().await {
                let chunk = chunk.map_err(|e| RepoStoreError::Interrupted(e.to_string()))?;
                w.wait_for_capacity(2).await.map_err(unavailable)?;
                w.put(chunk);
            }
            Ok::<_, RepoStoreError>(())
        }
        .await;
        match streamed {
            Ok(()) => w.finish().await.map(drop).map_err(unavailable),
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl RepoStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn restic_location(&self, repo: &str) -> String {
        let endpoint = match self.endpoint.as_str() {
            "" => "s3.amazonaws.com",
            e => e,
        };
        let mut at = format!("s3:{endpoint}/{}", self.bucket);
        if !self.prefix.is_empty() {
            at.push('/');
            at.push_str(&self.prefix);
        }
        format!("{at}/{repo}")
    }

    async fn create_repo(&self, _repo: &str) -> StoreResult<()> {
        // No directories in an object store; check that it answers.
        self.s3
            .list_with_delimiter(Some(&self.path("")))
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        match self.s3.head(&self.path(key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<Read>> {
        let at = self.path(key);
        let size = match self.head(key).await? {
            Some(s) => s,
            None => return Ok(None),
        };
        let (start, len) = clamp(range, size);
        if len == 0 {
            return Ok(Some(Read {
                size,
                start,
                len,
                body: futures::stream::empty().boxed(),
            }));
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..Default::default()
        };
        let got = match self.s3.get_opts(&at, opts).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let body = got
            .into_stream()
            .map(|c| c.map_err(std::io::Error::other))
            .boxed();
        Ok(Some(Read {
            size,
            start,
            len,
            body,
        }))
    }

    async fn put_new(&self, key: &str, mut body: ByteStream) -> StoreResult<Put> {
        let at = self.path(key);
        let mut first = Vec::new();
        while first.len() <= PART {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(
                    &chunk.map_err(|e| RepoStoreError::Interrupted(e.to_string()))?,
                ),
                None => {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    let payload = PutPayload::from(Bytes::from(first));
                    return match self.s3.put_opts(&at, payload, opts).await {
                        Ok(_) => Ok(Put::Created),
                        Err(
                            object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. },
                        ) => Ok(Put::Existed),
                        Err(e) => Err(unavailable(e)),
                    };
                }
            }
        }
        if self.head(key).await?.is_some() {
            return Ok(Put::Existed);
        }
        self.put_multipart(&at, first, body).await?;
        Ok(Put::Created)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        let mut listed = self.s3.list(Some(&self.path(prefix.trim_end_matches('/'))));
        let mut out = Vec::new();
        while let Some(m) = listed.next().await {
            let m = m.map_err(unavailable)?;
            if let Some(name) = m.location.filename() {
                out.push((name.to_string(), m.size));
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        self.s3.delete(&self.path(key)).await.map_err(unavailable)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_host() {
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9",
        ] {
            assert!(loopback_http(ok), "{ok}");
        }
        for not in [
            "https://127.0.0.1:9000",
            "http://10.0.0.1:9000",
            "http://s3.example",
        ] {
            assert!(!loopback_http(not), "{not}");
        }
        let far = S3Settings {
            endpoint: "http://10.0.0.1:9000".into(),
            ..Default::default()
        };
        let e = S3Store::new("b", "p", &far).unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        let near = S3Settings {
            endpoint: "http://127.0.0.1:9000".into(),
            ..Default::default()
        };
        let s = S3Store::new("bk", "/lattice/", &near).unwrap();
        assert_eq!(
            s.restic_location("pg"),
            "s3:http://127.0.0.1:9000/bk/lattice/pg"
        );
        assert_eq!(s.describe(), "s3://bk/lattice");
    }
}
