use std::sync::atomic::Ordering;

use super::fake::FakeRollouts;
use super::*;
use crate::rollout::DRAIN_DELAY;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::RolloutStrategy;
use lattice_specs::testing::{actual_lrp, desired_lrp};

const SEC: i64 = 1_000_000_000;
const START: i64 = 1_000 * SEC;
/// How far the fake clock moves between two passes.
const PASS: i64 = SEC / 4;

/// `web` (generation 1 on every instance) moving to generation 2 with `strategy`.
fn world(instances: i32, strategy: RolloutStrategy) -> Arc<FakeRollouts> {
    let mut d = desired_lrp("web", instances);
    d.generation = 2;
    let mut dep = Deployment {
        target_generation: 2,
        previous_generation: 1,
        strategy: Some(strategy),
        started_at: START,
        ..Default::default()
    };
    dep.set_state(DeploymentState::Rolling);
    d.deployment = Some(dep);
    let mut idle = desired_lrp("idle", 1);
    idle.generation = 1;
    let mut actuals: Vec<ActualLrp> = (0..instances)
        .map(|i| {
            let mut a = actual_lrp("web", i, State::Running, "cell-1", START);
            a.generation = 1;
            a
        })
        .collect();
    actuals.push(actual_lrp("idle", 0, State::Running, "cell-1", START));
    FakeRollouts::new(vec![d, idle], actuals, START)
}

fn deployer(fake: &Arc<FakeRollouts>) -> Deployer {
    let clock = fake.clock.clone();
    Deployer::with_clock(fake.clone(), Arc::new(move || clock.load(Ordering::SeqCst)))
}

fn surge(n: i32) -> RolloutStrategy {
    RolloutStrategy {
        max_surge: n,
        max_unavailable: 0,
        canary: 0,
    }
}

/// Passes (cells starting what was placed with `start`) until `web`'s
/// deployment reaches `end`, at most `passes` of them; the passes made.
async fn until(
    fake: &Arc<FakeRollouts>,
    d: &mut Deployer,
    end: DeploymentState,
    start: impl Fn(i64) -> std::result::Result<(), String>,
    passes: usize,
) -> usize {
    for pass in 1..=passes {
        d.run_once(false).await.unwrap();
        fake.place(&start);
        fake.advance(PASS);
        if fake.deployment("web").state() == end {
            return pass;
        }
    }
    panic!(
        "not {end:?} after {passes} passes: {:?}\n{:?}",
        fake.deployment("web"),
        fake.calls()
    );
}

fn runs(_: i64) -> std::result::Result<(), String> {
    Ok(())
}

fn position(calls: &[(String, i64)], call: &str) -> (usize, i64) {
    let at = calls.iter().position(|(c, _)| c == call);
    let at = at.unwrap_or_else(|| panic!("no {call} in {calls:?}"));
    (at, calls[at].1)
}

#[tokio::test]
async fn a_rolling_update_keeps_every_index_serving_and_drains_before_removing() {
    let fake = world(3, surge(1));
    let mut d = deployer(&fake);
    let before = m::DEPLOYMENTS.with_label_values(&["succeeded"]).get();
    until(&fake, &mut d, DeploymentState::Succeeded, runs, 100).await;

    let w = fake.world.lock().unwrap();
    assert_eq!(
        w.min_serving,
        Some(3),
        "an index went without a serving instance"
    );
    for i in 0..3 {
        let (replaced, _) = position(&w.calls, &format!("replace-surge web {i}"));
        let (drained, drained_at) = position(&w.calls, &format!("drain web {i}"));
        let (removed, removed_at) = position(&w.calls, &format!("remove web {i}"));
        assert!(replaced < drained && drained < removed, "{:?}", w.calls);
        assert!(removed_at - drained_at >= DRAIN_DELAY.as_nanos() as i64);
    }
    let web: Vec<&ActualLrp> = w
        .actuals
        .iter()
        .filter(|a| a.key.as_ref().unwrap().process_guid == "web")
        .collect();
    assert_eq!(web.len(), 3, "no copy left: {web:?}");
    assert!(web
        .iter()
        .all(|a| a.generation == 2 && a.presence() == Presence::Ordinary));
    let dep = w.desired[0].deployment.clone().unwrap();
    assert_eq!(dep.updated_instances, 3);
    assert!(
        !w.calls.iter().any(|(c, _)| c.contains("idle")),
        "an app with no deployment is left alone"
    );
    assert!(m::DEPLOYMENTS.with_label_values(&["succeeded"]).get() > before);
}

#[tokio::test]
async fn an_ended_deployment_is_dropped_from_the_active_apps() {
    let fake = world(1, surge(1));
    let mut d = deployer(&fake);
    until(&fake, &mut d, DeploymentState::Succeeded, runs, 100).await;
    assert_eq!(d.active().len(), 1);
    d.run_once(false).await.unwrap();
    assert!(d.active().is_empty());
}

#[tokio::test]
async fn a_crashing_generation_rolls_back_to_the_very_instances_it_replaced() {
    let fake = world(3, surge(1));
    let mut d = deployer(&fake);
    let crashes = |generation: i64| match generation {
        2 => Err("exited with status 3".to_string()),
        _ => Ok(()),
    };
    until(&fake, &mut d, DeploymentState::Failed, crashes, 100).await;

    let dep = fake.deployment("web");
    assert_eq!(dep.reason, "instance 0 crashed: exited with status 3");
    assert!(dep.failed);
    let w = fake.world.lock().unwrap();
    assert!(
        w.calls.iter().any(|(c, _)| c == "restore web 0"),
        "{:?}",
        w.calls
    );
    let zero = w
        .actuals
        .iter()
        .find(|a| a.key.as_ref().unwrap().index == 0 && a.presence() == Presence::Ordinary)
        .unwrap();
    assert_eq!(
        zero.instance_key.as_ref().unwrap().instance_guid,
        "web-0",
        "the old instance itself came back"
    );
    assert_eq!(w.min_serving, Some(3));
    assert!(
        !w.calls
            .iter()
            .any(|(c, _)| c.starts_with("replace") && c.ends_with(" 1")),
        "nothing more was replaced once the first new instance crashed: {:?}",
        w.calls
    );
}

#[tokio::test]
async fn a_canary_pauses_until_promoted_then_completes() {
    let fake = world(
        3,
        RolloutStrategy {
            max_surge: 1,
            max_unavailable: 0,
            canary: 1,
        },
    );
    let mut d = deployer(&fake);
    until(&fake, &mut d, DeploymentState::Paused, runs, 50).await;
    let paused_calls = fake.calls().len();
    for _ in 0..10 {
        d.run_once(false).await.unwrap();
        fake.advance(PASS);
    }
    assert_eq!(
        fake.calls().len(),
        paused_calls,
        "nothing moves while paused"
    );
    {
        let w = fake.world.lock().unwrap();
        let copies = w
            .actuals
            .iter()
            .filter(|a| a.presence() == Presence::Replaced && !a.draining)
            .count();
        assert_eq!(copies, 1, "the canary's old instance keeps serving");
    }
    {
        let mut w = fake.world.lock().unwrap();
        let dep = w.desired[0].deployment.as_mut().unwrap();
        dep.promoted = true;
        dep.set_state(DeploymentState::Rolling);
    }
    until(&fake, &mut d, DeploymentState::Succeeded, runs, 100).await;
    assert_eq!(fake.world.lock().unwrap().min_serving, Some(3));
}

#[tokio::test]
async fn a_brain_that_lost_its_lock_stops_at_once() {
    let fake = world(2, surge(1));
    fake.world.lock().unwrap().lock_lost = true;
    let mut d = deployer(&fake);
    let r = d.run_once(true).await;
    assert!(matches!(r, Err(BrainError::LockLost)), "{r:?}");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn a_step_refused_because_state_moved_on_is_tried_again_next_pass() {
    let fake = world(1, surge(1));
    fake.world.lock().unwrap().refuse_next_replace = true;
    let mut d = deployer(&fake);
    d.run_once(true).await.expect("a refusal is no error");
    assert!(fake.calls().is_empty());
    d.run_once(false).await.unwrap();
    assert_eq!(fake.calls(), vec!["replace-surge web 0".to_string()]);
}

#[tokio::test]
async fn a_deployment_started_later_is_found_on_a_rescan() {
    let fake = world(1, surge(1));
    let mut d = deployer(&fake);
    {
        let mut w = fake.world.lock().unwrap();
        w.desired[0].deployment = None;
    }
    d.run_once(true).await.unwrap();
    assert!(d.active().is_empty());
    let dep = {
        let mut w = fake.world.lock().unwrap();
        let mut dep = Deployment {
            target_generation: 2,
            previous_generation: 1,
            started_at: START,
            ..Default::default()
        };
        dep.set_state(DeploymentState::Rolling);
        w.desired[0].deployment = Some(dep.clone());
        dep
    };
    d.run_once(false).await.unwrap();
    assert!(d.active().is_empty(), "not looked for without a rescan");
    d.run_once(true).await.unwrap();
    assert_eq!(d.active().iter().collect::<Vec<_>>(), vec!["web"]);
    assert_eq!(fake.deployment("web"), dep, "nothing runs yet: no progress");
    assert_eq!(fake.calls(), vec!["replace-surge web 0".to_string()]);
}
