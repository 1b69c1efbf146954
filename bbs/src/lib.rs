//! The Bulletin Board System: the only owner of Lattice-rs state.
//!
//! Layers, as in Diego's bbs: `grpc` and `api` (the wire: internal gRPC and
//! the public receptor-shaped JSON API, each a directory by concern) → `db`
//! (model operations checked by `lattice_specs`, one file per entity, applied
//! through one compare-and-swap seam, `db/txn.rs`) → `store` (the key-value
//! seam, etcd or embedded). `events` turns the store's change feed into model
//! events. Errors are named by `lattice_specs::errors::ErrorName` on both wires.

pub mod api;
pub mod backup_forget;
pub mod backup_hooks;
pub mod backup_tasks;
pub mod backup_verify;
pub mod backups;
pub mod blobs;
pub mod callbacks;
pub mod cell_client;
pub mod dav;
pub mod db;
pub mod docker_v1;
pub mod doppler;
pub mod events;
pub mod failover;
pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod private;
pub mod repos;
pub mod schedules;
pub mod serve;
pub mod server;
pub mod sshproxy;
pub mod standby;
pub mod store;
/// A throwaway CA for tests of TLS (the `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod test_pki;
/// Helpers for tests and benchmarks (the `testing` feature; not in production builds).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod usage;
