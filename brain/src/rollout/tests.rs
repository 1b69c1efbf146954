use super::*;
use lattice_specs::models::RolloutStrategy;
use lattice_specs::testing::{actual_lrp, desired_lrp};

const SEC: i64 = 1_000_000_000;
/// When the deployment started; `NOW` is ten seconds later.
const STARTED: i64 = 1_000 * SEC;
const NOW: i64 = STARTED + 10 * SEC;

fn strategy(max_surge: i32, max_unavailable: i32, canary: i32) -> RolloutStrategy {
    RolloutStrategy {
        max_surge,
        max_unavailable,
        canary,
    }
}

/// `web` with `instances`, moving to generation 2 from 1 with `s`.
fn app(instances: i32, s: RolloutStrategy) -> DesiredLrp {
    let mut d = desired_lrp("web", instances);
    d.generation = 2;
    let mut dep = Deployment {
        target_generation: 2,
        previous_generation: 1,
        strategy: Some(s),
        started_at: STARTED,
        ..Default::default()
    };
    dep.set_state(DeploymentState::Rolling);
    d.deployment = Some(dep);
    d
}

fn deployment(d: &mut DesiredLrp) -> &mut Deployment {
    d.deployment.as_mut().unwrap()
}

/// The ordinary record at `index` in `state`, running `generation`, since `STARTED`.
fn rec(index: i32, state: State, generation: i64) -> ActualLrp {
    let cell = if state == State::Unclaimed || state == State::Crashed {
        ""
    } else {
        "cell-1"
    };
    let mut a = actual_lrp("web", index, state, cell, STARTED);
    a.generation = generation;
    a
}

/// The REPLACED copy at `index`, RUNNING `generation`.
fn copy(index: i32, generation: i64) -> ActualLrp {
    let mut a = rec(index, State::Running, generation);
    a.set_presence(Presence::Replaced);
    a
}

fn draining(mut a: ActualLrp, since: i64) -> ActualLrp {
    a.draining = true;
    a.draining_since = since;
    a
}

fn old(n: i32) -> Vec<ActualLrp> {
    (0..n).map(|i| rec(i, State::Running, 1)).collect()
}

/// The steps other than progress records.
fn moves(steps: &[Step]) -> Vec<Step> {
    steps
        .iter()
        .filter(|s| !matches!(s, Step::Progress { .. }))
        .cloned()
        .collect()
}

fn progress_of(steps: &[Step]) -> Option<Deployment> {
    steps.iter().find_map(|s| match s {
        Step::Progress { deployment } => Some(deployment.clone()),
        _ => None,
    })
}

#[test]
fn nothing_happens_without_a_deployment_in_progress() {
    let mut d = desired_lrp("web", 2);
    d.generation = 2;
    assert!(plan(&d, &old(2), NOW).is_empty(), "no deployment at all");
    for end in [
        DeploymentState::Succeeded,
        DeploymentState::Failed,
        DeploymentState::RolledBack,
        DeploymentState::None,
    ] {
        let mut d = app(2, strategy(1, 0, 0));
        deployment(&mut d).set_state(end);
        assert!(plan(&d, &old(2), NOW).is_empty(), "{end:?}");
    }
}

#[test]
fn one_surge_replaces_one_running_instance_at_a_time() {
    let d = app(3, strategy(1, 0, 0));
    let steps = plan(&d, &old(3), NOW);
    assert_eq!(
        moves(&steps),
        vec![Step::Replace {
            index: 0,
            surge: true
        }]
    );
    // Index 0 now waits for its new instance: nothing more may surge.
    let actuals = vec![
        rec(0, State::Claimed, 2),
        copy(0, 1),
        rec(1, State::Running, 1),
        rec(2, State::Running, 1),
    ];
    assert!(moves(&plan(&d, &actuals, NOW)).is_empty());
}

#[test]
fn a_larger_surge_replaces_that_many_at_once() {
    let d = app(3, strategy(2, 0, 0));
    let replaced: Vec<Step> = moves(&plan(&d, &old(3), NOW));
    assert_eq!(
        replaced,
        vec![
            Step::Replace {
                index: 0,
                surge: true
            },
            Step::Replace {
                index: 1,
                surge: true
            }
        ]
    );
}

#[test]
fn without_surge_instances_stop_only_within_max_unavailable() {
    let d = app(3, strategy(0, 1, 0));
    assert_eq!(
        moves(&plan(&d, &old(3), NOW)),
        vec![Step::Replace {
            index: 0,
            surge: false
        }]
    );
    // Index 0 is missing while its new instance starts: nothing else may stop.
    let mut actuals = old(3);
    actuals[0] = rec(0, State::Unclaimed, 0);
    assert!(moves(&plan(&d, &actuals, NOW)).is_empty());
}

#[test]
fn surge_first_then_unavailability() {
    let d = app(3, strategy(1, 1, 0));
    assert_eq!(
        moves(&plan(&d, &old(3), NOW)),
        vec![
            Step::Replace {
                index: 0,
                surge: true
            },
            Step::Replace {
                index: 1,
                surge: false
            }
        ]
    );
}

#[test]
fn no_budget_at_all_means_one_surge_at_a_time() {
    for d in [app(2, strategy(0, 0, 0)), {
        let mut d = app(2, strategy(0, 0, 0));
        deployment(&mut d).strategy = None;
        d
    }] {
        assert_eq!(
            moves(&plan(&d, &old(2), NOW)),
            vec![Step::Replace {
                index: 0,
                surge: true
            }]
        );
    }
}

#[test]
fn an_old_instance_that_does_not_serve_is_replaced_without_spending_a_budget() {
    let d = app(3, strategy(1, 0, 0));
    let mut actuals = old(3);
    actuals[1] = rec(1, State::Crashed, 1);
    actuals[2] = rec(2, State::Claimed, 1);
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![
            Step::Replace {
                index: 0,
                surge: true
            },
            Step::Replace {
                index: 1,
                surge: false
            },
            Step::Replace {
                index: 2,
                surge: false
            }
        ]
    );
}

#[test]
fn a_placed_or_waiting_new_instance_is_not_replaced_again() {
    let d = app(2, strategy(2, 0, 0));
    let actuals = vec![rec(0, State::Unclaimed, 0), rec(1, State::Claimed, 2)];
    assert!(moves(&plan(&d, &actuals, NOW)).is_empty());
}

#[test]
fn a_copy_is_drained_once_its_new_instance_runs_then_removed_after_the_delay() {
    let d = app(2, strategy(1, 0, 0));
    let mut actuals = vec![
        rec(0, State::Running, 2),
        copy(0, 1),
        rec(1, State::Running, 1),
    ];
    let steps = plan(&d, &actuals, NOW);
    assert_eq!(
        moves(&steps),
        vec![
            Step::Drain { index: 0 },
            // Index 0's new instance runs: the surge budget is free again.
            Step::Replace {
                index: 1,
                surge: true
            }
        ]
    );
    actuals[1] = draining(copy(0, 1), NOW - SEC / 2);
    actuals[2] = rec(1, State::Claimed, 2);
    assert!(
        moves(&plan(&d, &actuals, NOW)).is_empty(),
        "drained half a second ago: still stopping its requests"
    );
    actuals[1] = draining(copy(0, 1), NOW - DRAIN_DELAY.as_nanos() as i64);
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![Step::RemoveReplaced { index: 0 }]
    );
}

#[test]
fn a_copy_waits_while_its_new_instance_starts() {
    let d = app(1, strategy(1, 0, 0));
    for new in [
        rec(0, State::Unclaimed, 0),
        rec(0, State::Claimed, 2),
        rec(0, State::Unclaimed, 2),
    ] {
        let actuals = vec![new.clone(), copy(0, 1)];
        assert!(moves(&plan(&d, &actuals, NOW)).is_empty(), "{new:?}");
    }
}

#[test]
fn progress_counts_updated_instances_and_is_recorded_only_when_it_changes() {
    let mut d = app(3, strategy(1, 0, 0));
    let actuals = vec![
        rec(0, State::Running, 2),
        rec(1, State::Running, 2),
        rec(2, State::Claimed, 2),
        copy(2, 1),
    ];
    let p = progress_of(&plan(&d, &actuals, NOW)).expect("progress recorded");
    assert_eq!(p.updated_instances, 2);
    assert_eq!(p.state(), DeploymentState::Rolling);
    assert_eq!(p.updated_at, NOW);
    deployment(&mut d).updated_instances = 2;
    assert_eq!(progress_of(&plan(&d, &actuals, NOW)), None);
}

#[test]
fn the_deployment_succeeds_once_every_index_runs_the_target_and_no_copy_is_left() {
    let d = app(2, strategy(1, 0, 0));
    let mut actuals = vec![rec(0, State::Running, 2), rec(1, State::Running, 2)];
    actuals.push(draining(copy(1, 1), NOW));
    let p = progress_of(&plan(&d, &actuals, NOW)).unwrap();
    assert_eq!(p.state(), DeploymentState::Rolling, "a copy is still there");
    actuals.pop();
    let p = progress_of(&plan(&d, &actuals, NOW)).unwrap();
    assert_eq!(p.state(), DeploymentState::Succeeded);
    assert_eq!(p.updated_instances, 2);
}

#[test]
fn a_copy_beyond_the_count_holds_the_end_until_the_converger_removes_it() {
    let d = app(1, strategy(1, 0, 0));
    let actuals = vec![rec(0, State::Running, 2), copy(1, 1)];
    let steps = plan(&d, &actuals, NOW);
    assert!(moves(&steps).is_empty(), "beyond the count: not ours");
    assert_eq!(
        progress_of(&steps).unwrap().state(),
        DeploymentState::Rolling
    );
}

#[test]
fn a_crashed_new_instance_fails_the_deployment_with_its_reason() {
    let d = app(3, strategy(1, 0, 0));
    let mut crashed = rec(2, State::Crashed, 2);
    crashed.crash_reason = "exited with status 1".into();
    crashed.crash_count = 3;
    let actuals = vec![
        rec(0, State::Running, 2),
        rec(1, State::Running, 2),
        crashed,
        copy(2, 1),
    ];
    assert_eq!(
        plan(&d, &actuals, NOW),
        vec![Step::Fail {
            reason: "instance 2 crashed: exited with status 1".into()
        }]
    );
}

#[test]
fn a_new_instance_restarted_after_a_crash_fails_it_too() {
    let d = app(1, strategy(1, 0, 0));
    let mut restarted = rec(0, State::Unclaimed, 2);
    restarted.crash_count = 1;
    restarted.crash_reason = "health check failed".into();
    let steps = plan(&d, &[restarted, copy(0, 1)], NOW);
    assert_eq!(
        steps,
        vec![Step::Fail {
            reason: "instance 0 crashed: health check failed".into()
        }]
    );
}

#[test]
fn an_old_instance_that_crashed_before_is_no_failure_of_the_new_generation() {
    let d = app(2, strategy(1, 0, 0));
    // Crashed running generation 1, restarted, now placed with generation 2.
    let mut claimed = rec(0, State::Claimed, 2);
    claimed.crash_count = 1;
    let mut waiting = rec(1, State::Unclaimed, 1);
    waiting.crash_count = 2;
    let steps = plan(&d, &[claimed, waiting], NOW);
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Fail { .. })),
        "{steps:?}"
    );
}

#[test]
fn a_new_instance_that_does_not_run_within_the_start_timeout_fails_it() {
    let mut d = app(1, strategy(1, 0, 0));
    let waiting = rec(0, State::Claimed, 2);
    let late = STARTED + DEFAULT_START_TIMEOUT.as_nanos() as i64;
    let steps = plan(&d, &[waiting.clone(), copy(0, 1)], late - 1);
    assert!(moves(&steps).is_empty(), "not yet: {steps:?}");
    assert_eq!(
        plan(&d, &[waiting.clone(), copy(0, 1)], late),
        vec![Step::Fail {
            reason: "instance 0 did not start within 60 s".into()
        }]
    );
    d.start_timeout_ms = 5_000;
    let steps = plan(&d, &[waiting, copy(0, 1)], STARTED + 5 * SEC);
    assert_eq!(
        steps,
        vec![Step::Fail {
            reason: "instance 0 did not start within 5 s".into()
        }]
    );
}

#[test]
fn the_timeout_counts_from_the_deployment_start_for_a_record_older_than_it() {
    let d = app(1, strategy(1, 0, 0));
    let mut waiting = rec(0, State::Unclaimed, 0);
    waiting.since = STARTED - 3600 * SEC;
    waiting.placement_error = "insufficient resources: memory".into();
    let steps = plan(&d, std::slice::from_ref(&waiting), NOW);
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Fail { .. })),
        "waiting since before the deployment, but only 10 s of it: {steps:?}"
    );
    let late = STARTED + DEFAULT_START_TIMEOUT.as_nanos() as i64;
    assert_eq!(
        plan(&d, &[waiting], late),
        vec![Step::Fail {
            reason: "instance 0 could not be placed within 60 s: insufficient resources: memory"
                .into()
        }]
    );
}

#[test]
fn a_failure_with_nothing_to_go_back_to_just_fails() {
    let mut d = app(1, strategy(1, 0, 0));
    deployment(&mut d).previous_generation = 0;
    let mut crashed = rec(0, State::Crashed, 2);
    crashed.crash_reason = "boom".into();
    let steps = plan(&d, &[crashed], NOW);
    let p = progress_of(&steps).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(p.state(), DeploymentState::Failed);
    assert!(p.failed);
    assert_eq!(p.reason, "instance 0 crashed: boom");
}

#[test]
fn a_canary_replaces_only_its_count_and_keeps_the_old_copies_serving() {
    let d = app(3, strategy(2, 0, 1));
    assert_eq!(
        moves(&plan(&d, &old(3), NOW)),
        vec![Step::Replace {
            index: 0,
            surge: true
        }],
        "one canary even with a surge of two"
    );
    let actuals = vec![
        rec(0, State::Running, 2),
        copy(0, 1),
        rec(1, State::Running, 1),
        rec(2, State::Running, 1),
    ];
    let steps = plan(&d, &actuals, NOW);
    assert!(moves(&steps).is_empty(), "the canary's copy is not drained");
    let p = progress_of(&steps).unwrap();
    assert_eq!(p.state(), DeploymentState::Paused);
    assert_eq!(p.updated_instances, 1);
}

#[test]
fn a_paused_deployment_waits_and_still_notices_a_crashing_canary() {
    let mut d = app(2, strategy(1, 0, 1));
    deployment(&mut d).set_state(DeploymentState::Paused);
    deployment(&mut d).updated_instances = 1;
    let actuals = vec![
        rec(0, State::Running, 2),
        copy(0, 1),
        rec(1, State::Running, 1),
    ];
    assert!(plan(&d, &actuals, NOW).is_empty());
    let mut crashed = rec(0, State::Crashed, 2);
    crashed.crash_reason = "oom".into();
    let steps = plan(&d, &[crashed, copy(0, 1), rec(1, State::Running, 1)], NOW);
    assert!(matches!(&steps[..], [Step::Fail { .. }]), "{steps:?}");
}

#[test]
fn a_promoted_canary_is_drained_and_the_rest_rolls() {
    let mut d = app(2, strategy(1, 0, 1));
    deployment(&mut d).promoted = true;
    deployment(&mut d).updated_instances = 1;
    let actuals = vec![
        rec(0, State::Running, 2),
        copy(0, 1),
        rec(1, State::Running, 1),
    ];
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![
            Step::Drain { index: 0 },
            Step::Replace {
                index: 1,
                surge: true
            }
        ]
    );
}

#[test]
fn a_canary_as_large_as_the_app_pauses_with_every_copy_kept() {
    let d = app(2, strategy(2, 0, 5));
    let actuals = vec![
        rec(0, State::Running, 2),
        copy(0, 1),
        rec(1, State::Running, 2),
        copy(1, 1),
    ];
    let steps = plan(&d, &actuals, NOW);
    assert!(moves(&steps).is_empty());
    assert_eq!(
        progress_of(&steps).unwrap().state(),
        DeploymentState::Paused
    );
}

/// `web` rolling back to generation 1 after generation 2 failed.
fn rolling_back(instances: i32, failed: bool) -> DesiredLrp {
    let mut d = app(instances, strategy(1, 0, 0));
    d.generation = 1;
    let dep = deployment(&mut d);
    dep.set_state(DeploymentState::RollingBack);
    dep.target_generation = 1;
    dep.failed = failed;
    dep.reason = "instance 0 crashed: boom".into();
    d
}

#[test]
fn rolling_back_restores_copies_of_the_good_generation_and_replaces_the_rest() {
    let d = rolling_back(3, true);
    let mut crashed = rec(0, State::Crashed, 2);
    crashed.crash_reason = "boom".into();
    let actuals = vec![
        crashed,
        copy(0, 1),
        rec(1, State::Running, 2),
        rec(2, State::Running, 1),
    ];
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![
            Step::Restore { index: 0 },
            Step::Replace {
                index: 1,
                surge: true
            }
        ],
        "the crash of the failed generation is not the rollback's; index 2 runs generation 1 already"
    );
}

#[test]
fn rolling_back_drains_a_copy_whose_index_runs_the_good_generation_again() {
    let d = rolling_back(1, false);
    let actuals = vec![rec(0, State::Running, 1), copy(0, 2)];
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![Step::Drain { index: 0 }]
    );
}

#[test]
fn a_rollback_ends_failed_after_a_failure_and_rolled_back_on_purpose() {
    for (failed, end) in [
        (true, DeploymentState::Failed),
        (false, DeploymentState::RolledBack),
    ] {
        let d = rolling_back(2, failed);
        let actuals = vec![rec(0, State::Running, 1), rec(1, State::Running, 1)];
        let p = progress_of(&plan(&d, &actuals, NOW)).unwrap();
        assert_eq!(p.state(), end);
        assert_eq!(p.reason, "instance 0 crashed: boom", "the reason is kept");
    }
}

#[test]
fn a_rollback_whose_own_instances_crash_ends_failed_instead_of_rolling_back_forever() {
    let d = rolling_back(2, true);
    let mut crashed = rec(1, State::Crashed, 1);
    crashed.crash_reason = "exited with status 2".into();
    let steps = plan(&d, &[rec(0, State::Running, 1), crashed], NOW);
    assert!(moves(&steps).is_empty(), "{steps:?}");
    let p = progress_of(&steps).unwrap();
    assert_eq!(p.state(), DeploymentState::Failed);
    assert_eq!(
        p.reason,
        "instance 0 crashed: boom; rolling back to generation 1 failed too: instance 1 crashed: exited with status 2"
    );
}

#[test]
fn a_stray_copy_under_an_old_running_instance_is_drained_so_the_index_can_be_replaced() {
    let d = app(1, strategy(1, 0, 0));
    let actuals = vec![rec(0, State::Running, 1), copy(0, 0)];
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![Step::Drain { index: 0 }]
    );
}

#[test]
fn an_app_scaled_to_zero_succeeds_at_once() {
    let d = app(0, strategy(1, 0, 0));
    let p = progress_of(&plan(&d, &[], NOW)).unwrap();
    assert_eq!(p.state(), DeploymentState::Succeeded);
}

#[test]
fn a_missing_index_is_left_to_the_converger() {
    let d = app(2, strategy(1, 0, 0));
    let actuals = vec![rec(1, State::Running, 1)];
    assert_eq!(
        moves(&plan(&d, &actuals, NOW)),
        vec![Step::Replace {
            index: 1,
            surge: true
        }]
    );
}
