//! The deployer over the real BBS database (`FakeBbs`): the plan's steps are
//! ones the BBS accepts, and an update or a failed one ends as it should.

use std::time::{Duration, Instant};

use lattice_bbs_client::fake::FakeBbs;
use lattice_bbs_client::{ActualLrpFilter, CellWrites, Reads};
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::deployment::State as DeploymentState;
use lattice_specs::models::{ActualLrp, ActualLrpNetInfo, EnvironmentVariable, RolloutStrategy};

use super::*;

async fn records(bbs: &FakeBbs) -> Vec<ActualLrp> {
    bbs.actual_lrps(&ActualLrpFilter::default()).await.unwrap()
}

/// A cell takes every UNCLAIMED instance of `web`: it claims it for the app's
/// current generation and starts it, or crashes it when that is `crashing`.
async fn cells(bbs: &FakeBbs, crashing: i64) {
    let generation = bbs.desired_lrp("web").await.unwrap().generation;
    for a in records(bbs).await {
        if a.state() != State::Unclaimed || a.presence() != Presence::Ordinary {
            continue;
        }
        let index = a.key.unwrap().index;
        let ik = lattice_specs::testing::instance_key(&uuid::Uuid::new_v4().to_string(), "c1");
        bbs.claim_actual_lrp("web", index, &ik, generation)
            .await
            .unwrap();
        if generation == crashing {
            bbs.crash_actual_lrp("web", index, &ik, "exited with status 7")
                .await
                .unwrap();
        } else {
            let net = ActualLrpNetInfo::default();
            bbs.start_actual_lrp("web", index, &ik, &net).await.unwrap();
        }
    }
}

/// `web` with two instances running generation 1, then updated to generation 2.
async fn updated_app() -> FakeBbs {
    let bbs = FakeBbs::start().await;
    let d = lattice_specs::testing::desired_lrp("web", 2);
    bbs.db().desire_lrp(d.clone()).await.unwrap();
    cells(&bbs, 0).await;
    let mut next = d;
    next.env.push(EnvironmentVariable {
        name: "VERSION".into(),
        value: "2".into(),
    });
    let strategy = RolloutStrategy {
        max_surge: 1,
        max_unavailable: 0,
        canary: 0,
    };
    let (app, made) = bbs
        .db()
        .create_generation("web", next, strategy, "test")
        .await
        .unwrap();
    assert!(made && app.generation == 2, "{app:?}");
    bbs
}

/// Passes (cells acting between them) until `web`'s deployment is `end`.
async fn until(bbs: &FakeBbs, deployer: &mut Deployer, end: DeploymentState, crashing: i64) {
    let started = Instant::now();
    loop {
        deployer.run_once(false).await.unwrap();
        cells(bbs, crashing).await;
        let d = bbs.desired_lrp("web").await.unwrap();
        if d.deployment.as_ref().unwrap().state() == end {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not {end:?}: {d:?}\n{:?}",
            records(bbs).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_update_moves_every_instance_to_the_new_generation() {
    let bbs = updated_app().await;
    let mut deployer = Deployer::new(Arc::new(BbsRollouts(bbs.leader("brain").await)));
    until(&bbs, &mut deployer, DeploymentState::Succeeded, 0).await;
    let all = records(&bbs).await;
    assert_eq!(all.len(), 2, "no replaced copy left: {all:?}");
    for a in all {
        assert_eq!((a.state(), a.generation), (State::Running, 2), "{a:?}");
    }
    let d = bbs.desired_lrp("web").await.unwrap();
    assert_eq!(d.deployment.unwrap().updated_instances, 2);
}

#[tokio::test]
async fn a_crashing_generation_is_rolled_back_and_ends_failed() {
    let bbs = updated_app().await;
    let instance_of = |all: &[ActualLrp], index: i32| {
        let a = all.iter().find(|a| a.key.as_ref().unwrap().index == index);
        a.unwrap().instance_key.clone().unwrap().instance_guid
    };
    let second = instance_of(&records(&bbs).await, 1);
    let mut deployer = Deployer::new(Arc::new(BbsRollouts(bbs.leader("brain").await)));
    until(&bbs, &mut deployer, DeploymentState::Failed, 2).await;
    let d = bbs.desired_lrp("web").await.unwrap();
    assert_eq!(d.generation, 1);
    let dep = d.deployment.unwrap();
    assert_eq!(dep.reason, "instance 0 crashed: exited with status 7");
    let all = records(&bbs).await;
    assert_eq!(all.len(), 2, "{all:?}");
    for a in &all {
        assert_eq!((a.state(), a.generation), (State::Running, 1), "{a:?}");
    }
    assert_eq!(
        instance_of(&all, 1),
        second,
        "the second instance was never replaced: the first crash stopped the update"
    );
}
