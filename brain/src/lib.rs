//! The brain: the auctioneer (where work goes), the converger (keeping actual
//! state equal to desired), the deployer (rolling updates), volume placement (which cell a new volume goes on),
//! stateful failover (volumes of lost cells moved and refilled: `failover`)
//! and the backup schedule, with one active brain and hot standbys.
//!
//! The decisions are pure functions (`auction`, with `auction::volumes`,
//! `converger` and `rollout`); the I/O around them (`auctioneer`, `convergence`,
//! `deployer`, `leader`, `volume_placement`, `schedules`) talks to the BBS
//! through `lattice_bbs_client::BrainBbs` and to cells through a
//! `cells::CellDirectory`; `server` starts it all as a component.

pub mod auction;
pub mod auctioneer;
pub mod cells;
pub mod convergence;
pub mod converger;
pub mod deployer;
pub mod failover;
pub mod leader;
pub mod metrics;
pub mod readiness;
pub mod retry;
pub mod rollout;
pub mod schedules;
pub mod server;
/// Helpers for tests and benchmarks (the `testing` feature; not in production builds).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod volume_placement;
