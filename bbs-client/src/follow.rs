//! Following the BBS: subscribe to its events, read a snapshot, apply every event,
//! re-read the snapshot periodically to correct anything missed; when the stream
//! breaks, keep what was known and subscribe again after a backoff. The router's
//! route table and the cell's DNS records follow the BBS this way.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lattice_specs::events::event::Event as Kind;
use tokio::sync::watch;

use crate::api::{Reads, RouterBbs};
use crate::error::{BbsError, Result};

/// The first wait before reconnecting to the BBS; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait before reconnecting to the BBS.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What follows the BBS: replaces its state from a snapshot, updates it per event.
#[async_trait]
pub trait Follower: Send + Sync {
    /// Reads what it follows and replaces its state with it.
    async fn resync(&self, bbs: &dyn Reads) -> Result<()>;
    /// Applies one event.
    fn apply(&self, event: &Kind);
    /// The BBS was lost (the state is kept; it is followed again after a backoff).
    fn lost(&self, _error: &Lost) {}
}

/// Why following the BBS stopped (it is then followed again).
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("{0}")]
    Bbs(#[from] BbsError),
    #[error("event stream ended")]
    StreamEnded,
}

/// Follows `bbs` (its events and reads) forever into `follower`. `ready` turns
/// true after the first snapshot; the snapshot is read again every `resync_every`.
pub async fn follow(
    bbs: &dyn RouterBbs,
    follower: &dyn Follower,
    resync_every: Duration,
    ready: &watch::Sender<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Err(e) = follow_once(bbs, follower, resync_every, ready, &mut backoff).await {
            tracing::warn!(error = %e, "lost the BBS; keeping what it said last and reconnecting");
            follower.lost(&e);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Subscribe, read the snapshot, then apply events (and re-read the snapshot every
/// `resync_every`) until the BBS is lost. The backoff resets once a snapshot is read.
async fn follow_once(
    bbs: &dyn RouterBbs,
    follower: &dyn Follower,
    resync_every: Duration,
    ready: &watch::Sender<bool>,
    backoff: &mut Duration,
) -> std::result::Result<(), Lost> {
    // Subscribe before reading the snapshot so that nothing falls between them.
    let mut stream = bbs.subscribe_events().await?;
    follower.resync(bbs).await?;
    let _ = ready.send(true);
    *backoff = BACKOFF_MIN;
    let mut resync = tokio::time::interval(resync_every);
    resync.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(e)) => {
                    if let Some(kind) = &e.event {
                        follower.apply(kind);
                    }
                }
                None => return Err(Lost::StreamEnded),
                Some(Err(e)) => return Err(e.into()),
            },
            _ = resync.tick() => follower.resync(bbs).await?,
        }
    }
}
