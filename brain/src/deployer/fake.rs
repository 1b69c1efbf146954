//! [`FakeRollouts`]: the rollout writes over records in memory, doing what the
//! BBS's design says each one does, and keeping a log of the calls and the
//! fewest instances that ever served an app (each write is checked).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lattice_bbs_client::{BbsError, Result};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::deployment::State as DeploymentState;
use lattice_specs::models::{ActualLrp, Deployment, DesiredLrp};
use tonic::Code;

use super::RolloutBbs;

#[derive(Default)]
pub struct World {
    pub desired: Vec<DesiredLrp>,
    pub actuals: Vec<ActualLrp>,
    /// Each write as "op guid index" (or "op guid"), with the clock when made.
    pub calls: Vec<(String, i64)>,
    /// Every write is refused with `LockLost`.
    pub lock_lost: bool,
    /// The next replacement is refused as if the record had moved on.
    pub refuse_next_replace: bool,
    /// The fewest indices of an app with a serving instance after any write.
    pub min_serving: Option<usize>,
}

pub struct FakeRollouts {
    pub world: Mutex<World>,
    pub clock: Arc<AtomicI64>,
}

fn refused(code: Code, name: Option<ErrorName>, message: &str) -> BbsError {
    BbsError {
        name,
        code,
        message: message.into(),
    }
}

fn moved_on(message: &str) -> BbsError {
    refused(Code::FailedPrecondition, None, message)
}

fn index_of(a: &ActualLrp) -> (String, i32) {
    let k = a.key.clone().unwrap_or_default();
    (k.process_guid, k.index)
}

fn serving(w: &World, d: &DesiredLrp) -> usize {
    (0..d.instances)
        .filter(|i| {
            w.actuals.iter().any(|a| {
                index_of(a) == (d.process_guid.clone(), *i)
                    && a.state() == State::Running
                    && !a.draining
                    && matches!(a.presence(), Presence::Ordinary | Presence::Replaced)
            })
        })
        .count()
}

impl FakeRollouts {
    pub fn new(desired: Vec<DesiredLrp>, actuals: Vec<ActualLrp>, now: i64) -> Arc<FakeRollouts> {
        Arc::new(FakeRollouts {
            world: Mutex::new(World {
                desired,
                actuals,
                ..Default::default()
            }),
            clock: Arc::new(AtomicI64::new(now)),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, nanos: i64) {
        self.clock.fetch_add(nanos, Ordering::SeqCst);
    }

    /// A write: refused once the lock is lost; logged; the app's serving count checked after.
    fn write<T>(
        &self,
        call: String,
        guid: &str,
        f: impl FnOnce(&mut World) -> Result<T>,
    ) -> Result<T> {
        let mut w = self.world.lock().unwrap();
        if w.lock_lost {
            return Err(refused(
                Code::FailedPrecondition,
                Some(ErrorName::LockLost),
                "lock lost",
            ));
        }
        let r = f(&mut w)?;
        w.calls.push((call, self.now()));
        if let Some(d) = w.desired.iter().find(|d| d.process_guid == guid).cloned() {
            let n = serving(&w, &d);
            w.min_serving = Some(w.min_serving.map_or(n, |m| m.min(n)));
        }
        Ok(r)
    }

    fn position(w: &World, guid: &str, index: i32, p: Presence) -> Result<usize> {
        w.actuals
            .iter()
            .position(|a| index_of(a) == (guid.to_string(), index) && a.presence() == p)
            .ok_or_else(|| refused(Code::NotFound, None, "no such record"))
    }

    /// The cells run what was placed: every UNCLAIMED ordinary record starts
    /// the app's current generation, as `start` makes it (RUNNING, or CRASHED
    /// with its reason).
    pub fn place(&self, start: impl Fn(i64) -> std::result::Result<(), String>) {
        let now = self.now();
        let mut w = self.world.lock().unwrap();
        let desired = w.desired.clone();
        for a in w.actuals.iter_mut() {
            if a.state() != State::Unclaimed || a.presence() != Presence::Ordinary {
                continue;
            }
            let (guid, index) = index_of(a);
            let Some(d) = desired.iter().find(|d| d.process_guid == guid) else {
                continue;
            };
            a.generation = d.generation;
            a.since = now;
            a.instance_key = Some(lattice_specs::testing::instance_key(
                &format!("{guid}-{index}-g{}", d.generation),
                "cell-1",
            ));
            match start(d.generation) {
                Ok(()) => a.set_state(State::Running),
                Err(reason) => {
                    a.set_state(State::Crashed);
                    a.crash_count += 1;
                    a.crash_reason = reason;
                    a.instance_key = None;
                }
            }
        }
    }

    pub fn deployment(&self, guid: &str) -> Deployment {
        let w = self.world.lock().unwrap();
        let d = w.desired.iter().find(|d| d.process_guid == guid).unwrap();
        d.deployment.clone().unwrap_or_default()
    }

    pub fn calls(&self) -> Vec<String> {
        let w = self.world.lock().unwrap();
        w.calls.iter().map(|(c, _)| c.clone()).collect()
    }
}

#[async_trait]
impl RolloutBbs for FakeRollouts {
    async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>> {
        Ok(self.world.lock().unwrap().desired.clone())
    }
    async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        let w = self.world.lock().unwrap();
        let d = w.desired.iter().find(|d| d.process_guid == process_guid);
        d.cloned()
            .ok_or_else(|| refused(Code::NotFound, None, "no such app"))
    }
    async fn actual_lrps(&self, process_guid: &str) -> Result<Vec<ActualLrp>> {
        let w = self.world.lock().unwrap();
        Ok(w.actuals
            .iter()
            .filter(|a| index_of(a).0 == process_guid)
            .cloned()
            .collect())
    }
    async fn replace_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        surge: bool,
        target: i64,
    ) -> Result<()> {
        let now = self.now();
        let call = format!(
            "replace{} {guid} {index}",
            if surge { "-surge" } else { "" }
        );
        self.write(call, guid, |w| {
            if std::mem::take(&mut w.refuse_next_replace) {
                return Err(moved_on("refused once"));
            }
            let d = w.desired.iter().find(|d| d.process_guid == guid).unwrap();
            let at = Self::position(w, guid, index, Presence::Ordinary)?;
            let o = w.actuals[at].clone();
            if d.generation != target || o.generation == target {
                return Err(moved_on("not an older generation"));
            }
            if surge {
                if o.state() != State::Running
                    || Self::position(w, guid, index, Presence::Replaced).is_ok()
                {
                    return Err(moved_on("cannot surge"));
                }
                let mut copy = o.clone();
                copy.set_presence(Presence::Replaced);
                w.actuals.push(copy);
            }
            let mut fresh = lattice_specs::actual_lrp::new_unclaimed(guid, index, "d", now);
            fresh.key = o.key.clone();
            w.actuals[at] = fresh;
            Ok(())
        })
    }
    async fn drain_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        let now = self.now();
        self.write(format!("drain {guid} {index}"), guid, |w| {
            let at = Self::position(w, guid, index, Presence::Replaced)?;
            w.actuals[at].draining = true;
            w.actuals[at].draining_since = now;
            Ok(())
        })
    }
    async fn remove_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.write(format!("remove {guid} {index}"), guid, |w| {
            let at = Self::position(w, guid, index, Presence::Replaced)?;
            w.actuals.remove(at);
            Ok(())
        })
    }
    async fn restore_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.write(format!("restore {guid} {index}"), guid, |w| {
            let at = Self::position(w, guid, index, Presence::Replaced)?;
            let mut copy = w.actuals.remove(at);
            copy.set_presence(Presence::Ordinary);
            copy.draining = false;
            let ordinary = Self::position(w, guid, index, Presence::Ordinary)?;
            w.actuals[ordinary] = copy;
            Ok(())
        })
    }
    async fn update_deployment(
        &self,
        guid: &str,
        expected: &Deployment,
        new: &Deployment,
    ) -> Result<()> {
        let state = new.state().as_str_name().to_lowercase();
        self.write(format!("deployment {guid} {state}"), guid, |w| {
            let d = w.desired.iter_mut().find(|d| d.process_guid == guid);
            let d = d.ok_or_else(|| refused(Code::NotFound, None, "no such app"))?;
            if d.deployment.as_ref() != Some(expected) {
                return Err(moved_on("the deployment changed"));
            }
            d.deployment = Some(new.clone());
            Ok(())
        })
    }
    async fn roll_back_failed(&self, guid: &str, reason: &str) -> Result<()> {
        let now = self.now();
        self.write(format!("rollback {guid}"), guid, |w| {
            let d = w.desired.iter_mut().find(|d| d.process_guid == guid);
            let d = d.ok_or_else(|| refused(Code::NotFound, None, "no such app"))?;
            let mut dep = d.deployment.clone().unwrap_or_default();
            dep.set_state(DeploymentState::RollingBack);
            dep.target_generation = dep.previous_generation;
            dep.failed = true;
            dep.reason = reason.into();
            dep.updated_at = now;
            d.generation = dep.previous_generation;
            d.deployment = Some(dep);
            Ok(())
        })
    }
}
