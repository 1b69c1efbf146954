//! Ordinary ActualLRP records: listing (with the EVACUATING, SUSPECT and
//! REPLACED copies), and the cell's and the system's transitions (claim, which
//! records the generation the cell runs, start, crash, fail, unclaim, remove),
//! each checked by `lattice_specs::actual_lrp`. A cell's start, crash or
//! remove of an instance that serves from a REPLACED copy applies to the copy.

use lattice_specs::actual_lrp as alrp;
use lattice_specs::models::actual_lrp::Presence;
use lattice_specs::models::{ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo, DesiredLrp};
use lattice_specs::restart::RestartPolicy;
use lattice_specs::{now_nanos, ModelError};

use super::rollout::crashed_copy;
use super::txn::Write;
use super::{actual_key, desired_key, Db, DbError, Result, ACTUAL, EVACUATING, REPLACED, SUSPECT};

impl Db {
    /// Actual LRPs (ordinary, evacuating, suspect and replaced), filtered by any of the non-empty criteria.
    pub async fn actual_lrps(
        &self,
        domain: &str,
        cell_id: &str,
        guid: &str,
        index: Option<i32>,
    ) -> Result<Vec<ActualLrp>> {
        let prefix = |p: &str| {
            if guid.is_empty() {
                p.to_string()
            } else {
                format!("{p}{guid}/")
            }
        };
        let mut all: Vec<ActualLrp> = self.list(&prefix(ACTUAL)).await?;
        all.extend(self.list::<ActualLrp>(&prefix(EVACUATING)).await?);
        all.extend(self.list::<ActualLrp>(&prefix(SUSPECT)).await?);
        all.extend(self.list::<ActualLrp>(&prefix(REPLACED)).await?);
        Ok(all
            .into_iter()
            .filter(|l| {
                let k = l.key.clone().unwrap_or_default();
                (domain.is_empty() || k.domain == domain)
                    && (index.is_none() || Some(k.index) == index)
                    && (cell_id.is_empty()
                        || l.instance_key
                            .as_ref()
                            .is_some_and(|ik| ik.cell_id == cell_id))
            })
            .collect())
    }

    pub(super) async fn modify_actual<R>(
        &self,
        guid: &str,
        index: i32,
        mut f: impl FnMut(&mut ActualLrp) -> Result<R>,
    ) -> Result<(ActualLrp, R)> {
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let mut l = cur.ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let before = l.clone();
            let r = f(&mut l)?;
            if l == before {
                return Ok((Write::Nothing, (l, r)));
            }
            Ok((Write::Put(l.clone()), (l, r)))
        })
        .await
    }

    /// Cell `ik` claims the instance to run `generation` of the app's definition
    /// (`VolumeFenced`/`VolumeNotReady` when it mounts a volume it may not mount there).
    pub async fn claim_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        generation: i64,
    ) -> Result<ActualLrp> {
        // Its volumes must live on this cell, and not be refilled by a failover.
        if let Ok(d) = self.desired_lrp(guid).await {
            self.check_mount_cell(&d.volume_mounts, &ik.cell_id, guid)
                .await?;
        }
        let now = now_nanos();
        let claim = |l: &mut ActualLrp| -> Result<()> {
            alrp::claim(l, ik, now)?;
            l.generation = generation;
            Ok(())
        };
        Ok(self.modify_actual(guid, index, claim).await?.0)
    }

    /// Mark an instance RUNNING. A rep re-adopting an instance whose record is
    /// gone recreates it, as long as the LRP still desires that index.
    pub async fn start_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        net: ActualLrpNetInfo,
    ) -> Result<ActualLrp> {
        if let Some(copy) = self.owned_copy(guid, index, ik).await? {
            // A rep re-adopting an instance that serves from its REPLACED copy.
            return Ok(copy);
        }
        let now = now_nanos();
        let start = |l: &mut ActualLrp| -> Result<()> {
            alrp::start(l, ik, net.clone(), now)?;
            l.presence = Presence::Ordinary as i32;
            Ok(())
        };
        match self.modify_actual(guid, index, start).await {
            Err(DbError::NotFound { .. }) => {}
            other => return other.map(|(l, _)| l),
        }
        // The record is gone (e.g. lost with its store): recreate it if still desired.
        let d = self
            .desired_lrp(guid)
            .await
            .map_err(|_| DbError::actual_not_found(guid, index))?;
        if index >= d.instances {
            return Err(DbError::actual_not_found(guid, index));
        }
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let mut l = cur.unwrap_or_else(|| alrp::new_unclaimed(guid, index, &d.domain, now));
            start(&mut l)?;
            Ok((Write::Put(l.clone()), l))
        })
        .await
    }

    /// Returns the instance after the crash: UNCLAIMED if it is to be
    /// re-placed at once, CRASHED if it waits for its backoff.
    pub async fn crash_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<ActualLrp> {
        if let Some(copy) = self.remove_copy_if_owned(guid, index, ik).await? {
            return Ok(crashed_copy(copy, reason, now_nanos()));
        }
        let policy = match self.get::<DesiredLrp>(&desired_key(guid)).await? {
            Some((d, _)) => RestartPolicy::from_overrides(d.crash_policy.as_ref()),
            None => RestartPolicy::default(),
        };
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| {
                Ok(alrp::crash(l, ik, reason, now, &policy)?)
            })
            .await?
            .0)
    }

    pub async fn fail_actual_lrp(&self, guid: &str, index: i32, reason: &str) -> Result<ActualLrp> {
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| Ok(alrp::fail_placement(l, reason, now)?))
            .await?
            .0)
    }

    /// The system takes an instance back (restart after backoff, lost cell, stale claim).
    pub async fn unclaim_actual_lrp(&self, guid: &str, index: i32) -> Result<ActualLrp> {
        let now = now_nanos();
        Ok(self
            .modify_actual(guid, index, |l| Ok(alrp::unclaim(l, now)?))
            .await?
            .0)
    }

    /// Delete an instance record; with `ik`, only if it still belongs to that instance.
    pub async fn remove_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        ik: Option<&ActualLrpInstanceKey>,
    ) -> Result<()> {
        if let Some(ik) = ik {
            if self.remove_copy_if_owned(guid, index, ik).await?.is_some() {
                return Ok(());
            }
        }
        self.modify(&actual_key(guid, index), |cur: Option<ActualLrp>| {
            let l = cur.ok_or_else(|| DbError::actual_not_found(guid, index))?;
            if let Some(ik) = ik.filter(|ik| !alrp::instance_key_is_empty(ik)) {
                if l.instance_key.as_ref() != Some(ik) {
                    return Err(DbError::Refused(ModelError::ActualLrpTransition {
                        op: "remove",
                        process_guid: guid.into(),
                        index,
                        from: alrp::state_name(l.state()),
                        detail: " (held by another instance)".into(),
                    }));
                }
            }
            Ok((Write::Delete, ()))
        })
        .await
    }

    /// Retire one instance (scale-down, `DELETE …/index/N`): its record goes;
    /// the cell stops the container. The converger recreates it if still desired.
    pub async fn retire_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.remove_actual_lrp(guid, index, None).await
    }
}
