//! The auctioneer: batches start requests, runs the placement core over the
//! live cells' states and hands every cell its work in one call.
//!
//! There is no timer: whatever arrived while an auction ran makes the next
//! batch, which starts as soon as the previous auction is done. Cells are
//! asked for their state in parallel; a cell that does not answer within the
//! fetch timeout is left out of this auction. Work that was not placed waits
//! and joins a later batch as `retry` decides: work without room now (or
//! refused by cells) after a backoff, never failed for it here; work no cell
//! could run is failed with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use lattice_specs::bbs_api::{
    ActualLrPsRequest, ActualLrpRef, DesiredLrPsRequest, Empty, FailActualLrpRequest,
    ProcessGuidRequest, RejectTaskRequest, TaskGuidRequest, TasksRequest,
};
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::{DesiredLrp, Task};
use lattice_specs::rep_api::{LrpStart, TaskStart, Work};
use tokio::sync::mpsc;

use crate::auction::{place, AuctionConfig, Constraints, WorkItem, WorkKind};
use crate::bbs::{apply_all, is_lock_lost, Bbs};
use crate::cells::{view_of, CellDirectory};
use crate::converger::LrpKey;
use crate::metrics as m;
use crate::retry::{self, RetryConfig, Setback, Verdict, Waiting};

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
    Bbs(#[from] tonic::Status),
}

/// Turn a BBS status into the brain's error, noticing a lost lock.
pub fn bbs_err(s: tonic::Status) -> BrainError {
    if is_lock_lost(&s) {
        BrainError::LockLost
    } else {
        BrainError::Bbs(s)
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
    bbs: Bbs,
    cells: Arc<dyn CellDirectory>,
    cfg: AuctioneerConfig,
}

fn constraints_of(d: &DesiredLrp, volumes: &HashMap<String, String>) -> Constraints {
    Constraints {
        rootfs: d.rootfs.clone(),
        placement_tags: d.placement_tags.clone(),
        volume_drivers: drivers(&d.volume_mounts),
        volume_cell: volume_cell(&d.volume_mounts, volumes),
    }
}

/// The cell work must run on because its volumes live there (`volumes`: name → cell).
fn volume_cell(
    mounts: &[lattice_specs::models::VolumeMount],
    volumes: &HashMap<String, String>,
) -> Option<(String, String)> {
    // Scratch volumes are made wherever the work goes.
    let mut names: Vec<&str> = mounts
        .iter()
        .filter(|m| m.scratch_bytes == 0)
        .map(|m| m.volume.as_str())
        .collect();
    names.sort();
    names.dedup();
    let first = names.first()?;
    let cell = |n: &str| volumes.get(n).cloned().unwrap_or_default();
    let list = |names: &[&str]| {
        if names.len() == 1 {
            format!("volume {}", names[0])
        } else {
            format!("volumes {}", names.join(", "))
        }
    };
    if names.iter().any(|n| !volumes.contains_key(*n)) {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !volumes.contains_key(*n))
            .collect();
        return Some((
            String::new(),
            format!("{} does not exist: `ltc volume create` it", list(&missing)),
        ));
    }
    if names.iter().any(|n| cell(n) != cell(first)) {
        let each: Vec<String> = names
            .iter()
            .map(|n| format!("{n} on {}", cell(n)))
            .collect();
        return Some((
            String::new(),
            format!(
                "the volumes live on different cells ({}); one container can only mount volumes of one cell",
                each.join(", ")
            ),
        ));
    }
    Some((cell(first), list(&names)))
}

fn drivers(mounts: &[lattice_specs::models::VolumeMount]) -> Vec<String> {
    let mut d: Vec<String> = mounts
        .iter()
        .map(|m| {
            if m.driver.is_empty() {
                "local".to_string()
            } else {
                m.driver.clone()
            }
        })
        .collect();
    d.sort();
    d.dedup();
    d
}

impl Auctioneer {
    pub fn new(bbs: Bbs, cells: Arc<dyn CellDirectory>, cfg: AuctioneerConfig) -> Auctioneer {
        Auctioneer { bbs, cells, cfg }
    }

    /// Auction whatever arrives on `rx`, and the waiting work when it is due, until
    /// the channel closes or the lock is lost.
    pub async fn run(
        &self,
        mut rx: mpsc::UnboundedReceiver<StartRequest>,
    ) -> Result<(), BrainError> {
        let mut queue: Queue = HashMap::new();
        loop {
            let mut batch = HashSet::new();
            let next_due = queue.values().map(|(_, due)| *due).min();
            let arrived = match next_due {
                None => rx.recv().await.map(Some),
                Some(due) => tokio::select! {
                    r = rx.recv() => r.map(Some),
                    _ = tokio::time::sleep_until(due.into()) => Some(None),
                },
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

    async fn auction_inner(
        &self,
        batch: HashSet<StartRequest>,
        avoid: &HashMap<StartRequest, Vec<String>>,
    ) -> Result<Round, BrainError> {
        let mut client = self.bbs.client();
        let mut lrp_keys = vec![];
        let mut task_guids = vec![];
        for r in batch {
            match r {
                StartRequest::Lrp(k) => lrp_keys.push(k),
                StartRequest::Task(g) => task_guids.push(g),
            }
        }

        // What is still waiting to be placed.
        let guids: HashSet<&str> = lrp_keys.iter().map(|k| k.process_guid.as_str()).collect();
        let mut desired: HashMap<String, Arc<DesiredLrp>> = HashMap::new();
        let mut unclaimed: HashSet<(String, i32)> = HashSet::new();
        let bulk = guids.len() > 32;
        if bulk {
            let ds = client
                .desired_lr_ps(self.bbs.req(DesiredLrPsRequest::default()))
                .await
                .map_err(bbs_err)?
                .into_inner();
            desired = ds
                .desired_lrps
                .into_iter()
                .map(|d| (d.process_guid.clone(), Arc::new(d)))
                .collect();
        }
        for g in &guids {
            if !bulk {
                match client
                    .desired_lrp_by_process_guid(self.bbs.req(ProcessGuidRequest {
                        process_guid: g.to_string(),
                    }))
                    .await
                {
                    Ok(r) => {
                        if let Some(d) = r.into_inner().desired_lrp {
                            desired.insert(g.to_string(), Arc::new(d));
                        }
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(bbs_err(s)),
                }
            }
        }
        // For a few processes, check which instances still wait (a converger
        // re-send may be stale). For many, skip the check: listing every
        // instance per batch would cost more than it saves, and a cell's
        // compare-and-swap claim refuses anything no longer UNCLAIMED.
        if !bulk {
            for g in &guids {
                let r = ActualLrPsRequest {
                    process_guid: g.to_string(),
                    ..Default::default()
                };
                for a in client
                    .actual_lr_ps(self.bbs.req(r))
                    .await
                    .map_err(bbs_err)?
                    .into_inner()
                    .actual_lrps
                {
                    if a.state() == State::Unclaimed && a.presence() != Presence::Evacuating {
                        let k = a.key.unwrap_or_default();
                        unclaimed.insert((k.process_guid, k.index));
                    }
                }
            }
        }
        let tasks: Vec<Task> = if task_guids.len() > 32 {
            let wanted: HashSet<&str> = task_guids.iter().map(String::as_str).collect();
            let all = client
                .tasks(self.bbs.req(TasksRequest::default()))
                .await
                .map_err(bbs_err)?
                .into_inner()
                .tasks;
            all.into_iter()
                .filter(|t| wanted.contains(t.task_guid.as_str()))
                .collect()
        } else {
            let mut out = vec![];
            for g in &task_guids {
                match client
                    .task_by_guid(self.bbs.req(TaskGuidRequest {
                        task_guid: g.clone(),
                    }))
                    .await
                {
                    Ok(r) => out.extend(r.into_inner().task),
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(bbs_err(s)),
                }
            }
            out
        };
        // Oldest first: among work the placement weighs alike, the work that waited
        // longest gets the room (the placement keeps this order for equals).
        let mut tasks = tasks;
        tasks.sort_by_key(|t| t.created_at);

        // Where the volumes of the work live, when some work mounts volumes.
        let mounts_volumes = desired.values().any(|d| !d.volume_mounts.is_empty())
            || tasks.iter().any(|t| {
                t.definition
                    .as_ref()
                    .is_some_and(|d| !d.volume_mounts.is_empty())
            });
        let volumes: HashMap<String, String> = if mounts_volumes {
            client
                .volumes(
                    self.bbs
                        .req(lattice_specs::bbs_api::VolumesRequest::default()),
                )
                .await
                .map_err(bbs_err)?
                .into_inner()
                .volumes
                .into_iter()
                .map(|v| (v.name, v.cell_id))
                .collect()
        } else {
            HashMap::new()
        };
        let mut interned: HashMap<Constraints, Arc<Constraints>> = HashMap::new();
        let mut intern = |c: Constraints| {
            interned
                .entry(c.clone())
                .or_insert_with(|| Arc::new(c))
                .clone()
        };
        let mut items: Vec<WorkItem> = vec![];
        let mut lrp_of: Vec<Option<(Arc<DesiredLrp>, i32)>> = vec![];
        let mut task_of: Vec<Option<Task>> = vec![];
        let mut guid_arcs: HashMap<String, Arc<str>> = HashMap::new();
        for k in lrp_keys {
            let waiting = bulk || unclaimed.contains(&(k.process_guid.clone(), k.index));
            let (Some(d), true) = (desired.get(&k.process_guid), waiting) else {
                continue;
            };
            if k.index >= d.instances {
                continue;
            }
            let guid = guid_arcs
                .entry(k.process_guid.clone())
                .or_insert_with(|| Arc::from(k.process_guid.as_str()))
                .clone();
            items.push(WorkItem {
                kind: WorkKind::Lrp {
                    process_guid: guid,
                    index: k.index,
                },
                memory_mb: d.memory_mb,
                disk_mb: d.disk_mb,
                constraints: intern(constraints_of(d, &volumes)),
                avoid: vec![],
            });
            lrp_of.push(Some((d.clone(), k.index)));
            task_of.push(None);
        }
        for t in tasks {
            if t.state() != TaskState::Pending {
                continue;
            }
            let def = t.definition.clone().unwrap_or_default();
            items.push(WorkItem {
                kind: WorkKind::Task {
                    task_guid: t.task_guid.clone(),
                },
                memory_mb: def.memory_mb,
                disk_mb: def.disk_mb,
                constraints: intern(Constraints {
                    rootfs: def.rootfs.clone(),
                    placement_tags: def.placement_tags.clone(),
                    volume_drivers: drivers(&def.volume_mounts),
                    volume_cell: volume_cell(&def.volume_mounts, &volumes),
                }),
                avoid: vec![],
            });
            lrp_of.push(None);
            task_of.push(Some(t));
        }
        if items.is_empty() {
            return Ok(Round::default());
        }
        m::BATCH_SIZE.observe(items.len() as f64);

        // Every live cell's state, in parallel, each bounded by the fetch timeout.
        let fetch_started = Instant::now();
        let presences = client
            .cells(self.bbs.req(Empty {}))
            .await
            .map_err(bbs_err)?
            .into_inner()
            .cells;
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

        // Keep retried work off the cells that refused it.
        if !avoid.is_empty() {
            let index: HashMap<&str, usize> = views
                .iter()
                .enumerate()
                .map(|(i, v)| (v.cell_id.as_str(), i))
                .collect();
            for item in items.iter_mut() {
                if let Some(cells) = avoid.get(&StartRequest::of(&item.kind)) {
                    item.avoid = cells
                        .iter()
                        .filter_map(|c| index.get(c.as_str()).copied())
                        .collect();
                }
            }
        }
        let cfg = self.cfg.auction;
        let decide_started = Instant::now();
        let (views, items, outcome) = if items.len() > 2000 {
            tokio::task::spawn_blocking(move || {
                let o = place(&views, &items, &cfg);
                (views, items, o)
            })
            .await
            .expect("placement does not panic")
        } else {
            let o = place(&views, &items, &cfg);
            (views, items, o)
        };

        m::DECISION_DURATION.observe(decide_started.elapsed().as_secs_f64());
        let request_of = |i: usize| StartRequest::of(&items[i].kind);

        // One Perform per cell, all in parallel.
        let mut per_cell: HashMap<usize, (Work, Vec<usize>)> = HashMap::new();
        for (w, c) in &outcome.placed {
            let entry = per_cell.entry(*c).or_default();
            if let Some((d, index)) = &lrp_of[*w] {
                entry.0.lrps.push(LrpStart {
                    desired: Some((**d).clone()),
                    index: *index,
                });
                m::LRP_AUCTIONS_STARTED.inc();
            } else if let Some(t) = &task_of[*w] {
                entry.0.tasks.push(TaskStart {
                    task: Some(t.clone()),
                });
                m::TASK_AUCTIONS_STARTED.inc();
            }
            entry.1.push(*w);
        }
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
            match r {
                Ok(failed) => {
                    let refused_lrps: HashSet<(String, i32)> = failed
                        .lrps
                        .iter()
                        .map(|l| {
                            (
                                l.desired
                                    .as_ref()
                                    .map(|d| d.process_guid.clone())
                                    .unwrap_or_default(),
                                l.index,
                            )
                        })
                        .collect();
                    let refused_tasks: HashSet<String> = failed
                        .tasks
                        .iter()
                        .filter_map(|t| t.task.as_ref().map(|t| t.task_guid.clone()))
                        .collect();
                    for w in ws {
                        let req = request_of(w);
                        let refused = match &req {
                            StartRequest::Lrp(k) => {
                                refused_lrps.contains(&(k.process_guid.clone(), k.index))
                            }
                            StartRequest::Task(g) => refused_tasks.contains(g),
                        };
                        if refused {
                            round.placed -= 1;
                            round.setbacks.push((
                                req,
                                Setback::Refused {
                                    reason: format!("cell {cell_id} refused the work"),
                                    cell: cell_id.clone(),
                                },
                            ));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(cell = %cell_id, error = %e, "perform failed; the work goes to the next auction");
                    for w in ws {
                        round.placed -= 1;
                        round.setbacks.push((
                            request_of(w),
                            Setback::Refused {
                                reason: format!("cell {cell_id} could not be reached: {e}"),
                                cell: cell_id.clone(),
                            },
                        ));
                    }
                }
            }
        }
        round.setbacks.extend(
            outcome
                .failed
                .into_iter()
                .map(|(w, why)| (request_of(w), Setback::Unplaced(why))),
        );
        Ok(round)
    }

    /// Store why work was not placed: a placement error on an instance (which
    /// stays UNCLAIMED either way); for a task given up on, a rejection (failed
    /// after its max retries). A task that waits for room stays PENDING untouched.
    async fn record(&self, records: Vec<(StartRequest, Record)>) -> Result<(), BrainError> {
        let calls = records.into_iter().filter_map(|(req, record)| {
            let bbs = self.bbs.clone();
            let mut c = bbs.client();
            match (req, record) {
                (StartRequest::Lrp(k), record) => {
                    m::LRP_AUCTIONS_FAILED.inc();
                    let reason = record.reason().to_string();
                    tracing::info!(process_guid = %k.process_guid, index = k.index, %reason, "instance could not be placed");
                    let key = Some(ActualLrpRef {
                        process_guid: k.process_guid,
                        index: k.index,
                    });
                    let req = bbs.req(FailActualLrpRequest {
                        key,
                        error_message: reason,
                    });
                    Some(async move { c.fail_actual_lrp(req).await.map(|_| ()) }.boxed())
                }
                (StartRequest::Task(g), Record::Waits(reason)) => {
                    tracing::info!(task_guid = %g, %reason, "task waits for room");
                    None
                }
                (StartRequest::Task(g), Record::GaveUp(reason)) => {
                    m::TASK_AUCTIONS_FAILED.inc();
                    tracing::info!(task_guid = %g, %reason, "task could not be placed");
                    let req = bbs.req(RejectTaskRequest {
                        task_guid: g,
                        rejection_reason: reason,
                    });
                    Some(async move { c.reject_task(req).await.map(|_| ()) }.boxed())
                }
            }
        });
        // Work that moved on meanwhile (claimed, removed) is fine.
        apply_all(calls).await.map_err(bbs_err)
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
