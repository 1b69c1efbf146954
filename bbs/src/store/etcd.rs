//! The etcd backend. Every call is bounded by a timeout so that an unreachable
//! etcd turns into a quick `StoreError::Unavailable` instead of a hung
//! request; the client reconnects by itself when etcd returns. Watches resume
//! from the last revision they delivered.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as ECompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    Txn as ETxn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Change, Compare, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResult,
    MAX_TXN_OPS,
};

/// Keys per range read when listing a prefix. etcd walks the whole range to
/// count it on every limited read, so few large pages beat many small ones
/// (250,000 instances: 1.0 s at 5,000 per page, 0.44 s at 100,000).
const LIST_PAGE: i64 = 50_000;

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    timeout: Duration,
    endpoints: Vec<String>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

fn map_err(e: etcd_client::Error) -> StoreError {
    match &e {
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => {
            StoreError::LeaseNotFound(0)
        }
        etcd_client::Error::GRpcStatus(s) if s.message().contains("requested lease not found") => {
            StoreError::LeaseNotFound(0)
        }
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
            ) && s.message().contains("too many operations") =>
        {
            StoreError::TooManyOps(0)
        }
        etcd_client::Error::GRpcStatus(s)
            if !matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ) =>
        {
            StoreError::Internal(format!("etcd: {e}"))
        }
        _ => unavailable(e),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

impl EtcdStore {
    /// Connect to `endpoints` (host:port). Connecting is lazy: an etcd that is
    /// down now makes calls fail with `Unavailable` until it comes up.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<EtcdStore> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), timeout);
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let client = tokio::time::timeout(timeout, Client::connect(&urls, Some(opts)))
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(map_err)?;
        Ok(EtcdStore {
            client,
            timeout,
            endpoints: urls,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        let resp = self.bounded(kv.get(key, None)).await?;
        resp.kvs().first().map(kv_of).transpose()
    }

    /// Pages of `LIST_PAGE` keys, all read at the revision of the first page,
    /// so a large prefix (250,000 instances) is one consistent snapshot and no
    /// single response grows past gRPC's message limits.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self.client.kv_client().max_decoding_message_size(256 << 20);
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self.bounded(kv.get(start.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for k in resp.kvs() {
                out.push(kv_of(k)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        if txn.ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps(txn.ops.len()));
        }
        let compares: Vec<ECompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => {
                    ECompare::mod_revision(k.as_str(), CompareOp::Equal, *r)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let opts = if lease != 0 {
                        Some(PutOptions::new().with_lease(lease))
                    } else {
                        None
                    };
                    TxnOp::put(key, value, opts)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp = self
            .bounded(kv.txn(ETxn::new().when(compares).and_then(ops)))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut lc = self.client.lease_client();
        let resp = self
            .bounded(lc.grant(ttl.as_secs().max(1) as i64, None))
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<i64> {
        let mut lc = self.client.lease_client();
        let timeout = self.timeout;
        let fut = async move {
            let (mut keeper, mut stream) = lc.keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(unavailable("lease keep-alive timed out")),
            Ok(Err(e)) => match map_err(e) {
                StoreError::LeaseNotFound(_) => Err(StoreError::LeaseNotFound(lease)),
                other => Err(other),
            },
            Ok(Ok(Some(r))) if r.ttl() > 0 => Ok(r.ttl()),
            Ok(Ok(_)) => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut lc = self.client.lease_client();
        match self.bounded(lc.revoke(lease)).await {
            Err(StoreError::LeaseNotFound(_)) => Err(StoreError::LeaseNotFound(lease)),
            r => r.map(|_| ()),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<Result<Change>>> {
        let start = self.revision().await? + 1;
        let (tx, rx) = mpsc::channel(1024);
        let client = self.client.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut next = start;
            loop {
                if tx.is_closed() {
                    return;
                }
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_start_revision(next);
                let mut wc = client.watch_client();
                let mut stream = match wc.watch(prefix.as_str(), Some(opts)).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let _ = tx
                                    .send(Err(StoreError::WatchLost(format!(
                                        "etcd compacted past revision {next}"
                                    ))))
                                    .await;
                                return;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                let Ok(key) = kv.key_str() else { continue };
                                let change = Change {
                                    key: key.to_string(),
                                    value: match ev.event_type() {
                                        EventType::Put => Some(kv.value().to_vec()),
                                        EventType::Delete => None,
                                    },
                                    prev_value: ev.prev_kv().map(|p| p.value().to_vec()),
                                    revision: kv.mod_revision(),
                                };
                                next = change.revision + 1;
                                if tx.send(Ok(change)).await.is_err() {
                                    return;
                                }
                            }
                            if resp.canceled() {
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let resp = self
            .bounded(kv.get("\0", Some(GetOptions::new().with_count_only())))
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }
}
