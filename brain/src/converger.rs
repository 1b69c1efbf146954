//! Convergence decisions: from a snapshot of desired and actual state, what
//! must change so that actual equals desired. A pure function; the runner
//! applies the actions through the BBS and sends placement work to the
//! auctioneer.
//!
//! LRPs: create and place missing indices; restart CRASHED instances whose
//! backoff has passed (crash policy in `lattice_specs::restart`); re-place
//! instances whose cell vanished (a RUNNING one stays, SUSPECT, until its
//! replacement runs: the cell may only be cut off); re-auction instances UNCLAIMED for too long;
//! retire extra indices and orphans, but only in fresh domains (a stale domain
//! means the desired state may be incomplete); drop evacuating copies whose
//! cell is gone; drop a rolling update's REPLACED copies that no deployment
//! will (cell gone, index no longer desired, or update over with the index
//! running).
//!
//! Tasks: fail those whose cell vanished and those pending too long; re-send
//! pending ones to the auction; delete completed ones nobody resolved in time;
//! send stuck RESOLVING ones back to COMPLETED. A task with a completion callback
//! is the BBS's to resolve and delete: removed here only as a late backstop.
//!
//! Level-triggered: applying the actions and converging again yields nothing
//! new, because every store-changing action removes its own cause, and
//! re-sends are remembered (`Memory`) for one stale period.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::{ActualLrp, ActualLrpInstanceKey, DesiredLrp, Task};
use lattice_specs::restart::RestartPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergeConfig {
    /// An UNCLAIMED instance older than this is auctioned again (Diego: 30 s).
    pub stale_unclaimed: Duration,
    /// A PENDING task not updated for this long is sent to the auction again.
    pub kick_task: Duration,
    /// A PENDING task older than this is failed (Diego: 30 min).
    pub expire_pending_task: Duration,
    /// A COMPLETED/RESOLVING task older than this is deleted (Diego: 120 s).
    pub expire_completed_task: Duration,
    /// The same for a task with a completion callback URL, which the BBS resolves
    /// and deletes itself once its callback is made or its retry window (`lattice
    /// bbs --callback-retry-secs`, 10 min by default) closed; this is only the
    /// backstop, so it must be longer than that window.
    pub expire_callback_task: Duration,
}

impl Default for ConvergeConfig {
    fn default() -> Self {
        ConvergeConfig {
            stale_unclaimed: Duration::from_secs(30),
            kick_task: Duration::from_secs(30),
            expire_pending_task: Duration::from_secs(30 * 60),
            expire_completed_task: Duration::from_secs(120),
            expire_callback_task: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LrpKey {
    pub process_guid: String,
    pub index: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the UNCLAIMED record of a desired index and auction it.
    CreateMissing(LrpKey),
    /// Auction an UNCLAIMED instance again.
    Auction(LrpKey),
    /// A CRASHED instance's backoff has passed: unclaim and auction it.
    Restart(LrpKey),
    /// A CLAIMED instance's cell vanished: unclaim and auction it elsewhere.
    ReplaceLost {
        key: LrpKey,
        cell_id: String,
    },
    /// A RUNNING instance's cell vanished: keep it as SUSPECT, auction a replacement.
    MarkSuspect {
        key: LrpKey,
        cell_id: String,
    },
    /// The replacement of a suspect instance runs (or the index is gone): drop the suspect copy.
    RemoveSuspect(LrpKey),
    /// Retire an index beyond the desired count, or of an LRP no longer desired.
    Retire {
        key: LrpKey,
        orphan: bool,
    },
    /// Drop a rolling update's REPLACED copy that no deployment will: its cell
    /// vanished, its index is no longer desired, or the update is over.
    RemoveReplaced(LrpKey),
    /// Drop an evacuating copy whose cell vanished.
    RemoveEvacuating {
        key: LrpKey,
        instance_key: ActualLrpInstanceKey,
    },
    FailTask {
        task_guid: String,
        reason: String,
    },
    AuctionTask {
        task_guid: String,
    },
    /// Completed (or stuck resolving) long enough: remove the record.
    DeleteTask {
        task_guid: String,
    },
}

/// What a convergence found, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub missing: usize,
    pub extra: usize,
    pub crashed: usize,
    pub lost: usize,
    pub stale: usize,
}

/// Re-sends made recently (unix ns), so a second pass does not repeat them.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub lrp_auctions: HashMap<LrpKey, i64>,
    pub task_auctions: HashMap<String, i64>,
}

pub struct Snapshot<'a> {
    pub now: i64,
    pub desired: &'a [DesiredLrp],
    pub actual: &'a [ActualLrp],
    pub live_cells: &'a HashSet<String>,
    pub fresh_domains: &'a HashSet<String>,
    pub tasks: &'a [Task],
}

fn key_of(a: &ActualLrp) -> LrpKey {
    let k = a.key.clone().unwrap_or_default();
    LrpKey {
        process_guid: k.process_guid,
        index: k.index,
    }
}

fn cell_of(a: &ActualLrp) -> Option<&str> {
    a.instance_key
        .as_ref()
        .map(|ik| ik.cell_id.as_str())
        .filter(|c| !c.is_empty())
}

fn older(now: i64, t: i64, d: Duration) -> bool {
    now.saturating_sub(t) >= d.as_nanos() as i64
}

/// Decide what to do. `memory` is read and updated with the re-sends decided now.
pub fn converge(s: &Snapshot, cfg: &ConvergeConfig, memory: &mut Memory) -> (Vec<Action>, Counts) {
    let mut actions = vec![];
    let mut counts = Counts::default();
    let present = converge_actuals(s, cfg, memory, &mut actions, &mut counts);
    create_missing(s, &present, memory, &mut actions, &mut counts);
    converge_tasks(s, cfg, memory, &mut actions);
    forget_done_resends(s, &actions, memory);
    (actions, counts)
}

/// The actions for the actual LRPs: suspect and evacuating copies, extras and
/// orphans, lost, crashed and stale instances. Returns the (process, index) pairs
/// that have an ordinary instance within the desired count.
fn converge_actuals<'s>(
    s: &Snapshot<'s>,
    cfg: &ConvergeConfig,
    memory: &mut Memory,
    actions: &mut Vec<Action>,
    counts: &mut Counts,
) -> HashSet<(&'s str, i32)> {
    let desired: HashMap<&str, &DesiredLrp> = s
        .desired
        .iter()
        .map(|d| (d.process_guid.as_str(), d))
        .collect();
    let mut present: HashSet<(&'s str, i32)> = HashSet::new();

    let resend_lrp = |key: LrpKey, memory: &mut Memory| -> bool {
        match memory.lrp_auctions.get(&key) {
            Some(at) if !older(s.now, *at, cfg.stale_unclaimed) => false,
            _ => {
                memory.lrp_auctions.insert(key, s.now);
                true
            }
        }
    };

    let ordinary: HashMap<LrpKey, State> = s
        .actual
        .iter()
        .filter(|a| a.presence() == Presence::Ordinary)
        .map(|a| (key_of(a), a.state()))
        .collect();

    for a in s.actual {
        let key = key_of(a);
        if a.presence() == Presence::Suspect {
            let still_desired = desired
                .get(key.process_guid.as_str())
                .is_some_and(|d| key.index < d.instances);
            if !still_desired || ordinary.get(&key) == Some(&State::Running) {
                actions.push(Action::RemoveSuspect(key));
            }
            continue;
        }
        if a.presence() == Presence::Replaced {
            if replaced_is_leftover(
                s,
                a,
                &key,
                desired.get(key.process_guid.as_str()),
                &ordinary,
            ) {
                actions.push(Action::RemoveReplaced(key));
            }
            continue;
        }
        if a.presence() == Presence::Evacuating {
            if let Some(cell) = cell_of(a) {
                if !s.live_cells.contains(cell) {
                    actions.push(Action::RemoveEvacuating {
                        key,
                        instance_key: a.instance_key.clone().unwrap_or_default(),
                    });
                }
            }
            continue;
        }
        let domain = a.key.as_ref().map(|k| k.domain.as_str()).unwrap_or("");
        let fresh = s.fresh_domains.contains(domain);
        let d = desired.get(key.process_guid.as_str());
        match d {
            None => {
                if fresh {
                    counts.extra += 1;
                    actions.push(Action::Retire { key, orphan: true });
                }
                continue;
            }
            Some(d) if key.index >= d.instances => {
                if fresh {
                    counts.extra += 1;
                    actions.push(Action::Retire { key, orphan: false });
                }
                continue;
            }
            Some(_) => {}
        }
        let d = d.unwrap();
        present.insert((d.process_guid.as_str(), key.index));
        match a.state() {
            State::Claimed | State::Running => {
                if let Some(cell) = cell_of(a) {
                    if !s.live_cells.contains(cell) {
                        counts.lost += 1;
                        memory.lrp_auctions.insert(key.clone(), s.now);
                        let cell_id = cell.to_string();
                        actions.push(if a.state() == State::Running {
                            Action::MarkSuspect { key, cell_id }
                        } else {
                            Action::ReplaceLost { key, cell_id }
                        });
                    }
                }
            }
            State::Crashed => {
                let policy = RestartPolicy::from_overrides(d.crash_policy.as_ref());
                if lattice_specs::actual_lrp::should_restart(a, s.now, &policy) {
                    counts.crashed += 1;
                    memory.lrp_auctions.insert(key.clone(), s.now);
                    actions.push(Action::Restart(key));
                }
            }
            State::Unclaimed => {
                if older(s.now, a.since, cfg.stale_unclaimed) && resend_lrp(key.clone(), memory) {
                    counts.stale += 1;
                    actions.push(Action::Auction(key));
                }
            }
        }
    }

    present
}

/// Whether the REPLACED copy `a` at `key` is left over: its cell is gone; its
/// app or index is no longer desired (in a fresh domain: the desired state is
/// complete); or no deployment is in progress and the index's ordinary
/// instance runs. Otherwise the deployer owns it.
fn replaced_is_leftover(
    s: &Snapshot,
    a: &ActualLrp,
    key: &LrpKey,
    desired: Option<&&DesiredLrp>,
    ordinary: &HashMap<LrpKey, State>,
) -> bool {
    if cell_of(a).is_none_or(|c| !s.live_cells.contains(c)) {
        return true;
    }
    let domain = a.key.as_ref().map(|k| k.domain.as_str()).unwrap_or("");
    match desired {
        Some(d) if key.index < d.instances => {
            !crate::rollout::in_progress(d) && ordinary.get(key) == Some(&State::Running)
        }
        _ => s.fresh_domains.contains(domain),
    }
}

/// Create (and place) every desired index that has no instance.
fn create_missing(
    s: &Snapshot,
    present: &HashSet<(&str, i32)>,
    memory: &mut Memory,
    actions: &mut Vec<Action>,
    counts: &mut Counts,
) {
    for d in s.desired {
        // A count stored before validation bounded it never becomes work beyond the
        // bound (a billion instances would be a billion actions, every pass).
        let instances = d
            .instances
            .clamp(0, lattice_specs::validation::MAX_INSTANCES);
        for index in 0..instances {
            if !present.contains(&(d.process_guid.as_str(), index)) {
                counts.missing += 1;
                let key = LrpKey {
                    process_guid: d.process_guid.clone(),
                    index,
                };
                memory.lrp_auctions.insert(key.clone(), s.now);
                actions.push(Action::CreateMissing(key));
            }
        }
    }
}

/// The actions for tasks: fail the lost and the expired, re-send pending ones,
/// delete completed ones nobody resolved in time.
fn converge_tasks(
    s: &Snapshot,
    cfg: &ConvergeConfig,
    memory: &mut Memory,
    actions: &mut Vec<Action>,
) {
    for t in s.tasks {
        let guid = t.task_guid.clone();
        match t.state() {
            TaskState::Pending => {
                if older(s.now, t.created_at, cfg.expire_pending_task) {
                    let reason = format!(
                        "not started within {} s: {}",
                        cfg.expire_pending_task.as_secs(),
                        if t.rejection_reason.is_empty() {
                            "no cell took it"
                        } else {
                            &t.rejection_reason
                        }
                    );
                    actions.push(Action::FailTask {
                        task_guid: guid,
                        reason,
                    });
                } else if older(s.now, t.updated_at, cfg.kick_task) {
                    let due = match memory.task_auctions.get(&guid) {
                        Some(at) => older(s.now, *at, cfg.kick_task),
                        None => true,
                    };
                    if due {
                        memory.task_auctions.insert(guid.clone(), s.now);
                        actions.push(Action::AuctionTask { task_guid: guid });
                    }
                }
            }
            TaskState::Running => {
                if !s.live_cells.contains(&t.cell_id) {
                    actions.push(Action::FailTask {
                        task_guid: guid,
                        reason: format!("cell {} disappeared before the task completed", t.cell_id),
                    });
                }
            }
            TaskState::Completed | TaskState::Resolving => {
                let done_at = if t.first_completed_at > 0 {
                    t.first_completed_at
                } else {
                    t.updated_at
                };
                if older(s.now, done_at, completed_expiry(t, cfg)) {
                    actions.push(Action::DeleteTask { task_guid: guid });
                }
            }
            TaskState::Invalid => {}
        }
    }
}

/// How long a COMPLETED/RESOLVING task is kept: a task with a completion callback
/// is the BBS's to delete while its callback may still be made.
fn completed_expiry(t: &Task, cfg: &ConvergeConfig) -> Duration {
    let callback = t
        .definition
        .as_ref()
        .is_some_and(|d| !d.completion_callback_url.is_empty());
    if callback {
        cfg.expire_callback_task.max(cfg.expire_completed_task)
    } else {
        cfg.expire_completed_task
    }
}

/// Forget re-sends of work that no longer waits.
fn forget_done_resends(s: &Snapshot, actions: &[Action], memory: &mut Memory) {
    let waiting: HashSet<LrpKey> = s
        .actual
        .iter()
        .filter(|a| a.state() == State::Unclaimed)
        .map(key_of)
        .collect();
    let created: HashSet<LrpKey> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateMissing(k)
            | Action::Restart(k)
            | Action::ReplaceLost { key: k, .. }
            | Action::MarkSuspect { key: k, .. } => Some(k.clone()),
            _ => None,
        })
        .collect();
    memory
        .lrp_auctions
        .retain(|k, _| waiting.contains(k) || created.contains(k));
    let pending: HashSet<&str> = s
        .tasks
        .iter()
        .filter(|t| t.state() == TaskState::Pending)
        .map(|t| t.task_guid.as_str())
        .collect();
    memory
        .task_auctions
        .retain(|g, _| pending.contains(g.as_str()));
}

#[cfg(test)]
mod tests;
