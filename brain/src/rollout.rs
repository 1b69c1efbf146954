//! Rolling-update decisions: given one app's DesiredLRP (its target
//! definition and deployment) and its actual LRPs, which records the deployer
//! changes next. A pure function; `deployer` reads the state, asks [`plan`] and
//! makes the BBS calls the [`Step`]s name.
//!
//! Per index, an ordinary record running another generation than the target
//! is replaced: with surge (its RUNNING record is kept serving as a REPLACED
//! copy while a new instance starts) while fewer than `max_surge` copies wait
//! for their new instance, else without (it stops at once) while fewer than
//! `max_unavailable` indices lack a serving instance. Once the new instance at
//! an index is RUNNING at the target, its copy is drained (routers drop it)
//! and, [`DRAIN_DELAY`] later, removed (its cell stops it).
//!
//! A canary deployment replaces only `canary` indices, keeps their copies
//! serving, and pauses once the canaries run; a promotion lets it carry on.
//! A new instance that crashes or does not run within its start timeout fails
//! the deployment ([`Step::Fail`]: the BBS rolls the app back). Rolling back,
//! copies of the generation rolled back to are restored and the rest is
//! replaced as usual. The deployment ends once every index runs the target
//! and no copy is left.

use std::collections::BTreeMap;
use std::time::Duration;

use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::deployment::State as DeploymentState;
use lattice_specs::models::{ActualLrp, Deployment, DesiredLrp};

/// How long a drained copy keeps running (out of the routers) before it is removed.
pub const DRAIN_DELAY: Duration = Duration::from_secs(1);
/// How long a new instance may take to run when its app names no start timeout.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// One change the deployer makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Replace the ordinary record at `index` (`ReplaceActualLRP`).
    Replace { index: i32, surge: bool },
    /// Take the REPLACED copy at `index` out of the routers.
    Drain { index: i32 },
    /// Remove the drained REPLACED copy at `index` (its cell stops it).
    RemoveReplaced { index: i32 },
    /// Put the REPLACED copy at `index` back as the ordinary record (rolling back).
    Restore { index: i32 },
    /// The target generation failed: roll back to the previous one.
    Fail { reason: String },
    /// Record the deployment's progress or end (compare-and-swap on the one read).
    Progress { deployment: Deployment },
}

impl Step {
    /// The step's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Replace { surge: true, .. } => "replace_surge",
            Step::Replace { surge: false, .. } => "replace",
            Step::Drain { .. } => "drain",
            Step::RemoveReplaced { .. } => "remove_replaced",
            Step::Restore { .. } => "restore",
            Step::Fail { .. } => "fail",
            Step::Progress { .. } => "progress",
        }
    }
}

/// Whether `d` has a deployment that still moves instances.
pub fn in_progress(d: &DesiredLrp) -> bool {
    d.deployment.as_ref().is_some_and(|dep| {
        matches!(
            dep.state(),
            DeploymentState::Rolling | DeploymentState::Paused | DeploymentState::RollingBack
        )
    })
}

/// The records at one index.
#[derive(Default, Clone, Copy)]
struct Slot<'a> {
    ordinary: Option<&'a ActualLrp>,
    replaced: Option<&'a ActualLrp>,
}

/// What the plan works with, read once.
struct View<'a> {
    target: i64,
    now: i64,
    dep: &'a Deployment,
    /// Indices below the desired count.
    slots: BTreeMap<i32, Slot<'a>>,
    /// REPLACED copies at any index (those beyond the count are the converger's).
    copies: usize,
    /// Canaries run beside their old copies until a promotion.
    canary_hold: bool,
}

impl View<'_> {
    /// The ordinary record at `s` runs the target and passed its health check.
    fn done(&self, s: &Slot) -> bool {
        s.ordinary
            .is_some_and(|o| o.state() == State::Running && o.generation == self.target)
    }
    /// The ordinary record at `s` runs (or will run, once placed) the target.
    fn fresh(&self, s: &Slot) -> bool {
        s.ordinary
            .is_some_and(|o| o.generation == self.target || o.state() == State::Unclaimed)
    }
    /// Rolling back, the copy `r` runs the generation rolled back to: it goes back.
    fn restorable(&self, r: &ActualLrp) -> bool {
        self.dep.state() == DeploymentState::RollingBack && r.generation == self.target
    }
    fn serving(s: &Slot) -> bool {
        s.ordinary.is_some_and(|o| o.state() == State::Running)
            || s.replaced
                .is_some_and(|r| r.state() == State::Running && !r.draining)
    }
}

/// The steps that move `desired`'s deployment on, given its `actuals` at `now`
/// (Unix ns). Nothing when no deployment is in progress.
pub fn plan(desired: &DesiredLrp, actuals: &[ActualLrp], now: i64) -> Vec<Step> {
    let Some(dep) = desired.deployment.as_ref().filter(|_| in_progress(desired)) else {
        return vec![];
    };
    let state = dep.state();
    let view = view(desired, dep, actuals, now);
    if let Some(reason) = failure(desired, &view) {
        return vec![match state {
            DeploymentState::RollingBack => give_up(dep, reason, now),
            _ => fail(dep, reason, now),
        }];
    }
    let mut steps = vec![];
    if state != DeploymentState::Paused {
        copies(&view, &mut steps);
        replacements(&view, desired, &mut steps);
    }
    if let Some(p) = progress(&view, desired.instances) {
        steps.push(p);
    }
    steps
}

fn view<'a>(
    desired: &DesiredLrp,
    dep: &'a Deployment,
    actuals: &'a [ActualLrp],
    now: i64,
) -> View<'a> {
    let instances = desired
        .instances
        .clamp(0, lattice_specs::validation::MAX_INSTANCES);
    let mut slots: BTreeMap<i32, Slot> = (0..instances).map(|i| (i, Slot::default())).collect();
    let mut copies = 0;
    for a in actuals {
        let index = a.key.as_ref().map_or(-1, |k| k.index);
        if a.presence() == Presence::Replaced {
            copies += 1;
        }
        let Some(slot) = slots.get_mut(&index) else {
            continue;
        };
        match a.presence() {
            Presence::Ordinary => slot.ordinary = Some(a),
            Presence::Replaced => slot.replaced = Some(a),
            Presence::Evacuating | Presence::Suspect => {}
        }
    }
    let canary = dep.strategy.as_ref().map_or(0, |s| s.canary);
    View {
        target: desired.generation,
        now,
        dep,
        slots,
        copies,
        canary_hold: canary > 0 && !dep.promoted && dep.state() != DeploymentState::RollingBack,
    }
}

/// Why the target generation failed, if it did: a new instance crashed, or did
/// not run (or could not be placed) within the start timeout.
fn failure(desired: &DesiredLrp, v: &View) -> Option<String> {
    let timeout = match desired.start_timeout_ms {
        0 => DEFAULT_START_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    for (index, s) in &v.slots {
        let Some(o) = s.ordinary else { continue };
        let at_target = o.generation == v.target;
        // A crash at the target leaves the generation on the record (an old
        // instance restarted after a crash claims the target only later).
        let crashed = at_target
            && (o.state() == State::Crashed
                || (o.state() == State::Unclaimed && o.crash_count > 0));
        if crashed {
            return Some(format!("instance {index} crashed: {}", o.crash_reason));
        }
        let waiting = matches!(o.state(), State::Unclaimed | State::Claimed) && v.fresh(s);
        let waited = v.now.saturating_sub(o.since.max(v.dep.started_at));
        if waiting && waited >= timeout.as_nanos() as i64 {
            let secs = timeout.as_secs_f64();
            return Some(if o.placement_error.is_empty() {
                format!("instance {index} did not start within {secs} s")
            } else {
                format!(
                    "instance {index} could not be placed within {secs} s: {}",
                    o.placement_error
                )
            });
        }
    }
    None
}

/// Roll back to the previous generation; with none to go back to, the
/// deployment just fails.
fn fail(dep: &Deployment, reason: String, now: i64) -> Step {
    if dep.previous_generation > 0 {
        return Step::Fail { reason };
    }
    let mut d = dep.clone();
    d.set_state(DeploymentState::Failed);
    d.failed = true;
    d.reason = reason;
    d.updated_at = now;
    Step::Progress { deployment: d }
}

/// A rollback whose own new instances fail: the deployment ends FAILED (the app
/// stays on the generation rolled back to, its crashes restarted as any app's)
/// rather than rolling back forever; an update or a rollback may follow.
fn give_up(dep: &Deployment, reason: String, now: i64) -> Step {
    let mut d = dep.clone();
    let to = dep.target_generation;
    d.set_state(DeploymentState::Failed);
    d.failed = true;
    d.reason = match dep.reason.as_str() {
        "" => format!("rolling back to generation {to} failed: {reason}"),
        first => format!("{first}; rolling back to generation {to} failed too: {reason}"),
    };
    d.updated_at = now;
    Step::Progress { deployment: d }
}

/// Restore, drain and remove REPLACED copies.
fn copies(v: &View, steps: &mut Vec<Step>) {
    for (&index, s) in &v.slots {
        let Some(r) = s.replaced else { continue };
        let done = v.done(s);
        if v.restorable(r) && !done {
            steps.push(Step::Restore { index });
        } else if s.ordinary.is_some_and(|o| o.state() == State::Running) {
            if v.canary_hold && done {
                continue;
            }
            if !r.draining {
                steps.push(Step::Drain { index });
            } else if v.now.saturating_sub(r.draining_since) >= DRAIN_DELAY.as_nanos() as i64 {
                steps.push(Step::RemoveReplaced { index });
            }
        }
    }
}

/// Replace the ordinary records that run another generation, within the budgets.
fn replacements(v: &View, desired: &DesiredLrp, steps: &mut Vec<Step>) {
    let strategy = desired
        .deployment
        .as_ref()
        .and_then(|d| d.strategy)
        .unwrap_or(lattice_specs::models::RolloutStrategy {
            max_surge: 1,
            max_unavailable: 0,
            canary: 0,
        });
    let (mut max_surge, max_unavailable) = (strategy.max_surge, strategy.max_unavailable);
    if max_surge <= 0 && max_unavailable <= 0 {
        max_surge = 1; // neither budget allows anything: go one at a time
    }
    // Copies waiting for their new instance (a copy being restored waits for nothing).
    let mut in_flight = v
        .slots
        .values()
        .filter(|s| s.replaced.is_some_and(|r| !v.restorable(r)) && !v.done(s))
        .count() as i32;
    let mut unavailable = v.slots.values().filter(|s| !View::serving(s)).count() as i32;
    let mut touched = v
        .slots
        .values()
        .filter(|s| v.fresh(s) || s.replaced.is_some())
        .count() as i32;
    for (&index, s) in &v.slots {
        if v.canary_hold && touched >= strategy.canary {
            return;
        }
        let Some(o) = s.ordinary else { continue };
        if s.replaced.is_some() || v.fresh(s) {
            continue;
        }
        let surge = if o.state() != State::Running {
            false // not serving anyway: no budget needed
        } else if in_flight < max_surge {
            in_flight += 1;
            true
        } else if unavailable < max_unavailable {
            unavailable += 1;
            false
        } else {
            continue;
        };
        touched += 1;
        steps.push(Step::Replace { index, surge });
    }
}

/// The deployment as it now stands, if that changed: instances updated,
/// canaries paused, or the end.
fn progress(v: &View, instances: i32) -> Option<Step> {
    let updated = v.slots.values().filter(|s| v.done(s)).count() as i32;
    let mut d = v.dep.clone();
    d.updated_instances = updated;
    let all_done = updated as usize == v.slots.len();
    let canaries = v.dep.strategy.as_ref().map_or(0, |s| s.canary);
    if all_done && v.copies == 0 {
        d.set_state(match v.dep.state() {
            DeploymentState::RollingBack if v.dep.failed => DeploymentState::Failed,
            DeploymentState::RollingBack => DeploymentState::RolledBack,
            _ => DeploymentState::Succeeded,
        });
    } else if v.dep.state() == DeploymentState::Rolling
        && v.canary_hold
        && updated >= canaries.min(instances.max(0))
    {
        d.set_state(DeploymentState::Paused);
    }
    if d == *v.dep {
        return None;
    }
    d.updated_at = v.now;
    Some(Step::Progress { deployment: d })
}

#[cfg(test)]
mod tests;
