//! Running a brain as a component: [`start`] connects to the BBS and runs the
//! leader election loop (and, while this brain leads, auctions, convergence and
//! the backup schedule) until [`RunningBrain::shutdown`].

use std::sync::Arc;

use anyhow::Context;

pub use crate::leader::BrainConfig;

/// A running brain.
pub struct RunningBrain {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBrain {
    /// Stops leading (the lock is released for a standby) and returns once stopped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts a brain against the BBS at `bbs` (host:port), reaching cells over gRPC.
pub fn start(bbs: &str, cfg: BrainConfig) -> anyhow::Result<RunningBrain> {
    let bbs = lattice_bbs_client::GrpcBbs::connect_lazy(bbs)
        .with_context(|| format!("bad --bbs address {bbs:?}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = crate::leader::run(
            Arc::new(bbs),
            Arc::new(crate::cells::GrpcCells::default()),
            cfg,
            stopped,
        )
        .await;
    });
    Ok(RunningBrain { stop, task })
}
