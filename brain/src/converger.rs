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
//! cell is gone.
//!
//! Tasks: fail those whose cell vanished and those pending too long; re-send
//! pending ones to the auction; delete completed ones nobody resolved in time;
//! send stuck RESOLVING ones back to COMPLETED.
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
}

impl Default for ConvergeConfig {
    fn default() -> Self {
        ConvergeConfig {
            stale_unclaimed: Duration::from_secs(30),
            kick_task: Duration::from_secs(30),
            expire_pending_task: Duration::from_secs(30 * 60),
            expire_completed_task: Duration::from_secs(120),
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
                if older(s.now, done_at, cfg.expire_completed_task) {
                    actions.push(Action::DeleteTask { task_guid: guid });
                }
            }
            TaskState::Invalid => {}
        }
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
mod tests {
    use super::*;
    use lattice_specs::actual_lrp as alrp;
    use lattice_specs::models::ActualLrpNetInfo;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 10_000 * S;

    fn desired(guid: &str, n: i32) -> DesiredLrp {
        DesiredLrp {
            process_guid: guid.into(),
            domain: "d".into(),
            instances: n,
            ..Default::default()
        }
    }

    fn actual(guid: &str, index: i32, state: State, cell: &str, since: i64) -> ActualLrp {
        let mut a = alrp::new_unclaimed(guid, index, "d", since);
        if !cell.is_empty() {
            a.instance_key = Some(ActualLrpInstanceKey {
                instance_guid: format!("{guid}-{index}"),
                cell_id: cell.into(),
            });
            a.net_info = Some(ActualLrpNetInfo::default());
        }
        a.set_state(state);
        a
    }

    fn key(guid: &str, index: i32) -> LrpKey {
        LrpKey {
            process_guid: guid.into(),
            index,
        }
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        desired: &[DesiredLrp],
        actual: &[ActualLrp],
        cells: &[&str],
        fresh: &[&str],
        tasks: &[Task],
    ) -> (Vec<Action>, Counts) {
        let (cells, fresh) = (set(cells), set(fresh));
        let s = Snapshot {
            now: NOW,
            desired,
            actual,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks,
        };
        converge(&s, &ConvergeConfig::default(), &mut Memory::default())
    }

    #[test]
    fn a_converged_world_needs_nothing() {
        let d = [desired("web", 2)];
        let a = [
            actual("web", 0, State::Running, "c1", NOW - 100 * S),
            actual("web", 1, State::Claimed, "c2", NOW - S),
        ];
        assert_eq!(
            run(&d, &a, &["c1", "c2"], &["d"], &[]),
            (vec![], Counts::default())
        );
    }

    #[test]
    fn a_stored_count_past_the_bound_makes_no_more_work_than_the_bound() {
        let d = [desired("huge", 1_000_000_000)];
        let (acts, counts) = run(&d, &[], &["c1"], &["d"], &[]);
        let max = lattice_specs::validation::MAX_INSTANCES as usize;
        assert_eq!(acts.len(), max);
        assert_eq!(counts.missing, max);
    }

    #[test]
    fn missing_indices_are_created() {
        let d = [desired("web", 3)];
        let a = [actual("web", 1, State::Running, "c1", NOW)];
        let (acts, counts) = run(&d, &a, &["c1"], &["d"], &[]);
        assert_eq!(
            acts,
            vec![
                Action::CreateMissing(key("web", 0)),
                Action::CreateMissing(key("web", 2))
            ]
        );
        assert_eq!(counts.missing, 2);
    }

    #[test]
    fn extras_and_orphans_are_retired_only_in_fresh_domains() {
        let d = [desired("web", 1)];
        let a = [
            actual("web", 0, State::Running, "c1", NOW),
            actual("web", 1, State::Running, "c1", NOW),
            actual("gone", 0, State::Running, "c1", NOW),
        ];
        let (acts, counts) = run(&d, &a, &["c1"], &["d"], &[]);
        assert_eq!(
            acts,
            vec![
                Action::Retire {
                    key: key("web", 1),
                    orphan: false
                },
                Action::Retire {
                    key: key("gone", 0),
                    orphan: true
                }
            ]
        );
        assert_eq!(counts.extra, 2);
        let (acts, _) = run(&d, &a, &["c1"], &[], &[]);
        assert!(acts.is_empty(), "a stale domain retires nothing: {acts:?}");
    }

    #[test]
    fn crashed_instances_restart_after_their_backoff() {
        let d = [desired("web", 1)];
        let mut a = actual("web", 0, State::Crashed, "", NOW - 29 * S);
        a.crash_count = 4; // 4th crash: 30 s backoff
        assert!(run(&d, std::slice::from_ref(&a), &[], &["d"], &[])
            .0
            .is_empty());
        a.since = NOW - 30 * S;
        let (acts, counts) = run(&d, &[a.clone()], &[], &["d"], &[]);
        assert_eq!(
            (acts, counts.crashed),
            (vec![Action::Restart(key("web", 0))], 1)
        );
        a.crash_count = 201;
        a.since = 0;
        assert!(
            run(&d, &[a], &[], &["d"], &[]).0.is_empty(),
            "given up after 200 crashes"
        );
    }

    #[test]
    fn instances_on_vanished_cells_are_replaced() {
        let d = [desired("web", 2)];
        let a = [
            actual("web", 0, State::Running, "dead", NOW),
            actual("web", 1, State::Claimed, "dead", NOW),
        ];
        let (acts, counts) = run(&d, &a, &["alive"], &["d"], &[]);
        assert_eq!(
            acts,
            vec![
                Action::MarkSuspect {
                    key: key("web", 0),
                    cell_id: "dead".into()
                },
                Action::ReplaceLost {
                    key: key("web", 1),
                    cell_id: "dead".into()
                }
            ]
        );
        assert_eq!(counts.lost, 2);
        // The suspect copy stays until its replacement runs, or the index is no longer desired.
        let mut suspect = actual("web", 0, State::Running, "dead", NOW);
        suspect.set_presence(Presence::Suspect);
        let alive = |i, state| actual("web", i, state, "alive", NOW);
        let waiting = [
            suspect.clone(),
            alive(0, State::Claimed),
            alive(1, State::Running),
        ];
        assert!(run(&d, &waiting, &["alive"], &["d"], &[]).0.is_empty());
        let replaced = [
            suspect.clone(),
            alive(0, State::Running),
            alive(1, State::Running),
        ];
        assert_eq!(
            run(&d, &replaced, &["alive"], &["d"], &[]).0,
            vec![Action::RemoveSuspect(key("web", 0))]
        );
        let scaled_down = [suspect, actual("web", 0, State::Unclaimed, "", NOW)];
        let (acts, _) = run(&[desired("web", 0)], &scaled_down, &["alive"], &["d"], &[]);
        assert_eq!(acts.first(), Some(&Action::RemoveSuspect(key("web", 0))));
        let mut evac = actual("web", 0, State::Running, "dead", NOW);
        evac.set_presence(Presence::Evacuating);
        let (acts, _) = run(
            &d,
            &[
                evac.clone(),
                actual("web", 0, State::Running, "alive", NOW),
                actual("web", 1, State::Running, "alive", NOW),
            ],
            &["alive"],
            &["d"],
            &[],
        );
        assert_eq!(
            acts,
            vec![Action::RemoveEvacuating {
                key: key("web", 0),
                instance_key: evac.instance_key.unwrap()
            }]
        );
    }

    #[test]
    fn stale_unclaimed_are_auctioned_again_once_per_period() {
        let d = [desired("web", 1)];
        let a = [actual("web", 0, State::Unclaimed, "", NOW - 31 * S)];
        let (cells, fresh) = (set(&[]), set(&["d"]));
        let mut mem = Memory::default();
        let cfg = ConvergeConfig::default();
        let snap = |now| Snapshot {
            now,
            desired: &d,
            actual: &a,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks: &[],
        };
        assert_eq!(
            converge(&snap(NOW), &cfg, &mut mem).0,
            vec![Action::Auction(key("web", 0))]
        );
        assert!(
            converge(&snap(NOW + S), &cfg, &mut mem).0.is_empty(),
            "not again right away"
        );
        assert_eq!(
            converge(&snap(NOW + 30 * S), &cfg, &mut mem).0,
            vec![Action::Auction(key("web", 0))],
            "again after a period"
        );
        let fresh_one = [actual("web", 0, State::Unclaimed, "", NOW - 5 * S)];
        let s = Snapshot {
            now: NOW,
            desired: &d,
            actual: &fresh_one,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks: &[],
        };
        assert!(converge(&s, &cfg, &mut Memory::default()).0.is_empty());
    }

    fn task(guid: &str, state: TaskState, cell: &str, created: i64, updated: i64) -> Task {
        let mut t = Task {
            task_guid: guid.into(),
            cell_id: cell.into(),
            created_at: created,
            updated_at: updated,
            ..Default::default()
        };
        t.set_state(state);
        if matches!(state, TaskState::Completed | TaskState::Resolving) {
            t.first_completed_at = updated;
        }
        t
    }

    #[test]
    fn task_convergence() {
        let tasks = [
            task("fresh-pending", TaskState::Pending, "", NOW - S, NOW - S),
            task(
                "kick-me",
                TaskState::Pending,
                "",
                NOW - 60 * S,
                NOW - 60 * S,
            ),
            task(
                "too-old",
                TaskState::Pending,
                "",
                NOW - 1801 * S,
                NOW - 60 * S,
            ),
            task(
                "running-ok",
                TaskState::Running,
                "c1",
                NOW - 60 * S,
                NOW - 60 * S,
            ),
            task(
                "running-lost",
                TaskState::Running,
                "dead",
                NOW - 60 * S,
                NOW - 60 * S,
            ),
            task(
                "done-recent",
                TaskState::Completed,
                "c1",
                NOW - 60 * S,
                NOW - 60 * S,
            ),
            task(
                "done-expired",
                TaskState::Completed,
                "c1",
                NOW - 600 * S,
                NOW - 121 * S,
            ),
            task(
                "resolving-stuck",
                TaskState::Resolving,
                "c1",
                NOW - 600 * S,
                NOW - 121 * S,
            ),
        ];
        let (acts, _) = run(&[], &[], &["c1"], &["d"], &tasks);
        assert_eq!(
            acts,
            vec![
                Action::AuctionTask {
                    task_guid: "kick-me".into()
                },
                Action::FailTask {
                    task_guid: "too-old".into(),
                    reason: "not started within 1800 s: no cell took it".into()
                },
                Action::FailTask {
                    task_guid: "running-lost".into(),
                    reason: "cell dead disappeared before the task completed".into()
                },
                Action::DeleteTask {
                    task_guid: "done-expired".into()
                },
                Action::DeleteTask {
                    task_guid: "resolving-stuck".into()
                },
            ]
        );
    }

    /// Apply the actions the way the BBS would, converge again: nothing to do.
    #[test]
    fn converging_twice_does_nothing_the_second_time() {
        let d = [desired("web", 3), desired("api", 1)];
        let mut crashed = actual("web", 1, State::Crashed, "", NOW - 100 * S);
        crashed.crash_count = 4;
        let mut actual_state = vec![
            actual("web", 0, State::Running, "dead", NOW - 100 * S),
            crashed,
            actual("web", 5, State::Running, "c1", NOW),
            actual("orphan", 0, State::Running, "c1", NOW),
            actual("api", 0, State::Unclaimed, "", NOW - 40 * S),
        ];
        let (cells, fresh) = (set(&["c1"]), set(&["d"]));
        let cfg = ConvergeConfig::default();
        let mut mem = Memory::default();
        let snap = Snapshot {
            now: NOW,
            desired: &d,
            actual: &actual_state,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks: &[],
        };
        let (first, _) = converge(&snap, &cfg, &mut mem);
        assert_eq!(first.len(), 6, "{first:?}");
        for a in first {
            match a {
                Action::CreateMissing(k) => {
                    actual_state.push(actual(&k.process_guid, k.index, State::Unclaimed, "", NOW))
                }
                Action::Restart(k) | Action::ReplaceLost { key: k, .. } => {
                    let rec = actual_state.iter_mut().find(|a| key_of(a) == k).unwrap();
                    alrp::unclaim(rec, NOW).unwrap();
                }
                Action::MarkSuspect { key: k, .. } => {
                    let rec = actual_state
                        .iter_mut()
                        .find(|a| key_of(a) == k && a.presence() == Presence::Ordinary)
                        .unwrap();
                    let mut suspect = rec.clone();
                    suspect.set_presence(Presence::Suspect);
                    alrp::unclaim(rec, NOW).unwrap();
                    actual_state.push(suspect);
                }
                Action::Retire { key: k, .. } => actual_state.retain(|a| key_of(a) != k),
                Action::Auction(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let snap = Snapshot {
            now: NOW + S,
            desired: &d,
            actual: &actual_state,
            live_cells: &cells,
            fresh_domains: &fresh,
            tasks: &[],
        };
        let (second, counts) = converge(&snap, &cfg, &mut mem);
        assert_eq!((second, counts), (vec![], Counts::default()));
    }
}
