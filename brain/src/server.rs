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

/// Starts a brain against the BBS at `bbs` (host:port), reaching cells over gRPC;
/// with `tls`, over mutual TLS to both (the BBS proving [`lattice_tls::bbs_identity`],
/// each cell its own id).
pub fn start(
    bbs: &str,
    tls: Option<&lattice_tls::NodeTls>,
    cfg: BrainConfig,
) -> anyhow::Result<RunningBrain> {
    let client_tls = tls
        .map(|t| lattice_tls::client::ClientTls::new(t, lattice_tls::bbs_identity()))
        .transpose()?;
    let bbs = lattice_bbs_client::GrpcBbs::connect_lazy_tls(bbs, client_tls.as_ref())
        .with_context(|| format!("bad --bbs address {bbs:?}"))?;
    let cells = crate::cells::GrpcCells::new(client_tls);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = crate::leader::run(Arc::new(bbs), Arc::new(cells), cfg, stopped).await;
    });
    Ok(RunningBrain { stop, task })
}
