//! The cell: the **executor** runs real OCI containers through youki's libcontainer
//! (images mounted copy-on-write, a network namespace each, cgroup limits, actions,
//! health checks, logs), and the **rep** holds the cell's presence in the BBS, answers
//! the auctioneer, claims and runs the work it wins and reports the truth about it.
//! Its **DNS server** (`dns`) names apps' instances for the containers.

pub mod bundle;
pub mod cgroup;
pub mod dns;
pub mod executor;
pub mod fileserver;
pub mod hostlock;
pub mod image;
pub mod inroot;
pub mod launcher;
pub mod loglines;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod pool;
pub mod rep;
pub mod repo;
pub mod rootfs;
pub mod scratch;
pub mod server;
pub mod sessions;
pub mod shim;
/// Helpers for tests and benchmarks (the `testing` feature; not in production builds).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transfer;
pub mod trash;
pub mod verify;
pub mod volume;
pub mod watch;
