//! The BBS operations (db layer) against both backends: a real etcd process
//! and the embedded store. Every test runs once per backend.

use std::time::Duration;

use lattice_bbs::db::{Db, DbError};
use lattice_bbs::events::EventHub;
use lattice_specs::errors::ErrorName;
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::task::State as TaskState;
use lattice_specs::models::*;
use lattice_specs::testing::{desired_lrp, instance_key, task_definition};

/// The httpd LRP with cpu weight 10 and no ports.
fn lrp(guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        cpu_weight: 10,
        ports: vec![],
        ..desired_lrp(guid, instances)
    }
}

async fn desire_creates_unclaimed_instances_and_refuses_duplicates(db: Db) {
    db.desire_lrp(lrp("web", 3)).await.unwrap();
    let actuals = db.actual_lrps("", "", "web", None).await.unwrap();
    assert_eq!(actuals.len(), 3);
    assert!(actuals.iter().all(|a| a.state() == State::Unclaimed));
    let mut idx: Vec<i32> = actuals
        .iter()
        .map(|a| a.key.as_ref().unwrap().index)
        .collect();
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    let mut other = lrp("web", 5);
    other.annotation = "second".into();
    let err = db.desire_lrp(other).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::DesiredLRPAlreadyExists);
    let d = db.desired_lrp("web").await.unwrap();
    assert_eq!(
        (d.instances, d.annotation.as_str()),
        (3, ""),
        "the refused desire changed nothing"
    );
    assert_eq!(db.actual_lrps("", "", "web", None).await.unwrap().len(), 3);
}

async fn invalid_models_are_refused_and_nothing_is_written(db: Db) {
    let mut bad = lrp("bad guid", -1);
    bad.cpu_weight = 500;
    let err = db.desire_lrp(bad).await.unwrap_err();
    let DbError::Invalid(v) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(v.fields(), ["process_guid", "instances", "cpu_weight"]);
    assert!(db.desired_lrps("").await.unwrap().is_empty());
    assert!(db.actual_lrps("", "", "", None).await.unwrap().is_empty());
    let err = db
        .desire_task(
            "t1",
            "",
            TaskDefinition {
                action: None,
                ..task_definition("/bin/true")
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid field domain")
            && err.to_string().contains("invalid field action"),
        "{err}"
    );
    assert!(db.tasks("", "").await.unwrap().is_empty());
}

/// Two cells race to claim each instance: exactly one wins every time.
async fn racing_claimers_exactly_one_wins(db: Db) {
    let n = 20;
    db.desire_lrp(lrp("race", n)).await.unwrap();
    let mut handles = vec![];
    for index in 0..n {
        for cell in ["cell-a", "cell-b"] {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                (
                    index,
                    cell,
                    db.claim_actual_lrp(
                        "race",
                        index,
                        &instance_key(&format!("{cell}-{index}"), cell),
                        1,
                    )
                    .await,
                )
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    for h in handles {
        let (index, cell, r) = h.await.unwrap();
        match r {
            Ok(_) => assert!(
                winners.insert(index, cell).is_none(),
                "two winners for index {index}"
            ),
            Err(e) => assert_eq!(e.name(), ErrorName::ActualLRPCannotBeClaimed, "{e}"),
        }
    }
    assert_eq!(
        winners.len(),
        n as usize,
        "every index has exactly one winner"
    );
    for a in db.actual_lrps("", "", "race", None).await.unwrap() {
        let index = a.key.as_ref().unwrap().index;
        assert_eq!(a.state(), State::Claimed);
        assert_eq!(a.instance_key.as_ref().unwrap().cell_id, winners[&index]);
    }
}

async fn claim_start_crash_and_restart(db: Db) {
    db.desire_lrp(lrp("app", 1)).await.unwrap();
    let me = instance_key("i-1", "cell-1");
    db.claim_actual_lrp("app", 0, &me, 1).await.unwrap();
    let net = ActualLrpNetInfo {
        address: "10.0.0.5".into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 61001,
        }],
        ..Default::default()
    };
    let running = db
        .start_actual_lrp("app", 0, &me, net.clone())
        .await
        .unwrap();
    assert_eq!(running.state(), State::Running);
    assert_eq!(running.net_info.as_ref().unwrap().ports[0].host_port, 61001);
    let err = db
        .crash_actual_lrp("app", 0, &instance_key("i-2", "cell-2"), "x")
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPCannotBeCrashed);
    let crashed = db
        .crash_actual_lrp("app", 0, &me, "exited with status 2")
        .await
        .unwrap();
    assert_eq!(
        (
            crashed.state(),
            crashed.crash_count,
            crashed.crash_reason.as_str()
        ),
        (State::Unclaimed, 1, "exited with status 2")
    );
    // 4th crash waits for the backoff in CRASHED.
    for n in 2..=4 {
        let who = instance_key(&format!("i-{n}"), "cell-1");
        db.claim_actual_lrp("app", 0, &who, 1).await.unwrap();
        db.start_actual_lrp("app", 0, &who, net.clone())
            .await
            .unwrap();
        let c = db
            .crash_actual_lrp("app", 0, &who, "health check failed")
            .await
            .unwrap();
        assert_eq!(c.crash_count, n);
        assert_eq!(
            c.state(),
            if n <= 3 {
                State::Unclaimed
            } else {
                State::Crashed
            }
        );
    }
    let restarted = db.unclaim_actual_lrp("app", 0).await.unwrap();
    assert_eq!(
        (restarted.state(), restarted.crash_count),
        (State::Unclaimed, 4)
    );
    let failed = db
        .fail_actual_lrp("app", 0, "insufficient resources: memory")
        .await
        .unwrap();
    assert_eq!(failed.placement_error, "insufficient resources: memory");
    let err = db.claim_actual_lrp("app", 9, &me, 1).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);
}

async fn start_recreates_a_lost_record_of_a_desired_index(db: Db) {
    db.desire_lrp(lrp("adopt", 2)).await.unwrap();
    db.remove_actual_lrp("adopt", 1, None).await.unwrap();
    let me = instance_key("i-9", "cell-9");
    let l = db
        .start_actual_lrp("adopt", 1, &me, ActualLrpNetInfo::default())
        .await
        .unwrap();
    assert_eq!(
        (l.state(), l.instance_key.as_ref().unwrap().cell_id.as_str()),
        (State::Running, "cell-9")
    );
    assert_eq!(
        db.actual_lrps("", "", "adopt", Some(1)).await.unwrap(),
        vec![l]
    );
    let err = db
        .start_actual_lrp("adopt", 2, &me, ActualLrpNetInfo::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.name(),
        ErrorName::ActualLRPIndexNotFound,
        "an index beyond the desired count is not recreated"
    );
    let err = db
        .start_actual_lrp("nobody", 0, &me, ActualLrpNetInfo::default())
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::ActualLRPIndexNotFound);
}

async fn scaling_creates_and_retires_indices(db: Db) {
    db.desire_lrp(lrp("scale", 2)).await.unwrap();
    db.update_desired_lrp(
        "scale",
        DesiredLrpUpdate {
            instances: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        db.actual_lrps("", "", "scale", None).await.unwrap().len(),
        5
    );
    let d = db.desired_lrp("scale").await.unwrap();
    assert_eq!(d.modification_tag.as_ref().unwrap().index, 1);
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        "cf-router".to_string(),
        r#"[{"hostnames":["scale.lattice.localhost"],"port":8080}]"#.to_string(),
    );
    db.update_desired_lrp(
        "scale",
        DesiredLrpUpdate {
            instances: Some(1),
            routes: routes.clone(),
            has_routes: true,
            annotation: Some("a".into()),
        },
    )
    .await
    .unwrap();
    let left = db.actual_lrps("", "", "scale", None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.as_ref().unwrap().index, 0);
    let d = db.desired_lrp("scale").await.unwrap();
    assert_eq!(
        (d.instances, d.routes, d.annotation.as_str()),
        (1, routes, "a")
    );
    let err = db
        .update_desired_lrp("nope", DesiredLrpUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::DesiredLRPNotFound);
    db.remove_desired_lrp("scale").await.unwrap();
    assert!(db
        .actual_lrps("", "", "scale", None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.remove_desired_lrp("scale").await.unwrap_err().name(),
        ErrorName::DesiredLRPNotFound
    );
}

async fn task_lifecycle_and_racing_starters(db: Db) {
    db.desire_task("t1", "d", task_definition("/bin/true"))
        .await
        .unwrap();
    assert_eq!(
        db.desire_task("t1", "d", task_definition("/bin/true"))
            .await
            .unwrap_err()
            .name(),
        ErrorName::TaskGuidAlreadyExists
    );
    // Two cells race to start it: one wins.
    let (a, b) = tokio::join!(db.start_task("t1", "cell-a"), db.start_task("t1", "cell-b"));
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one starter wins: {a:?} {b:?}"
    );
    let winner = if a.is_ok() { "cell-a" } else { "cell-b" };
    assert!(
        !db.start_task("t1", winner).await.unwrap(),
        "a retried start is a no-op"
    );
    let loser = if winner == "cell-a" {
        "cell-b"
    } else {
        "cell-a"
    };
    assert!(db.complete_task("t1", loser, false, "", "x").await.is_err());
    let t = db
        .complete_task("t1", winner, false, "", "42")
        .await
        .unwrap();
    assert_eq!(
        (t.state(), t.result.as_str(), t.failed),
        (TaskState::Completed, "42", false)
    );
    assert_eq!(
        db.cancel_task("t1").await.unwrap_err().name(),
        ErrorName::TaskNotCancelable
    );
    assert!(
        db.delete_task("t1").await.is_err(),
        "completed but not resolving"
    );
    db.resolving_task("t1").await.unwrap();
    db.delete_task("t1").await.unwrap();
    assert_eq!(
        db.task("t1").await.unwrap_err().name(),
        ErrorName::TaskNotFound
    );

    db.desire_task("t2", "d", task_definition("/bin/true"))
        .await
        .unwrap();
    let c = db.cancel_task("t2").await.unwrap();
    assert_eq!(
        (c.state(), c.failed, c.failure_reason.as_str()),
        (TaskState::Completed, true, "task was cancelled")
    );

    db.desire_task("t3", "d", task_definition("/bin/true"))
        .await
        .unwrap();
    for n in 1..=3 {
        let t = db
            .reject_task("t3", "insufficient resources: memory")
            .await
            .unwrap();
        assert_eq!(t.rejection_count, n);
        assert_eq!(
            t.state(),
            if n < 3 {
                TaskState::Pending
            } else {
                TaskState::Completed
            }
        );
    }
    assert_eq!(db.tasks("d", "").await.unwrap().len(), 2);
    assert_eq!(db.tasks("other", "").await.unwrap().len(), 0);
}

async fn cells_live_as_long_as_their_lease(db: Db) {
    let lease = db.grant_lease(Duration::from_secs(1)).await.unwrap();
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1800".into(),
        zone: "z1".into(),
        capacity: Some(CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    db.set_cell_presence(&cell, lease).await.unwrap();
    assert_eq!(db.cells().await.unwrap(), vec![cell.clone()]);
    let err = db
        .set_cell_presence(
            &CellPresence {
                cell_id: "".into(),
                ..cell.clone()
            },
            lease,
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidRequest);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !db.cells().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cell did not vanish after its lease expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_volume_without_a_cell_is_placed_once(db: Db) {
    let lease = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "127.0.0.1:1800".into(),
        volume_drivers: vec!["local".into()],
        capacity: Some(CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        }),
        ..Default::default()
    };
    db.set_cell_presence(&cell, lease).await.unwrap();
    let min = lattice_specs::volume::MIN_SIZE;

    // Asked for no cell: recorded PENDING without one, for the brain to place.
    let v = db.create_volume("data", min, "").await.unwrap();
    assert_eq!(
        (v.cell_id.as_str(), v.state()),
        ("", volume::State::Pending)
    );
    let placed = db.place_volume("data", "cell-1").await.unwrap();
    assert_eq!(placed.cell_id, "cell-1");
    assert_eq!(db.volume("data").await.unwrap().cell_id, "cell-1");
    let again = db.place_volume("data", "cell-2").await.unwrap_err();
    assert_eq!(again.name(), ErrorName::VolumeAlreadyPlaced);
    assert_eq!(db.volume("data").await.unwrap().cell_id, "cell-1");

    // Asked for a cell: it has it from the start.
    let v = db.create_volume("logs", min, "cell-1").await.unwrap();
    assert_eq!(v.cell_id, "cell-1");
    let err = db.place_volume("logs", "cell-1").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeAlreadyPlaced);
    let err = db.place_volume("gone", "cell-1").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeNotFound);

    // A volume no cell was given goes at once when removed: no cell made it.
    db.create_volume("tmp", min, "").await.unwrap();
    db.remove_volume("tmp").await.unwrap();
    let err = db.volume("tmp").await.unwrap_err();
    assert_eq!(err.name(), ErrorName::VolumeNotFound);
}

async fn locks_have_one_holder_and_fencing_revisions(db: Db) {
    let l1 = db.grant_lease(Duration::from_secs(1)).await.unwrap();
    let l2 = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    let a = db.acquire_lock("brain", "brain-a", l1).await.unwrap();
    let b = db.acquire_lock("brain", "brain-b", l2).await.unwrap();
    assert!(a.acquired && !b.acquired);
    assert_eq!(b.owner, "brain-a");
    assert!(
        db.acquire_lock("brain", "brain-a", l1)
            .await
            .unwrap()
            .acquired,
        "re-acquiring is idempotent"
    );
    // brain-a stops renewing: its lease expires and brain-b takes over with a higher fencing revision.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let b2 = loop {
        let s = db.acquire_lock("brain", "brain-b", l2).await.unwrap();
        if s.acquired {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "lock never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(b2.revision > a.revision);
    db.release_lock("brain", l1).await.unwrap();
    assert!(
        db.acquire_lock("brain", "brain-b", l2)
            .await
            .unwrap()
            .acquired,
        "releasing with the wrong lease does nothing"
    );
    db.release_lock("brain", l2).await.unwrap();
    let l3 = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(
        db.acquire_lock("brain", "brain-c", l3)
            .await
            .unwrap()
            .acquired
    );
}

async fn a_fenced_writer_stops_once_its_lock_changes_hands(db: Db) {
    db.desire_lrp(lrp("fence", 2)).await.unwrap();
    let l1 = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    let held = db.acquire_lock("brain", "brain-a", l1).await.unwrap();
    let leader = db.fenced("brain", held.revision);
    leader.remove_actual_lrp("fence", 1, None).await.unwrap();
    leader.create_actual_lrp("fence", 1).await.unwrap();
    assert_eq!(
        leader.unclaim_actual_lrp("fence", 1).await.unwrap().state(),
        State::Unclaimed
    );
    // brain-a loses the lock; brain-b takes it.
    db.revoke_lease(l1).await.unwrap();
    let l2 = db.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(
        db.acquire_lock("brain", "brain-b", l2)
            .await
            .unwrap()
            .acquired
    );
    let err = leader
        .fail_actual_lrp("fence", 0, "stale decision")
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Fenced { .. }), "{err:?}");
    assert_eq!(err.name(), ErrorName::LockLost);
    assert!(
        db.actual_lrps("", "", "fence", Some(0)).await.unwrap()[0]
            .placement_error
            .is_empty(),
        "the fenced write changed nothing"
    );
    let err = leader
        .desire_task("fenced-task", "d", task_definition("/bin/true"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), ErrorName::LockLost);
    assert_eq!(
        db.task("fenced-task").await.unwrap_err().name(),
        ErrorName::TaskNotFound
    );
    assert_eq!(
        db.create_actual_lrp("fence", 2).await.unwrap_err().name(),
        ErrorName::ActualLRPIndexNotFound,
        "only desired indices"
    );
    assert_eq!(
        db.create_actual_lrp("nope", 0).await.unwrap_err().name(),
        ErrorName::DesiredLRPNotFound
    );
}

async fn a_running_instance_on_a_lost_cell_becomes_suspect(db: Db) {
    use lattice_specs::models::actual_lrp::Presence;
    db.desire_lrp(lrp("sus", 1)).await.unwrap();
    let me = instance_key("i-1", "lost-cell");
    assert_eq!(
        db.suspect_actual_lrp("sus", 0).await.unwrap_err().name(),
        ErrorName::InvalidStateTransition,
        "only RUNNING instances"
    );
    db.claim_actual_lrp("sus", 0, &me, 1).await.unwrap();
    db.start_actual_lrp("sus", 0, &me, ActualLrpNetInfo::default())
        .await
        .unwrap();
    let fresh = db.suspect_actual_lrp("sus", 0).await.unwrap();
    assert_eq!(
        (fresh.state(), fresh.presence()),
        (State::Unclaimed, Presence::Ordinary)
    );
    let all = db.actual_lrps("", "", "sus", Some(0)).await.unwrap();
    assert_eq!(all.len(), 2);
    let suspect = all
        .iter()
        .find(|a| a.presence() == Presence::Suspect)
        .unwrap();
    assert_eq!(
        (suspect.state(), suspect.instance_key.as_ref()),
        (State::Running, Some(&me))
    );
    db.remove_suspect_actual_lrp("sus", 0).await.unwrap();
    assert_eq!(db.actual_lrps("", "", "sus", None).await.unwrap().len(), 1);
    assert_eq!(
        db.remove_suspect_actual_lrp("sus", 0)
            .await
            .unwrap_err()
            .name(),
        ErrorName::ActualLRPIndexNotFound
    );
    // Removing the LRP removes suspect copies too.
    let other = instance_key("i-2", "cell-2");
    db.claim_actual_lrp("sus", 0, &other, 1).await.unwrap();
    db.start_actual_lrp("sus", 0, &other, ActualLrpNetInfo::default())
        .await
        .unwrap();
    db.suspect_actual_lrp("sus", 0).await.unwrap();
    db.remove_desired_lrp("sus").await.unwrap();
    assert!(db
        .actual_lrps("", "", "sus", None)
        .await
        .unwrap()
        .is_empty());
}

async fn an_evacuating_instance_serves_until_its_replacement_runs(db: Db) {
    use lattice_bbs::db::KeepContainer;
    use lattice_specs::models::actual_lrp::Presence;
    let net = |a: &str| ActualLrpNetInfo {
        address: a.into(),
        ..Default::default()
    };
    let (me, other, replacement) = (
        instance_key("i-1", "draining"),
        instance_key("i-2", "draining-too"),
        instance_key("i-3", "fresh"),
    );
    db.desire_lrp(lrp("ev", 1)).await.unwrap();
    db.claim_actual_lrp("ev", 0, &me, 1).await.unwrap();
    db.start_actual_lrp("ev", 0, &me, net("10.0.0.1"))
        .await
        .unwrap();
    for _ in 0..2 {
        // (a retried call changes nothing)
        assert_eq!(
            db.evacuate_running("ev", 0, &me, net("10.0.0.1"))
                .await
                .unwrap(),
            KeepContainer(true)
        );
    }
    let all = db.actual_lrps("", "", "ev", Some(0)).await.unwrap();
    assert_eq!(all.len(), 2);
    let copy = all
        .iter()
        .find(|a| a.presence() == Presence::Evacuating)
        .unwrap();
    assert_eq!(
        (copy.state(), copy.instance_key.as_ref()),
        (State::Running, Some(&me))
    );
    let ordinary = all
        .iter()
        .find(|a| a.presence() == Presence::Ordinary)
        .unwrap();
    assert_eq!(ordinary.state(), State::Unclaimed, "re-placed");
    assert_eq!(
        db.evacuate_running("ev", 0, &other, net("10.0.0.2"))
            .await
            .unwrap_err()
            .name(),
        ErrorName::InvalidStateTransition,
        "one evacuating copy at a time"
    );
    db.claim_actual_lrp("ev", 0, &replacement, 1).await.unwrap();
    db.start_actual_lrp("ev", 0, &replacement, net("10.0.0.3"))
        .await
        .unwrap();
    assert_eq!(
        db.evacuate_running("ev", 0, &me, net("10.0.0.1"))
            .await
            .unwrap(),
        KeepContainer(false),
        "the replacement runs: stop"
    );
    let all = db.actual_lrps("", "", "ev", Some(0)).await.unwrap();
    assert_eq!(all.len(), 1, "the evacuating copy is gone");
    assert_eq!(all[0].instance_key.as_ref(), Some(&replacement));

    // A claim on a draining cell is given back.
    db.desire_lrp(lrp("ev-claimed", 1)).await.unwrap();
    db.claim_actual_lrp("ev-claimed", 0, &me, 1).await.unwrap();
    assert_eq!(
        db.evacuate_claimed("ev-claimed", 0, &me).await.unwrap(),
        KeepContainer(false)
    );
    let all = db.actual_lrps("", "", "ev-claimed", Some(0)).await.unwrap();
    assert_eq!(
        (all[0].state(), all[0].instance_key.as_ref()),
        (State::Unclaimed, None)
    );
}

async fn events_follow_every_change(db: Db) {
    let hub = EventHub::start(db.store().clone()).await;
    let mut rx = hub.subscribe();
    db.desire_lrp(lrp("ev", 1)).await.unwrap();
    let me = instance_key("i", "c");
    db.claim_actual_lrp("ev", 0, &me, 1).await.unwrap();
    db.start_actual_lrp("ev", 0, &me, ActualLrpNetInfo::default())
        .await
        .unwrap();
    db.crash_actual_lrp("ev", 0, &me, "boom").await.unwrap();
    db.desire_task("evt", "d", task_definition("/bin/true"))
        .await
        .unwrap();
    db.remove_desired_lrp("ev").await.unwrap();
    let lease = db.grant_lease(Duration::from_secs(1)).await.unwrap();
    let cell = CellPresence {
        cell_id: "c1".into(),
        rep_address: "x:1".into(),
        capacity: Some(Default::default()),
        ..Default::default()
    };
    db.set_cell_presence(&cell, lease).await.unwrap();
    let want = [
        "desired_lrp_created",
        "actual_lrp_created",
        "actual_lrp_changed",
        "actual_lrp_changed",
        "actual_lrp_crashed",
        "actual_lrp_changed",
        "task_created",
        "desired_lrp_removed",
        "actual_lrp_removed",
        "cell_appeared",
        "cell_disappeared",
    ];
    let mut got = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < want.len() {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only got {got:?}"))
            .unwrap();
        if let Some(Kind::ActualLrpCrashed(c)) = &e.event {
            assert_eq!(c.actual_lrp.as_ref().unwrap().crash_reason, "boom");
        }
        got.push(lattice_bbs::events::event_name(&e));
    }
    assert_eq!(got, want);
}

lattice_bbs::both_stores!(|store| Db::new(store);
    desire_creates_unclaimed_instances_and_refuses_duplicates,
    invalid_models_are_refused_and_nothing_is_written,
    racing_claimers_exactly_one_wins,
    claim_start_crash_and_restart,
    start_recreates_a_lost_record_of_a_desired_index,
    scaling_creates_and_retires_indices,
    task_lifecycle_and_racing_starters,
    cells_live_as_long_as_their_lease,
    a_volume_without_a_cell_is_placed_once,
    locks_have_one_holder_and_fencing_revisions,
    a_fenced_writer_stops_once_its_lock_changes_hands,
    a_running_instance_on_a_lost_cell_becomes_suspect,
    an_evacuating_instance_serves_until_its_replacement_runs,
    events_follow_every_change);
