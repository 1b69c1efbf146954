//! The contract every Lattice-rs component shares: the protobuf model and the
//! internal gRPC APIs (generated), their validation, the Task and ActualLRP
//! state machines, the crash-restart policy, rootfs URLs and the public
//! receptor-shaped JSON types. Nothing in this crate does I/O.
//!
//! The gRPC services (`bbs_api`, `rep_api`, [`bbs_client`]) come with the default
//! `grpc` feature; without it (as `ltc` builds it) the crate links no tonic.

pub mod actual_lrp;
pub mod backup;
pub mod containers;
pub mod errors;
pub mod logs;
pub mod receptor;
pub mod restart;
pub mod rootfs;
pub mod routes;
pub mod task;
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

/// A client for the BBS's gRPC API at `addr` (`host:port` or a URL). It connects lazily
/// and reconnects by itself, so components may start before the BBS does.
#[cfg(feature = "grpc")]
pub fn bbs_client(
    addr: &str,
) -> Result<bbs_api::bbs_client::BbsClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(http_url(addr))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(bbs_api::bbs_client::BbsClient::new(channel).max_decoding_message_size(256 << 20))
}

/// Wall-clock time in Unix nanoseconds, the unit every `since`/`created_at` uses.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

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
    pub fn name(&self) -> &'static str {
        match self {
            ModelError::Invalid(_) => "InvalidRequest",
            ModelError::ActualLrpTransition { op, .. } => match *op {
                "claim" => "ActualLRPCannotBeClaimed",
                "start" => "ActualLRPCannotBeStarted",
                "crash" => "ActualLRPCannotBeCrashed",
                "fail" => "ActualLRPCannotBeFailed",
                "unclaim" => "ActualLRPCannotBeUnclaimed",
                _ => "InvalidStateTransition",
            },
            ModelError::TaskTransition { op, .. } => match *op {
                "cancel" => "TaskNotCancelable",
                "delete" | "resolve" => "TaskNotResolvable",
                _ => "InvalidStateTransition",
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
