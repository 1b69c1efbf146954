//! Unit tests of the convergence decisions (`converge`), moved out of converger.rs unchanged.

use super::*;
use lattice_specs::actual_lrp as alrp;
use lattice_specs::testing::{self, actual_lrp};

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
        actual_lrp("web", 0, State::Running, "c1", NOW - 100 * S),
        actual_lrp("web", 1, State::Claimed, "c2", NOW - S),
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
    let a = [actual_lrp("web", 1, State::Running, "c1", NOW)];
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
        actual_lrp("web", 0, State::Running, "c1", NOW),
        actual_lrp("web", 1, State::Running, "c1", NOW),
        actual_lrp("gone", 0, State::Running, "c1", NOW),
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
    let mut a = actual_lrp("web", 0, State::Crashed, "", NOW - 29 * S);
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
        actual_lrp("web", 0, State::Running, "dead", NOW),
        actual_lrp("web", 1, State::Claimed, "dead", NOW),
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
    let mut suspect = actual_lrp("web", 0, State::Running, "dead", NOW);
    suspect.set_presence(Presence::Suspect);
    let alive = |i, state| actual_lrp("web", i, state, "alive", NOW);
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
    let scaled_down = [suspect, actual_lrp("web", 0, State::Unclaimed, "", NOW)];
    let (acts, _) = run(&[desired("web", 0)], &scaled_down, &["alive"], &["d"], &[]);
    assert_eq!(acts.first(), Some(&Action::RemoveSuspect(key("web", 0))));
    let mut evac = actual_lrp("web", 0, State::Running, "dead", NOW);
    evac.set_presence(Presence::Evacuating);
    let (acts, _) = run(
        &d,
        &[
            evac.clone(),
            actual_lrp("web", 0, State::Running, "alive", NOW),
            actual_lrp("web", 1, State::Running, "alive", NOW),
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
    let a = [actual_lrp("web", 0, State::Unclaimed, "", NOW - 31 * S)];
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
    let fresh_one = [actual_lrp("web", 0, State::Unclaimed, "", NOW - 5 * S)];
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
        created_at: created,
        updated_at: updated,
        ..testing::task(guid, state, cell)
    };
    if matches!(state, TaskState::Completed | TaskState::Resolving) {
        t.first_completed_at = updated;
    }
    t
}

/// The BBS resolves and deletes a task with a completion callback itself: the
/// converger leaves it alone while the callback may still be made, and removes it
/// only as a backstop an hour after it completed.
#[test]
fn tasks_with_a_completion_callback_are_left_to_the_bbs() {
    let with_url = |guid: &str, state: TaskState, done_ago: i64| {
        let mut t = task(guid, state, "c1", NOW - 4000 * S, NOW - done_ago * S);
        t.definition.get_or_insert_default().completion_callback_url = "http://cb/done".into();
        t
    };
    let tasks = [
        with_url("cb-completed", TaskState::Completed, 600),
        with_url("cb-resolving", TaskState::Resolving, 3599),
        with_url("cb-abandoned", TaskState::Completed, 3601),
        task(
            "plain",
            TaskState::Completed,
            "c1",
            NOW - 600 * S,
            NOW - 600 * S,
        ),
    ];
    let (acts, _) = run(&[], &[], &["c1"], &["d"], &tasks);
    assert_eq!(
        acts,
        vec![
            Action::DeleteTask {
                task_guid: "cb-abandoned".into()
            },
            Action::DeleteTask {
                task_guid: "plain".into()
            },
        ]
    );
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
    let mut crashed = actual_lrp("web", 1, State::Crashed, "", NOW - 100 * S);
    crashed.crash_count = 4;
    let mut actual_state = vec![
        actual_lrp("web", 0, State::Running, "dead", NOW - 100 * S),
        crashed,
        actual_lrp("web", 5, State::Running, "c1", NOW),
        actual_lrp("orphan", 0, State::Running, "c1", NOW),
        actual_lrp("api", 0, State::Unclaimed, "", NOW - 40 * S),
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
            Action::CreateMissing(k) => actual_state.push(actual_lrp(
                &k.process_guid,
                k.index,
                State::Unclaimed,
                "",
                NOW,
            )),
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

fn replaced(guid: &str, index: i32, cell: &str) -> ActualLrp {
    let mut a = actual_lrp(guid, index, State::Running, cell, NOW - 10 * S);
    a.set_presence(Presence::Replaced);
    a
}

fn deploying(guid: &str, n: i32) -> DesiredLrp {
    let mut d = desired(guid, n);
    let mut dep = lattice_specs::models::Deployment::default();
    dep.set_state(lattice_specs::models::deployment::State::Rolling);
    d.deployment = Some(dep);
    d
}

#[test]
fn replaced_copies_are_the_deployers_while_their_update_runs() {
    let d = [deploying("web", 2)];
    let a = [
        actual_lrp("web", 0, State::Running, "c1", NOW - S),
        replaced("web", 0, "c1"),
        actual_lrp("web", 1, State::Unclaimed, "", NOW - S),
        replaced("web", 1, "c1"),
    ];
    let (acts, counts) = run(&d, &a, &["c1"], &["d"], &[]);
    assert_eq!(
        acts,
        vec![],
        "a copy neither counts as its index nor is removed"
    );
    assert_eq!(counts, Counts::default());
}

#[test]
fn replaced_copies_left_over_are_removed() {
    let (d, done) = ([deploying("web", 1)], [desired("old", 1)]);
    let a = [
        actual_lrp("web", 0, State::Running, "c1", NOW - S),
        replaced("web", 0, "gone"),
        replaced("web", 1, "c1"),
        actual_lrp("old", 0, State::Running, "c1", NOW - S),
        replaced("old", 0, "c1"),
        replaced("orphan", 0, "c1"),
    ];
    let all = [d[0].clone(), done[0].clone()];
    let (acts, _) = run(&all, &a, &["c1"], &["d"], &[]);
    assert_eq!(
        acts,
        vec![
            Action::RemoveReplaced(key("web", 0)),
            Action::RemoveReplaced(key("web", 1)),
            Action::RemoveReplaced(key("old", 0)),
            Action::RemoveReplaced(key("orphan", 0)),
        ],
        "cell gone, index beyond the count, update over, app gone"
    );
    let kept = [
        a[0].clone(),
        a[2].clone(),
        a[3].clone(),
        a[4].clone(),
        a[5].clone(),
    ];
    let (acts, _) = run(&all, &kept, &["c1"], &[], &[]);
    assert_eq!(
        acts,
        vec![Action::RemoveReplaced(key("old", 0))],
        "beyond the count or orphaned: only in a fresh domain"
    );
}

#[test]
fn a_replaced_copy_stays_while_its_index_has_no_running_instance_after_the_update() {
    let d = [desired("web", 1)];
    let a = [
        actual_lrp("web", 0, State::Crashed, "", NOW - S),
        replaced("web", 0, "c1"),
    ];
    let (acts, _) = run(&d, &a, &["c1"], &["d"], &[]);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::RemoveReplaced(_))),
        "{acts:?}"
    );
}
