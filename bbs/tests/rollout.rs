//! Rolling updates in the BBS (db layer) against both backends, a real etcd
//! process and the embedded store: generations and their history, replacing
//! instances through REPLACED copies, rollbacks, promotions and deployment
//! updates. Every test runs once per backend.

use std::time::Duration;

use lattice_bbs::db::{Db, DbError, Rollback};
use lattice_bbs::events::EventHub;
use lattice_bbs::store::{Op, Txn};
use lattice_specs::errors::ErrorName;
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::deployment::State as DState;
use lattice_specs::models::*;
use lattice_specs::testing::{desired_lrp, instance_key};

fn surge() -> RolloutStrategy {
    RolloutStrategy {
        max_surge: 1,
        max_unavailable: 0,
        canary: 0,
    }
}

/// web's definition with `memory_mb` (a change that makes a new generation).
fn with_memory(instances: i32, memory_mb: i32) -> DesiredLrp {
    DesiredLrp {
        memory_mb,
        ..desired_lrp("web", instances)
    }
}

/// Claims (recording `generation`) and starts instance `index` of web as `guid` on c1.
async fn run(db: &Db, index: i32, guid: &str, generation: i64) -> ActualLrpInstanceKey {
    let ik = instance_key(guid, "c1");
    let claimed = db.claim_actual_lrp("web", index, &ik, generation).await;
    assert_eq!(claimed.unwrap().generation, generation);
    let net = ActualLrpNetInfo {
        address: "10.0.0.1".into(),
        ..Default::default()
    };
    db.start_actual_lrp("web", index, &ik, net).await.unwrap();
    ik
}

/// The records of web at `index`, ordinary and copies.
async fn at(db: &Db, index: i32) -> (Option<ActualLrp>, Option<ActualLrp>) {
    let all = db.actual_lrps("", "", "web", Some(index)).await.unwrap();
    let of = |p: Presence| all.iter().find(|l| l.presence() == p).cloned();
    (of(Presence::Ordinary), of(Presence::Replaced))
}

fn deployment(d: &DesiredLrp) -> Deployment {
    d.deployment.clone().expect("a deployment")
}

async fn history(db: &Db) -> Vec<(i64, String)> {
    let h = db.generations("web").await.unwrap();
    h.into_iter().map(|g| (g.generation, g.status)).collect()
}

fn statuses(v: &[(i64, &str)]) -> Vec<(i64, String)> {
    v.iter().map(|(g, s)| (*g, s.to_string())).collect()
}

async fn a_new_generation_rolls_and_is_kept_in_the_history(db: Db) {
    db.desire_lrp(desired_lrp("web", 3)).await.unwrap();
    let d = db.desired_lrp("web").await.unwrap();
    assert_eq!(d.generation, 1, "desiring makes generation 1");
    assert!(d.deployment.is_none());
    assert_eq!(history(&db).await, statuses(&[(1, "current")]));

    let (same, made) = db
        .create_generation("web", desired_lrp("", 3), surge(), "ci")
        .await
        .unwrap();
    assert!(!made);
    assert_eq!(same, d, "an identical definition changes nothing");
    let (scaled, made) = db
        .create_generation("web", desired_lrp("web", 4), surge(), "ci")
        .await
        .unwrap();
    assert!(!made);
    assert_eq!((scaled.instances, scaled.generation), (4, 1), "in place");
    assert_eq!(db.actual_lrps("", "", "web", None).await.unwrap().len(), 4);

    let (new, made) = db
        .create_generation("web", with_memory(4, 256), surge(), "ci")
        .await
        .unwrap();
    assert!(made);
    assert_eq!((new.generation, new.memory_mb), (2, 256));
    let dep = deployment(&new);
    assert_eq!(dep.state(), DState::Rolling);
    assert_eq!((dep.target_generation, dep.previous_generation), (2, 1));
    assert_eq!(dep.requested_by, "ci");
    assert_eq!(db.desired_lrp("web").await.unwrap(), new, "as stored");
    assert_eq!(
        history(&db).await,
        statuses(&[(1, "superseded"), (2, "current")])
    );
    let h = db.generations("web").await.unwrap();
    assert_eq!(h[1].created_by, "ci");
    assert_eq!(h[1].definition.as_ref().unwrap().memory_mb, 256);
    assert_eq!(h[0].definition.as_ref().unwrap().memory_mb, 0);

    // Refusals write nothing.
    let err = db
        .create_generation("web", with_memory(4, 512), surge(), "ci")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::DeploymentInProgress);
    assert!(err.to_string().contains("ltc rollback web"), "{err}");
    let mut bad = with_memory(4, 512);
    bad.cpu_weight = 500;
    let err = db
        .create_generation("web", bad, surge(), "ci")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DbError::Invalid(v) if v.fields() == ["cpu_weight"]),
        "{err:?}"
    );
    let err = db
        .create_generation("web", desired_lrp("api", 4), surge(), "ci")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("definition.process_guid"), "{err}");
    let mut elsewhere = with_memory(4, 512);
    elsewhere.domain = "other".into();
    let err = db
        .create_generation("web", elsewhere, surge(), "ci")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("definition.domain"), "{err}");
    let never = RolloutStrategy {
        max_surge: 0,
        ..surge()
    };
    let err = db
        .create_generation("web", with_memory(4, 512), never, "ci")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("strategy.max_surge"), "{err}");
    assert_eq!(db.desired_lrp("web").await.unwrap(), new);
    assert_eq!(history(&db).await.len(), 2);
    let err = db
        .create_generation("nope", desired_lrp("nope", 1), surge(), "ci")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::DesiredLRPNotFound);
}

async fn a_surge_keeps_the_old_instance_serving_until_drained_and_removed(db: Db) {
    db.desire_lrp(desired_lrp("web", 2)).await.unwrap();
    let old = run(&db, 0, "old-0", 1).await;
    db.create_generation("web", with_memory(2, 256), surge(), "ci")
        .await
        .unwrap();
    let err = db.replace_actual_lrp("web", 0, true, 1).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ResourceConflict, "a stale target");
    let err = db.replace_actual_lrp("web", 1, true, 2).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidStateTransition, "UNCLAIMED");
    let err = db.replace_actual_lrp("web", 2, true, 2).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);

    let fresh = db.replace_actual_lrp("web", 0, true, 2).await.unwrap();
    assert_eq!(fresh.state(), State::Unclaimed);
    let (ordinary, copy) = at(&db, 0).await;
    assert_eq!(ordinary.unwrap(), fresh);
    let copy = copy.expect("the old instance serves from its copy");
    assert_eq!(copy.instance_key.as_ref(), Some(&old));
    assert_eq!((copy.state(), copy.generation), (State::Running, 1));
    assert!(!copy.draining);
    let err = db.replace_actual_lrp("web", 0, true, 2).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidStateTransition);

    let new = run(&db, 0, "new-0", 2).await;
    let (ordinary, _) = at(&db, 0).await;
    let ordinary = ordinary.unwrap();
    assert_eq!((ordinary.generation, ordinary.instance_key), (2, Some(new)));
    let err = db.replace_actual_lrp("web", 0, true, 2).await.unwrap_err();
    assert!(
        err.to_string().contains("runs generation 2 already"),
        "{err}"
    );

    db.drain_replaced_actual_lrp("web", 0).await.unwrap();
    let (_, copy) = at(&db, 0).await;
    let copy = copy.unwrap();
    assert!(copy.draining && copy.draining_since > 0);
    db.drain_replaced_actual_lrp("web", 0).await.unwrap();
    assert_eq!(
        at(&db, 0).await.1.unwrap(),
        copy,
        "draining twice changes nothing"
    );
    db.remove_replaced_actual_lrp("web", 0).await.unwrap();
    assert!(at(&db, 0).await.1.is_none());
    let err = db.remove_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);
    let err = db.drain_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);

    // Without surge the instance starts over at once and no copy is kept.
    run(&db, 1, "old-1", 1).await;
    db.replace_actual_lrp("web", 1, false, 2).await.unwrap();
    let (ordinary, copy) = at(&db, 1).await;
    assert_eq!(ordinary.unwrap().state(), State::Unclaimed);
    assert!(copy.is_none());
}

async fn a_cells_start_crash_or_remove_of_a_replaced_instance_applies_to_its_copy(db: Db) {
    db.desire_lrp(desired_lrp("web", 2)).await.unwrap();
    let a = run(&db, 0, "old-0", 1).await;
    let b = run(&db, 1, "old-1", 1).await;
    db.create_generation("web", with_memory(2, 256), surge(), "ci")
        .await
        .unwrap();
    db.replace_actual_lrp("web", 0, true, 2).await.unwrap();
    db.replace_actual_lrp("web", 1, true, 2).await.unwrap();

    // A rep re-adopting the old instance does not take the ordinary record.
    let net = ActualLrpNetInfo::default();
    let got = db.start_actual_lrp("web", 0, &a, net).await.unwrap();
    assert_eq!(got.presence(), Presence::Replaced);
    assert_eq!(at(&db, 0).await.0.unwrap().state(), State::Unclaimed);

    // An evacuating cell keeps it serving from the copy, which stays as it was.
    let copy = at(&db, 0).await.1;
    let keep = db.evacuate_running("web", 0, &a, ActualLrpNetInfo::default());
    assert!(keep.await.unwrap().0, "it serves until the copy is removed");
    assert_eq!(at(&db, 0).await.1, copy);
    assert!(db
        .actual_lrps("", "", "web", None)
        .await
        .unwrap()
        .iter()
        .all(|l| l.presence() != Presence::Evacuating));

    let crashed = db.crash_actual_lrp("web", 0, &a, "exit 2").await.unwrap();
    assert_eq!(
        (crashed.state(), crashed.crash_reason.as_str()),
        (State::Crashed, "exit 2")
    );
    let (ordinary, copy) = at(&db, 0).await;
    assert!(copy.is_none(), "the crashed copy is just removed");
    let ordinary = ordinary.unwrap();
    assert_eq!(
        (ordinary.state(), ordinary.crash_count),
        (State::Unclaimed, 0)
    );

    db.remove_actual_lrp("web", 1, Some(&b)).await.unwrap();
    let (ordinary, copy) = at(&db, 1).await;
    assert!(copy.is_none());
    assert!(ordinary.is_some(), "the new instance's record stays");
}

async fn a_rollback_restores_the_old_definition_and_its_instances(db: Db) {
    db.desire_lrp(with_memory(2, 128)).await.unwrap();
    let old = run(&db, 0, "old-0", 1).await;
    run(&db, 1, "old-1", 1).await;
    db.create_generation("web", with_memory(2, 256), surge(), "ci")
        .await
        .unwrap();
    db.replace_actual_lrp("web", 0, true, 2).await.unwrap();
    let err = db.restore_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert!(err.to_string().contains("runs generation 1"), "{err}");
    run(&db, 0, "new-0", 2).await;

    let back = Rollback {
        generation: 0,
        failed: true,
        reason: "instance 0 crashed: exit 1",
        requested_by: "brain",
    };
    let d = db.rollback_desired_lrp("web", back).await.unwrap();
    assert_eq!((d.generation, d.memory_mb, d.instances), (1, 128, 2));
    let dep = deployment(&d);
    assert_eq!(dep.state(), DState::RollingBack);
    assert_eq!(dep.target_generation, 1);
    assert!(dep.failed);
    assert_eq!(dep.reason, "instance 0 crashed: exit 1");
    assert_eq!(db.desired_lrp("web").await.unwrap(), d);
    assert_eq!(
        history(&db).await,
        statuses(&[(1, "current"), (2, "failed")])
    );
    assert_eq!(db.generations("web").await.unwrap()[1].reason, dep.reason);

    db.restore_replaced_actual_lrp("web", 0).await.unwrap();
    let (ordinary, copy) = at(&db, 0).await;
    assert!(copy.is_none());
    let ordinary = ordinary.unwrap();
    assert_eq!(
        ordinary.instance_key.as_ref(),
        Some(&old),
        "the old instance is back"
    );
    assert_eq!((ordinary.generation, ordinary.state()), (1, State::Running));
    let err = db.restore_replaced_actual_lrp("web", 0).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);

    let again = Rollback {
        failed: false,
        ..back
    };
    let err = db.rollback_desired_lrp("web", again).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::NothingToRollBack);
    let far = Rollback {
        generation: 7,
        ..again
    };
    let err = db.rollback_desired_lrp("web", far).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::GenerationNotFound);
    assert!(err.to_string().contains("ltc history web"), "{err}");

    // Once the rollback ends, the next generation gets a number of its own.
    let ended = Deployment {
        state: DState::Failed as i32,
        ..dep.clone()
    };
    db.update_deployment("web", &dep, &ended).await.unwrap();
    let (d, made) = db
        .create_generation("web", with_memory(2, 64), surge(), "dev")
        .await
        .unwrap();
    assert!(made);
    assert_eq!(d.generation, 3);
    assert_eq!(deployment(&d).previous_generation, 1);
    // A rollback on purpose marks the generation left "rolled back".
    let on_purpose = Rollback {
        generation: 2,
        failed: false,
        reason: "by dev",
        requested_by: "dev",
    };
    let d = db.rollback_desired_lrp("web", on_purpose).await.unwrap();
    assert_eq!((d.generation, d.memory_mb), (2, 256));
    assert!(!deployment(&d).failed);
    assert_eq!(
        history(&db).await,
        statuses(&[(1, "superseded"), (2, "current"), (3, "rolled back")])
    );
}

async fn canaries_wait_for_a_promotion_and_deployments_are_compare_and_swap(db: Db) {
    db.desire_lrp(desired_lrp("web", 3)).await.unwrap();
    let canary = RolloutStrategy {
        canary: 1,
        ..surge()
    };
    let (d, _) = db
        .create_generation("web", with_memory(3, 256), canary, "ci")
        .await
        .unwrap();
    let err = db.promote("web").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::DeploymentNotPaused);
    let rolling = deployment(&d);
    let paused = Deployment {
        state: DState::Paused as i32,
        updated_instances: 1,
        ..rolling.clone()
    };
    db.update_deployment("web", &rolling, &paused)
        .await
        .unwrap();
    let err = db
        .update_deployment("web", &rolling, &paused)
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::ResourceConflict, "a stale expected");
    let elsewhere = Deployment {
        target_generation: 9,
        ..paused.clone()
    };
    let err = db
        .update_deployment("web", &paused, &elsewhere)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("target_generation"), "{err}");
    let d = db.promote("web").await.unwrap();
    let dep = deployment(&d);
    assert!(dep.promoted);
    assert_eq!((dep.state(), dep.updated_instances), (DState::Rolling, 1));
    assert_eq!(db.desired_lrp("web").await.unwrap(), d);
    let err = db.promote("nope").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::DesiredLRPNotFound);
}

async fn the_history_keeps_ten_and_goes_with_the_app_and_its_copies(db: Db) {
    db.desire_lrp(desired_lrp("web", 2)).await.unwrap();
    for memory in 1..=11 {
        let (d, made) = db
            .create_generation("web", with_memory(2, memory * 16), surge(), "ci")
            .await
            .unwrap();
        assert!(made);
        let dep = deployment(&d);
        let done = Deployment {
            state: DState::Succeeded as i32,
            ..dep.clone()
        };
        db.update_deployment("web", &dep, &done).await.unwrap();
    }
    let kept: Vec<i64> = history(&db).await.iter().map(|(g, _)| *g).collect();
    assert_eq!(kept, (3..=12).collect::<Vec<_>>());
    assert_eq!(history(&db).await.last().unwrap().1, "current");

    run(&db, 0, "i-0", 12).await;
    run(&db, 1, "i-1", 1).await;
    db.create_generation("web", with_memory(2, 999), surge(), "ci")
        .await
        .unwrap();
    db.replace_actual_lrp("web", 0, true, 13).await.unwrap();
    db.replace_actual_lrp("web", 1, true, 13).await.unwrap();
    db.update_desired_lrp(
        "web",
        DesiredLrpUpdate {
            instances: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        at(&db, 1).await.1.is_none(),
        "scaling down removes copies too"
    );
    assert!(at(&db, 0).await.1.is_some());

    db.remove_desired_lrp("web").await.unwrap();
    assert!(db
        .actual_lrps("", "", "web", None)
        .await
        .unwrap()
        .is_empty());
    let err = db.generations("web").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::DesiredLRPNotFound);
    db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    assert_eq!(
        history(&db).await,
        statuses(&[(1, "current")]),
        "a new app, a new history"
    );
}

async fn an_app_from_before_generations_gets_a_first_one_to_roll_back_to(db: Db) {
    // Stored as before generations existed: generation 0, no history.
    db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let mut legacy = db.desired_lrp("web").await.unwrap();
    legacy.generation = 0;
    let txn = Txn::new()
        .then(Op::delete(format!("/lattice/v1/generation/web/{:020}", 1)))
        .then(Op::put(
            "/lattice/v1/desired/web",
            prost::Message::encode_to_vec(&legacy),
        ));
    assert!(db.store().txn(txn).await.unwrap().succeeded);
    let (d, made) = db
        .create_generation("web", with_memory(1, 256), surge(), "ci")
        .await
        .unwrap();
    assert!(made);
    assert_eq!((d.generation, deployment(&d).previous_generation), (2, 1));
    assert_eq!(
        history(&db).await,
        statuses(&[(1, "superseded"), (2, "current")])
    );
    let back = Rollback {
        generation: 0,
        failed: false,
        reason: "",
        requested_by: "dev",
    };
    let d = db.rollback_desired_lrp("web", back).await.unwrap();
    assert_eq!((d.generation, d.memory_mb), (1, 0));
}

async fn routers_see_the_replaced_copy_come_drain_and_go(db: Db) {
    db.desire_lrp(desired_lrp("web", 1)).await.unwrap();
    let old = run(&db, 0, "old-0", 1).await;
    db.create_generation("web", with_memory(1, 256), surge(), "ci")
        .await
        .unwrap();
    let hub = EventHub::start(db.store().clone()).await;
    let mut rx = hub.subscribe();
    db.replace_actual_lrp("web", 0, true, 2).await.unwrap();
    db.drain_replaced_actual_lrp("web", 0).await.unwrap();
    db.remove_replaced_actual_lrp("web", 0).await.unwrap();
    let copy = |l: &Option<ActualLrp>| {
        let l = l.as_ref().unwrap();
        (l.presence(), l.instance_key.clone(), l.draining)
    };
    let replaced = |draining| (Presence::Replaced, Some(old.clone()), draining);
    let mut seen = vec![];
    while seen.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only got {seen:?}"))
            .unwrap();
        match &e.event {
            Some(Kind::ActualLrpCreated(c)) => seen.push(("created", copy(&c.actual_lrp))),
            Some(Kind::ActualLrpChanged(c)) => seen.push(("changed", copy(&c.after))),
            Some(Kind::ActualLrpRemoved(c)) => seen.push(("removed", copy(&c.actual_lrp))),
            _ => {}
        }
    }
    let fresh = (Presence::Ordinary, None, false);
    let want = [
        ("created", replaced(false)),
        ("changed", fresh),
        ("changed", replaced(true)),
        ("removed", replaced(true)),
    ];
    // The copy and the fresh record are written together: either order.
    assert!(
        seen[..2].contains(&want[0]) && seen[..2].contains(&want[1]),
        "{seen:?}"
    );
    assert_eq!(seen[2..], want[2..]);
}

lattice_bbs::both_stores!(|store| Db::new(store);
    a_new_generation_rolls_and_is_kept_in_the_history,
    a_surge_keeps_the_old_instance_serving_until_drained_and_removed,
    a_cells_start_crash_or_remove_of_a_replaced_instance_applies_to_its_copy,
    a_rollback_restores_the_old_definition_and_its_instances,
    canaries_wait_for_a_promotion_and_deployments_are_compare_and_swap,
    the_history_keeps_ten_and_goes_with_the_app_and_its_copies,
    an_app_from_before_generations_gets_a_first_one_to_roll_back_to,
    routers_see_the_replaced_copy_come_drain_and_go);
