//! The one typed seam to the BBS.
//!
//! What each component asks of the BBS is a set of narrow traits split by concern
//! (`api`): leases, locks, events, reads, failing tasks, the brain's writes, the
//! cell's writes and backups. A component depends on its own bundle of them: [`BrainBbs`],
//! [`CellBbs`] or [`RouterBbs`]. Methods take and return `lattice_specs::models`
//! types; a refusal is a [`BbsError`] carrying the BBS's
//! [`ErrorName`](lattice_specs::errors::ErrorName), so no caller matches an
//! error by string.
//!
//! [`GrpcBbs`] implements every trait over the BBS's gRPC API, writing under a
//! fencing token once fenced (the brain, once it leads). With the `fake`
//! feature, `fake::FakeBbs` implements them in-process over the real BBS
//! database on an embedded store, so a fake refuses what the real BBS refuses.
//! [`follow`] keeps a [`Follower`] (the router's routes, a cell's DNS records)
//! current from the BBS's snapshot and event stream.

pub mod api;
pub mod apply;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod follow;
pub mod grpc;
pub mod join;
pub mod renew;

pub use api::VolumePlacement;
pub use api::{
    ActualLrpFilter, BrainBbs, CellBbs, CellWrites, ClaimedSlot, EventStream, Events, Leases, Lock,
    Locks, LrpWrites, Reads, Rollouts, RouterBbs, ScheduledRuns, TaskFailures, TaskFilter,
    TaskWrites, VolumeReport,
};
pub use apply::apply_all;
pub use error::{BbsError, Result};
pub use follow::{follow, Follower};
pub use grpc::{bbs_client, bbs_client_tls, GrpcBbs};
