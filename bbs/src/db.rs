//! The BBS's decisions: every model operation, checked by `lattice_specs`
//! (validation, state machines, restart policy) and applied to the store with
//! compare-and-swap, so two writers never both win and a refused or failed
//! request writes nothing.
//!
//! Key layout (all values are protobuf-encoded `lattice_specs::models`):
//!
//! | key                                         | value                    | lease |
//! |---------------------------------------------|--------------------------|-------|
//! | `/lattice/v1/desired/<process_guid>`        | DesiredLRP               |       |
//! | `/lattice/v1/actual/<process_guid>/<index>` | ActualLRP (ordinary)     |       |
//! | `/lattice/v1/evacuating/<guid>/<index>`     | ActualLRP (EVACUATING)   |       |
//! | `/lattice/v1/suspect/<guid>/<index>`        | ActualLRP (SUSPECT)      |       |
//! | `/lattice/v1/task/<task_guid>`              | Task                     |       |
//! | `/lattice/v1/cell/<cell_id>`                | CellPresence             | cell's|
//! | `/lattice/v1/domain/<domain>`               | Domain                   | TTL   |
//! | `/lattice/v1/lock/<name>`                   | owner (utf-8)            | owner's|
//! | `/lattice/v1/volume/<name>`                 | Volume                   |       |
//! | `/lattice/v1/backup/<id>`                   | Backup                   |       |
//! | `/lattice/v1/schedule/<volume>`             | BackupSchedule           |       |

use std::sync::Arc;
use std::time::Duration;

use lattice_specs::actual_lrp as alrp;
use lattice_specs::models::actual_lrp::{Presence, State as LrpState};
use lattice_specs::models::{backup::State as BackupState, volume::State as VolumeState};
use lattice_specs::models::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, Backup, BackupSchedule, CellPresence,
    DesiredLrp, DesiredLrpUpdate, Domain, ModificationTag, Task, TaskDefinition, Volume,
    VolumeMount,
};
use lattice_specs::restart::RestartPolicy;
use lattice_specs::validation::{self, ValidationErrors};
use lattice_specs::{now_nanos, task as task_sm, ModelError};
use prost::Message;

use crate::store::{Compare, KeyValue, LeaseId, Op, Store, StoreError, Txn, MAX_TXN_OPS};

pub const ROOT: &str = "/lattice/v1/";
pub const DESIRED: &str = "/lattice/v1/desired/";
pub const ACTUAL: &str = "/lattice/v1/actual/";
pub const EVACUATING: &str = "/lattice/v1/evacuating/";
pub const SUSPECT: &str = "/lattice/v1/suspect/";
pub const TASK: &str = "/lattice/v1/task/";
pub const CELL: &str = "/lattice/v1/cell/";
pub const DOMAIN: &str = "/lattice/v1/domain/";
pub const LOCK: &str = "/lattice/v1/lock/";
pub const VOLUME: &str = "/lattice/v1/volume/";
pub const BACKUP: &str = "/lattice/v1/backup/";
pub const SCHEDULE: &str = "/lattice/v1/schedule/";

/// How many times a compare-and-swap is retried when another writer got there first.
const CAS_ATTEMPTS: usize = 32;

pub fn desired_key(guid: &str) -> String {
    format!("{DESIRED}{guid}")
}
pub fn actual_key(guid: &str, index: i32) -> String {
    format!("{ACTUAL}{guid}/{index}")
}
pub fn evacuating_key(guid: &str, index: i32) -> String {
    format!("{EVACUATING}{guid}/{index}")
}
pub fn suspect_key(guid: &str, index: i32) -> String {
    format!("{SUSPECT}{guid}/{index}")
}
pub fn task_key(guid: &str) -> String {
    format!("{TASK}{guid}")
}
pub fn cell_key(id: &str) -> String {
    format!("{CELL}{id}")
}

/// Why a BBS request failed. `name()` is the receptor-style error name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    #[error("{message}")]
    NotFound { name: &'static str, message: String },
    #[error("{message}")]
    AlreadyExists { name: &'static str, message: String },
    #[error("{0}")]
    Refused(#[from] ModelError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("gave up after {CAS_ATTEMPTS} concurrent modifications of {0}; retry")]
    Contended(String),
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Refused because of other records (a volume in use, a backup still running…).
    #[error("{message}")]
    Conflict { name: &'static str, message: String },
    /// The caller's lock (e.g. the brain's leadership) changed hands: it must stop acting.
    #[error("lock {lock} is no longer held at revision {revision}: this caller lost it and must not write")]
    Fenced { lock: String, revision: i64 },
}

impl DbError {
    pub fn name(&self) -> &'static str {
        match self {
            DbError::Invalid(_) => "InvalidRequest",
            DbError::NotFound { name, .. }
            | DbError::AlreadyExists { name, .. }
            | DbError::Conflict { name, .. } => name,
            DbError::Refused(e) => e.name(),
            DbError::Store(StoreError::Unavailable(_)) => "StoreUnavailable",
            DbError::Store(StoreError::LeaseNotFound(_)) => "LeaseNotFound",
            DbError::Store(_) | DbError::Corrupt { .. } => "Unknown",
            DbError::Contended(_) => "ResourceConflict",
            DbError::Fenced { .. } => "LockLost",
        }
    }

    fn desired_not_found(guid: &str) -> DbError {
        DbError::NotFound {
            name: "DesiredLRPNotFound",
            message: format!("desired LRP {guid} not found"),
        }
    }
    fn actual_not_found(guid: &str, index: i32) -> DbError {
        DbError::NotFound {
            name: "ActualLRPIndexNotFound",
            message: format!("actual LRP {guid} index {index} not found"),
        }
    }
    fn volume_not_found(name: &str) -> DbError {
        DbError::NotFound {
            name: "VolumeNotFound",
            message: format!("volume {name} not found: `ltc volume list` shows the volumes"),
        }
    }
    fn backup_not_found(id: &str) -> DbError {
        DbError::NotFound {
            name: "BackupNotFound",
            message: format!("backup {id} not found: `ltc backup list` shows the backups"),
        }
    }
    fn task_not_found(guid: &str) -> DbError {
        DbError::NotFound {
            name: "TaskNotFound",
            message: format!("task {guid} not found"),
        }
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

fn decode<T: Message + Default>(kv: &KeyValue) -> Result<T> {
    T::decode(kv.value.as_slice()).map_err(|e| DbError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// What a read-modify-write closure decided.
enum Write<T> {
    Put(T),
    Delete,
    Nothing,
}

/// Outcome of an evacuation call: should the evacuating cell keep running the container?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepContainer(pub bool);

/// A lock holder as stored (`owner`), with the revision it was taken at: a
/// fencing token that grows with every new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub acquired: bool,
    pub owner: String,
    pub revision: i64,
}

#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
    /// Task rejections allowed before the task is failed.
    pub max_task_retries: i32,
    /// Writes only succeed while this lock key still has this revision.
    fence: Option<(String, i64)>,
}

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db {
            store,
            max_task_retries: task_sm::DEFAULT_MAX_RETRIES,
            fence: None,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A view whose every write also requires that lock `name` is still held
    /// at `revision` (the holder's fencing token, from `acquire_lock`): a
    /// paused or partitioned ex-leader cannot write once it has lost the lock.
    pub fn fenced(&self, name: &str, revision: i64) -> Db {
        Db {
            fence: Some((format!("{LOCK}{name}"), revision)),
            ..self.clone()
        }
    }

    /// Every write goes through here, so the fence guards them all.
    async fn txn(&self, mut txn: Txn) -> Result<crate::store::TxnResult> {
        let Some((lock, revision)) = &self.fence else {
            return Ok(self.store.txn(txn).await?);
        };
        txn.compares
            .push(Compare::ModRevision(lock.clone(), *revision));
        let r = self.store.txn(txn).await?;
        if !r.succeeded
            && self
                .store
                .get(lock)
                .await?
                .is_none_or(|kv| kv.mod_revision != *revision)
        {
            let lock = lock.strip_prefix(LOCK).unwrap_or(lock).to_string();
            return Err(DbError::Fenced {
                lock,
                revision: *revision,
            });
        }
        Ok(r)
    }

    async fn get<T: Message + Default>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Create `key` unless it exists: the revision it was created at, or None.
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Option<i64>> {
        let put = Op::Put {
            key: key.into(),
            value,
            lease,
        };
        let r = self
            .txn(Txn::new().when(Compare::absent(key)).then(put))
            .await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// Delete `keys`, up to the store's transaction size at a time.
    async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let ops = chunk.iter().map(Op::delete).collect();
            self.txn(Txn {
                compares: vec![],
                ops,
            })
            .await?;
        }
        Ok(())
    }

    async fn list<T: Message + Default>(&self, prefix: &str) -> Result<Vec<T>> {
        self.store.list(prefix).await?.iter().map(decode).collect()
    }

    /// Read-modify-write `key` with compare-and-swap, retrying when another
    /// writer changed it in between. `f` sees the current value (None if
    /// absent) and decides; its error aborts with nothing written.
    async fn modify<T, R>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> Result<(Write<T>, R)>,
    ) -> Result<R>
    where
        T: Message + Default,
    {
        for _ in 0..CAS_ATTEMPTS {
            let (current, rev) = match self.store.get(key).await? {
                Some(kv) => (Some(decode::<T>(&kv)?), kv.mod_revision),
                None => (None, 0),
            };
            let (write, out) = f(current)?;
            let op = match write {
                Write::Nothing => return Ok(out),
                Write::Put(v) => Op::put(key, v.encode_to_vec()),
                Write::Delete => Op::delete(key),
            };
            if self
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(key.into(), rev))
                        .then(op),
                )
                .await?
                .succeeded
            {
                return Ok(out);
            }
        }
        Err(DbError::Contended(key.to_string()))
    }

    // ------------------------------------------------------------ desired

    pub async fn desire_lrp(&self, mut d: DesiredLrp) -> Result<()> {
        validation::validate_desired_lrp(&d)?;
        self.check_mounts(&d.volume_mounts).await?;
        d.modification_tag = Some(ModificationTag {
            epoch: uuid::Uuid::new_v4().to_string(),
            index: 0,
        });
        let key = desired_key(&d.process_guid);
        if self.create(&key, d.encode_to_vec(), 0).await?.is_none() {
            return Err(DbError::AlreadyExists {
                name: "DesiredLRPAlreadyExists",
                message: format!("desired LRP {} already exists", d.process_guid),
            });
        }
        self.create_missing_actuals(&d.process_guid, &d.domain, 0, d.instances)
            .await
    }

    /// Create UNCLAIMED records for indices in `from..to` that have none.
    /// Best effort per chunk: the converger creates whatever is still missing.
    async fn create_missing_actuals(
        &self,
        guid: &str,
        domain: &str,
        from: i32,
        to: i32,
    ) -> Result<()> {
        // A count stored before validation bounded it must not become a loop (or an
        // allocation) of a billion.
        let to = to.min(validation::MAX_INSTANCES);
        if from >= to {
            return Ok(());
        }
        let existing: std::collections::HashSet<String> = self
            .store
            .list(&format!("{ACTUAL}{guid}/"))
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let now = now_nanos();
        let mut missing = (from..to).filter(|i| !existing.contains(&actual_key(guid, *i)));
        loop {
            let chunk: Vec<i32> = missing.by_ref().take(MAX_TXN_OPS / 2).collect();
            if chunk.is_empty() {
                break;
            }
            let mut txn = Txn::new();
            for i in &chunk {
                let key = actual_key(guid, *i);
                txn = txn.when(Compare::absent(&key)).then(Op::put(
                    &key,
                    alrp::new_unclaimed(guid, *i, domain, now).encode_to_vec(),
                ));
            }
            if !self.txn(txn).await?.succeeded {
                // Someone created some of them meanwhile: fall back to one by one.
                for i in chunk {
                    let lrp = alrp::new_unclaimed(guid, i, domain, now);
                    self.create(&actual_key(guid, i), lrp.encode_to_vec(), 0)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Create the UNCLAIMED record of one desired index if it is missing (the converger's repair).
    pub async fn create_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        let d = self.desired_lrp(guid).await?;
        if index < 0 || index >= d.instances {
            return Err(DbError::actual_not_found(guid, index));
        }
        self.create_missing_actuals(guid, &d.domain, index, index + 1)
            .await
    }

    pub async fn update_desired_lrp(&self, guid: &str, update: DesiredLrpUpdate) -> Result<()> {
        validation::validate_desired_lrp_update(&update)?;
        let (before, after) = self
            .modify(&desired_key(guid), |cur: Option<DesiredLrp>| {
                let before = cur.ok_or_else(|| DbError::desired_not_found(guid))?;
                let mut d = before.clone();
                if let Some(n) = update.instances {
                    d.instances = n;
                }
                if update.has_routes {
                    d.routes = update.routes.clone();
                }
                if let Some(a) = &update.annotation {
                    d.annotation = a.clone();
                }
                let tag = d.modification_tag.get_or_insert_with(Default::default);
                tag.index += 1;
                Ok((Write::Put(d.clone()), (before, d)))
            })
            .await?;
        if after.instances > before.instances {
            self.create_missing_actuals(guid, &after.domain, before.instances, after.instances)
                .await?;
        } else if after.instances < before.instances {
            self.retire_indices_from(guid, after.instances).await?;
        }
        Ok(())
    }

    /// Remove the records of indices >= `from`; cells stop the containers of
    /// instances whose records are gone (ActualLRPRemoved events / bulk sync).
    async fn retire_indices_from(&self, guid: &str, from: i32) -> Result<()> {
        let keys = self
            .store
            .list(&format!("{ACTUAL}{guid}/"))
            .await?
            .into_iter()
            .map(|kv| kv.key);
        let index_of = |k: &str| k.rsplit('/').next().and_then(|i| i.parse::<i32>().ok());
        self.delete_all(
            keys.filter(|k| index_of(k).is_some_and(|i| i >= from))
                .collect(),
        )
        .await
    }

    pub async fn remove_desired_lrp(&self, guid: &str) -> Result<()> {
        self.modify(&desired_key(guid), |cur: Option<DesiredLrp>| match cur {
            None => Err(DbError::desired_not_found(guid)),
            Some(_) => Ok((Write::Delete, ())),
        })
        .await?;
        self.retire_indices_from(guid, 0).await?;
        let mut copies = self.store.list(&format!("{EVACUATING}{guid}/")).await?;
        copies.extend(self.store.list(&format!("{SUSPECT}{guid}/")).await?);
        self.delete_all(copies.into_iter().map(|kv| kv.key).collect())
            .await
    }

    pub async fn desired_lrps(&self, domain: &str) -> Result<Vec<DesiredLrp>> {
        let all: Vec<DesiredLrp> = self.list(DESIRED).await?;
        Ok(all
            .into_iter()
            .filter(|d| domain.is_empty() || d.domain == domain)
            .collect())
    }

    pub async fn desired_lrp(&self, guid: &str) -> Result<DesiredLrp> {
        self.get(&desired_key(guid))
            .await?
            .map(|(d, _)| d)
            .ok_or_else(|| DbError::desired_not_found(guid))
    }

    // ------------------------------------------------------------- actual

    /// Actual LRPs (ordinary, evacuating and suspect), filtered by any of the non-empty criteria.
    pub async fn actual_lrps(
        &self,
        domain: &str,
        cell_id: &str,
        guid: &str,
        index: Option<i32>,
    ) -> Result<Vec<ActualLrp>> {
        let prefix = |p: &str| {
            if guid.is_empty() {
                p.to_string()
            } else {
                format!("{p}{guid}/")
            }
        };
        let mut all: Vec<ActualLrp> = self.list(&prefix(ACTUAL)).await?;
        all.extend(self.list::<ActualLrp>(&prefix(EVACUATING)).await?);
        all.extend(self.list::<ActualLrp>(&prefix(SUSPECT)).await?);
        Ok(all
            .into_iter()
            .filter(|l| {
                let k = l.key.clone().unwrap_or_default();
                (domain.is_empty() || k.domain == domain)
                    && (index.is_none() || Some(k.index) == index)
                    && (cell_id.is_empty()
                        || l.instance_key
                            .as_ref()
                            .is_some_and(|ik| ik.cell_id == cell_id))
            })
            .collect())
    }

    async fn modify_actual<R>(
        &self,
        guid: &str,
        index: i32,
        mut f: impl FnMut(&mut ActualLrp) -> Result<R>,
    ) -> Result<(ActualLrp, R)> {
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let mut l = cur.ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let before = l.clone();
            let r = f(&mut l)?;
            if l == before {
                return Ok((Write::Nothing, (l, r)));
            }
            Ok((Write::Put(l.clone()), (l, r)))
        })
        .await
    }

    pub async fn claim_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<ActualLrp> {
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| Ok(alrp::claim(l, ik, now)?))
            .await?
            .0)
    }

    /// Mark an instance RUNNING. A rep re-adopting an instance whose record is
    /// gone recreates it, as long as the LRP still desires that index.
    pub async fn start_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        net: ActualLrpNetInfo,
    ) -> Result<ActualLrp> {
        let now = now_nanos();
        let start = |l: &mut ActualLrp| -> Result<()> {
            alrp::start(l, ik, net.clone(), now)?;
            l.presence = Presence::Ordinary as i32;
            Ok(())
        };
        match self.modify_actual(guid, index, start).await {
            Err(DbError::NotFound { .. }) => {}
            other => return other.map(|(l, _)| l),
        }
        // The record is gone (e.g. lost with its store): recreate it if still desired.
        let d = self
            .desired_lrp(guid)
            .await
            .map_err(|_| DbError::actual_not_found(guid, index))?;
        if index >= d.instances {
            return Err(DbError::actual_not_found(guid, index));
        }
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let mut l = cur.unwrap_or_else(|| alrp::new_unclaimed(guid, index, &d.domain, now));
            start(&mut l)?;
            Ok((Write::Put(l.clone()), l))
        })
        .await
    }

    /// Returns the instance after the crash: UNCLAIMED if it is to be
    /// re-placed at once, CRASHED if it waits for its backoff.
    pub async fn crash_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<ActualLrp> {
        let policy = match self.get::<DesiredLrp>(&desired_key(guid)).await? {
            Some((d, _)) => RestartPolicy::from_overrides(d.crash_policy.as_ref()),
            None => RestartPolicy::default(),
        };
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| {
                Ok(alrp::crash(l, ik, reason, now, &policy)?)
            })
            .await?
            .0)
    }

    pub async fn fail_actual_lrp(&self, guid: &str, index: i32, reason: &str) -> Result<ActualLrp> {
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| Ok(alrp::fail_placement(l, reason, now)?))
            .await?
            .0)
    }

    /// The system takes an instance back (restart after backoff, lost cell, stale claim).
    pub async fn unclaim_actual_lrp(&self, guid: &str, index: i32) -> Result<ActualLrp> {
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| Ok(alrp::unclaim(l, now)?))
            .await?
            .0)
    }

    /// Delete an instance record; with `ik`, only if it still belongs to that instance.
    pub async fn remove_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: Option<&ActualLrpInstanceKey>,
    ) -> Result<()> {
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let l = cur.ok_or_else(|| DbError::actual_not_found(guid, index))?;
            if let Some(ik) = ik.filter(|ik| !alrp::instance_key_is_empty(ik)) {
                if l.instance_key.as_ref() != Some(ik) {
                    return Err(DbError::Refused(ModelError::ActualLrpTransition {
                        op: "remove",
                        process_guid: guid.into(),
                        index,
                        from: alrp::state_name(l.state()),
                        detail: " (held by another instance)".into(),
                    }));
                }
            }
            Ok((Write::Delete, ()))
        })
        .await
    }

    /// Retire one instance (scale-down, `DELETE …/index/N`): its record goes;
    /// the cell stops the container. The converger recreates it if still desired.
    pub async fn retire_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.remove_actual_lrp(guid, index, None).await
    }

    /// The instance's cell vanished, but the instance may still be running
    /// (a partition): keep it, as SUSPECT under its own key, and put a fresh
    /// UNCLAIMED record in its place so a replacement is placed. The suspect
    /// copy is removed once the replacement runs. Returns the new record.
    pub async fn suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<ActualLrp> {
        let (key, skey) = (actual_key(guid, index), suspect_key(guid, index));
        let now = now_nanos();
        for _ in 0..CAS_ATTEMPTS {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let current: ActualLrp = decode(&kv)?;
            if current.state() != LrpState::Running {
                return Err(DbError::Refused(ModelError::ActualLrpTransition {
                    op: "suspect",
                    process_guid: guid.into(),
                    index,
                    from: alrp::state_name(current.state()),
                    detail: " (only a RUNNING instance can become suspect)".into(),
                }));
            }
            let mut suspect = current.clone();
            suspect.set_presence(Presence::Suspect);
            let mut fresh = current;
            alrp::unclaim(&mut fresh, now)?;
            let previous = self
                .store
                .get(&skey)
                .await?
                .map(|kv| kv.mod_revision)
                .unwrap_or(0);
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .when(Compare::ModRevision(skey.clone(), previous))
                .then(Op::put(&skey, suspect.encode_to_vec()))
                .then(Op::put(&key, fresh.encode_to_vec()));
            if self.txn(txn).await?.succeeded {
                return Ok(fresh);
            }
        }
        Err(DbError::Contended(key))
    }

    /// Drop the suspect copy of an instance (its replacement runs, or it is no longer desired).
    pub async fn remove_suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.modify(
            &suspect_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                None => Err(DbError::actual_not_found(guid, index)),
                Some(_) => Ok((Write::Delete, ())),
            },
        )
        .await
    }

    // --------------------------------------------------------- evacuation

    fn owned_by(l: &ActualLrp, ik: &ActualLrpInstanceKey) -> bool {
        l.instance_key.as_ref() == Some(ik)
    }

    async fn remove_evacuating_if_owned(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.modify(
            &evacuating_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                Some(l) if Self::owned_by(&l, ik) => Ok((Write::Delete, ())),
                _ => Ok((Write::Nothing, ())),
            },
        )
        .await
    }

    pub async fn evacuate_claimed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        let now = now_nanos();
        match self
            .modify_actual(guid, index, |l| {
                if Self::owned_by(l, ik) && l.state() == LrpState::Claimed {
                    alrp::unclaim(l, now)?;
                }
                Ok(())
            })
            .await
        {
            Ok(_) | Err(DbError::NotFound { .. }) => Ok(KeepContainer(false)),
            Err(e) => Err(e),
        }
    }

    /// A RUNNING instance on an evacuating cell: keep serving (an EVACUATING
    /// copy of the record) while its ordinary record is re-placed; stop once
    /// the replacement runs.
    pub async fn evacuate_running(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        net: ActualLrpNetInfo,
    ) -> Result<KeepContainer> {
        let now = now_nanos();
        let ordinary: Option<(ActualLrp, i64)> = self.get(&actual_key(guid, index)).await?;
        if let Some((o, _)) = &ordinary {
            if o.state() == LrpState::Running && !Self::owned_by(o, ik) {
                // The replacement is up: this copy can go.
                self.remove_evacuating_if_owned(guid, index, ik).await?;
                return Ok(KeepContainer(false));
            }
        }
        let Some((o, _)) = ordinary else {
            self.remove_evacuating_if_owned(guid, index, ik).await?;
            return Ok(KeepContainer(false));
        };
        let mut evac = o.clone();
        evac.instance_key = Some(ik.clone());
        evac.net_info = Some(net);
        evac.set_state(LrpState::Running);
        evac.set_presence(Presence::Evacuating);
        evac.since = now;
        self.modify(
            &evacuating_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                Some(l) if !Self::owned_by(&l, ik) => {
                    Err(DbError::Refused(ModelError::ActualLrpTransition {
                        op: "evacuate",
                        process_guid: guid.into(),
                        index,
                        from: "EVACUATING",
                        detail: " (another instance is evacuating)".into(),
                    }))
                }
                Some(l) if l.net_info == evac.net_info => Ok((Write::Nothing, ())),
                _ => Ok((Write::Put(evac.clone()), ())),
            },
        )
        .await?;
        if Self::owned_by(&o, ik) {
            self.modify_actual(guid, index, |l| {
                if Self::owned_by(l, ik) {
                    alrp::unclaim(l, now)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(KeepContainer(true))
    }

    pub async fn evacuate_stopped(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.remove_actual_lrp(guid, index, Some(ik)).await {
            Ok(()) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn evacuate_crashed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.crash_actual_lrp(guid, index, ik, reason).await {
            Ok(_) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn remove_evacuating(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.remove_evacuating_if_owned(guid, index, ik).await
    }

    // -------------------------------------------------------------- tasks

    pub async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        def: TaskDefinition,
    ) -> Result<Task> {
        validation::validate_task(task_guid, domain, &def)?;
        self.check_mounts(&def.volume_mounts).await?;
        let task = task_sm::new_task(task_guid.into(), domain.into(), def, now_nanos());
        let key = task_key(task_guid);
        if self.create(&key, task.encode_to_vec(), 0).await?.is_none() {
            return Err(DbError::AlreadyExists {
                name: "TaskGuidAlreadyExists",
                message: format!("task {task_guid} already exists"),
            });
        }
        Ok(task)
    }

    pub async fn tasks(&self, domain: &str, cell_id: &str) -> Result<Vec<Task>> {
        let all: Vec<Task> = self.list(TASK).await?;
        Ok(all
            .into_iter()
            .filter(|t| {
                (domain.is_empty() || t.domain == domain)
                    && (cell_id.is_empty() || t.cell_id == cell_id)
            })
            .collect())
    }

    pub async fn task(&self, guid: &str) -> Result<Task> {
        self.get(&task_key(guid))
            .await?
            .map(|(t, _)| t)
            .ok_or_else(|| DbError::task_not_found(guid))
    }

    async fn modify_task<R>(
        &self,
        guid: &str,
        mut f: impl FnMut(&mut Task) -> std::result::Result<R, ModelError>,
    ) -> Result<(Task, R)> {
        self.modify(&task_key(guid), |cur: Option<Task>| {
            let mut t = cur.ok_or_else(|| DbError::task_not_found(guid))?;
            let before = t.clone();
            let r = f(&mut t)?;
            if t == before {
                return Ok((Write::Nothing, (t, r)));
            }
            Ok((Write::Put(t.clone()), (t, r)))
        })
        .await
    }

    /// Returns whether the cell should run the task (false: it already does).
    pub async fn start_task(&self, guid: &str, cell_id: &str) -> Result<bool> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::start(t, cell_id, now))
            .await?
            .1)
    }

    pub async fn cancel_task(&self, guid: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self.modify_task(guid, |t| task_sm::cancel(t, now)).await?.0)
    }

    pub async fn fail_task(&self, guid: &str, reason: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::fail(t, reason, now))
            .await?
            .0)
    }

    pub async fn reject_task(&self, guid: &str, reason: &str) -> Result<Task> {
        let now = now_nanos();
        let max = self.max_task_retries;
        Ok(self
            .modify_task(guid, |t| task_sm::reject(t, reason, max, now))
            .await?
            .0)
    }

    pub async fn complete_task(
        &self,
        guid: &str,
        cell_id: &str,
        failed: bool,
        reason: &str,
        result: &str,
    ) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| {
                task_sm::complete(t, cell_id, failed, reason, result, now)
            })
            .await?
            .0)
    }

    pub async fn resolving_task(&self, guid: &str) -> Result<Task> {
        let now = now_nanos();
        Ok(self
            .modify_task(guid, |t| task_sm::resolving(t, now))
            .await?
            .0)
    }

    pub async fn delete_task(&self, guid: &str) -> Result<()> {
        self.modify(&task_key(guid), |cur: Option<Task>| {
            let t = cur.ok_or_else(|| DbError::task_not_found(guid))?;
            task_sm::check_delete(&t)?;
            Ok((Write::Delete, ()))
        })
        .await
    }

    // -------------------------------------------- cells, domains, leases

    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        Ok(self.store.grant_lease(ttl).await?)
    }

    pub async fn keep_alive(&self, lease: LeaseId) -> Result<i64> {
        Ok(self.store.keep_alive(lease).await?)
    }

    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        Ok(self.store.revoke_lease(lease).await?)
    }

    /// Announce (or refresh) a cell; the record lives as long as `lease`.
    pub async fn set_cell_presence(&self, cell: &CellPresence, lease: LeaseId) -> Result<()> {
        validation::validate_cell(cell)?;
        let key = cell_key(&cell.cell_id);
        self.txn(Txn::new().then(Op::Put {
            key,
            value: cell.encode_to_vec(),
            lease,
        }))
        .await?;
        Ok(())
    }

    pub async fn cells(&self) -> Result<Vec<CellPresence>> {
        self.list(CELL).await
    }

    /// Mark a domain fresh for `ttl_seconds` (0: forever).
    pub async fn upsert_domain(&self, d: &Domain) -> Result<()> {
        validation::validate_domain(d)?;
        let lease = if d.ttl_seconds > 0 {
            self.store
                .grant_lease(Duration::from_secs(d.ttl_seconds as u64))
                .await?
        } else {
            0
        };
        let key = format!("{DOMAIN}{}", d.name);
        let previous = self.store.get(&key).await?;
        self.txn(Txn::new().then(Op::Put {
            key,
            value: d.encode_to_vec(),
            lease,
        }))
        .await?;
        if let Some(p) = previous.filter(|p| p.lease != 0 && p.lease != lease) {
            let _ = self.store.revoke_lease(p.lease).await;
        }
        Ok(())
    }

    pub async fn domains(&self) -> Result<Vec<Domain>> {
        self.list(DOMAIN).await
    }

    /// Take `name` for `owner` as long as `lease` lives, unless someone else
    /// holds it. Re-acquiring with the same lease is a no-op that succeeds.
    pub async fn acquire_lock(&self, name: &str, owner: &str, lease: LeaseId) -> Result<LockState> {
        let key = format!("{LOCK}{name}");
        for _ in 0..CAS_ATTEMPTS {
            if let Some(kv) = self.store.get(&key).await? {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                return Ok(LockState {
                    acquired: kv.lease == lease && holder == owner,
                    owner: holder,
                    revision: kv.create_revision,
                });
            }
            if let Some(revision) = self.create(&key, owner.as_bytes().to_vec(), lease).await? {
                return Ok(LockState {
                    acquired: true,
                    owner: owner.into(),
                    revision,
                });
            }
        }
        Err(DbError::Contended(key))
    }

    pub async fn release_lock(&self, name: &str, lease: LeaseId) -> Result<()> {
        let key = format!("{LOCK}{name}");
        if let Some(kv) = self.store.get(&key).await? {
            if kv.lease == lease {
                self.txn(
                    Txn::new()
                        .when(Compare::ModRevision(key, kv.mod_revision))
                        .then(Op::delete(&kv.key)),
                )
                .await?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ volumes

    /// Every volume a container would mount exists and is usable.
    async fn check_mounts(&self, mounts: &[VolumeMount]) -> Result<()> {
        // (scratch volumes have no record: the cell makes them)
        for m in mounts.iter().filter(|m| m.scratch_bytes == 0) {
            let v = self.volume(&m.volume).await.map_err(|e| match e {
                DbError::NotFound { .. } => DbError::Conflict {
                    name: "VolumeNotFound",
                    message: format!(
                        "volume {} does not exist: create it with `ltc volume create {} --size 1G`",
                        m.volume, m.volume
                    ),
                },
                e => e,
            })?;
            if v.state() == VolumeState::Removing || v.state() == VolumeState::Failed {
                return Err(DbError::Conflict {
                    name: "VolumeNotUsable",
                    message: format!(
                        "volume {} is {}{}",
                        m.volume,
                        lattice_specs::volume::state_name(v.state()),
                        if v.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", v.reason)
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    /// Records a new volume for its cell to make: on `cell_id`, or (empty) on the cell
    /// with the `local` driver that holds the fewest bytes of volumes.
    pub async fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        cell_id: &str,
    ) -> Result<Volume> {
        let invalid = |field: &str, message: String| {
            DbError::Invalid(ValidationErrors(vec![validation::FieldError {
                field: field.into(),
                message,
            }]))
        };
        lattice_specs::volume::check_name("volume", name).map_err(|e| invalid("name", e))?;
        if size_bytes < lattice_specs::volume::MIN_SIZE {
            return Err(invalid(
                "size_bytes",
                format!(
                    "{size_bytes} bytes is too small: volumes are at least {}",
                    lattice_specs::volume::format_size(lattice_specs::volume::MIN_SIZE)
                ),
            ));
        }
        let cells: Vec<CellPresence> = self
            .cells()
            .await?
            .into_iter()
            .filter(|c| c.volume_drivers.iter().any(|d| d == "local"))
            .collect();
        let cell = if !cell_id.is_empty() {
            if !cells.iter().any(|c| c.cell_id == cell_id) {
                return Err(DbError::Conflict {
                    name: "CellNotFound",
                    message: format!(
                        "cell {cell_id} is not present or has no local volume driver: `ltc cells` lists the cells and their drivers"
                    ),
                });
            }
            cell_id.to_string()
        } else {
            let volumes = self.volumes().await?;
            let held = |id: &str| -> u64 {
                volumes
                    .iter()
                    .filter(|v| v.cell_id == id)
                    .map(|v| v.size_bytes)
                    .sum()
            };
            cells
                .iter()
                .min_by_key(|c| (held(&c.cell_id), c.cell_id.clone()))
                .map(|c| c.cell_id.clone())
                .ok_or_else(|| DbError::Conflict {
                    name: "NoVolumeDriver",
                    message: "no cell offers the local volume driver: start a cell with a volume pool (`lattice cell --volume-pool-size 20G`)".into(),
                })?
        };
        let now = now_nanos();
        let v = Volume {
            name: name.into(),
            cell_id: cell,
            size_bytes,
            used_bytes: 0,
            state: VolumeState::Pending as i32,
            reason: String::new(),
            created_at: now,
            updated_at: now,
            actual_size_bytes: 0,
        };
        if self
            .create(&format!("{VOLUME}{name}"), v.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(DbError::AlreadyExists {
                name: "VolumeAlreadyExists",
                message: format!("volume {name} already exists: `ltc volume list` shows it"),
            });
        }
        Ok(v)
    }

    pub async fn volumes(&self) -> Result<Vec<Volume>> {
        self.list(VOLUME).await
    }

    pub async fn volume(&self, name: &str) -> Result<Volume> {
        self.get(&format!("{VOLUME}{name}"))
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| DbError::volume_not_found(name))
    }

    /// Who mounts volume `name`: desired LRPs (process guids) and tasks not yet
    /// completed (task guids).
    pub async fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        let mounts = |m: &[VolumeMount]| m.iter().any(|m| m.volume == name);
        let mut users: Vec<String> = self
            .desired_lrps("")
            .await?
            .into_iter()
            .filter(|d| mounts(&d.volume_mounts))
            .map(|d| d.process_guid)
            .collect();
        users.extend(
            self.tasks("", "")
                .await?
                .into_iter()
                .filter(|t| {
                    t.state < lattice_specs::models::task::State::Completed as i32
                        && t.definition
                            .as_ref()
                            .is_some_and(|d| mounts(&d.volume_mounts))
                })
                .map(|t| t.task_guid),
        );
        Ok(users)
    }

    /// Asks the volume's cell to remove it; refused while anything mounts it. A volume
    /// its cell never made goes at once.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        let users = self.volume_users(name).await?;
        if !users.is_empty() {
            return Err(DbError::Conflict {
                name: "VolumeInUse",
                message: format!(
                    "volume {name} is mounted by {}: remove those apps or tasks first",
                    users.join(", ")
                ),
            });
        }
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            Ok(match v.state() {
                // (a FAILED volume too: its cell removes whatever it made of it)
                VolumeState::Removing => (Write::Nothing, ()),
                _ => {
                    v.state = VolumeState::Removing as i32;
                    v.updated_at = now_nanos();
                    (Write::Put(v), ())
                }
            })
        })
        .await?;
        // Its schedule goes with it.
        self.txn(Txn::new().then(Op::delete(format!("{SCHEDULE}{name}"))))
            .await?;
        Ok(())
    }

    /// Grows a READY volume to `size_bytes` (its cell grows it online).
    pub async fn grow_volume(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.state() != VolumeState::Ready {
                return Err(DbError::Conflict {
                    name: "VolumeNotReady",
                    message: format!(
                        "volume {name} is {}: only a READY volume can grow",
                        lattice_specs::volume::state_name(v.state())
                    ),
                });
            }
            if size_bytes <= v.size_bytes {
                return Err(DbError::Invalid(ValidationErrors(vec![
                    validation::FieldError {
                        field: "size_bytes".into(),
                        message: format!(
                            "volume {name} is {}: a volume can only grow",
                            lattice_specs::volume::format_size(v.size_bytes)
                        ),
                    },
                ])));
            }
            v.size_bytes = size_bytes;
            v.reason = String::new();
            v.updated_at = now_nanos();
            Ok((Write::Put(v.clone()), v))
        })
        .await
    }

    /// A cell reports its volume READY (with its size and use) or FAILED. Reports from
    /// another cell, or about a volume being removed, change nothing.
    pub async fn set_volume_state(
        &self,
        name: &str,
        cell_id: &str,
        state: VolumeState,
        (size_bytes, used_bytes): (u64, u64),
        reason: &str,
    ) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.cell_id != cell_id || v.state() == VolumeState::Removing {
                return Ok((Write::Nothing, ()));
            }
            let before = v.clone();
            v.state = state as i32;
            v.used_bytes = used_bytes;
            v.actual_size_bytes = size_bytes;
            v.reason = reason.to_string();
            if v == before {
                return Ok((Write::Nothing, ()));
            }
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }

    /// A cell removed a REMOVING volume: its record goes.
    pub async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            Ok(match cur {
                Some(v) if v.cell_id == cell_id && v.state() == VolumeState::Removing => {
                    (Write::Delete, ())
                }
                _ => (Write::Nothing, ()),
            })
        })
        .await
    }

    // ------------------------------------------------------------ backups

    /// Records backup `b` and creates the task that makes it, both or neither. A
    /// backup with the same id (a schedule's slot already filled) is AlreadyExists.
    pub async fn create_backup(&self, b: &Backup, def: TaskDefinition) -> Result<Task> {
        validation::validate_task(&b.task_guid, lattice_specs::backup::DOMAIN, &def)?;
        // The volume's record changes as its cell reports its use: retry then.
        for _ in 0..CAS_ATTEMPTS {
            let (v, vrev) = self
                .get::<Volume>(&format!("{VOLUME}{}", b.volume))
                .await?
                .ok_or_else(|| DbError::volume_not_found(&b.volume))?;
            if v.state() != VolumeState::Ready {
                return Err(DbError::Conflict {
                    name: "VolumeNotReady",
                    message: format!(
                        "volume {} is {}: only a READY volume can be backed up",
                        b.volume,
                        lattice_specs::volume::state_name(v.state())
                    ),
                });
            }
            let task = task_sm::new_task(
                b.task_guid.clone(),
                lattice_specs::backup::DOMAIN.into(),
                def.clone(),
                now_nanos(),
            );
            let (bk, tk) = (format!("{BACKUP}{}", b.id), task_key(&b.task_guid));
            let r = self
                .txn(
                    Txn::new()
                        .when(Compare::absent(&bk))
                        .when(Compare::absent(&tk))
                        // The volume still is as we saw it (not being removed meanwhile).
                        .when(Compare::ModRevision(format!("{VOLUME}{}", b.volume), vrev))
                        .then(Op::put(&bk, b.encode_to_vec()))
                        .then(Op::put(&tk, task.encode_to_vec())),
                )
                .await?;
            if !r.succeeded {
                if self.store.get(&bk).await?.is_some() {
                    return Err(DbError::AlreadyExists {
                        name: "BackupAlreadyExists",
                        message: format!("backup {} already exists", b.id),
                    });
                }
                continue;
            }
            return Ok(task);
        }
        Err(DbError::Contended(format!("{BACKUP}{}", b.id)))
    }

    pub async fn backups(&self) -> Result<Vec<Backup>> {
        self.list(BACKUP).await
    }

    pub async fn backup(&self, id: &str) -> Result<Backup> {
        self.get(&format!("{BACKUP}{id}"))
            .await?
            .map(|(b, _)| b)
            .ok_or_else(|| DbError::backup_not_found(id))
    }

    /// Read-modify-write a backup record (`f` returns whether it changed it).
    pub async fn modify_backup(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Backup) -> bool,
    ) -> Result<Backup> {
        self.modify(&format!("{BACKUP}{id}"), |cur: Option<Backup>| {
            let mut b = cur.ok_or_else(|| DbError::backup_not_found(id))?;
            let changed = f(&mut b);
            Ok((
                if changed {
                    Write::Put(b.clone())
                } else {
                    Write::Nothing
                },
                b,
            ))
        })
        .await
    }

    /// Records an imported backup (its archive already in the blob store).
    pub async fn import_backup(&self, b: &Backup) -> Result<()> {
        if self
            .create(&format!("{BACKUP}{}", b.id), b.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(DbError::AlreadyExists {
                name: "BackupAlreadyExists",
                message: format!("backup {} already exists", b.id),
            });
        }
        Ok(())
    }

    /// Forgets a backup that is not running (its archive is the caller's to delete).
    pub async fn delete_backup(&self, id: &str) -> Result<Backup> {
        self.modify(&format!("{BACKUP}{id}"), |cur: Option<Backup>| {
            let b = cur.ok_or_else(|| DbError::backup_not_found(id))?;
            if b.state() == BackupState::Running {
                return Err(DbError::Conflict {
                    name: "BackupRunning",
                    message: format!(
                        "backup {id} is still running (task {}): cancel it with `ltc cancel-task {}`",
                        b.task_guid, b.task_guid
                    ),
                });
            }
            Ok((Write::Delete, b))
        })
        .await
    }

    // ---------------------------------------------------------- schedules

    /// Sets (or replaces) the backup schedule of a volume.
    pub async fn set_backup_schedule(&self, s: &BackupSchedule) -> Result<()> {
        let invalid = |field: &str, message: String| {
            DbError::Invalid(ValidationErrors(vec![validation::FieldError {
                field: field.into(),
                message,
            }]))
        };
        lattice_specs::backup::parse_every(&s.every).map_err(|e| invalid("every", e))?;
        if s.keep == 0 {
            return Err(invalid("keep", "must be at least 1".into()));
        }
        self.volume(&s.volume).await?;
        self.txn(Txn::new().then(Op::put(
            format!("{SCHEDULE}{}", s.volume),
            s.encode_to_vec(),
        )))
        .await?;
        Ok(())
    }

    pub async fn backup_schedules(&self) -> Result<Vec<BackupSchedule>> {
        self.list(SCHEDULE).await
    }

    pub async fn remove_backup_schedule(&self, volume: &str) -> Result<()> {
        self.modify(
            &format!("{SCHEDULE}{volume}"),
            |cur: Option<BackupSchedule>| {
                cur.ok_or_else(|| DbError::NotFound {
                    name: "ScheduleNotFound",
                    message: format!("volume {volume} has no backup schedule"),
                })?;
                Ok((Write::Delete, ()))
            },
        )
        .await
    }
}
