//! One active brain, the others on standby.
//!
//! Every brain holds a lease in the BBS and tries to take the `brain` lock
//! with it. The holder is active: it auctions, converges, rolls updates out,
//! places volumes, and writes under the fencing token `brain@REVISION`, so once
//! its lock is gone (its lease expired because it died, paused or lost the
//! network) the BBS refuses its writes and it steps down. Standbys retry the lock about once a second and take over
//! within the lease TTL of the active brain's end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lattice_bbs_client::BrainBbs;
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::task::State as TaskState;
use tokio::sync::{mpsc, watch, Notify};

use crate::auctioneer::{Auctioneer, AuctioneerConfig, BrainError, StartRequest};
use crate::cells::CellDirectory;
use crate::convergence::Convergence;
use crate::converger::{ConvergeConfig, LrpKey};
use crate::deployer::{BbsRollouts, DeployWake, Deployer};
use crate::metrics as m;
use crate::volume_placement;

pub const LOCK: &str = "brain";

/// How long a brain waits before subscribing again when the BBS refused it.
const RESUBSCRIBE_AFTER_REFUSAL: Duration = Duration::from_millis(500);
/// How long a brain waits before subscribing again when its event stream ended.
const RESUBSCRIBE_AFTER_END: Duration = Duration::from_millis(200);
/// The longest a standby waits between two attempts to take the lock.
const LOCK_POLL_AT_MOST: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BrainConfig {
    /// This brain's name in the lock (e.g. its host name).
    pub id: String,
    /// How long the lock outlives a brain that stopped renewing it.
    pub lock_ttl: Duration,
    pub convergence_interval: Duration,
    pub auctioneer: AuctioneerConfig,
    pub converge: ConvergeConfig,
    /// Who leads, as this brain last learnt it (its readiness).
    pub leader: crate::readiness::KnownLeader,
}

impl Default for BrainConfig {
    fn default() -> Self {
        BrainConfig {
            id: format!("brain-{}", uuid::Uuid::new_v4()),
            lock_ttl: Duration::from_secs(5),
            convergence_interval: Duration::from_secs(30),
            auctioneer: AuctioneerConfig::default(),
            converge: ConvergeConfig::default(),
            leader: Default::default(),
        }
    }
}

/// The work an event announces, if any.
fn start_request(e: &Kind) -> Option<StartRequest> {
    let lrp = |a: &lattice_specs::models::ActualLrp| {
        let k = a.key.clone().unwrap_or_default();
        StartRequest::Lrp(LrpKey {
            process_guid: k.process_guid,
            index: k.index,
        })
    };
    match e {
        Kind::ActualLrpCreated(c) => {
            let a = c.actual_lrp.as_ref()?;
            (a.state() == State::Unclaimed && a.presence() != Presence::Evacuating).then(|| lrp(a))
        }
        Kind::ActualLrpChanged(c) => {
            let (b, a) = (c.before.as_ref()?, c.after.as_ref()?);
            (a.state() == State::Unclaimed
                && b.state() != State::Unclaimed
                && a.presence() != Presence::Evacuating)
                .then(|| lrp(a))
        }
        Kind::TaskCreated(c) => {
            let t = c.task.as_ref()?;
            (t.state() == TaskState::Pending).then(|| StartRequest::Task(t.task_guid.clone()))
        }
        Kind::TaskChanged(c) => {
            let (b, a) = (c.before.as_ref()?, c.after.as_ref()?);
            (a.state() == TaskState::Pending && b.state() != TaskState::Pending)
                .then(|| StartRequest::Task(a.task_guid.clone()))
        }
        _ => None,
    }
}

/// Whether `e` may start a deployment (read every app again) or move one
/// (look at the apps in a deployment now).
fn wakes_deployer(e: &Kind) -> Option<bool> {
    match e {
        Kind::DesiredLrpCreated(_) | Kind::DesiredLrpChanged(_) => Some(true),
        Kind::ActualLrpCreated(_) | Kind::ActualLrpChanged(_) | Kind::ActualLrpRemoved(_) => {
            Some(false)
        }
        _ => None,
    }
}

fn wants_convergence(e: &Kind) -> bool {
    matches!(
        e,
        Kind::CellDisappeared(_) | Kind::DesiredLrpCreated(_) | Kind::DesiredLrpChanged(_)
    )
}

/// Who [`follow_events`] wakes.
struct Wake {
    /// Convergence, for events that need it.
    converge_now: Arc<Notify>,
    /// Convergence re-sending everything waiting, once the stream broke.
    resend: Arc<Notify>,
    /// Volume placement, for a volume that waits for a cell (and once the stream broke).
    place_volumes: Arc<Notify>,
    /// The auctioneer's waiting work, for a volume that became usable on a cell.
    retry_waiting: Arc<Notify>,
    /// The deployer, for apps and instances that changed (and once the stream broke).
    deploy: DeployWake,
}

/// Follow BBS events: announced work goes to the auctioneer; events that need
/// convergence or volume placement wake them. A broken stream is resubscribed,
/// and convergence then re-sends everything waiting, and volume placement looks
/// again (events may have been missed).
async fn follow_events(
    bbs: Arc<dyn BrainBbs>,
    auction: mpsc::UnboundedSender<StartRequest>,
    wake: Wake,
) -> Result<(), BrainError> {
    loop {
        let mut stream = match bbs.subscribe_events().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to BBS events; retrying");
                tokio::time::sleep(RESUBSCRIBE_AFTER_REFUSAL).await;
                continue;
            }
        };
        while let Some(Ok(e)) = stream.next().await {
            let Some(kind) = e.event.as_ref() else {
                continue;
            };
            if let Some(r) = start_request(kind) {
                let _ = auction.send(r);
            }
            if wants_convergence(kind) {
                wake.converge_now.notify_one();
            }
            if volume_placement::announces_unplaced_volume(kind) {
                wake.place_volumes.notify_one();
            }
            if volume_placement::announces_usable_volume(kind) {
                wake.retry_waiting.notify_one();
            }
            match wakes_deployer(kind) {
                Some(true) => wake.deploy.rescan.notify_one(),
                Some(false) => wake.deploy.now.notify_one(),
                None => {}
            }
        }
        tracing::warn!("BBS event stream ended; resubscribing");
        wake.resend.notify_one();
        wake.place_volumes.notify_one();
        wake.deploy.rescan.notify_one();
        tokio::time::sleep(RESUBSCRIBE_AFTER_END).await;
    }
}

async fn converge_loop(
    mut conv: Convergence,
    auction: mpsc::UnboundedSender<StartRequest>,
    interval: Duration,
    converge_now: Arc<Notify>,
    resend: Arc<Notify>,
) -> Result<(), BrainError> {
    let mut resend_all = true;
    loop {
        match conv.run_once(&auction, resend_all).await {
            Ok(_) => resend_all = false,
            Err(BrainError::LockLost) => return Err(BrainError::LockLost),
            Err(e) => tracing::warn!(error = %e, "convergence failed; retrying at the next tick"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = converge_now.notified() => {}
            _ = resend.notified() => resend_all = true,
        }
    }
}

/// Renew the lease; fail once it is gone or has not been renewed for a TTL.
async fn keep_lease(bbs: Arc<dyn BrainBbs>, lease: i64, ttl: Duration) -> Result<(), BrainError> {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match bbs.keep_alive_lease(lease).await {
            Ok(ttl_seconds) if ttl_seconds > 0 => last_ok = Instant::now(),
            Ok(_) => return Err(BrainError::LockLost),
            Err(e) if last_ok.elapsed() >= ttl => {
                tracing::warn!(error = %e, "could not renew the lock's lease for a whole TTL");
                return Err(BrainError::LockLost);
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
        }
    }
}

/// Wait until this brain holds the lock: returns (lease, fencing revision).
async fn acquire(
    bbs: &dyn BrainBbs,
    cfg: &BrainConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(i64, i64)> {
    let ttl = cfg.lock_ttl.as_secs().max(1) as i64;
    let poll = (cfg.lock_ttl / 3).min(LOCK_POLL_AT_MOST);
    let mut lease = 0;
    let mut announced = String::new();
    loop {
        if *shutdown.borrow() {
            return None;
        }
        if lease == 0 {
            match bbs.grant_lease(ttl).await {
                Ok(id) => lease = id,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the BBS to compete for the brain lock");
                    cfg.leader
                        .unknown(format!("cannot reach the BBS for a lease: {e}"));
                }
            }
        }
        if lease != 0 {
            match bbs.acquire_lock(LOCK, &cfg.id, lease).await {
                Ok(r) => {
                    cfg.leader.known(&r.owner);
                    if r.acquired {
                        return Some((lease, r.revision));
                    }
                    if announced != r.owner {
                        tracing::info!(active = %r.owner, "standing by");
                        announced = r.owner;
                    }
                    match bbs.keep_alive_lease(lease).await {
                        Ok(ttl_seconds) if ttl_seconds > 0 => {}
                        _ => lease = 0,
                    }
                }
                Err(e) if e.is_not_found() => lease = 0,
                Err(e) => {
                    tracing::warn!(error = %e, "brain lock request failed");
                    cfg.leader
                        .unknown(format!("the BBS did not answer for the brain lock: {e}"));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Run a brain until `shutdown` turns true: stand by, lead when the lock is
/// free, step down when it is lost, and release it on shutdown.
pub async fn run(
    bbs: Arc<dyn BrainBbs>,
    cells: Arc<dyn CellDirectory>,
    cfg: BrainConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some((lease, revision)) = acquire(bbs.as_ref(), &cfg, &mut shutdown).await else {
            return;
        };
        tracing::info!(id = %cfg.id, revision, "became the active brain");
        m::IS_LEADER.set(1);
        let fenced = bbs.fenced(LOCK, revision);
        let (tx, rx) = mpsc::unbounded_channel();
        let converge_now = Arc::new(Notify::new());
        let resend = Arc::new(Notify::new());
        let place_volumes = Arc::new(Notify::new());
        let (deploy_rescan, deploy_now) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let retry_waiting = Arc::new(Notify::new());
        let auctioneer = Auctioneer::new(fenced.clone(), cells.clone(), cfg.auctioneer);
        let mut tasks = tokio::task::JoinSet::new();
        let auction_kick = retry_waiting.clone();
        tasks.spawn(async move { auctioneer.run(rx, auction_kick).await });
        let wake = Wake {
            converge_now: converge_now.clone(),
            resend: resend.clone(),
            place_volumes: place_volumes.clone(),
            retry_waiting,
            deploy: DeployWake {
                rescan: deploy_rescan.clone(),
                now: deploy_now.clone(),
            },
        };
        tasks.spawn(follow_events(fenced.clone(), tx.clone(), wake));
        tasks.spawn(volume_placement::run(
            fenced.clone(),
            place_volumes,
            cfg.convergence_interval,
        ));
        tasks.spawn(crate::failover::run(
            fenced.clone(),
            crate::failover::TICK,
            converge_now.clone(),
        ));
        tasks.spawn(converge_loop(
            Convergence::new(fenced.clone(), cfg.converge),
            tx,
            cfg.convergence_interval,
            converge_now,
            resend,
        ));
        tasks.spawn(crate::deployer::run(
            Deployer::new(Arc::new(BbsRollouts(fenced.clone()))),
            DeployWake {
                rescan: deploy_rescan,
                now: deploy_now,
            },
        ));
        tasks.spawn(crate::schedules::run(
            fenced.clone(),
            crate::schedules::TICK,
        ));
        tasks.spawn(keep_lease(bbs.clone(), lease, cfg.lock_ttl));
        let stopping = tokio::select! {
            r = tasks.join_next() => {
                match r {
                    Some(Ok(Err(BrainError::LockLost))) => tracing::warn!(id = %cfg.id, "lost the brain lock; standing by"),
                    Some(Ok(Err(e))) => tracing::error!(id = %cfg.id, error = %e, "active brain failed; standing by"),
                    other => tracing::error!(id = %cfg.id, ?other, "an active brain task ended; standing by"),
                }
                false
            }
            _ = shutdown.wait_for(|s| *s) => true,
        };
        tasks.shutdown().await;
        m::IS_LEADER.set(0);
        // Let go of the lock so a standby takes over at once, not after a TTL.
        let _ = bbs.release_lock(LOCK, lease).await;
        let _ = bbs.revoke_lease(lease).await;
        if stopping {
            tracing::info!(id = %cfg.id, "brain stopped");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::Locks;

    fn config(id: &str) -> BrainConfig {
        BrainConfig {
            id: id.into(),
            // A standby polls every third of this.
            lock_ttl: Duration::from_millis(150),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_standby_waits_while_the_lock_is_held_and_takes_it_once_released() {
        let bbs = FakeBbs::start().await;
        let (_stop, mut running) = watch::channel(false);
        let (lease_a, revision_a) = acquire(&bbs, &config("a"), &mut running).await.unwrap();

        let (standby_bbs, mut standby_running) = (bbs.clone(), running.clone());
        let standby =
            tokio::spawn(
                async move { acquire(&standby_bbs, &config("b"), &mut standby_running).await },
            );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!standby.is_finished(), "b took a lock that a holds");

        bbs.release_lock(LOCK, lease_a).await.unwrap();
        let taken = tokio::time::timeout(Duration::from_secs(2), standby).await;
        let (_, revision_b) = taken.expect("b took the lock").unwrap().unwrap();
        assert!(
            revision_b > revision_a,
            "a new holder gets a newer fencing token"
        );
    }

    #[tokio::test]
    async fn a_brain_asked_to_stop_stops_waiting_for_the_lock() {
        let bbs = FakeBbs::start().await;
        let (_stop_a, mut running_a) = watch::channel(false);
        acquire(&bbs, &config("a"), &mut running_a).await.unwrap();
        let (stop, mut running) = watch::channel(false);
        let standby_bbs = bbs.clone();
        let standby =
            tokio::spawn(async move { acquire(&standby_bbs, &config("b"), &mut running).await });
        stop.send(true).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(2), standby).await;
        assert_eq!(stopped.expect("b stopped waiting").unwrap(), None);
    }
}
