//! Extension: the JSON of rolling updates (`ltc update`, `history`, `rollback`,
//! `promote`, `ltc apply`).
//!
//! - `POST /v1/desired_lrps/:guid/generations` takes a [`GenerationRequest`]: the
//!   app's whole new definition and how to roll it out. A change to anything but
//!   `instances`, `routes` and `annotation` makes a new generation and starts a
//!   deployment (201); a definition that differs only in those fields is applied in
//!   place like `PUT` (200); an identical one changes nothing (200). The answer is
//!   the app's [`super::DesiredLrpResponse`] either way.
//! - `GET /v1/desired_lrps/:guid/generations`: the kept history,
//!   [`GenerationResponse`]s oldest first.
//! - `POST /v1/desired_lrps/:guid/rollback` takes a [`RollbackRequest`];
//!   `POST /v1/desired_lrps/:guid/promote` takes no body. Both answer the app's
//!   `DesiredLrpResponse`.

use serde::{Deserialize, Serialize};

use super::DesiredLrpCreateRequest;
use crate::models::{deployment, Deployment, DesiredLrpGeneration, RolloutStrategy};

/// How instances are replaced. Defaults: one new instance at a time beside the
/// old ones (`max_surge` 1), none missing (`max_unavailable` 0), no canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StrategyJson {
    pub max_surge: i32,
    pub max_unavailable: i32,
    pub canary: i32,
}

impl Default for StrategyJson {
    fn default() -> Self {
        StrategyJson {
            max_surge: 1,
            max_unavailable: 0,
            canary: 0,
        }
    }
}

impl From<StrategyJson> for RolloutStrategy {
    fn from(s: StrategyJson) -> RolloutStrategy {
        RolloutStrategy {
            max_surge: s.max_surge,
            max_unavailable: s.max_unavailable,
            canary: s.canary,
        }
    }
}

impl From<RolloutStrategy> for StrategyJson {
    fn from(s: RolloutStrategy) -> StrategyJson {
        StrategyJson {
            max_surge: s.max_surge,
            max_unavailable: s.max_unavailable,
            canary: s.canary,
        }
    }
}

/// `POST /v1/desired_lrps/:guid/generations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationRequest {
    /// The whole definition, as `POST /v1/desired_lrps` takes it; its
    /// `process_guid` is the path's (or empty).
    pub definition: DesiredLrpCreateRequest,
    pub strategy: StrategyJson,
}

/// `POST /v1/desired_lrps/:guid/rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackRequest {
    /// The generation to go back to (absent or 0: the last one that ran healthy).
    pub generation: i64,
}

/// The state of a deployment as the API names it.
pub fn deployment_state_name(s: deployment::State) -> &'static str {
    match s {
        deployment::State::None => "none",
        deployment::State::Rolling => "rolling",
        deployment::State::Paused => "paused",
        deployment::State::RollingBack => "rolling_back",
        deployment::State::Succeeded => "succeeded",
        deployment::State::Failed => "failed",
        deployment::State::RolledBack => "rolled_back",
    }
}

/// A deployment in `DesiredLrpResponse.deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DeploymentJson {
    /// none, rolling, paused, rolling_back, succeeded, failed or rolled_back.
    pub state: String,
    pub target_generation: i64,
    pub previous_generation: i64,
    pub strategy: StrategyJson,
    pub promoted: bool,
    pub failed: bool,
    pub reason: String,
    /// Unix nanoseconds.
    pub started_at: i64,
    pub updated_at: i64,
    pub updated_instances: i32,
    pub requested_by: String,
}

impl DeploymentJson {
    /// Whether the deployment still moves instances (a second update must wait).
    pub fn in_progress(&self) -> bool {
        matches!(self.state.as_str(), "rolling" | "paused" | "rolling_back")
    }
}

impl From<Deployment> for DeploymentJson {
    fn from(d: Deployment) -> DeploymentJson {
        DeploymentJson {
            state: deployment_state_name(d.state()).to_string(),
            target_generation: d.target_generation,
            previous_generation: d.previous_generation,
            strategy: d.strategy.unwrap_or_default().into(),
            promoted: d.promoted,
            failed: d.failed,
            reason: d.reason,
            started_at: d.started_at,
            updated_at: d.updated_at,
            updated_instances: d.updated_instances,
            requested_by: d.requested_by,
        }
    }
}

/// One entry of `GET /v1/desired_lrps/:guid/generations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GenerationResponse {
    pub generation: i64,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub created_by: String,
    /// current, superseded, failed or rolled back.
    pub status: String,
    pub reason: String,
    pub definition: DesiredLrpCreateRequest,
}

impl From<DesiredLrpGeneration> for GenerationResponse {
    fn from(g: DesiredLrpGeneration) -> GenerationResponse {
        GenerationResponse {
            generation: g.generation,
            created_at: g.created_at,
            created_by: g.created_by,
            status: g.status,
            reason: g.reason,
            definition: g.definition.map(Into::into).unwrap_or_default(),
        }
    }
}
