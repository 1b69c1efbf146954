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
//! | `/lattice/v1/replaced/<guid>/<index>`       | ActualLRP (REPLACED)     |       |
//! | `/lattice/v1/generation/<guid>/<gen, 0-padded>` | DesiredLRPGeneration |       |
//! | `/lattice/v1/task/<task_guid>`              | Task                     |       |
//! | `/lattice/v1/cell/<cell_id>`                | CellPresence             | cell's|
//! | `/lattice/v1/domain/<domain>`               | Domain                   | TTL   |
//! | `/lattice/v1/lock/<name>`                   | owner (utf-8)            | owner's|
//! | `/lattice/v1/leaseholder/<lease id>`        | holder's identity (DNS)  | itself|
//! | `/lattice/v1/volume/<name>`                 | Volume                   |       |
//! | `/lattice/v1/backup/<id>`                   | Backup                   |       |
//! | `/lattice/v1/schedule/<volume>`             | BackupSchedule (old: migrated at start) | |
//! | `/lattice/v1/schedules/<name>`              | Schedule (tasks, backups)|       |
//! | `/lattice/v1/subnets`                       | SubnetLeases (all cells) |       |
//! | `/lattice/v1/token/name/<name>`             | ApiToken                 |       |
//! | `/lattice/v1/token/hash/<sha256 of secret>` | ApiToken (same record)   |       |
//! | `/lattice/v1/jointoken/<id>`                | JoinTokenRecord          |       |
//! | `/lattice/v1/owner/<kind>/<name>`           | Owner (app, task, volume, backup) |  |

//!
//! One file per entity, all writing through [`txn`]'s compare-and-swap seam:
//! `desired` (desired LRPs), `actual` (instance records), `evacuation`
//! (EVACUATING and SUSPECT copies, decided by `lattice_specs::evacuation`),
//! `generations` (an app's definition history, new generations, rollbacks,
//! promotions), `rollout` (REPLACED copies and deployments, decided by
//! `lattice_specs::rollout::records`), `tasks`, `cells` (cells, domains, leases, locks), `volumes`, `backups`,
//! `schedules` (periodic Tasks and backup schedules, and the claim of their slots), `subnets` (cells' container subnets), `tokens`
//! (the public API's tokens), `join_tokens` (tokens machines join the cluster with).
//!
//! `owners` keeps who made each app, task, volume and backup through the public API.

mod actual;
mod backups;
mod cells;
mod desired;
mod evacuation;
mod failover;
mod generations;
mod join_tokens;
mod retention;
mod rollout;
mod schedules;
mod standby;
mod subnets;
mod tasks;
mod tcp_routes;
mod tokens;
mod txn;
mod volumes;

// Not an entity: the owner records that follow every write (`txn`).
mod owners;

use std::sync::Arc;

use lattice_specs::errors::ErrorName;
use lattice_specs::task as task_sm;
use lattice_specs::validation::ValidationErrors;
use lattice_specs::ModelError;

use crate::store::{Store, StoreError};
pub use failover::Move;
pub use generations::Rollback;
pub use schedules::{schedule_key, Claim, SCHEDULES};
pub use standby::Tended;
pub use subnets::{ClusterNetwork, DEFAULT_INTERNAL_DOMAIN};
pub use tokens::{check_token_name, new_secret, secret_hash, ApiToken, SECRET_PREFIX};
use txn::CAS_ATTEMPTS;

pub use owners::{owner_key, OwnedKind, Owner, OWNER};

pub const ROOT: &str = "/lattice/v1/";
pub const DESIRED: &str = "/lattice/v1/desired/";
pub const ACTUAL: &str = "/lattice/v1/actual/";
pub const EVACUATING: &str = "/lattice/v1/evacuating/";
pub const SUSPECT: &str = "/lattice/v1/suspect/";
pub const REPLACED: &str = "/lattice/v1/replaced/";
pub const GENERATION: &str = "/lattice/v1/generation/";
pub const TASK: &str = "/lattice/v1/task/";
pub const CELL: &str = "/lattice/v1/cell/";
pub const DOMAIN: &str = "/lattice/v1/domain/";
pub const LOCK: &str = "/lattice/v1/lock/";
pub const LEASE_HOLDER: &str = "/lattice/v1/leaseholder/";
pub const VOLUME: &str = "/lattice/v1/volume/";
pub const BACKUP: &str = "/lattice/v1/backup/";
pub const SCHEDULE: &str = "/lattice/v1/schedule/";
pub const SUBNETS: &str = "/lattice/v1/subnets";
pub const JOIN_TOKEN: &str = "/lattice/v1/jointoken/";

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
pub fn replaced_key(guid: &str, index: i32) -> String {
    format!("{REPLACED}{guid}/{index}")
}
/// Zero-padded, so that a listing comes oldest first.
pub fn generation_key(guid: &str, generation: i64) -> String {
    format!("{GENERATION}{guid}/{generation:020}")
}
pub fn task_key(guid: &str) -> String {
    format!("{TASK}{guid}")
}
pub fn cell_key(id: &str) -> String {
    format!("{CELL}{id}")
}

/// Why a BBS request failed. `name()` is the receptor-style error name, the one
/// the public API's JSON and the gRPC `lattice-error` metadata carry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    #[error("{message}")]
    NotFound { name: ErrorName, message: String },
    #[error("{message}")]
    AlreadyExists { name: ErrorName, message: String },
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
    Conflict { name: ErrorName, message: String },
    /// The caller's lock (e.g. the brain's leadership) changed hands: it must stop acting.
    #[error("lock {lock} is no longer held at revision {revision}: this caller lost it and must not write")]
    Fenced { lock: String, revision: i64 },
    /// The caller's identity may not make this call (see `lattice_specs::authz`).
    #[error("{0}")]
    Forbidden(#[from] lattice_specs::authz::Refusal),
}

impl From<lattice_specs::rollout::records::Refusal> for DbError {
    fn from(r: lattice_specs::rollout::records::Refusal) -> DbError {
        DbError::Conflict {
            name: r.name,
            message: r.message,
        }
    }
}

impl DbError {
    pub fn name(&self) -> ErrorName {
        match self {
            DbError::Invalid(_) => ErrorName::InvalidRequest,
            DbError::NotFound { name, .. }
            | DbError::AlreadyExists { name, .. }
            | DbError::Conflict { name, .. } => *name,
            DbError::Refused(e) => e.name(),
            DbError::Store(StoreError::Unavailable(_)) => ErrorName::StoreUnavailable,
            DbError::Store(StoreError::LeaseNotFound(_)) => ErrorName::LeaseNotFound,
            DbError::Store(_) | DbError::Corrupt { .. } => ErrorName::Unknown,
            DbError::Contended(_) => ErrorName::ResourceConflict,
            DbError::Fenced { .. } => ErrorName::LockLost,
            DbError::Forbidden(_) => ErrorName::Forbidden,
        }
    }

    fn desired_not_found(guid: &str) -> DbError {
        DbError::NotFound {
            name: ErrorName::DesiredLRPNotFound,
            message: format!("desired LRP {guid} not found"),
        }
    }
    fn actual_not_found(guid: &str, index: i32) -> DbError {
        DbError::NotFound {
            name: ErrorName::ActualLRPIndexNotFound,
            message: format!("actual LRP {guid} index {index} not found"),
        }
    }
    fn replaced_not_found(guid: &str, index: i32) -> DbError {
        DbError::NotFound {
            name: ErrorName::ActualLRPIndexNotFound,
            message: format!("no replaced copy of actual LRP {guid} index {index}"),
        }
    }
    fn volume_not_found(name: &str) -> DbError {
        DbError::NotFound {
            name: ErrorName::VolumeNotFound,
            message: format!("volume {name} not found: `ltc volume list` shows the volumes"),
        }
    }
    fn backup_not_found(id: &str) -> DbError {
        DbError::NotFound {
            name: ErrorName::BackupNotFound,
            message: format!("backup {id} not found: `ltc backup list` shows the backups"),
        }
    }
    fn task_not_found(guid: &str) -> DbError {
        DbError::NotFound {
            name: ErrorName::TaskNotFound,
            message: format!("task {guid} not found"),
        }
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

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
    /// What cells' subnet leases are made of (see [`Db::lease_cell_subnet`]).
    pub network: Arc<ClusterNetwork>,
    /// Who owns what this view creates (see [`Db::created_by`]); None: the admins.
    creator: Option<Arc<Owner>>,
}

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db {
            store,
            max_task_retries: task_sm::DEFAULT_MAX_RETRIES,
            fence: None,
            network: Arc::default(),
            creator: None,
        }
    }

    /// The same database handing out subnets of `network`.
    pub fn with_network(mut self, network: ClusterNetwork) -> Db {
        self.network = Arc::new(network);
        self
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
}
