use super::*;
use crate::testing::{actual_lrp, desired_lrp, instance_key};

const ALL: [State; 4] = [
    State::Unclaimed,
    State::Claimed,
    State::Running,
    State::Crashed,
];

/// Instance 2 of web in `state`, running generation `generation`.
fn at(state: State, generation: i64) -> ActualLrp {
    let mut l = actual_lrp("web", 2, state, "c1", 5);
    l.generation = generation;
    l.crash_count = 3;
    l.crash_reason = "exit 1".into();
    l
}

fn deployment(state: DState, target: i64, previous: i64) -> Deployment {
    let mut d = Deployment {
        target_generation: target,
        previous_generation: previous,
        ..Default::default()
    };
    d.set_state(state);
    d
}

/// web at generation `generation` with the given deployment.
fn app(generation: i64, dep: Option<Deployment>) -> DesiredLrp {
    let mut d = desired_lrp("web", 4);
    d.generation = generation;
    d.deployment = dep;
    d.modification_tag = Some(crate::models::ModificationTag {
        epoch: "e".into(),
        index: 7,
    });
    d
}

#[test]
fn a_surge_keeps_the_running_instance_as_a_replaced_copy_and_starts_over() {
    for state in ALL {
        let old = at(state, 1);
        let got = replace(&old, 2, 2, true, false, 99);
        if state != State::Running {
            let e = got.unwrap_err();
            assert_eq!(e.name, ErrorName::InvalidStateTransition, "{state:?}");
            assert!(e.message.contains("RUNNING"), "{e}");
            continue;
        }
        let r = got.unwrap();
        let copy = r.copy.expect("a surge keeps a copy");
        assert_eq!(copy.presence(), Presence::Replaced);
        assert_eq!(
            copy.instance_key, old.instance_key,
            "the same instance serves"
        );
        assert_eq!(copy.generation, 1);
        assert_eq!(copy.modification_tag, old.modification_tag);
        let o = &r.ordinary;
        assert_eq!(o.state(), State::Unclaimed);
        assert_eq!(o.presence(), Presence::Ordinary);
        assert_eq!((o.crash_count, o.crash_reason.as_str()), (0, ""));
        assert_eq!((o.generation, o.since), (0, 99));
        assert!(o.instance_key.is_none() && o.net_info.is_none());
        assert_eq!(o.key, old.key);
    }
}

#[test]
fn without_surge_any_placed_instance_starts_over_and_no_copy_is_kept() {
    for state in ALL {
        let got = replace(&at(state, 1), 2, 2, false, true, 99);
        match state {
            State::Unclaimed => {
                assert_eq!(got.unwrap_err().name, ErrorName::InvalidStateTransition)
            }
            _ => {
                let r = got.unwrap();
                assert!(r.copy.is_none());
                assert_eq!(r.ordinary.state(), State::Unclaimed);
                assert_eq!(r.ordinary.crash_count, 0);
            }
        }
    }
}

#[test]
fn replacing_is_refused_for_a_stale_target_an_up_to_date_instance_or_a_second_copy() {
    let e = replace(&at(State::Running, 1), 3, 2, true, false, 9).unwrap_err();
    assert_eq!(e.name, ErrorName::ResourceConflict);
    assert!(e.message.contains("generation 3 now"), "{e}");
    let e = replace(&at(State::Running, 2), 2, 2, true, false, 9).unwrap_err();
    assert_eq!(e.name, ErrorName::InvalidStateTransition);
    assert!(e.message.contains("runs generation 2 already"), "{e}");
    let rolling_back = replace(&at(State::Running, 3), 2, 2, true, false, 9);
    assert!(
        rolling_back.is_ok(),
        "a newer generation is replaced when rolling back"
    );
    let e = replace(&at(State::Running, 1), 2, 2, true, true, 9).unwrap_err();
    assert!(
        e.message.contains("replaced copy of it still serves"),
        "{e}"
    );
}

#[test]
fn draining_marks_once_and_bumps_the_tag() {
    let mut c = at(State::Running, 1);
    c.set_presence(Presence::Replaced);
    let tag = c.modification_tag.clone().unwrap().index;
    assert!(drain(&mut c, 50));
    assert!(c.draining);
    assert_eq!(c.draining_since, 50);
    assert_eq!(c.modification_tag.as_ref().unwrap().index, tag + 1);
    let before = c.clone();
    assert!(!drain(&mut c, 60), "draining twice changes nothing");
    assert_eq!(c, before);
}

#[test]
fn a_copy_is_restored_only_to_its_own_generation() {
    let mut c = at(State::Running, 1);
    c.set_presence(Presence::Replaced);
    drain(&mut c, 50);
    let e = restore(&c, 2).unwrap_err();
    assert!(e.message.contains("runs generation 1"), "{e}");
    let o = restore(&c, 1).unwrap();
    assert_eq!(o.presence(), Presence::Ordinary);
    assert!(!o.draining);
    assert_eq!(o.draining_since, 0);
    assert_eq!(o.instance_key, c.instance_key);
    assert!(
        o.modification_tag.as_ref().unwrap().index > c.modification_tag.as_ref().unwrap().index
    );
}

#[test]
fn a_copy_belongs_to_its_instance_only() {
    let c = at(State::Running, 1);
    assert!(owns_copy(Some(&c), &instance_key("web-2", "c1")));
    assert!(!owns_copy(Some(&c), &instance_key("web-2", "c2")));
    assert!(!owns_copy(None, &instance_key("web-2", "c1")));
    assert!(!owns_copy(Some(&c), &ActualLrpInstanceKey::default()));
}

#[test]
fn a_definition_is_unchanged_in_place_or_a_new_generation() {
    let current = app(3, Some(deployment(DState::Succeeded, 3, 2)));
    let mut same = current.clone();
    same.modification_tag = None;
    same.generation = 0;
    same.deployment = None;
    assert_eq!(classify(&current, &same), Change::Unchanged);
    let mut scaled = same.clone();
    scaled.instances = 6;
    scaled.annotation = "v2".into();
    let Change::InPlace(u) = classify(&current, &scaled) else {
        panic!("scaling is in place")
    };
    assert_eq!(u.instances, Some(6));
    assert_eq!(u.annotation.as_deref(), Some("v2"));
    assert!(!u.has_routes);
    let mut routed = same.clone();
    routed.routes.insert("cf-router".into(), "[]".into());
    let Change::InPlace(u) = classify(&current, &routed) else {
        panic!("routes are in place")
    };
    assert!(u.has_routes && u.instances.is_none());
    for change in [
        |d: &mut DesiredLrp| d.memory_mb = 512,
        |d: &mut DesiredLrp| d.rootfs = "docker:///nginx".into(),
        |d: &mut DesiredLrp| d.env.push(Default::default()),
        |d: &mut DesiredLrp| d.ports.push(9090),
    ] {
        let mut changed = scaled.clone();
        change(&mut changed);
        assert_eq!(classify(&current, &changed), Change::NewGeneration);
    }
}

#[test]
fn strategies_are_checked_field_by_field() {
    let s = |max_surge, max_unavailable, canary| RolloutStrategy {
        max_surge,
        max_unavailable,
        canary,
    };
    assert!(validate_strategy(&s(1, 0, 0), 4).is_ok());
    assert!(validate_strategy(&s(0, 1, 2), 4).is_ok());
    let fields = |r: Result<(), ValidationErrors>| {
        r.unwrap_err()
            .fields()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(validate_strategy(&s(-1, 0, 0), 4)),
        ["strategy.max_surge"]
    );
    let e = validate_strategy(&s(0, 0, 0), 4).unwrap_err();
    assert!(e.to_string().contains("cannot both be 0"), "{e}");
    assert_eq!(
        fields(validate_strategy(&s(1, -2, 0), 4)),
        ["strategy.max_unavailable"]
    );
    assert_eq!(
        fields(validate_strategy(&s(1, 0, 4), 4)),
        ["strategy.canary"]
    );
    assert_eq!(
        fields(validate_strategy(&s(1, 0, -1), 4)),
        ["strategy.canary"]
    );
}

#[test]
fn a_new_generation_starts_rolling_from_the_current_one_unless_one_is_in_progress() {
    let req = GenerationRequest {
        strategy: RolloutStrategy {
            max_surge: 2,
            max_unavailable: 0,
            canary: 1,
        },
        requested_by: "ci".into(),
        generation: 5,
        now: 77,
    };
    let current = app(3, Some(deployment(DState::RolledBack, 3, 3)));
    let mut proposed = desired_lrp("web", 4);
    proposed.memory_mb = 256;
    let d = new_generation(&current, &proposed, &req).unwrap();
    assert_eq!(d.memory_mb, 256);
    assert_eq!(d.generation, 5);
    let tag = d.modification_tag.as_ref().unwrap();
    assert_eq!((tag.epoch.as_str(), tag.index), ("e", 8));
    let dep = d.deployment.unwrap();
    assert_eq!(dep.state(), DState::Rolling);
    assert_eq!((dep.target_generation, dep.previous_generation), (5, 3));
    assert_eq!(dep.strategy, Some(req.strategy));
    assert_eq!((dep.started_at, dep.requested_by.as_str()), (77, "ci"));
    assert!(!dep.promoted && !dep.failed);
    // An app from before generations (0) rolls back to its first.
    let legacy = app(0, None);
    let d = new_generation(&legacy, &proposed, &req).unwrap();
    assert_eq!(d.deployment.unwrap().previous_generation, 1);
    for state in [DState::Rolling, DState::Paused, DState::RollingBack] {
        let busy = app(3, Some(deployment(state, 3, 2)));
        let e = new_generation(&busy, &proposed, &req).unwrap_err();
        assert_eq!(e.name, ErrorName::DeploymentInProgress, "{state:?}");
        assert!(e.message.contains("ltc rollback web"), "{e}");
        assert!(e.message.contains("to generation 3"), "{e}");
    }
}

#[test]
fn a_rollback_goes_to_the_requested_or_previous_generation() {
    let rolling = app(4, Some(deployment(DState::Rolling, 4, 2)));
    assert_eq!(rollback_target(&rolling, 0), Ok(2));
    assert_eq!(rollback_target(&rolling, 3), Ok(3));
    let e = rollback_target(&rolling, 4).unwrap_err();
    assert_eq!(e.name, ErrorName::NothingToRollBack);
    assert!(e.message.contains("at generation 4 already"), "{e}");
    let e = rollback_target(&app(1, None), 0).unwrap_err();
    assert_eq!(e.name, ErrorName::NothingToRollBack);
    assert!(e.message.contains("ltc history web"), "{e}");
}

#[test]
fn a_rollback_takes_the_old_definition_but_keeps_what_changes_in_place() {
    let mut current = app(4, Some(deployment(DState::Rolling, 4, 2)));
    current.memory_mb = 512;
    current.instances = 6;
    current.annotation = "now".into();
    current.deployment.as_mut().unwrap().strategy = Some(RolloutStrategy {
        max_surge: 3,
        max_unavailable: 1,
        canary: 2,
    });
    let mut old = app(2, None);
    old.memory_mb = 128;
    old.instances = 2;
    let entry = history_entry(&old, "dev", 10);
    let r = RollbackRequest {
        failed: true,
        reason: "instance 2 crashed: exit 1".into(),
        requested_by: "brain".into(),
        now: 99,
    };
    let d = rollback(&current, &entry, &r);
    assert_eq!((d.memory_mb, d.generation), (128, 2));
    assert_eq!((d.instances, d.annotation.as_str()), (6, "now"));
    assert_eq!(d.modification_tag.as_ref().unwrap().index, 8);
    let dep = d.deployment.unwrap();
    assert_eq!(dep.state(), DState::RollingBack);
    assert_eq!((dep.target_generation, dep.previous_generation), (2, 2));
    assert!(dep.failed);
    assert_eq!(dep.reason, "instance 2 crashed: exit 1");
    assert_eq!(dep.strategy.unwrap().canary, 0, "a rollback has no canary");
    assert_eq!(dep.strategy.unwrap().max_surge, 3);
    assert_eq!(left_status(true), FAILED);
    assert_eq!(left_status(false), ROLLED_BACK);
}

#[test]
fn only_a_paused_deployment_is_promoted() {
    let mut d = app(4, Some(deployment(DState::Paused, 4, 3)));
    promote(&mut d, 5).unwrap();
    let dep = d.deployment.as_ref().unwrap();
    assert!(dep.promoted);
    assert_eq!(dep.state(), DState::Rolling);
    assert_eq!(d.modification_tag.as_ref().unwrap().index, 8);
    let e = promote(&mut d, 6).unwrap_err();
    assert_eq!(e.name, ErrorName::DeploymentNotPaused);
    assert!(e.message.contains("deployment is rolling"), "{e}");
    let e = promote(&mut app(1, None), 6).unwrap_err();
    assert!(e.message.contains("deployment is none"), "{e}");
}

#[test]
fn a_deployment_update_is_a_compare_and_swap_on_the_same_target() {
    let dep = deployment(DState::Rolling, 4, 3);
    let d = app(4, Some(dep.clone()));
    let mut progress = dep.clone();
    progress.updated_instances = 2;
    assert!(check_deployment_update(&d, &dep, &progress).is_ok());
    let e = check_deployment_update(&d, &progress, &dep).unwrap_err();
    assert_eq!(e.name, ErrorName::ResourceConflict);
    let mut elsewhere = dep.clone();
    elsewhere.target_generation = 5;
    let e = check_deployment_update(&d, &dep, &elsewhere).unwrap_err();
    assert_eq!(e.name, ErrorName::InvalidRequest);
    // No deployment yet reads as the default one.
    assert!(check_deployment_update(
        &app(0, None),
        &Deployment::default(),
        &Deployment::default()
    )
    .is_ok());
}

#[test]
fn the_history_keeps_the_newest_ten_without_bookkeeping() {
    let e = history_entry(&app(3, Some(deployment(DState::Rolling, 3, 2))), "ci", 4);
    let def = e.definition.unwrap();
    assert!(def.deployment.is_none() && def.modification_tag.is_none());
    assert_eq!(
        (e.generation, def.generation, e.status.as_str()),
        (3, 3, CURRENT)
    );
    let all: Vec<i64> = (1..=13).rev().collect();
    let mut gone = trimmed(&all);
    gone.sort();
    assert_eq!(gone, [1, 2, 3]);
    assert!(trimmed(&[1, 2]).is_empty());
}

#[test]
fn in_progress_is_rolling_paused_or_rolling_back() {
    for (s, busy) in [
        (DState::None, false),
        (DState::Rolling, true),
        (DState::Paused, true),
        (DState::RollingBack, true),
        (DState::Succeeded, false),
        (DState::Failed, false),
        (DState::RolledBack, false),
    ] {
        assert_eq!(in_progress(Some(&deployment(s, 1, 1))), busy, "{s:?}");
    }
    assert!(!in_progress(None));
}
