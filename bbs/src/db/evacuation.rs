//! The copies an instance leaves behind: SUSPECT (its cell vanished, it may
//! still run) and EVACUATING (its cell is draining, it serves until its
//! replacement runs). The decisions are `lattice_specs::evacuation`'s; this
//! applies them with compare-and-swap.

use lattice_specs::actual_lrp as alrp;
use lattice_specs::models::actual_lrp::{Presence, State as LrpState};
use lattice_specs::models::{ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo};
use lattice_specs::{now_nanos, ModelError};
use prost::Message;

use super::txn::{decode, Write, CAS_ATTEMPTS};
use super::{actual_key, evacuating_key, suspect_key, Db, DbError, KeepContainer, Result};
use crate::store::{Compare, Op, Txn};

impl Db {
    /// The instance's cell vanished, but the instance may still be running
    /// (a partition): keep it, as SUSPECT under its own key, and put a fresh
    /// UNCLAIMED record in its place so a replacement is placed. The suspect
    /// copy is removed once the replacement runs. Returns the new record.
    pub async fn suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<ActualLrp> {
        let (key, skey) = (actual_key(guid, index), suspect_key(guid, index));
        let now = now_nanos();
        for _ in 0..CAS_ATTEMPTS {
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let current: ActualLrp = decode(&kv)?;
            if current.state() != LrpState::Running {
                return Err(DbError::Refused(ModelError::ActualLrpTransition {
                    op: "suspect",
                    process_guid: guid.into(),
                    index,
                    from: alrp::state_name(current.state()),
                    detail: " (only a RUNNING instance can become suspect)".into(),
                }));
            }
            let mut suspect = current.clone();
            suspect.set_presence(Presence::Suspect);
            let mut fresh = current;
            alrp::unclaim(&mut fresh, now)?;
            let previous = self
                .store
                .get(&skey)
                .await?
                .map(|kv| kv.mod_revision)
                .unwrap_or(0);
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .when(Compare::ModRevision(skey.clone(), previous))
                .then(Op::put(&skey, suspect.encode_to_vec()))
                .then(Op::put(&key, fresh.encode_to_vec()));
            if self.txn(txn).await?.succeeded {
                return Ok(fresh);
            }
        }
        Err(DbError::Contended(key))
    }

    /// Drop the suspect copy of an instance (its replacement runs, or it is no longer desired).
    pub async fn remove_suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.modify(
            &suspect_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                None => Err(DbError::actual_not_found(guid, index)),
                Some(_) => Ok((Write::Delete, ())),
            },
        )
        .await
    }

    // --------------------------------------------------------- evacuation

    fn owned_by(l: &ActualLrp, ik: &ActualLrpInstanceKey) -> bool {
        l.instance_key.as_ref() == Some(ik)
    }

    async fn remove_evacuating_if_owned(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.modify(
            &evacuating_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                Some(l) if Self::owned_by(&l, ik) => Ok((Write::Delete, ())),
                _ => Ok((Write::Nothing, ())),
            },
        )
        .await
    }

    pub async fn evacuate_claimed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        let now = now_nanos();
        match self
            .modify_actual(guid, index, |l| {
                if Self::owned_by(l, ik) && l.state() == LrpState::Claimed {
                    alrp::unclaim(l, now)?;
                }
                Ok(())
            })
            .await
        {
            Ok(_) | Err(DbError::NotFound { .. }) => Ok(KeepContainer(false)),
            Err(e) => Err(e),
        }
    }

    /// A RUNNING instance on an evacuating cell: keep serving (an EVACUATING
    /// copy of the record) while its ordinary record is re-placed; stop once
    /// the replacement runs.
    pub async fn evacuate_running(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        net: ActualLrpNetInfo,
    ) -> Result<KeepContainer> {
        let now = now_nanos();
        let ordinary: Option<(ActualLrp, i64)> = self.get(&actual_key(guid, index)).await?;
        if let Some((o, _)) = &ordinary {
            if o.state() == LrpState::Running && !Self::owned_by(o, ik) {
                // The replacement is up: this copy can go.
                self.remove_evacuating_if_owned(guid, index, ik).await?;
                return Ok(KeepContainer(false));
            }
        }
        let Some((o, _)) = ordinary else {
            self.remove_evacuating_if_owned(guid, index, ik).await?;
            return Ok(KeepContainer(false));
        };
        let mut evac = o.clone();
        evac.instance_key = Some(ik.clone());
        evac.net_info = Some(net);
        evac.set_state(LrpState::Running);
        evac.set_presence(Presence::Evacuating);
        evac.since = now;
        self.modify(
            &evacuating_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                Some(l) if !Self::owned_by(&l, ik) => {
                    Err(DbError::Refused(ModelError::ActualLrpTransition {
                        op: "evacuate",
                        process_guid: guid.into(),
                        index,
                        from: "EVACUATING",
                        detail: " (another instance is evacuating)".into(),
                    }))
                }
                Some(l) if l.net_info == evac.net_info => Ok((Write::Nothing, ())),
                _ => Ok((Write::Put(evac.clone()), ())),
            },
        )
        .await?;
        if Self::owned_by(&o, ik) {
            self.modify_actual(guid, index, |l| {
                if Self::owned_by(l, ik) {
                    alrp::unclaim(l, now)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(KeepContainer(true))
    }

    pub async fn evacuate_stopped(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.remove_actual_lrp(guid, index, Some(ik)).await {
            Ok(()) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn evacuate_crashed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.crash_actual_lrp(guid, index, ik, reason).await {
            Ok(_) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn remove_evacuating(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.remove_evacuating_if_owned(guid, index, ik).await
    }
}
