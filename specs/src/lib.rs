//! The contract every Lattice-rs component shares: the protobuf model and the
//! internal gRPC APIs (generated), their validation, the Task and ActualLRP
//! state machines, the crash-restart policy, rootfs URLs and the public
//! receptor-shaped JSON types. Nothing in this crate does I/O.
//!
//! The generated gRPC services (`bbs_api`, `rep_api`; their typed client is the
//! `lattice-bbs-client` crate) come with the default `grpc` feature; without it (as
//! `ltc` builds it) the crate links no tonic.

pub mod actual_lrp;
pub mod authz;
pub mod backup;
pub mod backup_hooks;
pub mod containers;
pub mod dropsonde;
pub mod egress;
pub mod errors;
pub mod evacuation;
pub mod exec;
pub mod failover;
pub mod identity;
pub mod join;
pub mod logs;
pub mod receptor;
pub mod redact;
pub mod repo;
pub mod restart;
pub mod retention;
pub mod rollout;
pub mod rootfs;
pub mod routes;
pub mod schedule;
pub mod subnets;
pub mod task;
/// Model builders for tests and benchmarks (the `testing` feature; not in production builds).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validation;
pub mod volume;

/// Generated model messages (`proto/models.proto`).
#[allow(clippy::large_enum_variant, clippy::enum_variant_names)]
pub mod models {
    include!(concat!(env!("OUT_DIR"), "/lattice.models.rs"));
}

/// Generated event messages (`proto/events.proto`).
#[allow(clippy::large_enum_variant, clippy::enum_variant_names)]
pub mod events {
    include!(concat!(env!("OUT_DIR"), "/lattice.events.rs"));
}

/// Generated cell (rep) gRPC API (`proto/rep.proto`), used by the auctioneer.
#[cfg(feature = "grpc")]
#[allow(clippy::large_enum_variant, clippy::enum_variant_names)]
pub mod rep_api {
    tonic::include_proto!("lattice.rep");
}

/// Generated BBS gRPC API (`proto/bbs.proto`): messages, client and server.
#[cfg(feature = "grpc")]
#[allow(clippy::large_enum_variant, clippy::enum_variant_names)]
pub mod bbs_api {
    tonic::include_proto!("lattice.bbs");
}

/// Wall-clock time in Unix nanoseconds, the unit every `since`/`created_at` uses.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

use errors::ErrorName;

/// Why a model operation was refused. `name()` is the error name the APIs use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(#[from] validation::ValidationErrors),
    #[error("cannot {op} actual LRP {process_guid}/{index} in state {from}{detail}")]
    ActualLrpTransition {
        op: &'static str,
        process_guid: String,
        index: i32,
        from: &'static str,
        detail: String,
    },
    #[error("cannot {op} task {task_guid} in state {from}{detail}")]
    TaskTransition {
        op: &'static str,
        task_guid: String,
        from: &'static str,
        detail: String,
    },
}

impl ModelError {
    pub fn name(&self) -> ErrorName {
        match self {
            ModelError::Invalid(_) => ErrorName::InvalidRequest,
            ModelError::ActualLrpTransition { op, .. } => match *op {
                "claim" => ErrorName::ActualLRPCannotBeClaimed,
                "start" => ErrorName::ActualLRPCannotBeStarted,
                "crash" => ErrorName::ActualLRPCannotBeCrashed,
                "fail" => ErrorName::ActualLRPCannotBeFailed,
                "unclaim" => ErrorName::ActualLRPCannotBeUnclaimed,
                _ => ErrorName::InvalidStateTransition,
            },
            ModelError::TaskTransition { op, .. } => match *op {
                "cancel" => ErrorName::TaskNotCancelable,
                "delete" | "resolve" => ErrorName::TaskNotResolvable,
                _ => ErrorName::InvalidStateTransition,
            },
        }
    }
}

/// `s` escaped as one URL path segment (unreserved characters kept, the rest %-encoded).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `addr` as a URL: `host:port` gets `http://`; a URL stays as it is.
pub fn http_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}
