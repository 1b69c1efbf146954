//! The auctioneer: batches start requests, runs the placement core over the
//! live cells' states and hands every cell its work in one call.
//!
//! There is no timer: whatever arrived while an auction ran makes the next
//! batch, which starts as soon as the previous auction is done. Cells are
//! asked for their state in parallel; a cell that does not answer within the
//! fetch timeout is left out of this auction. Work that was not placed waits
//! and joins a later batch as `retry` decides: work without room now (or
//! refused by cells) after a backoff, never failed for it here; work no cell
//! could run is failed with the reason. The pure steps of a round are in `work`.

mod work;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use lattice_bbs_client::{apply_all, ActualLrpFilter, BbsError, BrainBbs, TaskFilter};
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::Task;
use tokio::sync::{mpsc, Notify};

use crate::auction::{place, AuctionConfig, CellView, Outcome, WorkItem, WorkKind};
use crate::cells::{view_of, CellClient, CellDirectory};
use crate::converger::LrpKey;
use crate::metrics as m;
use crate::retry::{self, RetryConfig, Setback, Verdict, Waiting};
use crate::volume_placement;
use work::{Batch, VolumeHome, WaitingLrps};

/// Above this many distinct processes (or tasks) in a batch, the auction reads
/// every desired LRP (or every task) in one call instead of one call each, and
/// does not check which instances still wait.
const BULK_READ_ABOVE: usize = 32;

/// Above this many work items the placement runs on a blocking thread, so a big
/// auction does not hold up the other tasks of the runtime.
const BLOCKING_PLACEMENT_ABOVE: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StartRequest {
    Lrp(LrpKey),
    Task(String),
}

impl StartRequest {
    /// The request a piece of auction work came from.
    pub fn of(kind: &WorkKind) -> StartRequest {
        match kind {
            WorkKind::Lrp {
                process_guid,
                index,
            } => StartRequest::Lrp(LrpKey {
                process_guid: process_guid.to_string(),
                index: *index,
            }),
            WorkKind::Task { task_guid } => StartRequest::Task(task_guid.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    /// Another brain holds the lock now: stop acting at once.
    #[error("this brain lost its lock to another brain")]
    LockLost,
    #[error("BBS call failed: {0}")]
    Bbs(#[from] BbsError),
}

/// Turn a BBS error into the brain's error, noticing a lost lock.
pub fn bbs_err(e: BbsError) -> BrainError {
    if e.is_lock_lost() {
        BrainError::LockLost
    } else {
        BrainError::Bbs(e)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AuctioneerConfig {
    pub fetch_timeout: Duration,
    pub auction: AuctionConfig,
    /// How work that was not placed is tried again.
    pub retry: RetryConfig,
}

impl Default for AuctioneerConfig {
    fn default() -> Self {
        AuctioneerConfig {
            fetch_timeout: Duration::from_secs(5),
            auction: AuctionConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// The result of one auction round.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Round {
    pub placed: usize,
    /// Work the placement found no cell for.
    pub failed: usize,
    /// Work not placed, and why: no cell for it, or its cell refused it.
    pub setbacks: Vec<(StartRequest, Setback)>,
}

/// Work waiting for a later round: what is remembered of it, and when it is due.
type Queue = HashMap<StartRequest, (Waiting, Instant)>;

pub struct Auctioneer {
    bbs: Arc<dyn BrainBbs>,
    cells: Arc<dyn CellDirectory>,
    cfg: AuctioneerConfig,
}

impl Auctioneer {
    pub fn new(
        bbs: Arc<dyn BrainBbs>,
        cells: Arc<dyn CellDirectory>,
        cfg: AuctioneerConfig,
    ) -> Auctioneer {
        Auctioneer { bbs, cells, cfg }
    }

    /// Auction whatever arrives on `rx`, and the waiting work when it is due (all of
    /// it at once when `retry_now` is notified: a volume became usable on a cell, so
    /// work waiting for its cell can go now), until the channel closes or the lock is
    /// lost.
    pub async fn run(
        &self,
        mut rx: mpsc::UnboundedReceiver<StartRequest>,
        retry_now: Arc<Notify>,
    ) -> Result<(), BrainError> {
        let mut queue: Queue = HashMap::new();
        loop {
            let mut batch = HashSet::new();
            let next_due = queue.values().map(|(_, due)| *due).min();
            let arrived = tokio::select! {
                r = rx.recv() => r.map(Some),
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(far_future).into()) => Some(None),
                _ = retry_now.notified() => {
                    let now = Instant::now();
                    queue.values_mut().for_each(|(_, due)| *due = now);
                    Some(None)
                }
            };
            let Some(arrived) = arrived else {
                return Ok(());
            };
            batch.extend(arrived);
            while let Ok(r) = rx.try_recv() {
                batch.insert(r);
            }
            let now = Instant::now();
            batch.extend(
                queue
                    .iter()
                    .filter(|(_, (_, due))| *due <= now)
                    .map(|(r, _)| r.clone()),
            );
            if batch.is_empty() {
                continue;
            }
            // What is remembered of the batch's work leaves the queue; what is not
            // placed again comes back with the round's verdict.
            let mut known: HashMap<StartRequest, Waiting> = batch
                .iter()
                .filter_map(|r| queue.remove(r).map(|(w, _)| (r.clone(), w)))
                .collect();
            let avoid: HashMap<StartRequest, Vec<String>> = known
                .iter()
                .filter(|(_, w)| !w.avoid.is_empty())
                .map(|(r, w)| (r.clone(), w.avoid.clone()))
                .collect();
            let round = match self.auction(batch.clone(), &avoid).await {
                Ok(r) => r,
                Err(BrainError::LockLost) => return Err(BrainError::LockLost),
                // A BBS hiccup: the whole batch waits a moment and comes again.
                Err(e) => {
                    tracing::warn!(error = %e, "auction round failed");
                    let due = Instant::now() + self.cfg.retry.initial_backoff;
                    for r in batch {
                        let w = known.remove(&r).unwrap_or_default();
                        queue.insert(r, (w, due));
                    }
                    continue;
                }
            };
            let mut records = vec![];
            for (req, setback) in round.setbacks {
                let mut w = known.remove(&req).unwrap_or_default();
                match retry::next(&mut w, setback, &self.cfg.retry) {
                    Verdict::Retry { after, note } => {
                        records.extend(note.map(|n| (req.clone(), Record::Waits(n))));
                        queue.insert(req, (w, Instant::now() + after));
                    }
                    Verdict::GiveUp(reason) => records.push((req, Record::GaveUp(reason))),
                }
            }
            match self.record(records).await {
                Err(BrainError::LockLost) => return Err(BrainError::LockLost),
                Err(e) => tracing::warn!(error = %e, "recording placement failures failed"),
                Ok(()) => {}
            }
        }
    }

    /// One auction over `batch`, keeping work off the cells listed in `avoid`
    /// for it: returns what was placed, and what was not and why. Work that no
    /// longer waits (placed meanwhile, removed) is left out.
    pub async fn auction(
        &self,
        batch: HashSet<StartRequest>,
        avoid: &HashMap<StartRequest, Vec<String>>,
    ) -> Result<Round, BrainError> {
        let started = Instant::now();
        let r = self.auction_inner(batch, avoid).await;
        m::AUCTION_DURATION.observe(started.elapsed().as_secs_f64());
        m::AUCTIONS
            .with_label_values(&[if r.is_ok() { "succeeded" } else { "failed" }])
            .inc();
        r
    }

    /// A round: read what still waits, fetch the cells, place, hand out the work.
    async fn auction_inner(
        &self,
        batch: HashSet<StartRequest>,
        avoid: &HashMap<StartRequest, Vec<String>>,
    ) -> Result<Round, BrainError> {
        let mut lrp_keys = vec![];
        let mut task_guids = vec![];
        for r in batch {
            match r {
                StartRequest::Lrp(k) => lrp_keys.push(k),
                StartRequest::Task(g) => task_guids.push(g),
            }
        }
        let waiting = self.waiting_lrps(&lrp_keys).await?;
        let tasks = self.waiting_tasks(&task_guids).await?;
        let volumes = if work::mounts_volumes(&waiting, &tasks) {
            self.volume_cells().await?
        } else {
            HashMap::new()
        };
        let mut batch = work::batch_of(lrp_keys, &waiting, tasks, &volumes);
        if batch.items.is_empty() {
            return Ok(Round::default());
        }
        m::BATCH_SIZE.observe(batch.items.len() as f64);

        let (views, clients) = self.fetch_cells().await?;
        work::keep_off_refusers(&mut batch.items, &views, avoid);
        let decide_started = Instant::now();
        let (views, items, outcome) = decide(views, batch.items, self.cfg.auction).await;
        m::DECISION_DURATION.observe(decide_started.elapsed().as_secs_f64());
        batch.items = items;
        Ok(self.hand_out(&views, &clients, &batch, outcome).await)
    }

    /// The desired LRPs of `keys`' processes, and which of their instances still
    /// wait (a converger re-send may be stale). For many processes, everything is
    /// read at once and the check skipped: listing every instance per batch would
    /// cost more than it saves, and a cell's compare-and-swap claim refuses
    /// anything no longer UNCLAIMED.
    async fn waiting_lrps(&self, keys: &[LrpKey]) -> Result<WaitingLrps, BrainError> {
        let guids: HashSet<&str> = keys.iter().map(|k| k.process_guid.as_str()).collect();
        let mut waiting = WaitingLrps {
            bulk: guids.len() > BULK_READ_ABOVE,
            ..Default::default()
        };
        if waiting.bulk {
            let all = self.bbs.desired_lrps().await.map_err(bbs_err)?;
            waiting.desired = all
                .into_iter()
                .map(|d| (d.process_guid.clone(), Arc::new(d)))
                .collect();
            return Ok(waiting);
        }
        for g in &guids {
            match self.bbs.desired_lrp(g).await {
                Ok(d) => {
                    waiting.desired.insert(g.to_string(), Arc::new(d));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(bbs_err(e)),
            }
        }
        for g in &guids {
            let filter = ActualLrpFilter {
                process_guid: g.to_string(),
                ..Default::default()
            };
            for a in self.bbs.actual_lrps(&filter).await.map_err(bbs_err)? {
                if a.state() == State::Unclaimed && a.presence() != Presence::Evacuating {
                    let k = a.key.unwrap_or_default();
                    waiting.unclaimed.insert((k.process_guid, k.index));
                }
            }
        }
        Ok(waiting)
    }

    /// The tasks of `guids` that still exist, oldest first: among work the placement
    /// weighs alike, the work that waited longest gets the room (the placement keeps
    /// this order for equals).
    async fn waiting_tasks(&self, guids: &[String]) -> Result<Vec<Task>, BrainError> {
        let mut tasks = vec![];
        if guids.len() > BULK_READ_ABOVE {
            let wanted: HashSet<&str> = guids.iter().map(String::as_str).collect();
            let all = self.bbs.tasks(&TaskFilter::default()).await;
            tasks = all.map_err(bbs_err)?;
            tasks.retain(|t| wanted.contains(t.task_guid.as_str()));
        } else {
            for g in guids {
                match self.bbs.task(g).await {
                    Ok(t) => tasks.push(t),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(bbs_err(e)),
                }
            }
        }
        tasks.sort_by_key(|t| t.created_at);
        Ok(tasks)
    }

    /// Where every volume lives: volume name → its cell and the task refilling it, if
    /// any. A volume that still waits for a cell is given one first, so work that
    /// mounts it can go with it.
    async fn volume_cells(&self) -> Result<HashMap<String, VolumeHome>, BrainError> {
        let volumes = self.bbs.volumes("").await.map_err(bbs_err)?;
        let volumes = volume_placement::place_waiting(self.bbs.as_ref(), volumes).await?;
        // A standby copy lives on its own cell: only its refresh task mounts it.
        let copies: Vec<(String, VolumeHome)> = volumes
            .iter()
            .filter(|v| !v.standby_cell_id.is_empty())
            .map(|v| {
                let copy = lattice_specs::volume::standby_name(&v.name);
                let home = VolumeHome {
                    cell: v.standby_cell_id.clone(),
                    refilled_by: String::new(),
                };
                (copy, home)
            })
            .collect();
        Ok(volumes
            .into_iter()
            .map(|v| {
                let home = VolumeHome {
                    cell: v.cell_id,
                    refilled_by: v.failover_restore_task,
                };
                (v.name, home)
            })
            .chain(copies)
            .collect())
    }

    /// Every live cell's state, in parallel, each bounded by the fetch timeout: the
    /// views of the cells that answered, and their clients (same order).
    async fn fetch_cells(&self) -> Result<(Vec<CellView>, Vec<Arc<dyn CellClient>>), BrainError> {
        let fetch_started = Instant::now();
        let presences = self.bbs.cells().await.map_err(bbs_err)?;
        let timeout = self.cfg.fetch_timeout;
        let fetched = futures::future::join_all(presences.iter().map(|p| {
            let c = self.cells.client(p);
            async move { (c.clone(), tokio::time::timeout(timeout, c.state()).await) }
        }))
        .await;
        let mut views = vec![];
        let mut clients = vec![];
        for (c, r) in fetched {
            match r {
                Ok(Ok(state)) => {
                    views.push(view_of(&state));
                    clients.push(c);
                }
                Ok(Err(e)) => {
                    m::CELL_FETCH_FAILURES.inc();
                    tracing::warn!(error = %e, "cell state fetch failed; leaving the cell out of this auction");
                }
                Err(_) => {
                    m::CELL_FETCH_FAILURES.inc();
                    tracing::warn!(
                        "cell state fetch timed out; leaving the cell out of this auction"
                    );
                }
            }
        }
        m::CELLS_FETCHED.set(views.len() as i64);
        m::FETCH_DURATION.observe(fetch_started.elapsed().as_secs_f64());
        Ok((views, clients))
    }

    /// One Perform per cell, all in parallel: the round's result, with the work the
    /// cells refused (or could not be reached for) and the work not placed.
    async fn hand_out(
        &self,
        views: &[CellView],
        clients: &[Arc<dyn CellClient>],
        batch: &Batch,
        outcome: Outcome,
    ) -> Round {
        let request_of = |i: usize| StartRequest::of(&batch.items[i].kind);
        let per_cell = work::work_per_cell(&outcome, batch);
        let results = futures::future::join_all(per_cell.into_iter().map(|(c, (work, ws))| {
            let client = clients[c].clone();
            let cell_id = views[c].cell_id.clone();
            async move { (cell_id, ws, client.perform(work).await) }
        }))
        .await;
        let mut round = Round {
            placed: outcome.placed.len(),
            failed: outcome.failed.len(),
            setbacks: vec![],
        };
        for (cell_id, ws, r) in results {
            let answer = r.map_err(|e| {
                tracing::warn!(cell = %cell_id, error = %e, "perform failed; the work goes to the next auction");
                e.to_string()
            });
            let sent = ws.into_iter().map(request_of).collect();
            let setbacks = work::perform_setbacks(&cell_id, sent, answer);
            round.placed -= setbacks.len();
            round.setbacks.extend(setbacks);
        }
        round.setbacks.extend(
            outcome
                .failed
                .into_iter()
                .map(|(w, why)| (request_of(w), Setback::Unplaced(why))),
        );
        round
    }

    /// Store why work was not placed: a placement error on an instance (which
    /// stays UNCLAIMED either way); for a task given up on, a rejection (failed
    /// after its max retries). A task that waits for room stays PENDING untouched.
    async fn record(&self, records: Vec<(StartRequest, Record)>) -> Result<(), BrainError> {
        let calls = records.into_iter().filter_map(|(req, record)| {
            let bbs = self.bbs.clone();
            match (req, record) {
                (StartRequest::Lrp(k), record) => {
                    m::LRP_AUCTIONS_FAILED.inc();
                    let reason = record.reason().to_string();
                    tracing::info!(process_guid = %k.process_guid, index = k.index, %reason, "instance could not be placed");
                    Some(
                        async move {
                            bbs.fail_actual_lrp(&k.process_guid, k.index, &reason)
                                .await
                        }
                        .boxed(),
                    )
                }
                (StartRequest::Task(g), Record::Waits(reason)) => {
                    tracing::info!(task_guid = %g, %reason, "task waits for room");
                    None
                }
                (StartRequest::Task(g), Record::GaveUp(reason)) => {
                    m::TASK_AUCTIONS_FAILED.inc();
                    tracing::info!(task_guid = %g, %reason, "task could not be placed");
                    Some(async move { bbs.reject_task(&g, &reason).await }.boxed())
                }
            }
        });
        // Work that moved on meanwhile (claimed, removed) is fine.
        apply_all(calls).await.map_err(bbs_err)
    }
}

/// The placement over `views` and `items`; a big one runs on a blocking thread.
async fn decide(
    views: Vec<CellView>,
    items: Vec<WorkItem>,
    cfg: AuctionConfig,
) -> (Vec<CellView>, Vec<WorkItem>, Outcome) {
    if items.len() > BLOCKING_PLACEMENT_ABOVE {
        tokio::task::spawn_blocking(move || {
            let o = place(&views, &items, &cfg);
            (views, items, o)
        })
        .await
        .expect("placement does not panic")
    } else {
        let o = place(&views, &items, &cfg);
        (views, items, o)
    }
}

/// What is written to the BBS about work that was not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    /// It waits for room (or for a cell) and will be tried again.
    Waits(String),
    /// It was given up on.
    GaveUp(String),
}

impl Record {
    fn reason(&self) -> &str {
        match self {
            Record::Waits(r) | Record::GaveUp(r) => r,
        }
    }
}

/// A deadline that never comes in practice (the queue is empty).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
