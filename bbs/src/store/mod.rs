//! The storage seam: a small key-value interface with compare-and-swap
//! transactions, leases and a change feed — the parts of etcd the BBS needs.
//! Two backends implement it and pass one contract suite (`contract`):
//! - [`etcd::EtcdStore`]: production, HA, a real etcd cluster;
//! - [`embedded::EmbeddedStore`]: a single crash-safe file (redb) for the
//!   single-VM mode, with the same semantics including leases.
//!
//! Revisions follow etcd: a store-wide counter that grows by one for every
//! transaction that writes; each key remembers the revision of its last write
//! (`mod_revision`). Comparing a key's `mod_revision` with `0` means "absent".

pub mod contract;
pub mod embedded;
pub mod etcd;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub type Revision = i64;
pub type LeaseId = i64;

/// etcd's default `--max-txn-ops`; the BBS never sends more ops in one txn.
pub const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// 0 when the key is not attached to a lease.
    pub lease: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod_revision equals this (0: the key does not exist).
    ModRevision(String, Revision),
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::ModRevision(key.into(), 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            lease: 0,
        }
    }
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

/// If every compare holds, apply every op atomically; otherwise apply nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }
    pub fn when(mut self, c: Compare) -> Txn {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Txn {
        self.ops.push(op);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
}

/// One change to one key, as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The new value; `None` when the key was deleted (or its lease expired).
    pub value: Option<Vec<u8>>,
    /// The value before the change, if there was one.
    pub prev_value: Option<Vec<u8>>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time. Retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A watcher fell behind or the history it needs is gone: resync.
    #[error("watch lost events ({0}); resync from a fresh snapshot")]
    WatchLost(String),
    #[error("too many operations in one transaction ({0} > {MAX_TXN_OPS})")]
    TooManyOps(usize),
    #[error("store error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "etcd" or "embedded".
    fn backend(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renew a lease for another TTL; returns the TTL in seconds, or
    /// `LeaseNotFound` if it expired or was revoked.
    async fn keep_alive(&self, lease: LeaseId) -> Result<i64>;
    /// Revoke a lease, deleting every key attached to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Changes to keys under `prefix` from now on, in revision order. The
    /// stream yields `Err(WatchLost)` and ends if it could not keep up.
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<Result<Change>>>;
    /// The store's current revision.
    async fn revision(&self) -> Result<Revision>;
}
