//! An app's generations: the kept history of its definition (the newest
//! [`records::HISTORY_KEPT`], under keys of their own), a new generation that
//! starts a deployment, a rollback to a kept generation, the promotion of a
//! canary deployment, and the deployment's progress as the brain records it.
//! The decisions are `lattice_specs::rollout::records`'; each change of the app
//! and its history is one transaction guarded by the app's revision.

use lattice_specs::errors::ErrorName;
use lattice_specs::models::{Deployment, DesiredLrp, DesiredLrpGeneration, RolloutStrategy};
use lattice_specs::now_nanos;
use lattice_specs::rollout::records::{self, Change};
use lattice_specs::validation::{self, FieldError, ValidationErrors};
use prost::Message;

use super::txn::{decode, Attempts, Write};
use super::{desired_key, generation_key, Db, DbError, Result, GENERATION};
use crate::store::{Compare, Op, Txn};

/// What one change of an app writes: the app, history entries, entries to forget.
struct AppWrite {
    desired: DesiredLrp,
    history: Vec<DesiredLrpGeneration>,
    forget: Vec<i64>,
}

fn invalid(field: &str, message: String) -> DbError {
    DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message,
    }]))
}

fn generation_not_found(guid: &str, generation: i64) -> DbError {
    DbError::NotFound {
        name: ErrorName::GenerationNotFound,
        message: format!(
            "generation {generation} of app {guid} is not kept: `ltc history {guid}` lists the kept ones"
        ),
    }
}

/// To which generation, why and by whom an app is rolled back.
#[derive(Debug, Clone, Copy)]
pub struct Rollback<'a> {
    /// The generation to go back to (0: the deployment's previous one).
    pub generation: i64,
    /// The target generation failed (the deployment ends FAILED).
    pub failed: bool,
    pub reason: &'a str,
    pub requested_by: &'a str,
}

impl Db {
    /// The kept history of app `guid`, oldest first.
    pub async fn generations(&self, guid: &str) -> Result<Vec<DesiredLrpGeneration>> {
        self.desired_lrp(guid).await?;
        self.list(&history_prefix(guid)).await
    }

    /// Read-modify-write app `guid` and its history in one transaction; `f`
    /// sees the app and its history and decides (its error writes nothing).
    async fn rewrite_app<R>(
        &self,
        guid: &str,
        mut f: impl FnMut(&DesiredLrp, &[DesiredLrpGeneration]) -> Result<(AppWrite, R)>,
    ) -> Result<R> {
        let key = desired_key(guid);
        let mut attempts = Attempts::on(&key);
        loop {
            attempts.next()?;
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| DbError::desired_not_found(guid))?;
            let current: DesiredLrp = decode(&kv)?;
            let history: Vec<DesiredLrpGeneration> = self.list(&history_prefix(guid)).await?;
            let (w, out) = f(&current, &history)?;
            let mut txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .then(Op::put(&key, w.desired.encode_to_vec()));
            for g in w
                .history
                .iter()
                .filter(|g| !w.forget.contains(&g.generation))
            {
                txn = txn.then(Op::put(
                    generation_key(guid, g.generation),
                    g.encode_to_vec(),
                ));
            }
            for g in &w.forget {
                txn = txn.then(Op::delete(generation_key(guid, *g)));
            }
            if self.txn(txn).await?.succeeded {
                return Ok(out);
            }
        }
    }

    /// A new definition of app `guid` (`POST …/generations`): unchanged, applied
    /// in place (only instances, routes or annotation differ) or a new
    /// generation that starts a deployment. Returns the app and whether a new
    /// generation was made.
    pub async fn create_generation(
        &self,
        guid: &str,
        mut definition: DesiredLrp,
        strategy: RolloutStrategy,
        requested_by: &str,
    ) -> Result<(DesiredLrp, bool)> {
        if definition.process_guid.is_empty() {
            definition.process_guid = guid.to_string();
        } else if definition.process_guid != guid {
            return Err(invalid(
                "definition.process_guid",
                format!("must be the app's own ({guid}) or empty"),
            ));
        }
        validation::validate_desired_lrp(&definition)?;
        records::validate_strategy(&strategy, definition.instances)?;
        let current = self.desired_lrp(guid).await?;
        if definition.domain != current.domain {
            return Err(invalid(
                "definition.domain",
                format!(
                    "cannot change (it is {}): remove the app and create it again",
                    current.domain
                ),
            ));
        }
        match records::classify(&current, &definition) {
            Change::Unchanged => return Ok((current, false)),
            Change::InPlace(update) => {
                self.update_desired_lrp(guid, update).await?;
                return Ok((self.desired_lrp(guid).await?, false));
            }
            Change::NewGeneration => {}
        }
        self.check_mounts(&definition.volume_mounts).await?;
        self.check_tcp_routes(guid, &definition.routes).await?;
        let now = now_nanos();
        let (before, after) = self
            .rewrite_app(guid, |cur, history| {
                let own = cur.generation.max(1);
                let newest = history.iter().map(|g| g.generation).max().unwrap_or(0);
                let req = records::GenerationRequest {
                    strategy,
                    requested_by: requested_by.to_string(),
                    generation: newest.max(own) + 1,
                    now,
                };
                let new = records::new_generation(cur, &definition, &req)?;
                let mut puts: Vec<DesiredLrpGeneration> = history
                    .iter()
                    .filter(|g| g.status == records::CURRENT)
                    .map(|g| DesiredLrpGeneration {
                        status: records::SUPERSEDED.into(),
                        ..g.clone()
                    })
                    .collect();
                if !history.iter().any(|g| g.generation == own) {
                    // An app from before generations: its definition becomes generation 1.
                    let first = DesiredLrp {
                        generation: own,
                        ..cur.clone()
                    };
                    let mut e = records::history_entry(&first, "", 0);
                    e.status = records::SUPERSEDED.into();
                    puts.push(e);
                }
                puts.push(records::history_entry(&new, requested_by, now));
                let mut kept: Vec<i64> = history.iter().map(|g| g.generation).collect();
                kept.extend(puts.iter().map(|g| g.generation));
                let w = AppWrite {
                    desired: new.clone(),
                    history: puts,
                    forget: records::trimmed(&dedup(kept)),
                };
                Ok((w, (cur.clone(), new)))
            })
            .await?;
        self.rescale(guid, &before, &after).await?;
        crate::metrics::ROLLOUTS
            .with_label_values(&["generation"])
            .inc();
        tracing::info!(process_guid = %guid, generation = after.generation, requested_by, "new generation: deployment started");
        Ok((after, true))
    }

    /// Instance records follow a change of the instance count.
    pub(super) async fn rescale(
        &self,
        guid: &str,
        before: &DesiredLrp,
        after: &DesiredLrp,
    ) -> Result<()> {
        if after.instances > before.instances {
            self.create_missing_actuals(guid, &after.domain, before.instances, after.instances)
                .await
        } else if after.instances < before.instances {
            self.retire_indices_from(guid, after.instances).await
        } else {
            Ok(())
        }
    }

    /// Roll app `guid` back to a kept generation: its definition becomes that
    /// generation's and a deployment ROLLING_BACK to it starts; the generation
    /// left is marked failed (`failed`) or rolled back.
    pub async fn rollback_desired_lrp(&self, guid: &str, r: Rollback<'_>) -> Result<DesiredLrp> {
        let now = now_nanos();
        let d = self
            .rewrite_app(guid, |cur, history| {
                let target = records::rollback_target(cur, r.generation)?;
                let entry = history
                    .iter()
                    .find(|g| g.generation == target)
                    .ok_or_else(|| generation_not_found(guid, target))?;
                let req = records::RollbackRequest {
                    failed: r.failed,
                    reason: r.reason.to_string(),
                    requested_by: r.requested_by.to_string(),
                    now,
                };
                let new = records::rollback(cur, entry, &req);
                let mut puts = vec![DesiredLrpGeneration {
                    status: records::CURRENT.into(),
                    reason: String::new(),
                    ..entry.clone()
                }];
                if let Some(left) = history.iter().find(|g| g.generation == cur.generation) {
                    puts.push(DesiredLrpGeneration {
                        status: records::left_status(r.failed).into(),
                        reason: r.reason.to_string(),
                        ..left.clone()
                    });
                }
                let w = AppWrite {
                    desired: new.clone(),
                    history: puts,
                    forget: vec![],
                };
                Ok((w, new))
            })
            .await?;
        let kind = if r.failed {
            "rollback_failed"
        } else {
            "rollback"
        };
        crate::metrics::ROLLOUTS.with_label_values(&[kind]).inc();
        tracing::info!(process_guid = %guid, generation = d.generation, failed = r.failed, reason = r.reason, requested_by = r.requested_by, "rolling back");
        Ok(d)
    }

    /// Accept the canaries of app `guid`'s PAUSED deployment: it rolls on.
    pub async fn promote(&self, guid: &str) -> Result<DesiredLrp> {
        let now = now_nanos();
        let d = self
            .modify(&desired_key(guid), |cur: Option<DesiredLrp>| {
                let mut d = cur.ok_or_else(|| DbError::desired_not_found(guid))?;
                records::promote(&mut d, now)?;
                Ok((Write::Put(d.clone()), d))
            })
            .await?;
        crate::metrics::ROLLOUTS
            .with_label_values(&["promote"])
            .inc();
        tracing::info!(process_guid = %guid, generation = d.generation, "canaries promoted");
        Ok(d)
    }

    /// Record a deployment's progress or end: compare-and-swap on `expected`,
    /// the deployment the brain read.
    pub async fn update_deployment(
        &self,
        guid: &str,
        expected: &Deployment,
        new: &Deployment,
    ) -> Result<()> {
        self.modify(&desired_key(guid), |cur: Option<DesiredLrp>| {
            let mut d = cur.ok_or_else(|| DbError::desired_not_found(guid))?;
            records::check_deployment_update(&d, expected, new)?;
            if d.deployment.as_ref() == Some(new) {
                return Ok((Write::Nothing, ()));
            }
            d.deployment = Some(new.clone());
            let tag = d.modification_tag.get_or_insert_with(Default::default);
            tag.index += 1;
            Ok((Write::Put(d), ()))
        })
        .await?;
        tracing::debug!(process_guid = %guid, state = new.state, updated = new.updated_instances, "deployment recorded");
        Ok(())
    }

    /// The history keys of app `guid` (forgotten with the app).
    pub(super) async fn history_keys(&self, guid: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(&history_prefix(guid))
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect())
    }
}

fn history_prefix(guid: &str) -> String {
    format!("{GENERATION}{guid}/")
}

fn dedup(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v.dedup();
    v
}
