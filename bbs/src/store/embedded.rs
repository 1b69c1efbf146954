//! The embedded store: one crash-safe redb file, for the single-VM mode (as
//! k3s defaults to SQLite) and for tests.
//!
//! Writes go through one writer thread that group-commits: every transaction
//! waiting when a commit starts is applied, in arrival order, inside the same
//! redb write transaction, and acknowledged only after that transaction is
//! durably committed (fsync). Concurrent writers therefore share one fsync
//! instead of queueing behind one each, and every acknowledged write survives
//! a crash.
//!
//! Leases: their TTLs are persisted, their deadlines kept in memory; on open
//! every surviving lease gets a fresh TTL (as etcd does on a leader change).
//! A reaper deletes the keys of expired leases through the same writer.
//!
//! Tables: `kv` (key → 24-byte header [create_rev, mod_rev, lease] + value),
//! `meta` ("revision", "next_lease"), `leases` (id → ttl seconds) and
//! `lease_keys` ("{lease:016x}/{key}" → ()) to find a lease's keys.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Change, Compare, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn, TxnResult,
    MAX_TXN_OPS,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<&str, ()> = TableDefinition::new("lease_keys");

const HEADER: usize = 24;
const WATCH_BUFFER: usize = 1 << 16;
const REAP_INTERVAL: Duration = Duration::from_millis(100);

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn encode(create: Revision, modr: Revision, lease: LeaseId, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + value.len());
    v.extend_from_slice(&create.to_le_bytes());
    v.extend_from_slice(&modr.to_le_bytes());
    v.extend_from_slice(&lease.to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue> {
    if raw.len() < HEADER {
        return Err(StoreError::Internal(format!(
            "corrupt record for key {key}"
        )));
    }
    let n = |i: usize| i64::from_le_bytes(raw[i..i + 8].try_into().unwrap());
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: n(0),
        mod_revision: n(8),
        lease: n(16),
        value: raw[HEADER..].to_vec(),
    })
}

fn lease_key(lease: LeaseId, key: &str) -> String {
    format!("{lease:016x}/{key}")
}

enum WriteOp {
    Txn(Txn),
    Grant(i64),
    Revoke(LeaseId),
}

enum WriteOut {
    Txn(TxnResult),
    Lease(LeaseId),
    Done,
}

struct WriteReq {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOut>>,
}

struct Shared {
    db: Database,
    /// Lease id → (ttl, deadline).
    leases: Mutex<HashMap<LeaseId, (Duration, Instant)>>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// A handle to the embedded store; cheap to clone. The file closes when the
/// last handle is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::Sender<WriteReq>,
    /// Dropped with the last handle: tells the reaper to stop, which drops the
    /// last writer sender, which ends the writer thread and closes the file.
    alive: Arc<()>,
}

impl EmbeddedStore {
    /// Open (or create) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                crate::private::create_dir_all(dir)
                    .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
            }
        }
        // Every definition's env is in here: owner only, from before its first byte
        // (and a file made by an older version is tightened).
        crate::private::create_file(path)
            .and_then(|()| crate::private::restrict(path, crate::private::FILE_MODE))
            .map_err(|e| internal(format!("making {} private: {e}", path.display())))?;
        let db = Database::create(path)
            .map_err(|e| internal(format!("opening {}: {e}", path.display())))?;
        // Make sure every table exists so readers never see "table missing".
        let w = db.begin_write().map_err(internal)?;
        {
            w.open_table(KV).map_err(internal)?;
            w.open_table(META).map_err(internal)?;
            w.open_table(LEASE_KEYS).map_err(internal)?;
            let leases = w.open_table(LEASES).map_err(internal)?;
            let _ = leases;
        }
        w.commit().map_err(internal)?;

        let mut live = HashMap::new();
        {
            let r = db.begin_read().map_err(internal)?;
            let t = r.open_table(LEASES).map_err(internal)?;
            for row in t.iter().map_err(internal)? {
                let (id, ttl) = row.map_err(internal)?;
                let ttl = Duration::from_secs(ttl.value().max(1) as u64);
                live.insert(id.value(), (ttl, Instant::now() + ttl));
            }
        }
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            db,
            leases: Mutex::new(live),
            changes,
        });
        let (tx, rx) = std::sync::mpsc::channel::<WriteReq>();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("bbs-store-writer".into())
            .spawn(move || writer_loop(writer_shared, rx))
            .map_err(internal)?;
        let store = EmbeddedStore {
            shared,
            writer: tx,
            alive: Arc::new(()),
        };
        store.spawn_reaper();
        Ok(store)
    }

    fn spawn_reaper(&self) {
        let weak = Arc::downgrade(&self.shared);
        let alive = Arc::downgrade(&self.alive);
        let writer = self.writer.clone();
        std::thread::Builder::new()
            .name("bbs-lease-reaper".into())
            .spawn(move || loop {
                std::thread::sleep(REAP_INTERVAL);
                if alive.strong_count() == 0 {
                    return;
                }
                let Some(shared) = weak.upgrade() else { return };
                let now = Instant::now();
                let expired: Vec<LeaseId> = {
                    let leases = shared.leases.lock().unwrap();
                    leases
                        .iter()
                        .filter(|(_, (_, deadline))| *deadline <= now)
                        .map(|(id, _)| *id)
                        .collect()
                };
                drop(shared);
                for id in expired {
                    let (reply, _rx) = oneshot::channel();
                    if writer
                        .send(WriteReq {
                            op: WriteOp::Revoke(id),
                            reply,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .expect("spawning the lease reaper");
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOut> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteReq { op, reply })
            .map_err(|_| StoreError::Unavailable("embedded store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("embedded store writer stopped".into()))?
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> {
        let shared = self.shared.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&shared.db))
                .await
                .map_err(internal)?
        }
    }
}

fn writer_loop(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<WriteReq>) {
    const MAX_BATCH: usize = 4096;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut changes = Vec::new();
        let mut lease_updates: Vec<(LeaseId, Option<Duration>)> = Vec::new();
        let outcome = (|| -> Result<Vec<Result<WriteOut>>> {
            let w = shared.db.begin_write().map_err(internal)?;
            let mut outs = Vec::with_capacity(batch.len());
            for req in &batch {
                outs.push(apply(
                    &w,
                    &req.op,
                    &shared,
                    &mut changes,
                    &mut lease_updates,
                )?);
            }
            w.commit().map_err(internal)?;
            Ok(outs)
        })();
        match outcome {
            Ok(outs) => {
                {
                    let mut leases = shared.leases.lock().unwrap();
                    for (id, ttl) in lease_updates {
                        match ttl {
                            Some(ttl) => {
                                leases.insert(id, (ttl, Instant::now() + ttl));
                            }
                            None => {
                                leases.remove(&id);
                            }
                        }
                    }
                }
                for c in changes {
                    let _ = shared.changes.send(Arc::new(c));
                }
                for (req, out) in batch.into_iter().zip(outs) {
                    let _ = req.reply.send(out);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store commit failed");
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Apply one write inside the batch's redb transaction. Semantic refusals
/// (a failed compare, an unknown lease) are per-request results; only storage
/// errors abort the whole batch.
fn apply(
    w: &WriteTransaction,
    op: &WriteOp,
    shared: &Shared,
    changes: &mut Vec<Change>,
    lease_updates: &mut Vec<(LeaseId, Option<Duration>)>,
) -> Result<Result<WriteOut>> {
    let mut meta = w.open_table(META).map_err(internal)?;
    let revision = meta
        .get("revision")
        .map_err(internal)?
        .map(|v| v.value())
        .unwrap_or(0);
    match op {
        WriteOp::Grant(ttl) => grant(w, &mut meta, *ttl, lease_updates),
        WriteOp::Revoke(id) => revoke(w, &mut meta, revision, *id, changes, lease_updates),
        WriteOp::Txn(txn) => apply_txn(w, &mut meta, revision, txn, shared, changes, lease_updates),
    }
}

type Meta<'w> = redb::Table<'w, &'static str, i64>;
type Kv<'w> = redb::Table<'w, &'static str, &'static [u8]>;
type LeaseKeys<'w> = redb::Table<'w, &'static str, ()>;

/// A new lease of `ttl` seconds.
fn grant(
    w: &WriteTransaction,
    meta: &mut Meta<'_>,
    ttl: i64,
    lease_updates: &mut Vec<(LeaseId, Option<Duration>)>,
) -> Result<Result<WriteOut>> {
    let id = meta
        .get("next_lease")
        .map_err(internal)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    meta.insert("next_lease", id).map_err(internal)?;
    w.open_table(LEASES)
        .map_err(internal)?
        .insert(id, ttl)
        .map_err(internal)?;
    lease_updates.push((id, Some(Duration::from_secs(ttl as u64))));
    Ok(Ok(WriteOut::Lease(id)))
}

/// Lease `id` ends, and the keys it kept go with it.
fn revoke(
    w: &WriteTransaction,
    meta: &mut Meta<'_>,
    revision: Revision,
    id: LeaseId,
    changes: &mut Vec<Change>,
    lease_updates: &mut Vec<(LeaseId, Option<Duration>)>,
) -> Result<Result<WriteOut>> {
    let existed = w
        .open_table(LEASES)
        .map_err(internal)?
        .remove(id)
        .map_err(internal)?
        .is_some();
    lease_updates.push((id, None));
    if !existed {
        return Ok(Err(StoreError::LeaseNotFound(id)));
    }
    let prefix = format!("{id:016x}/");
    let keys: Vec<String> = {
        let lk = w.open_table(LEASE_KEYS).map_err(internal)?;
        let mut keys = Vec::new();
        for row in lk.range(prefix.as_str()..).map_err(internal)? {
            let (k, _) = row.map_err(internal)?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            keys.push(k[prefix.len()..].to_string());
        }
        keys
    };
    if keys.is_empty() {
        return Ok(Ok(WriteOut::Done));
    }
    let rev = revision + 1;
    let mut kv = w.open_table(KV).map_err(internal)?;
    let mut lk = w.open_table(LEASE_KEYS).map_err(internal)?;
    for key in keys {
        lk.remove(lease_key(id, &key).as_str()).map_err(internal)?;
        let prev = kv
            .remove(key.as_str())
            .map_err(internal)?
            .map(|v| v.value()[HEADER..].to_vec());
        if prev.is_some() {
            changes.push(Change {
                key,
                value: None,
                prev_value: prev,
                revision: rev,
            });
        }
    }
    meta.insert("revision", rev).map_err(internal)?;
    Ok(Ok(WriteOut::Done))
}

/// A transaction: its compares, then (if they all hold) its puts and deletes at one new revision.
fn apply_txn(
    w: &WriteTransaction,
    meta: &mut Meta<'_>,
    revision: Revision,
    txn: &Txn,
    shared: &Shared,
    changes: &mut Vec<Change>,
    lease_updates: &[(LeaseId, Option<Duration>)],
) -> Result<Result<WriteOut>> {
    if txn.ops.len() > MAX_TXN_OPS {
        return Ok(Err(StoreError::TooManyOps(txn.ops.len())));
    }
    let mut kv = w.open_table(KV).map_err(internal)?;
    for c in &txn.compares {
        let Compare::ModRevision(key, want) = c;
        let have = match kv.get(key.as_str()).map_err(internal)? {
            Some(v) => decode(key, v.value())?.mod_revision,
            None => 0,
        };
        if have != *want {
            return Ok(Ok(WriteOut::Txn(TxnResult {
                succeeded: false,
                revision,
            })));
        }
    }
    // Leases named by puts must exist.
    for op in &txn.ops {
        if let Op::Put { lease, .. } = op {
            let alive = match lease_updates.iter().rev().find(|(id, _)| id == lease) {
                Some((_, ttl)) => ttl.is_some(),
                None => shared.leases.lock().unwrap().contains_key(lease),
            };
            if *lease != 0 && !alive {
                return Ok(Err(StoreError::LeaseNotFound(*lease)));
            }
        }
    }
    if txn.ops.is_empty() {
        return Ok(Ok(WriteOut::Txn(TxnResult {
            succeeded: true,
            revision,
        })));
    }
    let rev = revision + 1;
    let mut lk = w.open_table(LEASE_KEYS).map_err(internal)?;
    for op in &txn.ops {
        match op {
            Op::Put { key, value, lease } => {
                put(&mut kv, &mut lk, (key, value, *lease), rev, changes)?
            }
            Op::Delete { key } => delete(&mut kv, &mut lk, key, rev, changes)?,
        }
    }
    meta.insert("revision", rev).map_err(internal)?;
    Ok(Ok(WriteOut::Txn(TxnResult {
        succeeded: true,
        revision: rev,
    })))
}

/// One put of a transaction at revision `rev`, keeping the lease index current.
fn put(
    kv: &mut Kv<'_>,
    lk: &mut LeaseKeys<'_>,
    (key, value, lease): (&str, &[u8], LeaseId),
    rev: Revision,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let prev = kv
        .get(key)
        .map_err(internal)?
        .map(|v| decode(key, v.value()))
        .transpose()?;
    let create = prev.as_ref().map(|p| p.create_revision).unwrap_or(rev);
    if let Some(p) = &prev {
        if p.lease != 0 && p.lease != lease {
            lk.remove(lease_key(p.lease, key).as_str())
                .map_err(internal)?;
        }
    }
    if lease != 0 {
        lk.insert(lease_key(lease, key).as_str(), ())
            .map_err(internal)?;
    }
    kv.insert(key, encode(create, rev, lease, value).as_slice())
        .map_err(internal)?;
    changes.push(Change {
        key: key.to_string(),
        value: Some(value.to_vec()),
        prev_value: prev.map(|p| p.value),
        revision: rev,
    });
    Ok(())
}

/// One delete of a transaction at revision `rev`.
fn delete(
    kv: &mut Kv<'_>,
    lk: &mut LeaseKeys<'_>,
    key: &str,
    rev: Revision,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let prev = kv
        .remove(key)
        .map_err(internal)?
        .map(|v| decode(key, v.value()))
        .transpose()?;
    if let Some(p) = prev {
        if p.lease != 0 {
            lk.remove(lease_key(p.lease, key).as_str())
                .map_err(internal)?;
        }
        changes.push(Change {
            key: key.to_string(),
            value: None,
            prev_value: Some(p.value),
            revision: rev,
        });
    }
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |db| {
            let r = db.begin_read().map_err(internal)?;
            let t = r.open_table(KV).map_err(internal)?;
            let v = t.get(key.as_str()).map_err(internal)?;
            v.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let prefix = prefix.to_string();
        self.read(move |db| {
            let r = db.begin_read().map_err(internal)?;
            let t = r.open_table(KV).map_err(internal)?;
            let mut out = Vec::new();
            for row in t.range(prefix.as_str()..).map_err(internal)? {
                let (k, v) = row.map_err(internal)?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k, v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        match self.write(WriteOp::Txn(txn)).await? {
            WriteOut::Txn(r) => Ok(r),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        match self.write(WriteOp::Grant(secs)).await? {
            WriteOut::Lease(id) => Ok(id),
            _ => Err(internal("unexpected writer reply")),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<i64> {
        let mut leases = self.shared.leases.lock().unwrap();
        match leases.get_mut(&lease) {
            Some((ttl, deadline)) if *deadline > Instant::now() => {
                *deadline = Instant::now() + *ttl;
                Ok(ttl.as_secs() as i64)
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.write(WriteOp::Revoke(lease)).await.map(|_| ())
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<Result<Change>>> {
        let mut sub = self.shared.changes.subscribe();
        let (tx, rx) = mpsc::channel(1024);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(c) if c.key.starts_with(&prefix) => {
                        if tx.send(Ok((*c).clone())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(StoreError::WatchLost(format!(
                                "fell {n} changes behind"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision> {
        self.read(|db| {
            let r = db.begin_read().map_err(internal)?;
            let t = r.open_table(META).map_err(internal)?;
            Ok(t.get("revision")
                .map_err(internal)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .await
    }
}
