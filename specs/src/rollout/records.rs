//! What a rolling update does to the BBS's records, as pure decisions (the BBS
//! reads the records, asks these functions, and writes what they say with
//! compare-and-swap; nothing here does I/O).
//!
//! - Instances: [`replace`] (the old instance keeps serving from a REPLACED copy
//!   while the ordinary record starts over UNCLAIMED for the target generation,
//!   or, without surge, just starts over), [`drain`] (routers drop the copy),
//!   [`restore`] (a rollback puts the copy back as the ordinary record), and
//!   [`owns_copy`] (a cell's remove or crash of its instance applies to the copy).
//! - The app: [`classify`] (unchanged, in place, or a new generation),
//!   [`new_generation`], [`rollback_target`] and [`rollback`], [`promote`],
//!   [`check_deployment_update`], and the kept history ([`history_entry`],
//!   [`trimmed`]).

use std::fmt;

use crate::actual_lrp::{self as alrp, state_name};
use crate::errors::ErrorName;
use crate::models::actual_lrp::{Presence, State};
use crate::models::deployment::State as DState;
use crate::models::{
    ActualLrp, ActualLrpInstanceKey, Deployment, DesiredLrp, DesiredLrpGeneration,
    DesiredLrpUpdate, RolloutStrategy,
};
use crate::receptor::rollout::deployment_state_name;
use crate::validation::ValidationErrors;

/// How many generations an app's history keeps (the newest ones).
pub const HISTORY_KEPT: usize = 10;

/// History statuses.
pub const CURRENT: &str = "current";
pub const SUPERSEDED: &str = "superseded";
pub const FAILED: &str = "failed";
pub const ROLLED_BACK: &str = "rolled back";

/// Why a rollout change was refused: the error name and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: ErrorName,
    pub message: String,
}

impl Refusal {
    fn new(name: ErrorName, message: impl Into<String>) -> Refusal {
        Refusal {
            name,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// Is deployment `d` still moving instances (a new generation must wait)?
pub fn in_progress(d: Option<&Deployment>) -> bool {
    d.is_some_and(|d| {
        matches!(
            d.state(),
            DState::Rolling | DState::Paused | DState::RollingBack
        )
    })
}

fn describe(l: &ActualLrp) -> String {
    let k = l.key.clone().unwrap_or_default();
    format!("instance {}/{}", k.process_guid, k.index)
}

// ------------------------------------------------------------ instances

/// What replacing one instance writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    /// The old instance as it was, to keep under the REPLACED key (surge only).
    pub copy: Option<ActualLrp>,
    /// The ordinary record, a fresh UNCLAIMED one for the target generation.
    pub ordinary: ActualLrp,
}

/// Replace the instance whose ordinary record is `ordinary`, for an app whose
/// definition is at `desired_generation`; the caller (the brain) saw
/// `target_generation`. With `surge` the old instance keeps serving from a
/// REPLACED copy (refused when one is there already: `copy_exists`).
pub fn replace(
    ordinary: &ActualLrp,
    desired_generation: i64,
    target_generation: i64,
    surge: bool,
    copy_exists: bool,
    now: i64,
) -> Result<Replacement, Refusal> {
    let what = describe(ordinary);
    if desired_generation != target_generation {
        return Err(Refusal::new(
            ErrorName::ResourceConflict,
            format!("cannot replace {what} for generation {target_generation}: the app is at generation {desired_generation} now; read it again"),
        ));
    }
    // Any other generation is replaced: an older one rolling forward, a newer
    // one rolling back.
    if ordinary.generation == target_generation {
        return Err(Refusal::new(
            ErrorName::InvalidStateTransition,
            format!("cannot replace {what}: it runs generation {target_generation} already"),
        ));
    }
    let state = ordinary.state();
    let replaceable = if surge {
        state == State::Running
    } else {
        state != State::Unclaimed
    };
    if !replaceable {
        let needs = if surge {
            "a surge replaces a RUNNING instance"
        } else {
            "an UNCLAIMED instance is placed with the target definition anyway"
        };
        return Err(Refusal::new(
            ErrorName::InvalidStateTransition,
            format!(
                "cannot replace {what} in state {}: {needs}",
                state_name(state)
            ),
        ));
    }
    if surge && copy_exists {
        return Err(Refusal::new(
            ErrorName::InvalidStateTransition,
            format!("cannot replace {what} with a surge: a replaced copy of it still serves; drain and remove it first"),
        ));
    }
    let copy = surge.then(|| {
        let mut c = ordinary.clone();
        c.set_presence(Presence::Replaced);
        c
    });
    Ok(Replacement {
        copy,
        ordinary: fresh(ordinary, now),
    })
}

/// A fresh UNCLAIMED ordinary record in place of `l`: no crashes, no reason,
/// generation 0 until a cell claims it.
pub fn fresh(l: &ActualLrp, now: i64) -> ActualLrp {
    let k = l.key.clone().unwrap_or_default();
    alrp::new_unclaimed(&k.process_guid, k.index, &k.domain, now)
}

fn bump(l: &mut ActualLrp) {
    let tag = l.modification_tag.get_or_insert_with(Default::default);
    tag.index = tag.index.wrapping_add(1);
}

/// Mark a REPLACED copy draining (routers and DNS drop it). False: it already was.
pub fn drain(copy: &mut ActualLrp, now: i64) -> bool {
    if copy.draining {
        return false;
    }
    copy.draining = true;
    copy.draining_since = now;
    bump(copy);
    true
}

/// The ordinary record a REPLACED copy becomes when a rollback restores it;
/// refused unless it runs the generation the app rolls back to.
pub fn restore(copy: &ActualLrp, desired_generation: i64) -> Result<ActualLrp, Refusal> {
    if copy.generation != desired_generation {
        return Err(Refusal::new(
            ErrorName::InvalidStateTransition,
            format!(
                "cannot restore the replaced copy of {}: it runs generation {}, the app is at generation {desired_generation}",
                describe(copy),
                copy.generation
            ),
        ));
    }
    let mut l = copy.clone();
    l.set_presence(Presence::Ordinary);
    l.draining = false;
    l.draining_since = 0;
    bump(&mut l);
    Ok(l)
}

/// Is the REPLACED copy `copy` instance `ik`'s (so that its cell's remove or
/// crash of that instance removes the copy)?
pub fn owns_copy(copy: Option<&ActualLrp>, ik: &ActualLrpInstanceKey) -> bool {
    !alrp::instance_key_is_empty(ik) && copy.is_some_and(|c| c.instance_key.as_ref() == Some(ik))
}

// ------------------------------------------------------------ the app

/// What a proposed definition is, against the current one.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The same definition: nothing to do.
    Unchanged,
    /// Only instances, routes or annotation differ: applied in place.
    InPlace(DesiredLrpUpdate),
    /// Anything else differs: a new generation.
    NewGeneration,
}

/// `d` without what changes in place or is bookkeeping.
fn essence(d: &DesiredLrp) -> DesiredLrp {
    DesiredLrp {
        instances: 0,
        routes: Default::default(),
        annotation: String::new(),
        modification_tag: None,
        generation: 0,
        deployment: None,
        ..d.clone()
    }
}

/// Is `proposed` the current definition, an in-place change of it, or a new generation?
pub fn classify(current: &DesiredLrp, proposed: &DesiredLrp) -> Change {
    if essence(current) != essence(proposed) {
        return Change::NewGeneration;
    }
    let update = DesiredLrpUpdate {
        instances: (proposed.instances != current.instances).then_some(proposed.instances),
        has_routes: proposed.routes != current.routes,
        routes: if proposed.routes != current.routes {
            proposed.routes.clone()
        } else {
            Default::default()
        },
        annotation: (proposed.annotation != current.annotation)
            .then(|| proposed.annotation.clone()),
    };
    if update == DesiredLrpUpdate::default() {
        Change::Unchanged
    } else {
        Change::InPlace(update)
    }
}

/// Checks a rollout strategy for an app of `instances` instances.
pub fn validate_strategy(s: &RolloutStrategy, instances: i32) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    if s.max_surge < 0 {
        e.add("strategy.max_surge", "must be 0 or more");
    }
    if s.max_unavailable < 0 {
        e.add("strategy.max_unavailable", "must be 0 or more");
    }
    if s.max_surge == 0 && s.max_unavailable == 0 {
        e.add(
            "strategy.max_surge",
            "and strategy.max_unavailable cannot both be 0: no instance could be replaced; set --max-surge 1",
        );
    }
    if s.canary < 0 {
        e.add("strategy.canary", "must be 0 or more");
    } else if s.canary > 0 && s.canary >= instances {
        e.add(
            "strategy.canary",
            format!(
                "must be fewer than the app's {instances} instances (a canary replaces only some)"
            ),
        );
    }
    e.into_result()
}

/// What starting a new generation needs besides the proposed definition.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub strategy: RolloutStrategy,
    pub requested_by: String,
    /// The number the new generation gets (one past the highest ever made).
    pub generation: i64,
    pub now: i64,
}

/// The app after a new generation of its definition starts rolling out:
/// refused while another deployment is in progress.
pub fn new_generation(
    current: &DesiredLrp,
    proposed: &DesiredLrp,
    r: &GenerationRequest,
) -> Result<DesiredLrp, Refusal> {
    if in_progress(current.deployment.as_ref()) {
        let d = current.deployment.clone().unwrap_or_default();
        return Err(Refusal::new(
            ErrorName::DeploymentInProgress,
            format!(
                "app {} is {} to generation {}: wait for it to finish, or `ltc rollback {}`",
                current.process_guid,
                deployment_state_name(d.state()).replace('_', " "),
                d.target_generation,
                current.process_guid
            ),
        ));
    }
    let mut tag = current.modification_tag.clone().unwrap_or_default();
    tag.index += 1;
    Ok(DesiredLrp {
        modification_tag: Some(tag),
        generation: r.generation,
        deployment: Some(Deployment {
            state: DState::Rolling as i32,
            target_generation: r.generation,
            previous_generation: current.generation.max(1),
            strategy: Some(r.strategy),
            started_at: r.now,
            updated_at: r.now,
            requested_by: r.requested_by.clone(),
            ..Default::default()
        }),
        ..proposed.clone()
    })
}

/// The generation a rollback goes to: `requested`, else the deployment's
/// previous one; refused when that is the app's own generation or there is none.
pub fn rollback_target(current: &DesiredLrp, requested: i64) -> Result<i64, Refusal> {
    let guid = &current.process_guid;
    let previous = current
        .deployment
        .as_ref()
        .map(|d| d.previous_generation)
        .unwrap_or(0);
    let target = if requested > 0 { requested } else { previous };
    if target <= 0 {
        return Err(Refusal::new(
            ErrorName::NothingToRollBack,
            format!("app {guid} has no earlier generation to roll back to (`ltc history {guid}` lists its generations)"),
        ));
    }
    if target == current.generation {
        return Err(Refusal::new(
            ErrorName::NothingToRollBack,
            format!("app {guid} is at generation {target} already"),
        ));
    }
    Ok(target)
}

/// Why and by whom an app is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackRequest {
    /// The target generation failed (the deployment ends FAILED).
    pub failed: bool,
    pub reason: String,
    pub requested_by: String,
    pub now: i64,
}

/// The app rolled back to `to` (a kept history entry): its definition, with the
/// current instances, routes and annotation (those change in place), and a
/// deployment ROLLING_BACK to it.
pub fn rollback(
    current: &DesiredLrp,
    to: &DesiredLrpGeneration,
    r: &RollbackRequest,
) -> DesiredLrp {
    let old = to.definition.clone().unwrap_or_default();
    let mut tag = current.modification_tag.clone().unwrap_or_default();
    tag.index += 1;
    let strategy = current
        .deployment
        .as_ref()
        .and_then(|d| d.strategy)
        .unwrap_or(RolloutStrategy {
            max_surge: 1,
            max_unavailable: 0,
            canary: 0,
        });
    DesiredLrp {
        process_guid: current.process_guid.clone(),
        instances: current.instances,
        routes: current.routes.clone(),
        annotation: current.annotation.clone(),
        modification_tag: Some(tag),
        generation: to.generation,
        deployment: Some(Deployment {
            state: DState::RollingBack as i32,
            target_generation: to.generation,
            // A failure while rolling back has nowhere further to go.
            previous_generation: to.generation,
            strategy: Some(RolloutStrategy {
                canary: 0,
                ..strategy
            }),
            reason: r.reason.clone(),
            started_at: r.now,
            updated_at: r.now,
            requested_by: r.requested_by.clone(),
            failed: r.failed,
            ..Default::default()
        }),
        ..old
    }
}

/// The history status of the generation a rollback leaves.
pub fn left_status(failed: bool) -> &'static str {
    if failed {
        FAILED
    } else {
        ROLLED_BACK
    }
}

/// Accept the canaries of a PAUSED deployment: it rolls on.
pub fn promote(d: &mut DesiredLrp, now: i64) -> Result<(), Refusal> {
    let guid = d.process_guid.clone();
    match d.deployment.as_mut() {
        Some(dep) if dep.state() == DState::Paused => {
            dep.promoted = true;
            dep.set_state(DState::Rolling);
            dep.updated_at = now;
            let tag = d.modification_tag.get_or_insert_with(Default::default);
            tag.index += 1;
            Ok(())
        }
        other => {
            let state = other
                .map(|dep| deployment_state_name(dep.state()))
                .unwrap_or("none");
            Err(Refusal::new(
                ErrorName::DeploymentNotPaused,
                format!("app {guid} has no canary waiting for a promotion (its deployment is {}); `ltc update APP --canary N` starts one", state.replace('_', " ")),
            ))
        }
    }
}

/// May the brain record `new` over the deployment it read, `expected`? Refused
/// when the deployment changed meanwhile, or `new` moves to another generation
/// (only a new generation or a rollback does).
pub fn check_deployment_update(
    d: &DesiredLrp,
    expected: &Deployment,
    new: &Deployment,
) -> Result<(), Refusal> {
    let held = d.deployment.clone().unwrap_or_default();
    if &held != expected {
        return Err(Refusal::new(
            ErrorName::ResourceConflict,
            format!(
                "the deployment of app {} changed since it was read (it is {} to generation {} now); read it again",
                d.process_guid,
                deployment_state_name(held.state()).replace('_', " "),
                held.target_generation
            ),
        ));
    }
    if new.target_generation != d.generation {
        return Err(Refusal::new(
            ErrorName::InvalidRequest,
            format!(
                "deployment.target_generation must stay {} (the app's generation), not {}",
                d.generation, new.target_generation
            ),
        ));
    }
    Ok(())
}

/// The history entry of `d`'s current definition.
pub fn history_entry(d: &DesiredLrp, created_by: &str, now: i64) -> DesiredLrpGeneration {
    DesiredLrpGeneration {
        generation: d.generation,
        definition: Some(DesiredLrp {
            modification_tag: None,
            deployment: None,
            ..d.clone()
        }),
        created_at: now,
        created_by: created_by.to_string(),
        status: CURRENT.to_string(),
        reason: String::new(),
    }
}

/// The generations to forget of a history holding `kept` (any order): all but
/// the newest [`HISTORY_KEPT`].
pub fn trimmed(kept: &[i64]) -> Vec<i64> {
    let mut all = kept.to_vec();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.into_iter().skip(HISTORY_KEPT).collect()
}

#[cfg(test)]
mod tests;
